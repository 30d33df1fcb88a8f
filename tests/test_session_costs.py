"""What a session costs the registry, counted through the consumer on our own redis-server.

The Redis presence backend promises one round trip per registry operation: a connect, a
subscribe, an unsubscribe and a disconnect (which drops the session's subscriptions with
it) each cost one. Its own tests count that at the backend; here a
:class:`~stomp_cluster.testing.StompCommunicator` drives the real consumer, so that a
receiver, the node or the consumer adding a call of its own would show.

A round trip is one write on a connection to Redis (redis-py sends a whole pipeline in
one write) followed by its replies; we count the writes to our server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator

import pytest
from django.test import override_settings
from redis.asyncio.connection import AbstractConnection

from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.counting import monitor_commands
from tests.support.procs import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def redis_presence(clean_redis: RedisServer) -> Iterator[RedisServer]:
    """The node's registry on the test server; no heartbeat during the test."""
    with override_settings(
        STOMP_CLUSTER={
            "NODE_ID": "test-node",
            "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
            "PRESENCE_OPTIONS": {"hosts": [clean_redis.url]},
            "PASSWORD_LOGIN": True,
            # A heartbeat (and its sweep) in the middle of a count would be counted too.
            "NODE_TTL": 3 * 3600.0,
            "NODE_HEARTBEAT_INTERVAL": 3600.0,
        }
    ):
        yield clean_redis


@pytest.fixture
def round_trips(redis_presence: RedisServer, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to the test server from now on, as the first command it carries."""
    writes: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):
        if getattr(self, "port", None) == redis_presence.port:
            chunks = [command] if isinstance(command, bytes | str) else list(command)
            first = chunks[0] if chunks else b""
            writes.append(first.encode() if isinstance(first, str) else first)
        return await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return writes


async def subscribe(c: StompCommunicator, sub_id: str, destination: str) -> None:
    await c.send_frame("SUBSCRIBE", {"id": sub_id, "destination": destination, "receipt": sub_id})
    frame = await c.receive_frame()
    assert frame.command is Command.RECEIPT, frame


async def unsubscribe(c: StompCommunicator, sub_id: str) -> None:
    await c.send_frame("UNSUBSCRIBE", {"id": sub_id, "receipt": f"un-{sub_id}"})
    frame = await c.receive_frame()
    assert frame.command is Command.RECEIPT, frame


async def session_cycle(destination: str = "/topic/costs") -> None:
    """A whole session: connect, subscribe, unsubscribe, disconnect."""
    c = StompCommunicator(application, "/ws")
    await c.connect_stomp()
    await subscribe(c, "s1", destination)
    await unsubscribe(c, "s1")
    await c.disconnect()


async def warmed_up() -> StompCommunicator:
    """A session kept open, after one whole cycle: the node is registered, the pool open
    and every script loaded (a script's first call costs a second trip to load it)."""
    await session_cycle("/topic/warm-up")
    first = StompCommunicator(application, "/ws")
    await first.connect_stomp()
    return first


async def test_connect_subscribe_unsubscribe_and_disconnect_cost_one_round_trip_each(
    round_trips,
):
    first = await warmed_up()
    c = StompCommunicator(application, "/ws")

    async def trips(step: Awaitable[object]) -> int:
        round_trips.clear()
        await step
        return len(round_trips)

    counts = {
        "connect": await trips(c.connect_stomp()),
        "subscribe": await trips(subscribe(c, "s1", "/topic/costs")),
        "unsubscribe": await trips(unsubscribe(c, "s1")),
        "disconnect": await trips(c.disconnect()),
        # Anything the measured session left running would reach Redis before this one.
        "marker": await trips(subscribe(first, "marker", "/topic/marker")),
    }
    await first.disconnect()
    assert counts == {
        "connect": 1,
        "subscribe": 1,
        "unsubscribe": 1,
        "disconnect": 1,
        "marker": 1,
    }


async def test_disconnect_drops_every_subscription_in_the_same_round_trip(round_trips):
    first = await warmed_up()
    c = StompCommunicator(application, "/ws")
    await c.connect_stomp()
    for n in range(5):
        await subscribe(c, f"s{n}", f"/topic/many-{n}")

    round_trips.clear()
    await c.disconnect()
    assert len(round_trips) == 1
    await first.disconnect()


async def test_a_session_sends_one_script_per_registry_write_and_nothing_else(redis_presence):
    first = await warmed_up()
    sent = await monitor_commands(redis_presence.url, session_cycle)
    await first.disconnect()
    commands = [c.split()[0].strip('"').upper() for c in sent]
    # Add the session, add the subscription, remove it, remove the session.
    assert commands == ["EVALSHA"] * 4, commands
