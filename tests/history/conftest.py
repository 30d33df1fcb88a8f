"""Fixtures for the history backends: one redis-server of our own for the whole session.

Tests may stop or restart it; the per-test fixtures start it again if needed and flush it,
so every test begins with an empty, running Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from stomp_cluster.history.base import HistoryBackend
from stomp_cluster.history.memory import MemoryHistory
from stomp_cluster.history.redis import RedisHistory
from tests.support.procs import RedisServer

PREFIX = "test"

MakeHistory = Callable[..., Awaitable[HistoryBackend]]


def make_redis_history(server: RedisServer, **options: Any) -> RedisHistory:
    options = {"prefix": PREFIX, "socket_timeout": 1.0, "max_connections": 20, **options}
    return RedisHistory(hosts=[server.url], **options)


@pytest.fixture(params=["memory", "redis"])
async def make_history(request) -> AsyncIterator[MakeHistory]:
    """Build backends of one kind (each kind in turn) with options; closed after the test.

    Memory backends are separate stores; Redis ones are separate clients of one store.
    """
    made: list[HistoryBackend] = []

    async def make(**options: Any) -> HistoryBackend:
        if request.param == "memory":
            backend: HistoryBackend = MemoryHistory(**options)
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
    backend = make_redis_history(clean_redis)
    yield backend
    await backend.close()


@pytest.fixture
async def raw_redis(clean_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at keys behind the backend's back."""
    client = redis.asyncio.Redis.from_url(clean_redis.url, decode_responses=True)
    yield client
    await client.aclose()


def digest(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:20]


def stream_key(user_key: str) -> str:
    return f"{PREFIX}:h:{{{digest(user_key)}}}"
