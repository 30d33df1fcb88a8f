"""Fixtures for the presence backends, on the session's redis-server.

Tests may stop, kill or restart that server; ``clean_redis`` (in ``tests/conftest.py``)
starts it again if needed and flushes it, so every test begins with an empty, running
Redis. Records and counting helpers are in ``tests/support/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stomp_cluster.presence.memory import MemoryPresence
from stomp_cluster.presence.redis import RedisPresence
from tests.support.backends import make_cluster_backend, make_redis_backend
from tests.support.procs import RedisServer

#: The Redis Cluster runs of the contract suites are slow (six redis-servers), so marked.
ON_CLUSTER = pytest.param("cluster", marks=[pytest.mark.cluster, pytest.mark.slow])


def _make(request) -> RedisPresence:
    if request.param == "cluster":
        return make_cluster_backend(request.getfixturevalue("clean_redis_cluster"))
    return make_redis_backend(request.getfixturevalue("clean_redis"))


@pytest.fixture(params=["memory", "redis", ON_CLUSTER])
async def backend(request) -> AsyncIterator[MemoryPresence | RedisPresence]:
    """Each backend in turn (memory, one Redis, a Redis Cluster), empty; closed after."""
    if request.param == "memory":
        presence: MemoryPresence | RedisPresence = MemoryPresence()
    else:
        presence = _make(request)
    yield presence
    await presence.close()


@pytest.fixture
async def peer(request, backend) -> AsyncIterator[MemoryPresence | RedisPresence]:
    """Another view of *backend*'s data, as a second node (own client for Redis) sees it."""
    if isinstance(backend, MemoryPresence):
        yield backend
        return
    if backend.redis.cluster is not None:
        other = make_cluster_backend(request.getfixturevalue("clean_redis_cluster"))
    else:
        other = make_redis_backend(request.getfixturevalue("clean_redis"))
    yield other
    await other.close()


@pytest.fixture
async def redis_backend(clean_redis: RedisServer) -> AsyncIterator[RedisPresence]:
    """A Redis presence backend on the empty test server."""
    presence = make_redis_backend(clean_redis)
    yield presence
    await presence.close()
