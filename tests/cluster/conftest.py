"""Fixtures for cluster tests: real redis-server, real daphne/uvicorn nodes, real clients.

``redis_server``, ``db_path``, ``tokens``, ``cluster`` and ``single_node`` are the
suite's own (``tests/conftest.py``); this adds one cluster shared by a module:

- ``two_nodes``: a 2-node daphne cluster shared by the tests of a module that neither
  stop nor restart nodes; each test must use destinations of its own;
- ``stomppy``, ``stompjs``: factories of connected stomp.py and @stomp/stompjs clients.

Every test here is marked ``cluster``. When a test fails, the tail of each node's log is
attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import StompPyClient
from tests.support.cluster import ClusterFactory
from tests.support.nodes import AsgiNode
from tests.support.procs import RedisServer
from tests.support.stompjs import StompJsClient

CLUSTER_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="module")
def _module_cluster(
    redis_server: RedisServer, db_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterFactory]:
    redis_server.ensure_running()
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


@pytest.fixture
def stomppy(tokens: Callable[[str], str]) -> Iterator[Callable[..., StompPyClient]]:
    """``stomppy(node, user="alice", version="1.2")``: a connected stomp.py client, closed
    after the test."""
    opened: list[StompPyClient] = []

    def make(node: AsgiNode, user: str = "alice", version: str = "1.2") -> StompPyClient:
        c = StompPyClient(node.ws_url, version)
        opened.append(c)
        c.connect(user, tokens(user))
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def stompjs(tokens: Callable[[str], str]) -> Iterator[Callable[..., StompJsClient]]:
    """``stompjs(node, user="alice")``: a connected @stomp/stompjs client (Node), closed
    after the test."""
    opened: list[StompJsClient] = []

    def make(node: AsgiNode, user: str = "alice") -> StompJsClient:
        c = StompJsClient()
        opened.append(c)
        c.connect(node.ws_url, login=user, passcode=tokens(user))
        return c

    yield make
    for c in opened:
        c.close()
