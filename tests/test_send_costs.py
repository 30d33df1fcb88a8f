"""What a send costs in Redis commands, counted on our own redis-server (MONITOR).

The registry, the history and the channel layer all live on one real Redis here. A send
to a user must cost the same whatever the number of that user's sockets: routing is per
node, never per socket.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster import send as send_module
from stomp_cluster.backends import get_presence
from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord
from tests.support.counting import command_calls, count_round_trips, monitor_commands

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _node_table_kept(monkeypatch):
    """Keep the senders' cached node table for the whole test.

    It lives two seconds; on a loaded machine the warm-up send and the counted one can be
    further apart than that, and the counted send would also re-read the table.
    """
    monkeypatch.setattr(send_module, "NODE_TABLE_TTL", 3600.0)


def redis_settings(url: str, transport: str = "layer"):
    transport_settings = (
        {
            "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
            "TRANSPORT_OPTIONS": {"hosts": [url]},
        }
        if transport == "redis"
        else {}
    )
    return override_settings(
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [{"address": url, "socket_timeout": 10}],
                    "capacity": 10_000,
                    "prefix": "costs",
                },
            }
        },
        STOMP_CLUSTER={
            "NODE_ID": "sender",
            "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
            "PRESENCE_OPTIONS": {"hosts": [url]},
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
            "HISTORY_OPTIONS": {"hosts": [url]},
            **transport_settings,
        },
    )


async def register(sessions_per_node: int, nodes: int, *, destination: str) -> None:
    presence = get_presence()
    now = time.time()
    for n in range(nodes):
        node_id = f"far-{n}"
        await presence.register_node(
            NodeRecord(node_id, f"specific.far{n}!x", now, now, 0, True), 30
        )
        for s in range(sessions_per_node):
            sid = f"{node_id}-s{s}"
            await presence.add_session(
                SessionRecord(
                    sid, node_id, f"specific.far{n}!x", "ursula", "ursula", "", "", "1.2", now, now
                )
            )
            await presence.add_subscription(
                sid, node_id, SubscriptionRecord("0", destination, "auto")
            )


async def commands_of(url: str, operation) -> list[str]:
    await operation()  # warm up: connections, script loading
    return [c.split()[0].upper() for c in await monitor_commands(url, operation)]


async def user_send_commands(url: str, sessions: int, transport: str = "layer") -> list[str]:
    with redis_settings(url, transport):
        await register(sessions, 2, destination="/user/queue/n")

        async def send():
            delivery = await asend_to_user("ursula", "/queue/n", "hi")
            assert delivery.sessions == 2 * sessions and delivery.nodes == 2

        return await commands_of(url, send)


async def test_send_to_user_costs_the_same_for_one_socket_or_many(clean_redis):
    one = await user_send_commands(clean_redis.url, 1)
    clean_redis.flush()
    many = await user_send_commands(clean_redis.url, 25)
    # The same commands, whatever the number of sockets. The messages to the two node
    # channels go out concurrently, so their commands interleave in any order: compare
    # them as a multiset.
    assert Counter(one) == Counter(many)
    # The registry lookup (node list + one count per node, pipelined), the history append
    # (one script), then one message per node channel.
    assert one[:4] == ["ZRANGE", "SCARD", "SCARD", "EVALSHA"]
    assert one.count("ZADD") == 2


async def test_topic_send_is_one_message_per_node_not_per_subscriber(clean_redis):
    with redis_settings(clean_redis.url):
        await register(50, 3, destination="/topic/wide")

        async def send():
            delivery = await asend_to_destination("/topic/wide", "all")
            assert (delivery.sessions, delivery.nodes) == (150, 3)

        commands = await commands_of(clean_redis.url, send)
    assert commands.count("ZADD") == 3  # one message per node channel


async def test_with_the_redis_transport_a_user_send_is_one_script_whatever_the_sockets(
    clean_redis, raw_redis
):
    one = await user_send_commands(clean_redis.url, 1, "redis")
    clean_redis.flush()
    many = await user_send_commands(clean_redis.url, 25, "redis")
    assert one == many == ["EVALSHA"]  # what the sender sent (MONITOR omits Lua's)

    # What the script ran (INFO commandstats counts Lua's commands too): it looks the user
    # up on each node, appends to the history and pushes once to each node inbox.
    with redis_settings(clean_redis.url, "redis"):
        before = await command_calls(raw_redis)
        await asend_to_user("ursula", "/queue/n", "counted")
        after = await command_calls(raw_redis)
    ran = {name: after[name] - before.get(name, 0) for name in after}
    assert ran["scard"] == 2 and ran["xadd"] == 1 and ran["rpush"] == 2, ran


async def test_with_the_redis_transport_a_user_send_is_one_round_trip(clean_redis, monkeypatch):
    from stomp_cluster.backends import get_history, get_transport

    with redis_settings(clean_redis.url, "redis"):
        await register(3, 2, destination="/user/queue/n")
        await asend_to_user("ursula", "/queue/n", "warm-up")  # connections, script loading
        trips = [
            count_round_trips(backend, monkeypatch)
            for backend in (get_presence(), get_history(), get_transport())
        ]
        delivery = await asend_to_user("ursula", "/queue/n", "hi")
    assert (delivery.sessions, delivery.nodes) == (6, 2)
    assert [len(t) for t in trips] == [0, 0, 1]
