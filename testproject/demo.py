"""Run the demo: a two-node cluster when Redis is reachable, one in-memory node if not.

``make demo`` calls ``python -m testproject.demo`` after migrating and creating the demo
users. Set ``REDIS_URL`` to choose the Redis (default ``redis://127.0.0.1:6379/0`` when
it answers) and ``DEMO_PORT`` for the first node's port (default 8000; the second node
uses the next port). Ctrl-C stops every process it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def redis_reachable(url: str) -> bool:
    """Whether something answers PING at *url* within half a second."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def start_node(port: int, node_id: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STOMP_NODE_ID": node_id, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
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
        print("No Redis reachable: starting ONE node with the in-memory channel layer and "
              "presence (set REDIS_URL, or start redis-server, for a cluster).")
    procs = [start_node(p, node_id, redis_url) for node_id, p in nodes]
    time.sleep(1.5)
    print()
    for node_id, p in nodes:
        print(f"  {node_id}: http://127.0.0.1:{p}/   (STOMP at ws://127.0.0.1:{p}/ws)")
    print(f"  admin:  http://127.0.0.1:{port}/admin/   (admin / stomp-admin)")
    print("  users:  alice, bob, carol   (password stomp-demo)")
    print("\nCtrl-C stops the demo.")
    try:
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
