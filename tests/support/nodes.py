"""Real ASGI server processes for cluster tests: one :class:`AsgiNode` per cluster node.

Each node runs ``testproject.asgi:application`` under daphne (the default) or uvicorn, on
a free loopback port, with its own log file. Nodes of one cluster share a Redis (through
``REDIS_URL``) and a SQLite database (``DATABASE_PATH``) that :func:`prepare_database`
migrates and fills with the demo users once.

We only ever signal processes we started, by their pid.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, wait_for_port

__all__ = [
    "REPO_ROOT",
    "SERVERS",
    "AsgiNode",
    "NodeError",
    "cli_json",
    "manage",
    "prepare_database",
    "server_env",
    "token_for",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

SETTINGS_MODULE = "testproject.settings"
APPLICATION = "testproject.asgi:application"
SERVERS = ("daphne", "uvicorn")

# daphne and uvicorn refuse WebSocket messages over 1 MiB and 16 MiB by default. We raise
# daphne's limit so that our own frame limit (1 MiB + 64 KiB) is what tests meet, and a
# 1 MiB body (plus headers) gets through.
MAX_WS_MESSAGE = 4 * 1024 * 1024

# Twisted listens with a backlog of 50, which drops SYNs when tens of clients connect at
# once: measured, 100 concurrent connects to a daphne node lost some until the backlog
# was raised (daphne's endpoint string takes ``backlog=2048``).
LISTEN_BACKLOG = 2048


class NodeError(RuntimeError):
    """A node or a management command failed; the message ends with its log tail."""


def server_env(
    *,
    db_path: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    node_id: str | None = None,
    node_ttl: float | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the environment for a testproject process (server or manage command).

    It starts from ours, minus anything that would make the child use the machine's Redis
    or the test settings of this process.
    """
    env = dict(os.environ)
    for name in ("REDIS_URL", "STOMP_NODE_ID", "STOMP_NODE_TTL", "DATABASE_PATH"):
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
    env["PYTHONUNBUFFERED"] = "1"
    if db_path is not None:
        env["DATABASE_PATH"] = str(db_path)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if node_id is not None:
        env["STOMP_NODE_ID"] = node_id
    if node_ttl is not None:
        env["STOMP_NODE_TTL"] = f"{node_ttl:g}"
    if extra:
        env.update(extra)
    return env


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def manage(
    *args: str,
    db_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """Run a Django management command of the testproject and return its stdout.

    Raises:
        NodeError: the command failed; the message carries its output.
    """
    # `python -m django` with DJANGO_SETTINGS_MODULE is manage.py without needing the file.
    proc = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=REPO_ROOT,
        env=server_env(db_path=db_path, extra=env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeError(
            f"manage.py {' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


_prepared: set[str] = set()
_prepare_lock = threading.Lock()


def prepare_database(path: str | os.PathLike[str]) -> Path:
    """Migrate the SQLite database at *path* and create the demo users, once per path.

    The demo users are alice, bob and carol (password ``stomp-demo``) and the superuser
    admin (``stomp-admin``).
    """
    resolved = Path(path).resolve()
    key = str(resolved)
    with _prepare_lock:
        if key not in _prepared:
            resolved.parent.mkdir(parents=True, exist_ok=True)
            manage("migrate", "--noinput", db_path=resolved)
            manage("demo_users", db_path=resolved)
            _prepared.add(key)
    return resolved


@functools.cache
def token_for(username: str, db_path: str | os.PathLike[str]) -> str:
    """Return a signed connection token for *username*: the CONNECT ``passcode``.

    Send it with ``login=username``. Tokens are cached for the session: minting one
    starts a Python process.
    """
    out = manage("stomp_token", username, db_path=db_path).strip()
    if not out:
        raise NodeError(f"manage.py stomp_token {username} printed nothing")
    # Tolerate a chatty command: the token is the last line.
    return out.splitlines()[-1].strip()


class AsgiNode:
    """One cluster node: a daphne or uvicorn process serving the testproject.

    Args:
        node_id: ``STOMP_NODE_ID`` of the node, e.g. ``"node-a"``.
        db_path: SQLite file, prepared with :func:`prepare_database`.
        redis_url: Redis shared by the cluster; ``None`` runs the node on the in-memory
            channel layer and presence backend.
        server: ``"daphne"`` or ``"uvicorn"``.
        node_ttl: ``STOMP_NODE_TTL`` in seconds, or ``None`` for the project default.
        env: extra environment variables.
        log_dir: where the log file goes (a new temporary directory by default).
        port: TCP port; a free one by default. :meth:`restart` keeps it.
    """

    def __init__(
        self,
        node_id: str = "node-a",
        *,
        db_path: str | os.PathLike[str],
        redis_url: str | None = None,
        server: str = "daphne",
        node_ttl: float | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if server not in SERVERS:
            raise ValueError(f"server must be one of {SERVERS}, not {server!r}")
        self.node_id = node_id
        self.db_path = Path(db_path)
        self.redis_url = redis_url
        self.server = server
        self.node_ttl = node_ttl
        self.extra_env = dict(env or {})
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="stomp-cluster-node-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{node_id}-{server}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def ws_url(self) -> str:
        """The STOMP endpoint, ``ws://127.0.0.1:PORT/ws``."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The HTTP root, ``http://127.0.0.1:PORT/`` (admin, views)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<AsgiNode {self.node_id} {self.server} :{self.port} {state}>"

    # -- life cycle ------------------------------------------------------------------------

    def command(self) -> list[str]:
        if self.server == "daphne":
            return [
                sys.executable,
                "-m",
                "daphne",
                "-e",
                f"tcp:port={self.port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}",
                "--websocket-max-message-size",
                str(MAX_WS_MESSAGE),
                "--websocket-max-frame-size",
                str(MAX_WS_MESSAGE),
                "--application-close-timeout",
                "5",
                "-v",
                "1",
                APPLICATION,
            ]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            APPLICATION,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backlog",
            str(LISTEN_BACKLOG),
            "--ws-max-size",
            str(MAX_WS_MESSAGE),
            # testproject.asgi mounts stomp_cluster.lifespan.LifespanApp: "on" fails the
            # start if it is missing, and runs the node's shutdown on SIGTERM.
            "--lifespan",
            "on",
            "--timeout-graceful-shutdown",
            "5",
        ]

    def env(self) -> dict[str, str]:
        return server_env(
            db_path=self.db_path,
            redis_url=self.redis_url,
            node_id=self.node_id,
            node_ttl=self.node_ttl,
            extra=self.extra_env,
        )

    def start(self) -> AsgiNode:
        """Start the process and wait until it accepts TCP connections.

        Raises:
            NodeError: the process exited or did not listen in time.
        """
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting: call :meth:`wait_ready` next.

        Starting several nodes with ``spawn()`` first lets them boot in parallel.
        """
        if self.is_running():
            raise NodeError(f"{self!r} is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> AsgiNode:
        """Wait until the spawned process listens (see :meth:`start`)."""
        if self.proc is None:
            raise NodeError(f"{self!r} was not spawned")
        try:
            wait_for_port(self.port, timeout=self.start_timeout, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise NodeError(self.failure_message(f"{self.node_id} did not start: {exc}")) from exc
        return self

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def _signal_and_wait(self, sig: int, timeout: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        return proc.returncode

    def terminate(self, timeout: float = 15.0) -> int | None:
        """Stop gracefully: SIGTERM, then SIGKILL after *timeout* seconds. Returns the exit code."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """Stop at once with SIGKILL, as a crash would: no disconnect handlers run."""
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self) -> AsgiNode:
        """Stop gracefully if running, then start again on the same port."""
        self.terminate()
        return self.start()

    def close(self) -> None:
        self.terminate()

    def __enter__(self) -> AsgiNode:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- diagnostics -----------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def failure_message(self, message: str, lines: int = 60) -> str:
        """*message* followed by the tail of this node's log: use it in assertions."""
        return (
            f"{message}\n----- {self.node_id} ({self.server}, pid {self.pid}, "
            f"exit {self.returncode}) log {self.log_path} -----\n{self.log_tail(lines)}"
        )


def cli_json(action: str, *args: str, db_path: str | os.PathLike[str], redis_url: str) -> Any:
    """``manage.py stomp_cluster <action> --json *args`` against a cluster's registry.

    Runs as a separate process with a node id of its own (``cli``), as an operator's
    shell would, and returns the parsed JSON.
    """
    out = manage(
        "stomp_cluster",
        action,
        "--json",
        *args,
        db_path=db_path,
        env={"REDIS_URL": redis_url, "STOMP_NODE_ID": "cli"},
    )
    return json.loads(out)
