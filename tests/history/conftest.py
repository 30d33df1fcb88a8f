"""Fixtures for the history backends, on the session's redis-server.

Tests may stop or restart that server; ``clean_redis`` (in ``tests/conftest.py``) starts
it again if needed and flushes it, so every test begins with an empty, running Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from stomp_cluster.history.base import HistoryBackend
from stomp_cluster.history.memory import MemoryHistory
from stomp_cluster.history.redis import RedisHistory
from tests.support.backends import make_cluster_history, make_redis_history
from tests.support.procs import RedisServer

MakeHistory = Callable[..., Awaitable[HistoryBackend]]

#: The Redis Cluster runs of the contract suite are slow (six redis-servers), so marked.
ON_CLUSTER = pytest.param("cluster", marks=[pytest.mark.cluster, pytest.mark.slow])


@pytest.fixture(params=["memory", "redis", ON_CLUSTER])
async def make_history(request) -> AsyncIterator[MakeHistory]:
    """Build backends of one kind (each kind in turn) with options; closed after the test.

    Memory backends are separate stores; Redis ones (one Redis, or a Redis Cluster) are
    separate clients of one store.
    """
    made: list[HistoryBackend] = []

    async def make(**options: Any) -> HistoryBackend:
        if request.param == "memory":
            backend: HistoryBackend = MemoryHistory(**options)
        elif request.param == "cluster":
            cluster = request.getfixturevalue("clean_redis_cluster")
            backend = make_cluster_history(cluster, **options)
        else:
            backend = make_redis_history(request.getfixturevalue("clean_redis"), **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def history(make_history: MakeHistory) -> HistoryBackend:
    """An empty backend of each kind, with the default bounds."""
    return await make_history()


@pytest.fixture
async def redis_history(clean_redis: RedisServer) -> AsyncIterator[RedisHistory]:
    """A Redis history backend on the empty test server."""
    backend = make_redis_history(clean_redis)
    yield backend
    await backend.close()
