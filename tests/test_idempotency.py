"""A retried send with the same ``idempotency_key`` is not sent twice (real Redis).

What a user sees is counted where it lands: entries in the recipient's history and
messages in the far node's inbox (a Redis list the node would read). A retry with the
same key returns the first call's Delivery, with its ``message_id``, and sends nothing;
another key sends again; once ``IDEMPOTENCY_TTL`` has passed the key sends again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings

from stomp_cluster import (
    asend_to_destination,
    asend_to_session,
    asend_to_user,
    destinations,
    send_to_destination,
)
from stomp_cluster.backends import get_history, get_transport
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.idempotency import MAX_KEY_BYTES
from stomp_cluster.transport import RedisTransport
from tests.support.records import remote_node
from tests.test_transport import register

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]


def on_redis(url: str, ttl: float = 300.0) -> override_settings:
    """Presence, history and transport on the test Redis; keys kept *ttl* seconds."""
    return override_settings(
        STOMP_CLUSTER={
            "NODE_ID": "sender",
            "REDIS": url,
            "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
            "IDEMPOTENCY_TTL": ttl,
        }
    )


@pytest.fixture
async def raw(clean_redis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(clean_redis.url)
    yield client
    await client.aclose()


async def inbox(raw: redis.asyncio.Redis, node_id: str) -> int:
    transport = get_transport()
    assert isinstance(transport, RedisTransport)
    return int(await raw.llen(transport.address(node_id)))


async def history_ids(user: str) -> list[str]:
    history = get_history()
    assert history is not None
    return [entry.id for entry in (await history.read(user, "0-0")).entries]


async def test_a_retried_user_send_with_the_same_key_is_delivered_once(clean_redis, raw):
    with on_redis(clean_redis.url):
        await register({"far-0": 2})

        first = await asend_to_user("ursula", "/queue/n", "pay 10", idempotency_key="order-1")
        again = await asend_to_user("ursula", "/queue/n", "pay 10", idempotency_key="order-1")

        assert first.stored and first.message_id is not None and first.sessions == 2
        assert again == first  # the same Delivery, the same message id
        assert await history_ids("ursula") == [first.message_id]
        assert await inbox(raw, "far-0") == 1


async def test_another_key_or_another_recipient_sends_again(clean_redis, raw):
    with on_redis(clean_redis.url):
        await register({"far-0": 1})
        await register({"far-1": 1}, user="victor")

        first = await asend_to_user("ursula", "/queue/n", "a", idempotency_key="k1")
        other_key = await asend_to_user("ursula", "/queue/n", "b", idempotency_key="k2")
        other_user = await asend_to_user("victor", "/queue/n", "a", idempotency_key="k1")

        assert first.message_id != other_key.message_id
        assert await history_ids("ursula") == [first.message_id, other_key.message_id]
        assert await history_ids("victor") == [other_user.message_id]
        assert await inbox(raw, "far-0") == 2
        assert await inbox(raw, "far-1") == 1


async def test_the_key_sends_again_once_the_window_has_passed(clean_redis, raw):
    with on_redis(clean_redis.url, ttl=0.3):
        await register({"far-0": 1})

        first = await asend_to_user("ursula", "/queue/n", "x", idempotency_key="k")
        within = await asend_to_user("ursula", "/queue/n", "x", idempotency_key="k")
        await asyncio.sleep(0.5)
        after = await asend_to_user("ursula", "/queue/n", "x", idempotency_key="k")

        assert within == first and after.message_id != first.message_id
        assert await history_ids("ursula") == [first.message_id, after.message_id]
        assert await inbox(raw, "far-0") == 2


async def test_concurrent_retries_with_one_key_send_once(clean_redis, raw):
    with on_redis(clean_redis.url):
        await register({"far-0": 1})

        results = await asyncio.gather(
            *(asend_to_user("ursula", "/queue/n", "x", idempotency_key="same") for _ in range(5))
        )

        assert len({r.message_id for r in results}) == 1
        assert len(await history_ids("ursula")) == 1
        assert await inbox(raw, "far-0") == 1


async def test_session_and_destination_sends_take_a_key_too(clean_redis, raw):
    with on_redis(clean_redis.url):
        transport = get_transport()
        assert isinstance(transport, RedisTransport)
        session_id = await remote_node("far-0", transport.address("far-0"), destination="/topic/t")

        sends: list[Any] = [
            lambda: asend_to_session(session_id, "/topic/t", "s", idempotency_key="k"),
            lambda: asend_to_destination("/topic/t", "d", idempotency_key="k"),
        ]
        for send in sends:
            assert await send() == await send()

        assert await inbox(raw, "far-0") == 2  # one each, not two each


async def test_with_redis_down_a_keyed_send_raises_and_sends_nothing(clean_redis):
    with on_redis(clean_redis.url):
        await register({"far-0": 1})
        clean_redis.kill()
        try:
            with pytest.raises(DeliveryFailed):
                await asend_to_user("ursula", "/queue/n", "x", idempotency_key="k")
        finally:
            clean_redis.start()


@override_settings(STOMP_CLUSTER={"HISTORY_TOPICS": ["/topic/alone"]})
def test_the_sync_twin_with_the_memory_backends_sends_once():
    first = send_to_destination("/topic/alone", "x", idempotency_key="k")
    again = send_to_destination("/topic/alone", "x", idempotency_key="k")

    assert first.message_id is not None and again == first
    key = destinations.topic_history_key("/topic/alone")
    assert key is not None
    history = get_history()
    assert history is not None
    entries = async_to_sync(history.read)(key, "0-0").entries
    assert [entry.id for entry in entries] == [first.message_id]


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2 + 1)])
async def test_an_empty_or_too_long_key_is_refused(key):
    with pytest.raises(ValueError, match="idempotency_key of"):
        await asend_to_user("ursula", "/queue/n", "x", idempotency_key=key)


SMALL_LAYER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1}}
}


@pytest.mark.django_db
@override_settings(CHANNEL_LAYERS=SMALL_LAYER)
async def test_a_send_that_failed_frees_its_key_so_the_retry_sends():
    # A topic without history, whose one subscriber's node has a full inbox: the send
    # raises, since the message is kept nowhere. Once the inbox drains, the retry with
    # the same key must send: the first attempt did not.
    await remote_node("slow", "specific.slow!s", destination="/topic/t")
    layer = get_channel_layer()
    await layer.send("specific.slow!s", {"type": "stomp.publish"})

    with pytest.raises(DeliveryFailed, match="its channel is full"):
        await asend_to_destination("/topic/t", "first", idempotency_key="k")
    await layer.receive("specific.slow!s")  # the node reads its inbox
    retried = await asend_to_destination("/topic/t", "retried", idempotency_key="k")

    assert (retried.sessions, retried.nodes) == (1, 1)
    assert (await layer.receive("specific.slow!s"))["body"] == b"retried"
    assert await asend_to_destination("/topic/t", "again", idempotency_key="k") == retried
