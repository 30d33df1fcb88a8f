"""Fixtures for cluster tests: real redis-server, real daphne/uvicorn nodes, real clients.

- ``redis_server`` (session): our own redis-server on a free port, flushed before a
  cluster starts when no other cluster is running.
- ``db_path`` (session): a migrated SQLite database with the demo users.
- ``cluster`` (factory): ``cluster(2)`` starts node-a and node-b under daphne sharing the
  Redis; ``cluster(1, server="uvicorn")``, ``cluster(servers=["daphne", "uvicorn"])``,
  ``cluster(2, redis=False)`` (in-memory layer), ``node_ttl=...``, ``env={...}``. Nodes are
  stopped at teardown. Node ids already used by a running cluster (``two_nodes``) are
  skipped, so two clusters never share an id on the one Redis.
- ``two_nodes`` (module): a 2-node daphne cluster shared by the tests of a module that
  neither stop nor restart nodes; each test must use destinations of its own.
- ``single_node``: one daphne node on the shared Redis.
- ``tokens``: ``tokens("alice")`` is a CONNECT passcode for alice.

Every test here is marked ``cluster``. When a test fails, the tail of each node's log is
attached to the report.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.nodes import AsgiNode, prepare_database, token_for
from tests.support.procs import RedisServer

# Nodes started and not yet stopped, for the failure report.
_live_nodes: list[AsgiNode] = []

CLUSTER_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and CLUSTER_DIR in Path(str(item.fspath)).parents:
        for node in list(_live_nodes):
            report.sections.append(
                (
                    f"{node.node_id} ({node.server}, port {node.port}) log tail",
                    f"{node.log_path}\n{node.log_tail(40)}",
                )
            )
    return report


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_database(tmp_path_factory.mktemp("cluster-db") / "db.sqlite3")


@pytest.fixture(scope="session")
def tokens(db_path: Path) -> Callable[[str], str]:
    """``tokens("alice")``: a signed CONNECT passcode for alice (cached)."""

    def get(username: str) -> str:
        return token_for(username, str(db_path))

    return get


def node_ids() -> Iterator[str]:
    """node-a, node-b, ... skipping ids of nodes alive in another cluster on our Redis."""
    for suffix in ("", *map(str, range(2, 100))):
        for letter in string.ascii_lowercase:
            node_id = f"node-{letter}{suffix}"
            if all(node.node_id != node_id for node in _live_nodes):
                yield node_id


class ClusterFactory:
    """Starts nodes on demand and stops all of them at teardown."""

    def __init__(self, redis_server: RedisServer, db_path: Path, log_dir: Path) -> None:
        self.redis_server = redis_server
        self.db_path = db_path
        self.log_dir = log_dir
        self.nodes: list[AsgiNode] = []
        self._ids = node_ids()

    def __call__(
        self,
        count: int | None = None,
        *,
        server: str = "daphne",
        servers: Sequence[str] | None = None,
        redis: bool = True,
        node_ttl: float | None = None,
        env: dict[str, str] | None = None,
    ) -> list[AsgiNode]:
        if servers is None:
            servers = [server] * (2 if count is None else count)
        elif count is not None and count != len(servers):
            raise ValueError("count and servers disagree")
        started = [
            AsgiNode(
                next(self._ids),
                db_path=self.db_path,
                redis_url=self.redis_server.url if redis else None,
                server=kind,
                node_ttl=node_ttl,
                env=env,
                log_dir=self.log_dir,
            )
            for kind in servers
        ]
        for node in started:
            self.nodes.append(node)
            _live_nodes.append(node)
            node.spawn()  # boot in parallel
        for node in started:
            node.wait_ready()
        return started

    def stop_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.terminate()
            with contextlib.suppress(ValueError):
                _live_nodes.remove(node)
        self.nodes.clear()


@pytest.fixture
def cluster(redis_server: RedisServer, db_path: Path, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Factory: ``nodes = cluster(2)`` starts node-a and node-b (daphne) on one Redis."""
    if not _live_nodes:
        redis_server.flush()
    factory = ClusterFactory(redis_server, db_path, tmp_path / "logs")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def single_node(cluster: ClusterFactory) -> AsgiNode:
    """One daphne node (node-a) on the shared Redis."""
    return cluster(1)[0]


@pytest.fixture(scope="module")
def _module_cluster(
    redis_server: RedisServer, db_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterFactory]:
    redis_server.flush()
    factory = ClusterFactory(redis_server, db_path, tmp_path_factory.mktemp("logs"))
    try:
        factory(2)
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def two_nodes(_module_cluster: ClusterFactory) -> Iterator[list[AsgiNode]]:
    """node-a and node-b (daphne, one Redis), shared by a module's tests.

    A node that died during a test fails that test's teardown and is restarted, so that
    one crash does not cascade through the module.
    """
    nodes = _module_cluster.nodes
    for node in nodes:
        if not node.is_running():
            node.start()
    yield nodes
    dead = [node for node in nodes if not node.is_running()]
    for node in dead:
        message = node.failure_message(f"{node.node_id} died during the test")
        node.start()
        pytest.fail(message)
