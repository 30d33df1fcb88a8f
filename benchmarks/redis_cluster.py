"""A throwaway Redis Cluster for the benchmarks: 3 primaries, no replicas, on loopback.

Each primary is a ``redis-server --cluster-enabled yes`` on a free port, in a temporary
directory, without persistence; ``redis-cli --cluster create`` splits the 16,384 slots
between them. :attr:`LocalCluster.nodes` is the ``host:port,...`` string that the testproject
reads from ``REDIS_CLUSTER_NODES``. Only the processes started here are ever stopped.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.procs import free_port, wait_for_port

__all__ = ["LocalCluster"]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """Start with :meth:`start`, stop with :meth:`close` (or use it as a context manager)."""

    def __init__(self, primaries: int = 3) -> None:
        self.ports: list[int] = []
        while len(self.ports) < primaries:
            port = free_port()
            # Cluster nodes also listen on port + 10000 (the cluster bus).
            if port + 10000 <= 65535 and _port_free(port + 10000) and port not in self.ports:
                self.ports.append(port)
        self.dir = Path(tempfile.mkdtemp(prefix="stomp-cluster-bench-rc-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def nodes(self) -> str:
        """``127.0.0.1:PORT,...``: the startup nodes."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> LocalCluster:
        """Start the primaries and create the cluster; on any failure, stop what started."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> LocalCluster:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        for port in self.ports:
            work = self.dir / str(port)
            work.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(work / "nodes.conf"),
                        "--dir",
                        str(work),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            wait_for_port(port, timeout=10)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *self.nodes.split(","), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(
                ["redis-cli", "-p", str(self.ports[0]), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok:\n{info}")

    def flush(self) -> None:
        for port in self.ports:
            subprocess.run(["redis-cli", "-p", str(port), "flushall"], capture_output=True)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
