"""A real Redis Cluster for tests: 3 primaries and 3 replicas on free loopback ports.

:class:`RedisCluster` starts six ``redis-server --cluster-enabled yes`` processes, joins
them with ``redis-cli --cluster create ... --cluster-replicas 1``, and waits until every
node says ``cluster_state:ok``. Tests reach it through :attr:`RedisCluster.startup_nodes`
(``["127.0.0.1:p1", ...]``, the form of the ``REDIS_CLUSTER_NODES`` variable and of the
``{"CLUSTER": [...]}`` setting). :meth:`RedisCluster.kill_primary_of` SIGKILLs the primary
serving a key's slot and waits until its replica has taken over; :meth:`RedisCluster.flush`
empties every primary; :meth:`RedisCluster.close` stops only the processes it started.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.procs import wait_for_port

__all__ = ["ClusterNode", "RedisCluster"]

#: Milliseconds a primary may be unreachable before its replica is promoted: short, so
#: that a failover test takes seconds, long enough for two busy cores not to flap.
NODE_TIMEOUT_MS = 1000


@dataclass
class ClusterNode:
    """One redis-server of the cluster."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0)


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too and below 65536."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port + 10000 > 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                try:
                    b.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    # The kernel hands out high ports first: ask for low ones directly.
    for port in range(20000, 55000, 7):
        with contextlib.suppress(OSError):
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    """Six redis-server processes joined as a Redis Cluster (3 primaries, 3 replicas)."""

    def __init__(self, primaries: int = 3) -> None:
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed; `make test` installs it")
        self.root = Path(tempfile.mkdtemp(prefix="stomp-cluster-rc-"))
        ports: list[int] = []
        while len(ports) < primaries * 2:
            port = _cluster_port()
            if not {port, port + 10000, port - 10000} & set(ports):
                ports.append(port)
        self.nodes = [ClusterNode(port, self.root / f"n{i}") for i, port in enumerate(ports)]

    @property
    def startup_nodes(self) -> list[str]:
        """``host:port`` of every node started (dead ones included; clients skip them)."""
        return [node.address for node in self.nodes]

    def _start_node(self, node: ClusterNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(node.port),
            "--dir", str(node.dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(node.port, proc=node.proc)

    def start(self) -> None:
        """Start the six servers, create the cluster, wait until it serves every slot."""
        for node in self.nodes:
            self._start_node(node)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *self.startup_nodes,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        # Replicas must be attached and synced before a kill can promote one.
        self._wait(self._replicas_synced, "replicas to sync")

    def _wait(self, predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if predicate():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Redis Cluster: no {what} after {timeout}s")

    def _all_ok(self) -> bool:
        for node in self.nodes:
            if not node.alive():
                continue
            with node.client() as client:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
                if int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
        return True

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Block until every running node reports ``cluster_state:ok`` for all slots."""
        self._wait(self._all_ok, "cluster_state:ok on every node", timeout)

    def _replicas_synced(self) -> bool:
        count = 0
        for node in self.nodes:
            if not node.alive():
                continue
            with node.client() as client:
                info = client.info("replication")
                if info.get("role") == "slave":
                    if info.get("master_link_status") != "up":
                        return False
                    count += 1
        return count >= len([n for n in self.nodes if n.alive()]) // 2

    def primaries(self) -> list[ClusterNode]:
        """The running nodes that are primaries now."""
        out = []
        for node in self.nodes:
            if node.alive():
                with node.client() as client:
                    if client.info("replication").get("role") == "master":
                        out.append(node)
        return out

    def node_of(self, key: str) -> ClusterNode:
        """The running primary that serves *key*'s slot now."""
        live = next(node for node in self.nodes if node.alive())
        with live.client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no primary serves the slot of {key!r}")

    def kill_primary_of(self, key: str, timeout: float = 30.0) -> ClusterNode:
        """SIGKILL the primary of *key*'s slot; return once a replica serves that slot.

        The killed node stays down (its data gone: persistence is off), as a lost
        machine would.
        """
        victim = self.node_of(key)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)

        def promoted() -> bool:
            node = self.node_of(key)
            if node.port == victim.port or not node.alive():
                return False
            with node.client() as client:
                return client.info("replication").get("role") == "master"

        self._wait(promoted, "replica promoted", timeout)
        self.wait_ok(timeout)
        return victim

    def restore(self) -> None:
        """Start again every node a test killed; each rejoins as a replica (its own
        config file names the cluster), then wait until the cluster is whole."""
        dead = [node for node in self.nodes if not node.alive()]
        for node in dead:
            self._start_node(node)
        if dead:
            self.wait_ok()
            self._wait(self._replicas_synced, "replicas to sync")

    def flush(self) -> None:
        """Empty every primary (replicas follow)."""
        for node in self.primaries():
            with node.client() as client:
                client.flushall()

    def close(self) -> None:
        """Stop the servers this object started, by pid, and remove their files."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
            node.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
