"""What a send says is what happened to it (issue "Faults without silent loss", item 5).

A message kept in the recipient's history is recoverable: a full inbox or a dead node does
not make it a failure (a caller that retried would store a duplicate under a new id), and
the :class:`~stomp_cluster.send.Delivery` tells the live sessions reached apart from the
message kept (``stored``, ``message_id``) and the nodes missed. A node whose heartbeat
lapsed gets no push, in the one-trip script and in the three-step path alike; a user whose
holders are all dead gets the message as pending. ``DeliveryFailed`` is left for what is
truly lost: kept nowhere and not handed over.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster.backends import get_history, get_presence, get_transport
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.send import DEAD_NODE_RECHECK, Delivery
from tests.support.records import remote_node
from tests.test_transport import (
    USER_DESTINATION,
    path_settings,
    paths,
    register,
    uses_one_trip,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]

SMALL_LAYER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2}}
}


async def kill(node_id: str) -> None:
    """Let *node_id*'s heartbeat lapse, as after a SIGKILL, without reaping it."""
    assert await get_presence().heartbeat_node(node_id, 0.05)
    await asyncio.sleep(0.15)
    assert {n.node_id: n.alive for n in await get_presence().nodes()}[node_id] is False


async def revive(node_id: str) -> None:
    # Refreshed; the answer is False because it had lapsed (a real node then fences its
    # sessions, since senders skipped it meanwhile).
    assert await get_presence().heartbeat_node(node_id, 30) is False


# -- Redis: the one-trip script and the three steps ----------------------------------------


@paths
async def test_a_dead_node_gets_no_push_and_counts_as_missed(path, clean_redis, raw_redis):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 2, "far-1": 3})
        assert uses_one_trip() is (path == "one_trip")
        transport, history = get_transport(), get_history()
        assert history is not None
        await kill("far-0")

        delivery = await asend_to_user("ursula", "/queue/n", "hi")

        message_id = await history.last_id("ursula")
        assert delivery == Delivery(3, 1, stored=True, message_id=message_id, missed_nodes=1)
        assert await raw_redis.llen(transport.address("far-0")) == 0  # type: ignore[attr-defined]
        [got] = await transport.receive(transport.address("far-1"))  # type: ignore[attr-defined]
        assert got["id"] == message_id
        # far-1 holds the user live: not pending.
        assert await history.take_pending("ursula", USER_DESTINATION) is None


@paths
async def test_a_user_held_only_by_dead_nodes_gets_the_message_as_pending(
    path, clean_redis, raw_redis
):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 2})
        transport, history = get_transport(), get_history()
        assert history is not None
        await kill("far-0")

        delivery = await asend_to_user("ursula", "/queue/n", "later")

        assert not delivery and delivery.stored and delivery.missed_nodes == 1
        assert await raw_redis.llen(transport.address("far-0")) == 0  # type: ignore[attr-defined]
        assert await history.take_pending("ursula", USER_DESTINATION) == delivery.message_id


@paths
async def test_a_dead_node_full_inbox_never_fails_stored_sends(path, clean_redis, raw_redis):
    # The storm: sends to the users of a killed node go on succeeding (stored).
    with path_settings(path, clean_redis.url, clean_redis.port, capacity=3):
        await register({"far-0": 1})
        history = get_history()
        assert history is not None
        ids = []
        for n in range(10):
            if n == 2:
                await kill("far-0")
            delivery = await asend_to_user("ursula", "/queue/n", f"m{n}")
            assert delivery.stored
            ids.append(delivery.message_id)
        assert len(set(ids)) == 10
        page = await history.read("ursula", "0-0")
        assert [e.body for e in page.entries] == [f"m{n}".encode() for n in range(10)]


@paths
async def test_a_node_that_heartbeats_again_gets_pushes_again(path, clean_redis, raw_redis):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 1})
        transport = get_transport()
        await kill("far-0")
        assert (await asend_to_user("ursula", "/queue/n", "a")).missed_nodes == 1
        await revive("far-0")
        if path == "three_steps":
            await asyncio.sleep(DEAD_NODE_RECHECK)  # the sender's table may say dead so long
        delivery = await asend_to_user("ursula", "/queue/n", "b")
        assert (delivery.sessions, delivery.nodes, delivery.missed_nodes) == (1, 1, 0)
        [got] = await transport.receive(transport.address("far-0"))  # type: ignore[attr-defined]
        assert got["body"] == b"b"


@paths
async def test_a_live_only_send_to_dead_nodes_only_is_not_an_error(path, clean_redis, raw_redis):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 1})
        await kill("far-0")
        delivery = await asend_to_user("ursula", "/queue/n", "x", live_only=True)
        assert delivery == Delivery(0, 0, stored=False, message_id=None, missed_nodes=1)


# -- In memory: the channel layer and the node table ---------------------------------------


@pytest.mark.django_db
@override_settings(CHANNEL_LAYERS=SMALL_LAYER)
async def test_a_full_channel_misses_a_stored_user_send_without_failing_it():
    await remote_node("slow", "specific.slow!s", user="amy", destination="/user/queue/n")
    await remote_node("fast", "specific.fast!f", user="amy", destination="/user/queue/n")
    layer = get_channel_layer()
    for _ in range(2):
        await layer.send("specific.slow!s", {"type": "stomp.publish"})

    delivery = await asend_to_user("amy", "/queue/n", "kept")

    assert delivery.stored and delivery.message_id is not None
    assert (delivery.sessions, delivery.nodes, delivery.missed_nodes) == (1, 1, 1)
    assert (await layer.receive("specific.fast!f"))["id"] == delivery.message_id
    with pytest.raises(DeliveryFailed, match="slow: its channel is full"):
        await asend_to_user("amy", "/queue/n", "lost", live_only=True)


@pytest.mark.django_db
async def test_the_node_table_keeps_dead_nodes_out_of_the_channel_layer_path():
    await remote_node("gone", "specific.gone!g", user="bea", destination="/user/queue/n")
    await remote_node("here", "specific.here!h", user="bea", destination="/user/queue/n")
    await remote_node("gone-t", "specific.gonet!t")
    for node_id in ("gone", "gone-t"):
        await kill(node_id)

    delivery = await asend_to_user("bea", "/queue/n", "hi")
    published = await asend_to_destination("/topic/x", "news")

    assert (delivery.sessions, delivery.nodes, delivery.missed_nodes) == (1, 1, 1)
    assert (published.sessions, published.nodes, published.missed_nodes) == (0, 0, 1)
    assert not published.stored and published.message_id is None
    layer = get_channel_layer()
    assert (await layer.receive("specific.here!h"))["body"] == b"hi"
    for channel in ("specific.gone!g", "specific.gonet!t"):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.05)


def test_delivery_stays_compatible():
    assert Delivery(2, 1) == Delivery(sessions=2, nodes=1, stored=False, message_id=None)
    assert not Delivery(0, 0, stored=True, message_id="1-0")  # no live session reached
    assert Delivery(1, 1)
