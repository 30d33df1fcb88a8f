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
from tests.support.backends import make_redis_backend
from tests.support.procs import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def backend(request) -> AsyncIterator[MemoryPresence | RedisPresence]:
    """Each backend in turn, empty; closed after the test."""
    if request.param == "memory":
        presence: MemoryPresence | RedisPresence = MemoryPresence()
    else:
        presence = make_redis_backend(request.getfixturevalue("clean_redis"))
    yield presence
    await presence.close()


@pytest.fixture
async def peer(request, backend) -> AsyncIterator[MemoryPresence | RedisPresence]:
    """Another view of *backend*'s data, as a second node (own client for Redis) sees it."""
    if isinstance(backend, MemoryPresence):
        yield backend
        return
    other = make_redis_backend(request.getfixturevalue("clean_redis"))
    yield other
    await other.close()


@pytest.fixture
async def redis_backend(clean_redis: RedisServer) -> AsyncIterator[RedisPresence]:
    """A Redis presence backend on the empty test server."""
    presence = make_redis_backend(clean_redis)
    yield presence
    await presence.close()
