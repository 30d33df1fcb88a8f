"""The deployment guide's nginx configuration, run: nginx in front of two uvicorn nodes.

``docs/howto/nginx.conf`` is the file the deployment guide shows. This test renders it
with its own ports (the two ``server`` addresses of the upstream and the ``listen`` port;
nothing else changes) and runs the distribution's nginx on it as an instance of its own:
``nginx -p <tmp> -c <tmp>/nginx.conf -e <tmp>/error.log -g "daemon off;"``, whose main
configuration keeps the pid file, the logs and the temporary files in the test's
temporary directory and includes the rendered file inside ``http``, as Debian's
``/etc/nginx/nginx.conf`` includes ``conf.d/*.conf``. A system nginx is never started or
touched; ours listens on a free loopback port and is stopped by its pid.

The scenario is the guide's promise about a node that stops: a stomp.py client connected
through nginx subscribes to a user destination while a separate sender process streams
numbered messages to the user; the node that holds the client's socket is SIGTERMed in
the middle of the stream; the client sees its connection close, connects again through
nginx (which can only reach the surviving node), subscribes with ``x-resume-from`` set to
the last ``message-id`` it saw, and after one more message sent once it is back, it has
every message exactly once and in order. On the way, nginx tries the stopped node at
least once, is refused, and passes the connection to the other node without the client noticing
(the passive check of ``max_fails``); plain HTTP goes through, and ``/stomp/`` (metrics
and health) is refused.

The test is skipped when nginx is not installed, except under CI (``CI`` set), where
``.ci/run`` and ``make deps`` install it and a missing nginx is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.clients import StompPyClient
from tests.support.nodes import REPO_ROOT, AsgiNode, manage, server_env
from tests.support.procs import free_port, wait_for_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: The configuration the deployment guide shows and this test runs.
SITE_CONF = REPO_ROOT / "docs" / "howto" / "nginx.conf"
#: What the test replaces in it: the two nodes' addresses, then the listen directive.
UPSTREAM_PLACEHOLDERS = ("10.0.0.11:8000", "10.0.0.12:8000")
LISTEN_PLACEHOLDER = "listen 80;"

# The main configuration of the test's own instance. The file under test goes inside
# `http`; around it, only what keeps every path nginx writes in the temporary directory.
MAIN_CONF = """\
{user}worker_processes 1;
pid "{prefix}/nginx.pid";
error_log "{prefix}/error.log" info;
events {{
    worker_connections 256;
}}
http {{
    access_log "{prefix}/access.log";
    client_body_temp_path "{prefix}/temp/client_body";
    proxy_temp_path "{prefix}/temp/proxy";
    fastcgi_temp_path "{prefix}/temp/fastcgi";
    uwsgi_temp_path "{prefix}/temp/uwsgi";
    scgi_temp_path "{prefix}/temp/scgi";
    include "{prefix}/site.conf";
}}
"""

USER = "alice"
DESTINATION = "/queue/stream"  # where the sender sends to the user
SUBSCRIPTION = "/user/queue/stream"  # what the user subscribes to
STREAM = 600  # messages of the stream, bodies "0" to "599"
RATE = 40  # messages/s: the stream lasts 15 s, and the SIGTERM falls early in it
KILL_AFTER = 80  # messages received before the SIGTERM


def find_nginx() -> str | None:
    """The nginx binary, also where a non-root PATH does not look (/usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("nginx", path=path)


def render_site(upstream_ports: Sequence[int], listen_port: int) -> str:
    """Return ``docs/howto/nginx.conf`` pointed at our nodes and listening on our port."""
    text = SITE_CONF.read_text()
    replacements = [
        *(
            (placeholder, f"127.0.0.1:{port}")
            for placeholder, port in zip(UPSTREAM_PLACEHOLDERS, upstream_ports, strict=True)
        ),
        (LISTEN_PLACEHOLDER, f"listen 127.0.0.1:{listen_port};"),
    ]
    for old, new in replacements:
        assert text.count(old) == 1, f"{SITE_CONF} must contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


class Nginx:
    """Our own nginx process, on a free loopback port, with every file in *prefix*."""

    def __init__(self, binary: str, prefix: Path, upstream_ports: Sequence[int]) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        (prefix / "site.conf").write_text(render_site(upstream_ports, self.port))
        # As root, nginx runs its workers as "nobody", who cannot enter pytest's private
        # temporary directory: keep them with the user running the tests.
        user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(MAIN_CONF.format(prefix=prefix, user=user))
        self.error_log = prefix / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Nginx:
        with (self.prefix / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(self.conf),
                    "-e",
                    str(self.error_log),
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group, so that its workers can be killed with it if the
                # master does not stop.
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout=20, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise AssertionError(f"nginx did not start: {exc}\n{self.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL to its process group."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    @contextlib.contextmanager
    def log_on_failure(self) -> Iterator[None]:
        """Add the tail of nginx's logs to whatever fails inside the block."""
        try:
            yield
        except BaseException as exc:
            exc.add_note(self.log_tail())
            raise

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- nginx {name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Sequence[AsgiNode]], Nginx]]:
    """Factory: ``nginx(nodes)`` starts nginx with the guide's configuration in front of them."""
    binary = find_nginx()
    if binary is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("nginx is not installed: `make deps` (run by .ci/run) installs it")
        pytest.skip("nginx is not installed: `make deps` installs it (Debian package nginx)")
    started: list[Nginx] = []

    def start(nodes: Sequence[AsgiNode]) -> Nginx:
        proxy = Nginx(binary, tmp_path / f"nginx-{len(started)}", [n.port for n in nodes])
        started.append(proxy)
        return proxy.start()

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


def status_of(url: str) -> int:
    """The HTTP status of a GET of *url* (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def stream(db_path: Path, redis_url: str) -> subprocess.Popen[str]:
    """Start a sender: a management command in a process of its own, not a node."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "stream_to_user",
            USER,
            str(STREAM),
            "--destination",
            DESTINATION,
            "--rate",
            str(RATE),
        ],
        cwd=REPO_ROOT,
        env=server_env(db_path=db_path, redis_url=redis_url, node_id="sender"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_sender(sender: subprocess.Popen[str]) -> None:
    if sender.poll() is None:
        sender.kill()
    sender.communicate()


def session_nodes(db_path: Path, redis_url: str) -> dict[str, str]:
    """Session id -> node id, for every session in the presence registry."""
    out = manage(
        "stomp_cluster",
        "sessions",
        "--json",
        db_path=db_path,
        env={"REDIS_URL": redis_url, "STOMP_NODE_ID": "cli"},
    )
    return {s["session_id"]: s["node_id"] for s in json.loads(out)["sessions"]}


@pytest.mark.timeout(240)
def test_a_client_through_nginx_resumes_on_the_other_node_after_a_sigterm(
    cluster, nginx, tokens, db_path, redis_server
):
    nodes = cluster(servers=["uvicorn", "uvicorn"])
    proxy = nginx(nodes)
    with proxy.log_on_failure():
        through_nginx(proxy, nodes, tokens, db_path, redis_server.url)


def through_nginx(
    proxy: Nginx,
    nodes: Sequence[AsgiNode],
    tokens: Callable[[str], str],
    db_path: Path,
    redis_url: str,
) -> None:
    """The test's steps; the caller adds nginx's logs to a failure."""
    # Plain HTTP goes through; the operators' endpoints answer only those who ask a node.
    assert status_of(proxy.http_url + "login/") == 200
    assert status_of(proxy.http_url + "stomp/health/") == 403
    assert status_of(nodes[0].http_url + "stomp/health/") == 200

    bob_token = tokens("bob")  # minted now: it takes a process start
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(StompPyClient(proxy.ws_url))
        first.connect(USER, tokens(USER))
        first.subscribe(SUBSCRIPTION)
        holder_id = wait_until(
            lambda: session_nodes(db_path, redis_url).get(first.session),
            30,
            "the client's session in the registry",
        )
        [holder] = [n for n in nodes if n.node_id == holder_id]
        [survivor] = [n for n in nodes if n is not holder]

        sender = stream(db_path, redis_url)
        stack.callback(stop_sender, sender)
        first.wait_for_messages(KILL_AFTER, timeout=60)
        assert sender.poll() is None, "the stream ended before the SIGTERM"
        assert holder.proc is not None
        holder.proc.send_signal(signal.SIGTERM)  # the node stops while messages flow
        first.wait_for_disconnected(timeout=15)
        seen = list(first.listener.messages)

        # What a client does when its connection drops: connect again, same address.
        again = stack.enter_context(StompPyClient(proxy.ws_url))
        again.connect(USER, tokens(USER))
        again.subscribe(SUBSCRIPTION, headers={"x-resume-from": seen[-1].headers["message-id"]})
        # uvicorn ends by raising the SIGTERM again once it has shut down, hence -15.
        assert holder.terminate() in (0, -signal.SIGTERM), holder.failure_message("exit")
        assert "Application shutdown complete" in holder.log_tail(), holder.failure_message(
            "the node did not run its lifespan shutdown"
        )
        assert session_nodes(db_path, redis_url).get(again.session) == survivor.node_id
        # The stopped node still has the fewest connections (none), so least_conn offers
        # it the next client unless nginx already left it out: either way nginx was
        # refused at least once (again after fail_timeout), and no client saw it.
        other = stack.enter_context(StompPyClient(proxy.ws_url))
        other.connect("bob", bob_token)
        refused = proxy.error_log.read_text().count("Connection refused) while connecting")
        assert refused >= 1, proxy.log_tail()

        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err[-2000:]
        # One more, sent once the stream is over: the resumed subscription is live.
        out = manage(
            "stomp_send",
            "--user",
            USER,
            "--to",
            DESTINATION,
            str(STREAM),
            db_path=db_path,
            env={"REDIS_URL": redis_url, "STOMP_NODE_ID": "sender"},
        )
        assert "reached 1 session(s) on 1 node(s)" in out

        again.wait_for_messages(1, lambda m: m.body == str(STREAM), timeout=60)
        received = seen + list(again.listener.messages)
        bodies = [int(m.body) for m in received]
        assert bodies == list(range(STREAM + 1))  # every one, once, in order
        assert len({m.headers["message-id"] for m in received}) == STREAM + 1
        assert not again.listener.errors
        again.disconnect()
