"""A Redis Sentinel deployment of our own for failover tests: a primary, a replica, three
sentinels, all on free loopback ports in one temporary directory.

The sentinels monitor the primary under :data:`MASTER_NAME` with a quorum of 2, and
declare it down after :data:`DOWN_AFTER_MS` milliseconds without a reply, so that a
SIGKILLed primary is replaced by its replica within a few seconds. :meth:`SentinelSetup.start`
returns only once the replica's link to the primary is up and every sentinel knows the
replica and the two other sentinels: before that, a failover could not happen (no quorum,
or no replica to promote), and a test would measure the set-up rather than the failover.

Like :mod:`tests.support.procs`, we only ever signal processes we started, by their pid.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, wait_for_port

__all__ = [
    "DOWN_AFTER_MS",
    "FAILOVER_TIMEOUT_MS",
    "MASTER_NAME",
    "QUORUM",
    "SentinelSetup",
    "running_sentinels",
]

#: The name the sentinels monitor the primary under (``master_name`` in the settings).
MASTER_NAME = "stomp-primary"
#: Sentinels that must agree the primary is down before one of them fails it over.
QUORUM = 2
#: How long the primary may be silent before a sentinel thinks it down.
DOWN_AFTER_MS = 1000
#: How long a failover may take before sentinels try again with another leader.
FAILOVER_TIMEOUT_MS = 5000


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, protocol=2
    )


def _info(port: int, section: str) -> dict[str, Any]:
    client = _redis(port)
    try:
        return dict(client.info(section))
    finally:
        client.close()


class SentinelSetup:
    """A primary, one replica of it and three sentinels, started and stopped together.

    Attributes:
        primary_port: the first primary's port (SIGKILL it with :meth:`kill_primary`).
        replica_port: the replica's, which the sentinels promote after that.
        sentinel_ports: the three sentinels' ports.
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="stomp-cluster-sentinel-"))
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- what the nodes are given ------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` of the sentinels, for ``{"sentinels": ...}``."""
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def sentinels_env(self) -> str:
        """The sentinels as ``host:port,host:port,...`` (for an environment variable)."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    # -- life cycle --------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        with log:
            self.procs[name] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _server_args(self, name: str, port: int) -> list[str]:
        data = self.dir / name
        data.mkdir(exist_ok=True)
        return [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "notice",
        ]

    def start(self, timeout: float = 30.0) -> SentinelSetup:
        """Start everything and wait until a failover is possible (see the module doc)."""
        try:
            self._spawn("primary", self._server_args("primary", self.primary_port))
            wait_for_port(self.primary_port, proc=self.procs["primary"])
            self._spawn(
                "replica",
                [
                    *self._server_args("replica", self.replica_port),
                    "--replicaof",
                    "127.0.0.1",
                    str(self.primary_port),
                ],
            )
            wait_for_port(self.replica_port, proc=self.procs["replica"])
            for i, port in enumerate(self.sentinel_ports):
                conf = self.dir / f"sentinel-{i}.conf"  # sentinels rewrite their file
                conf.write_text(
                    f"port {port}\n"
                    "bind 127.0.0.1\n"
                    f"dir {self.dir}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} {QUORUM}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                )
                self._spawn(f"sentinel-{i}", [self.binary, str(conf), "--sentinel"])
            for i, port in enumerate(self.sentinel_ports):
                wait_for_port(port, proc=self.procs[f"sentinel-{i}"])
            self._wait(self._ready, timeout, "the replica in sync and the sentinels agreed")
        except BaseException:
            self.close()
            raise
        return self

    def _ready(self) -> bool:
        if _info(self.replica_port, "replication").get("master_link_status") != "up":
            return False
        for port in self.sentinel_ports:
            client = _redis(port)
            try:
                state = client.sentinel_master(MASTER_NAME)
            finally:
                client.close()
            if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                return False
            if int(state["port"]) != self.primary_port:
                return False
        return True

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as exc:  # a process still starting: try again
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"not {what} after {timeout}s (last error: {last!r}); see {self.dir}")

    def master_ports(self) -> list[int | None]:
        """The primary's port as each sentinel sees it now (``None``: no answer)."""
        ports: list[int | None] = []
        for port in self.sentinel_ports:
            client = _redis(port)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                ports.append(int(address[1]) if address else None)
            except Exception:
                ports.append(None)
            finally:
                client.close()
        return ports

    def kill_primary(self) -> None:
        """SIGKILL the first primary, as a crash would, and leave it dead."""
        self._stop("primary", signal.SIGKILL)

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Wait until every sentinel names the replica as primary and it accepts writes.

        Returns the seconds waited.
        """
        started = time.monotonic()

        def promoted() -> bool:
            if self.master_ports() != [self.replica_port] * 3:
                return False
            return _info(self.replica_port, "replication").get("role") == "master"

        self._wait(promoted, timeout, "the replica promoted")
        return time.monotonic() - started

    def replica_offset(self) -> int:
        """The replica's replication offset: how much of the primary's stream it has."""
        info = _info(self.replica_port, "replication")
        return int(info.get("slave_repl_offset", info.get("master_repl_offset", 0)))

    def _stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def log_tails(self, lines: int = 30) -> str:
        """The end of every process's log, for a failing test's message."""
        parts = []
        for name in self.procs:
            path = self.dir / f"{name}.log"
            with contextlib.suppress(OSError):
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"----- {name} -----\n{tail}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every process we started (by pid) and remove the directory."""
        for name in list(self.procs):
            self._stop(name)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_sentinels() -> Iterator[SentinelSetup]:
    """``with running_sentinels() as setup:`` a primary, a replica and three sentinels."""
    setup = SentinelSetup().start()
    try:
        yield setup
    finally:
        setup.close()
