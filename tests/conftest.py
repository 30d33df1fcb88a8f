"""Fixtures shared by the in-process tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from channels.layers import channel_layers

from stomp_cluster import backends
from stomp_cluster.caches import clear_caches
from stomp_cluster.handlers import registry
from stomp_cluster.throttle import login_throttle
from tests.support.procs import RedisServer


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
    """The /app handler registry, restored after the test."""
    saved = list(registry._routes)
    yield registry
    registry._routes[:] = saved


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server of our own for the session (tests/cluster has its own)."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, running and empty (tests may stop or kill it)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server
