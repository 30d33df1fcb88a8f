"""Run the demo: a two-node cluster when Redis is reachable, one in-memory node if not.

``make demo`` calls ``python -m testproject.demo`` after migrating and creating the demo
users. Set ``REDIS_URL`` to choose the Redis (default ``redis://127.0.0.1:6379/0`` when
it answers) and ``DEMO_PORT`` for the first node's port (default 8000; the second node
uses the next port). Each node is told the other's URL (``STOMP_DEMO_PEERS``), so that the
demo page can embed the other node's notify form. Ctrl-C (or SIGTERM) stops every process
it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent

#: Seconds a node gets to start listening.
START_TIMEOUT = 30.0


def redis_reachable(url: str) -> bool:
    """Whether something answers PING at *url* within half a second."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), 0.5
        ) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:*port*."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start_node(
    port: int, node_id: str, redis_url: str, peers: list[str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STOMP_NODE_ID": node_id,
        "STOMP_DEMO_PEERS": ",".join(peers),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog=1024"
    return subprocess.Popen(
        [sys.executable, "-m", "daphne", "-e", endpoint, "testproject.asgi:application"],
        cwd=ROOT,
        env=env,
    )


def wait_listening(procs: list[tuple[str, int, subprocess.Popen[bytes]]]) -> str | None:
    """Wait until every node accepts connections; return an error message, or None."""
    deadline = time.monotonic() + START_TIMEOUT
    for node_id, port, proc in procs:
        while port_free(port):
            if proc.poll() is not None:
                return f"{node_id} exited with status {proc.returncode} before listening on {port}"
            if time.monotonic() > deadline:
                return f"{node_id} does not listen on {port} after {START_TIMEOUT:g} s"
            time.sleep(0.1)
    return None


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    port = int(os.environ.get("DEMO_PORT", "8000"))
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    clustered = redis_reachable(redis_url)
    if clustered:
        nodes = [("node-a", port), ("node-b", port + 1)]
        print(f"Redis answers at {redis_url}: starting a two-node cluster.")
    else:
        nodes = [("node-a", port)]
        redis_url = ""
        print(
            "No Redis reachable: starting ONE node with the in-memory channel layer and "
            "presence (set REDIS_URL, or start redis-server, for a cluster)."
        )
    busy = [p for _, p in nodes if not port_free(p)]
    if busy:
        print(
            f"Port(s) {', '.join(map(str, busy))} already in use: set DEMO_PORT.", file=sys.stderr
        )
        return 1
    urls = {node_id: f"http://127.0.0.1:{p}" for node_id, p in nodes}
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    procs: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    try:
        for node_id, p in nodes:
            peers = [url for other, url in urls.items() if other != node_id]
            procs.append((node_id, p, start_node(p, node_id, redis_url, peers)))
        error = wait_listening(procs)
        if error:
            print(error, file=sys.stderr)
            return 1
        print()
        for node_id, p in nodes:
            print(f"  {node_id}: http://127.0.0.1:{p}/   (STOMP at ws://127.0.0.1:{p}/ws)")
        admin = f"http://127.0.0.1:{port}/admin/stomp_cluster/connection/"
        print(f"  admin:  {admin}   (admin / stomp-admin)")
        print("  users:  alice, bob, carol   (password stomp-demo)")
        if clustered:
            print(
                f"  try:    alice on {urls['node-a']}/ and bob on {urls['node-b']}/ (two browsers)"
            )
        print("\nCtrl-C stops the demo.", flush=True)
        while True:
            for node_id, _, proc in procs:
                if proc.poll() is not None:
                    print(
                        f"{node_id} exited with status {proc.returncode}: stopping the demo.",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping the demo…", flush=True)
    finally:
        # Ignore a second Ctrl-C while the nodes close their sessions.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, _, proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
