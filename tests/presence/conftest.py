"""Fixtures for the presence backends: one redis-server of our own for the whole session.

Tests may stop, kill or restart it; the per-test fixtures start it again if needed and
flush it, so every test begins with an empty, running Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio

from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord
from stomp_cluster.presence.memory import MemoryPresence
from stomp_cluster.presence.redis import RedisPresence
from tests.support.procs import RedisServer

PREFIX = "test"


def make_redis_backend(server: RedisServer, **options) -> RedisPresence:
    options = {"prefix": PREFIX, "socket_timeout": 1.0, "max_connections": 20, **options}
    return RedisPresence(hosts=[server.url], **options)


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
    presence = make_redis_backend(clean_redis)
    yield presence
    await presence.close()


@pytest.fixture
async def raw_redis(clean_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at keys behind the backend's back."""
    client = redis.asyncio.Redis.from_url(clean_redis.url, decode_responses=True)
    yield client
    await client.aclose()


# -- records ---------------------------------------------------------------------------


def node(node_id: str = "node-a", *, started_at: float = 1000.0) -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        channel_name=f"specific.{node_id}!",
        started_at=started_at,
        last_heartbeat=time.time(),
        session_count=0,
        alive=True,
    )


def session(
    session_id: str,
    node_id: str = "node-a",
    *,
    user: str | None = None,
    at: float = 1700000000.0,
    subs: tuple[tuple[str, str], ...] = (),
) -> SessionRecord:
    """A session record; *subs* are ``(id, destination)`` pairs with ack ``auto``."""
    return SessionRecord(
        session_id=session_id,
        node_id=node_id,
        channel_name=f"specific.{node_id}!{session_id}",
        user_key=user,
        username="" if user is None else f"name-{user}",
        remote_addr="127.0.0.1",
        user_agent="pytest",
        version="1.2",
        connected_at=at,
        last_seen=at,
        subscriptions=tuple(SubscriptionRecord(i, d, "auto") for i, d in subs),
    )


def sub(sub_id: str, destination: str, ack: str = "auto") -> SubscriptionRecord:
    return SubscriptionRecord(sub_id, destination, ack)


# -- counting what reaches the server --------------------------------------------------


async def monitor_commands(url: str, operation: Callable[[], Awaitable[object]]) -> list[str]:
    """Run *operation* and return the commands clients sent meanwhile, in order.

    Uses MONITOR, which marks the commands that scripts run as coming from "lua": those are
    left out, so the list holds exactly what went over the wire. A marker sent from another
    connection after the operation tells where to stop reading.
    """
    watcher = redis.asyncio.Redis.from_url(url)
    marker_client = redis.asyncio.Redis.from_url(url)
    marker = f"end-of-operation-{uuid.uuid4()}"
    try:
        await marker_client.ping()  # connect now, so that its handshake is not counted
        async with watcher.monitor() as monitor:
            await operation()
            await marker_client.echo(marker)
            commands: list[str] = []
            while True:
                entry = await monitor.next_command()
                if marker in entry["command"]:
                    return commands
                if entry["client_type"] != "lua":
                    commands.append(entry["command"])
    finally:
        await watcher.aclose()
        await marker_client.aclose()


async def command_calls(client: redis.asyncio.Redis) -> dict[str, int]:
    """``INFO commandstats`` as ``{command: calls}`` (script-run commands included)."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def count_round_trips(backend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the pipelines *backend* sends: each is one write and its replies, a round trip.

    *backend* is any Redis backend (presence, history, transport): its ``redis`` connection
    is watched. Returns a list whose length grows by one per round trip (and holds each
    one's size).
    """
    trips: list[int] = []
    original = backend.redis._pipeline

    async def counting(commands):
        trips.append(len(commands))
        return await original(commands)

    monkeypatch.setattr(backend.redis, "_pipeline", counting)
    return trips
