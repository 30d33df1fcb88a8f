"""Fixtures shared by the whole suite. Helpers live in ``tests/support/``, never here.

In-process state:

- ``_fresh_cluster_state`` (autouse): a fresh channel layer, presence, history and
  transport for each test.
- ``handlers``: the ``/app`` handler registry, restored after the test.

Our own redis-server (never the machine's Redis on 6379):

- ``redis_server`` (session): one redis-server on a free port for the whole run. Tests
  may stop, kill or restart it.
- ``clean_redis``: that server, running and empty.
- ``raw_redis``: a plain client on ``clean_redis``, to look at keys behind a backend's
  back.

Real nodes (used by ``tests/cluster`` and ``tests/browser``):

- ``db_path`` (session): a migrated SQLite database with the demo users.
- ``tokens``: ``tokens("alice")`` is a CONNECT passcode for alice.
- ``cluster`` (factory): ``cluster(2)`` starts node-a and node-b under daphne sharing the
  Redis; ``cluster(1, server="uvicorn")``, ``cluster(servers=["daphne", "uvicorn"])``,
  ``cluster(2, redis=False)`` (in-memory layer), ``node_ttl=...``, ``env={...}``. Nodes
  are stopped at teardown. Node ids already used by a running cluster are skipped, so two
  clusters never share an id on the one Redis.
- ``single_node``: one daphne node on the shared Redis.

When a test fails while nodes are running, the tail of each node's log is attached to
its report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from channels.layers import channel_layers

from stomp_cluster import backends
from stomp_cluster.caches import clear_caches
from stomp_cluster.handlers import registry, subscribe_registry
from stomp_cluster.throttle import login_throttle
from tests.support.cluster import ClusterFactory, live_nodes, node_log_sections
from tests.support.nodes import AsgiNode, prepare_database, token_for
from tests.support.procs import RedisServer
from tests.support.redis_cluster import RedisCluster


@pytest.fixture(autouse=True)
def _fresh_cluster_state():
    """Each test gets a fresh channel layer, presence backend and node, and no login state."""
    channel_layers.backends.clear()
    backends.reset()
    clear_caches()
    login_throttle.reset()
    yield
    channel_layers.backends.clear()
    backends.reset()


@pytest.fixture
def handlers():
    """The /app handler registries (SEND and SUBSCRIBE), restored after the test."""
    saved = list(registry._routes), list(subscribe_registry._routes)
    yield registry
    registry._routes[:], subscribe_registry._routes[:] = saved


# -- our own redis-server ----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server of our own for the session, on a free port."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, running and empty (tests may stop or kill it)."""
    redis_server.ensure_running()
    redis_server.flush()
    return redis_server


@pytest.fixture
async def raw_redis(clean_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at keys behind the backend's back."""
    client = redis.asyncio.Redis.from_url(clean_redis.url, decode_responses=True)
    yield client
    await client.aclose()


# -- real nodes --------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        report.sections.extend(node_log_sections())
    return report


@pytest.fixture(scope="session")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with the demo users, shared by every node."""
    return prepare_database(tmp_path_factory.mktemp("cluster-db") / "db.sqlite3")


@pytest.fixture(scope="session")
def tokens(db_path: Path) -> Callable[[str], str]:
    """``tokens("alice")``: a signed CONNECT passcode for alice (cached)."""

    def get(username: str) -> str:
        return token_for(username, str(db_path))

    return get


@pytest.fixture
def cluster(redis_server: RedisServer, db_path: Path, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Factory: ``nodes = cluster(2)`` starts node-a and node-b (daphne) on one Redis."""
    redis_server.ensure_running()
    if not live_nodes:
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


# -- a real Redis Cluster ----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of our own for the session: 3 primaries, 3 replicas, free ports.

    Tests may kill primaries (:meth:`RedisCluster.kill_primary_of`); a replica takes over.
    """
    rc = RedisCluster()
    try:
        rc.start()
        yield rc
    finally:
        rc.close()


@pytest.fixture
def clean_redis_cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's Redis Cluster, serving every slot and empty."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster
