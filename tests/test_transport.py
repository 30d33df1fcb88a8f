"""The Redis node transport on our own redis-server: what senders and nodes see.

A node reads its inbox (a Redis list) with :meth:`RedisTransport.receive`; senders push
with :meth:`~RedisTransport.send`, or, when the presence registry, the history and the
transport share one Redis, with the one-trip :meth:`~RedisTransport.send_to_user` that
:func:`stomp_cluster.asend_to_user` uses. The user-facing tests run on both paths, which
must look the same from outside.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from channels.exceptions import ChannelFull
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from stomp_cluster import asend_to_user
from stomp_cluster.backends import get_history, get_presence, get_transport
from stomp_cluster.checks import check_settings
from stomp_cluster.exceptions import (
    BackendUnavailable,
    DeliveryFailed,
    PresenceUnavailable,
    TransportUnavailable,
)
from stomp_cluster.node import get_node
from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord
from stomp_cluster.redis_connection import cluster_nodes
from stomp_cluster.send import Delivery
from stomp_cluster.transport import ChannelLayerTransport, RedisTransport
from tests.support.backends import cluster_url
from tests.support.counting import count_round_trips
from tests.support.procs import free_port
from tests.support.waiting import await_until as eventually

pytestmark = pytest.mark.timeout(60)

USER_DESTINATION = "/user/queue/n"


@pytest.fixture(
    params=["redis", pytest.param("cluster", marks=[pytest.mark.cluster, pytest.mark.slow])]
)
def transport_host(request) -> str:
    """Where the transports of a test run: our redis-server, then our Redis Cluster."""
    if request.param == "cluster":
        return cluster_url(request.getfixturevalue("clean_redis_cluster"))
    return request.getfixturevalue("clean_redis").url


@pytest.fixture
async def make_transport(transport_host) -> AsyncIterator[Callable[..., RedisTransport]]:
    """RedisTransports on the test server (or cluster), closed after the test."""
    made: list[RedisTransport] = []

    def make(**options: Any) -> RedisTransport:
        transport = RedisTransport(hosts=[transport_host], **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def raw(clean_redis) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain binary client, to look at inboxes behind the transport's back."""
    client = redis.asyncio.Redis.from_url(clean_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def raw_inbox(transport_host) -> AsyncIterator[Any]:
    """A plain binary client where ``make_transport``'s transports are (server or
    cluster), to look at inboxes behind their back."""
    if transport_host.startswith("redis+cluster://"):
        host, port = cluster_nodes(transport_host)[0]
        client: Any = redis.asyncio.RedisCluster(host=host, port=port)
    else:
        client = redis.asyncio.Redis.from_url(transport_host)
    yield client
    await client.aclose()


def message(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "stomp.user",
        "user": "ursula",
        "destination": USER_DESTINATION,
        "body": f"m{n}".encode(),
        "headers": (("n", str(n)),),
        **extra,
    }


async def blocked_clients(transport: RedisTransport, count: int, address: str) -> None:
    """Wait until *count* clients wait in a blocking pop on the Redis of *address*."""
    client: Any = transport.redis.client()
    # On a cluster, ask the primary of the inbox's slot only.
    target = {}
    if isinstance(client, redis.asyncio.RedisCluster):
        await client.initialize()  # learn the slot map
        target = {"target_nodes": client.get_node_from_key(address)}
    deadline = time.monotonic() + 10
    while (await client.info("clients", **target))["blocked_clients"] != count:
        assert time.monotonic() < deadline, "no receive waits in Redis"
        await asyncio.sleep(0.01)


# -- send and receive ------------------------------------------------------------------


async def test_a_message_comes_back_as_sent_with_headers_as_lists(make_transport):
    transport = make_transport()
    address = await transport.open("n1")
    sent = {
        "type": "stomp.user",
        "user": "üsula",
        "destination": "/user/queue/ñ",
        "body": b"\xc1\x00\xff binary",
        "headers": (("content-type", "application/octet-stream"), ("x-empty", "")),
        "count": 3,
    }
    await transport.send(address, sent)
    [got] = await transport.receive(address)
    assert got == {
        **sent,
        "headers": [["content-type", "application/octet-stream"], ["x-empty", ""]],
    }
    assert type(got["body"]) is bytes
    assert all(type(got[k]) is str for k in ("type", "user", "destination"))
    assert "id" not in got  # only a history id adds one
    # Node.deliver reads the headers as (name, value) pairs of str.
    assert tuple((str(k), str(v)) for k, v in got["headers"]) == sent["headers"]


async def test_messages_come_back_in_order_at_most_batch_per_receive(make_transport):
    transport = make_transport(batch=3)
    address = await transport.open("n1")
    for n in range(7):
        await transport.send(address, message(n))
    batches = [await transport.receive(address) for _ in range(3)]
    assert [[m["body"] for m in batch] for batch in batches] == [
        [b"m0", b"m1", b"m2"],
        [b"m3", b"m4", b"m5"],
        [b"m6"],
    ]


async def test_a_waiting_receive_wakes_up_on_a_push(make_transport):
    transport = make_transport(socket_timeout=4.0)
    assert transport.block == 1.0
    address = await transport.open("n1")
    sender = make_transport()  # another process's view of the same inbox
    await transport.receive(address)  # connect and learn the server version first
    receiving = asyncio.ensure_future(transport.receive(address))
    await blocked_clients(sender, 1, address)  # the receive waits in Redis now
    await sender.send(address, message(0))
    await sender.send(address, message(1))
    got = list(await receiving)
    assert got  # woken by the push: a timed-out wait would have returned nothing
    if len(got) < 2:
        got += await transport.receive(address)
    assert [m["body"] for m in got] == [b"m0", b"m1"]


async def test_an_empty_inbox_gives_nothing_after_about_block_seconds(make_transport):
    transport = make_transport(socket_timeout=0.6)
    assert transport.block == pytest.approx(0.3)
    address = await transport.open("n1")
    for _ in range(2):  # idle is not an outage, however long it lasts
        start = time.monotonic()
        assert list(await transport.receive(address)) == []
        assert 0.25 <= time.monotonic() - start < 2.0


async def test_an_idle_receive_is_not_an_outage_even_with_the_shortest_socket_timeout(
    make_transport,
):
    # Redis ends a blocking pop up to 100 ms late (hz 10): the wait must leave room.
    transport = make_transport(socket_timeout=0.5)
    address = await transport.open("n1")
    for _ in range(5):
        assert list(await transport.receive(address)) == []
    with pytest.raises(ImproperlyConfigured, match="at least 0.5 s"):
        RedisTransport(socket_timeout=0.2)


async def test_a_cancelled_receive_leaves_the_inbox_usable(make_transport):
    transport = make_transport(socket_timeout=2.0)
    address = await transport.open("n1")
    waiting = asyncio.ensure_future(transport.receive(address))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await transport.send(address, message(7))
    [got] = await transport.receive(address)
    assert got["body"] == b"m7"


async def test_a_full_inbox_refuses_sends_until_it_is_read(make_transport, raw_inbox):
    raw = raw_inbox
    transport = make_transport(capacity=3)
    address = await transport.open("n1")
    for n in range(3):
        await transport.send(address, message(n))
    with pytest.raises(ChannelFull):
        await transport.send(address, message(3))
    assert await raw.llen(address) == 3  # the refused one is not in it
    assert [m["body"] for m in await transport.receive(address)] == [b"m0", b"m1", b"m2"]
    await transport.send(address, message(4))
    assert [m["body"] for m in await transport.receive(address)] == [b"m4"]


async def test_open_returns_the_node_inbox_and_empties_what_an_earlier_process_left(
    make_transport, raw_inbox
):
    raw = raw_inbox
    earlier = make_transport()
    old_address = await earlier.open("n1")
    await earlier.send(old_address, message(0))
    await earlier.send(earlier.address("n2"), message(1))

    restarted = make_transport()
    address = await restarted.open("n1")
    assert re.fullmatch(r"stomp_cluster:inbox:\{[0-9a-f]{20}\}", address)
    # The node's hash tag, as the presence registry's keys of that node carry it.
    tag = hashlib.sha1(b"n1").hexdigest()[:20]
    assert address == f"stomp_cluster:inbox:{{{tag}}}"
    assert address == old_address == restarted.address("n1")
    assert await raw.llen(address) == 0
    assert await raw.llen(restarted.address("n2")) == 1  # other nodes' inboxes are kept
    assert make_transport(prefix="other").address("n1").startswith("other:inbox:{")


async def test_an_inbox_expires_after_its_last_push(make_transport, raw_inbox):
    raw = raw_inbox
    transport = make_transport(expiry=5)
    address = await transport.open("n1")
    await transport.send(address, message(0))
    assert 0 < await raw.pttl(address) <= 5000

    short = make_transport(expiry=1)
    await short.send(address, message(1))
    assert 0 < await raw.pttl(address) <= 1000  # each push sets it again
    deadline = time.monotonic() + 10
    while await raw.exists(address):  # nobody reads it: it goes
        assert time.monotonic() < deadline, "the inbox never expired"
        await asyncio.sleep(0.05)


# -- failures and configuration ----------------------------------------------------------


async def test_unreachable_redis_raises_transport_unavailable_quickly():
    port = free_port()  # nothing listens there
    transport = RedisTransport(hosts=[f"redis://127.0.0.1:{port}/0"], socket_timeout=0.5)
    address = transport.address("n1")
    try:
        for operation in (
            lambda: transport.send(address, message(0)),
            lambda: transport.receive(address),
            lambda: transport.open("n1"),
        ):
            start = time.monotonic()
            with pytest.raises(TransportUnavailable, match="^transport unreachable: ") as info:
                await operation()
            assert not isinstance(info.value, PresenceUnavailable)
            assert time.monotonic() - start < 3.0
    finally:
        await transport.close()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"hosts": []}, "at least one entry in 'hosts'"),
        ({"prefix": "a{b}"}, "'prefix' must be non-empty and without braces, got 'a{b}'"),
        ({"prefix": ""}, "'prefix' must be non-empty"),
        ({"capacity": 0}, "'capacity' must be a positive int, got 0"),
        ({"capacity": 1.5}, "'capacity' must be a positive int, got 1.5"),
        ({"batch": 0}, "'batch' must be a positive int, got 0"),
        ({"expiry": 0}, "'expiry' must be positive, got 0"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, words):
    with pytest.raises(ImproperlyConfigured, match=re.escape(words)):
        RedisTransport(**options)


def test_the_system_check_reports_bad_transport_settings():
    path = "stomp_cluster.transport.RedisTransport"
    with override_settings(STOMP_CLUSTER={"TRANSPORT_BACKEND": path}):
        assert check_settings() == []
    with override_settings(
        STOMP_CLUSTER={"TRANSPORT_BACKEND": path, "TRANSPORT_OPTIONS": {"capacity": 0}}
    ):
        [error] = check_settings()
    assert error.id == "stomp_cluster.E010"
    assert error.msg.startswith(f"{path} refuses STOMP_CLUSTER['TRANSPORT_OPTIONS']")
    assert "'capacity' must be a positive int" in error.msg
    with override_settings(STOMP_CLUSTER={"TRANSPORT_BACKEND": "nowhere.Transport"}):
        [error] = check_settings()
    assert error.id == "stomp_cluster.E009"
    assert error.msg.startswith("TRANSPORT_BACKEND 'nowhere.Transport' cannot be imported")


# -- asend_to_user over the transport ----------------------------------------------------


def cluster_settings(
    url: str,
    *,
    node_id: str = "sender",
    history: bool = True,
    presence_hosts: list[Any] | None = None,
    transport_hosts: list[Any] | None = None,
    transport_backend: str = "stomp_cluster.transport.RedisTransport",
    **transport_options: Any,
) -> override_settings:
    """Presence, history and transport on *url*, unless told otherwise."""
    return override_settings(
        STOMP_CLUSTER={
            "NODE_ID": node_id,
            "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
            "PRESENCE_OPTIONS": {"hosts": presence_hosts or [url]},
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory" if history else None,
            "HISTORY_OPTIONS": {"hosts": [url]},
            "TRANSPORT_BACKEND": transport_backend,
            "TRANSPORT_OPTIONS": {"hosts": transport_hosts or [url], **transport_options},
        }
    )


def path_settings(path: str, url: str, port: int, **options: Any) -> override_settings:
    """*path* "one_trip": all on one host entry; "three_steps": the transport's host
    is the same server written differently, so it is not known to be shared."""
    if path == "three_steps":
        options["transport_hosts"] = [("127.0.0.1", port)]
    return cluster_settings(url, **options)


async def register(sessions: dict[str, int], *, user: str = "ursula") -> None:
    """Nodes with *user*'s sessions (subscribed to /user/queue/n), as far nodes write them."""
    presence, transport = get_presence(), get_transport()
    assert isinstance(transport, RedisTransport)
    now = time.time()
    for node_id, count in sessions.items():
        inbox = transport.address(node_id)
        await presence.register_node(NodeRecord(node_id, inbox, now, now, 0, True), 30)
        for s in range(count):
            sid = f"{node_id}-{user}-{s}"
            await presence.add_session(
                SessionRecord(sid, node_id, inbox, user, user, "", "", "1.2", now, now)
            )
            await presence.add_subscription(
                sid, node_id, SubscriptionRecord("0", USER_DESTINATION, "auto")
            )


def uses_one_trip() -> bool:
    transport = get_transport()
    assert isinstance(transport, RedisTransport)
    return transport.shares_redis_with(get_presence(), get_history())


paths = pytest.mark.parametrize("path", ["one_trip", "three_steps"])


@paths
async def test_a_user_send_lands_once_in_each_far_inbox_with_its_history_id(
    path, clean_redis, raw, monkeypatch
):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 2, "far-1": 3})
        transport, history = get_transport(), get_history()
        assert isinstance(transport, RedisTransport) and history is not None
        assert uses_one_trip() is (path == "one_trip")
        lookups = count_round_trips(get_presence(), monkeypatch)

        delivery = await asend_to_user("ursula", "/queue/n", "hi", headers={"x-k": "v"})

        assert delivery == Delivery(5, 2, stored=True, message_id=delivery.message_id)
        # The one-trip script reads the registry itself; otherwise presence is asked.
        assert (lookups == []) is (path == "one_trip")
        message_id = await history.last_id("ursula")
        assert message_id is not None and message_id == delivery.message_id
        [entry] = (await history.read("ursula", "0-0")).entries
        assert (entry.id, entry.destination, entry.body) == (message_id, USER_DESTINATION, b"hi")
        for node_id in ("far-0", "far-1"):
            address = transport.address(node_id)
            [element] = await raw.lrange(address, 0, -1)
            if path == "one_trip":
                assert element.startswith(b"\xc1" + message_id.encode() + b"\0")
            [got] = await transport.receive(address)
            assert got == {
                "type": "stomp.user",
                "user": "ursula",
                "destination": USER_DESTINATION,
                "body": b"hi",
                "headers": [["x-k", "v"], ["content-type", "text/plain;charset=utf-8"]],
                "id": message_id,
            }
        assert await raw.exists(transport.address("sender")) == 0
        # The user was online: nothing waits for the next subscription.
        assert await history.take_pending("ursula", USER_DESTINATION) is None


@paths
async def test_a_send_to_an_offline_user_waits_in_the_history(path, clean_redis, raw):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 1})  # somebody else is online
        assert uses_one_trip() is (path == "one_trip")
        history = get_history()
        assert history is not None

        delivery = await asend_to_user("olga", "/queue/n", "later")

        message_id = await history.last_id("olga")
        assert delivery == Delivery(0, 0, stored=True, message_id=message_id)
        assert message_id is not None
        [entry] = (await history.read("olga", "0-0")).entries
        assert (entry.id, entry.body) == (message_id, b"later")
        assert await history.take_pending("olga", "/user/queue/other") is None
        assert await history.take_pending("olga", USER_DESTINATION) == message_id
        assert await history.take_pending("olga", USER_DESTINATION) is None
        assert await raw.llen(get_transport().address("far-0")) == 0


@paths
async def test_a_live_only_send_keeps_no_history_and_carries_no_id(path, clean_redis, raw):
    with path_settings(path, clean_redis.url, clean_redis.port):
        await register({"far-0": 2})
        assert uses_one_trip() is (path == "one_trip")
        transport, history = get_transport(), get_history()
        assert history is not None
        address = transport.address("far-0")  # type: ignore[attr-defined]

        delivery = await asend_to_user("ursula", "/queue/n", "now", live_only=True)

        assert delivery == Delivery(sessions=2, nodes=1)
        assert await history.last_id("ursula") is None
        [element] = await raw.lrange(address, 0, -1)
        assert element[0] != 0xC1
        [got] = await transport.receive(address)
        assert got["body"] == b"now" and "id" not in got

        # Offline and live only: nothing kept, nothing pending.
        assert await asend_to_user("olga", "/queue/n", "gone", live_only=True) == Delivery(0, 0)
        assert await history.last_id("olga") is None
        assert await history.take_pending("olga", USER_DESTINATION) is None


@paths
async def test_a_full_inbox_misses_a_stored_send_but_fails_a_live_only_one(path, clean_redis, raw):
    with path_settings(path, clean_redis.url, clean_redis.port, capacity=2):
        await register({"far-0": 2, "far-1": 3})
        assert uses_one_trip() is (path == "one_trip")
        transport, history = get_transport(), get_history()
        assert history is not None
        full = transport.address("far-0")  # type: ignore[attr-defined]
        for n in range(2):
            await transport.send(full, message(n))

        # Stored in the history: recoverable, so not a failure (a retry would duplicate).
        delivery = await asend_to_user("ursula", "/queue/n", "hi")

        message_id = await history.last_id("ursula")
        assert delivery == Delivery(3, 1, stored=True, message_id=message_id, missed_nodes=1)
        assert delivery  # far-1's sessions got it
        [got] = await transport.receive(transport.address("far-1"))  # type: ignore[attr-defined]
        assert (got["body"], got["id"]) == (b"hi", message_id)

        # Kept nowhere: truly lost for far-0, so the caller is told.
        with pytest.raises(DeliveryFailed, match="far-0") as failed:
            await asend_to_user("ursula", "/queue/n", "now", live_only=True)

        assert failed.value.reached == 3  # far-1's sessions only
        assert [m["body"] for m in await transport.receive(full)] == [b"m0", b"m1"]
        [got] = await transport.receive(transport.address("far-1"))  # type: ignore[attr-defined]
        assert got["body"] == b"now"


async def test_hosts_not_known_to_be_shared_take_the_three_steps(clean_redis, raw, monkeypatch):
    url, port = clean_redis.url, clean_redis.port
    equivalent = [("127.0.0.1", port)]
    with cluster_settings(url):
        assert uses_one_trip()
    with cluster_settings(url, history=False):
        assert uses_one_trip()  # no history: nothing else to share
    with cluster_settings(url, transport_hosts=equivalent):
        assert not uses_one_trip()
    with cluster_settings(url, history=False, presence_hosts=equivalent):
        assert get_history() is None and not uses_one_trip()
        await register({"far-0": 1, "far-1": 2})
        lookups = count_round_trips(get_presence(), monkeypatch)

        delivery = await asend_to_user("ursula", "/queue/n", "routed")

        assert delivery == Delivery(sessions=3, nodes=2)
        assert len(lookups) >= 1  # the registry lookup went through presence
        transport = get_transport()
        for node_id in ("far-0", "far-1"):
            [got] = await transport.receive(transport.address(node_id))  # type: ignore[attr-defined]
            assert got["body"] == b"routed" and "id" not in got


async def test_a_send_while_redis_is_down_fails_with_delivery_failed():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(
        STOMP_CLUSTER={
            "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
            "PRESENCE_OPTIONS": {"hosts": [url], "socket_timeout": 0.5},
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
            "HISTORY_OPTIONS": {"hosts": [url], "socket_timeout": 0.5},
            "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
            "TRANSPORT_OPTIONS": {"hosts": [url], "socket_timeout": 0.5},
        }
    ):
        assert uses_one_trip()
        start = time.monotonic()
        with pytest.raises(DeliveryFailed):
            await asend_to_user("ursula", "/queue/n", "lost")
        assert time.monotonic() - start < 3.0


async def test_only_the_redis_transport_sharing_redis_sends_in_one_trip(clean_redis):
    """``send_to_user`` is the optional one-trip shortcut: None means "route normally"."""
    user_send = {"type": "stomp.user", "user": "u", "destination": USER_DESTINATION}
    message_ = {**user_send, "body": b"", "headers": ()}
    with cluster_settings(clean_redis.url):
        presence, history = get_presence(), get_history()
        assert (
            await ChannelLayerTransport().send_to_user(
                presence, history, "u", message_, local_node=""
            )
            is None
        )
    with cluster_settings(clean_redis.url, transport_hosts=[("127.0.0.1", clean_redis.port)]):
        transport = get_transport()
        assert (
            await transport.send_to_user(
                get_presence(), get_history(), "u", message_, local_node=""
            )
            is None
        )
        assert await get_history().last_id("u") is None  # nothing was done
    with cluster_settings(clean_redis.url):
        sent = await get_transport().send_to_user(
            get_presence(), get_history(), "u", message_, local_node=""
        )
        assert sent is not None and sent.nodes == {}
        assert sent.message_id == await get_history().last_id("u")


async def test_the_one_trip_send_names_the_transport_when_redis_is_down():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with cluster_settings(url):
        with pytest.raises(TransportUnavailable, match="^transport unreachable: ") as info:
            await get_transport().send_to_user(
                get_presence(),
                get_history(),
                "u",
                {"type": "stomp.user", "destination": USER_DESTINATION, "body": b"", "headers": ()},
                local_node="",
            )
        assert isinstance(info.value, BackendUnavailable)
        await get_transport().close()


# -- a started node ----------------------------------------------------------------------


@pytest.fixture
async def started_node(clean_redis):
    """Node "n1" started on the test server, with its transport, presence and history."""
    with cluster_settings(clean_redis.url, node_id="n1"):
        node = get_node()
        await node.ensure_started()
        transport, presence, history = get_transport(), get_presence(), get_history()
        assert isinstance(transport, RedisTransport) and history is not None
        try:
            yield node, transport, presence, history
        finally:
            await node.stop()
            await transport.close()


class StubSession:
    """What Node needs of a consumer: an id, the user of /user/ subscriptions, delivery."""

    def __init__(self, session_id: str, user: str) -> None:
        self.session_id = session_id
        self.user = user
        self.delivered: list[tuple[str, bytes, tuple[tuple[str, str], ...], str | None]] = []

    def user_destination_key(self, destination: str) -> str | None:
        return self.user if destination.startswith("/user/") else None

    def deliver(self, destination, body, headers, message_id=None, prepared=None) -> int:
        self.delivered.append((destination, body, headers, message_id))
        return 1

    def deliver_session(self, destination, body, headers) -> int:
        return self.deliver(destination, body, headers)


async def test_a_started_node_reads_its_inbox_and_delivers(started_node):
    node, transport, presence, history = started_node
    assert node.channel_name == transport.address("n1")
    [record] = await presence.nodes()
    assert (record.node_id, record.channel_name) == ("n1", node.channel_name)
    stub = StubSession("s1", "ursula")
    node.add_session(stub)  # type: ignore[arg-type]
    node.subscribe(stub, USER_DESTINATION)  # type: ignore[arg-type]

    # A session-addressed message, as another node pushes it.
    await transport.send(
        node.channel_name,
        {
            "type": "stomp.session",
            "session": "s1",
            "destination": "/queue/x",
            "body": b"hello",
            "headers": (("a", "1"),),
        },
    )
    await eventually(lambda: stub.delivered)
    assert stub.delivered == [("/queue/x", b"hello", (("a", "1"),), None)]

    # A user message, as another node's one-trip send pushes it: with its id.
    now = time.time()
    await presence.add_session(
        SessionRecord("s1", "n1", node.channel_name, "ursula", "ursula", "", "", "1.2", now, now)
    )
    sent = await transport.send_to_user(
        presence,
        history,
        "ursula",
        {
            "type": "stomp.user",
            "user": "ursula",
            "destination": USER_DESTINATION,
            "body": b"for you",
            "headers": (("k", "v"),),
        },
        local_node="elsewhere",
    )
    assert sent is not None
    assert sent.nodes == {"n1": 1} and sent.full == frozenset()
    assert sent.message_id == await history.last_id("ursula")
    await eventually(lambda: len(stub.delivered) == 2)
    assert stub.delivered[1] == (
        USER_DESTINATION,
        b"for you",
        (("k", "v"),),
        sent.message_id,
    )


async def test_a_started_node_delivers_its_own_sessions_without_its_inbox(started_node, raw):
    node, transport, presence, history = started_node
    stub = StubSession("s1", "ursula")
    node.add_session(stub)  # type: ignore[arg-type]
    node.subscribe(stub, USER_DESTINATION)  # type: ignore[arg-type]
    now = time.time()
    await presence.add_session(
        SessionRecord("s1", "n1", node.channel_name, "ursula", "ursula", "", "", "1.2", now, now)
    )
    await presence.add_subscription("s1", "n1", SubscriptionRecord("0", USER_DESTINATION, "auto"))
    await register({"far-0": 1})

    delivery = await asend_to_user("ursula", "/queue/n", "both")

    message_id = await history.last_id("ursula")
    assert delivery == Delivery(2, 2, stored=True, message_id=message_id)
    # Delivered here at once, with the history id...
    assert [(d[1], d[3]) for d in stub.delivered] == [(b"both", message_id)]
    [got] = await transport.receive(transport.address("far-0"))
    assert got["id"] == message_id
    # ...and not a second time through this node's own inbox: a marker pushed to it after
    # the send arrives right after the first delivery, with nothing in between.
    await transport.send(
        node.channel_name,
        {"type": "stomp.session", "session": "s1", "destination": "/queue/marker", "body": b""},
    )
    await eventually(lambda: len(stub.delivered) >= 2)
    assert [d[0] for d in stub.delivered] == [USER_DESTINATION, "/queue/marker"]
    assert await raw.llen(node.channel_name) == 0


class SwallowingTransport(RedisTransport):
    """Swallows the first cancellation of a receive, as redis-py does on Python 3.11.

    There, redis-py writes each command under ``asyncio.wait_for``, which returns the
    result instead of raising when the task is cancelled just as the write completes
    (CPython gh-86296): ``receive`` then returns normally from a cancelled task.
    """

    swallowed = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.receiving = asyncio.Event()  # set once the listener has called receive

    async def receive(self, address: str) -> Any:
        self.receiving.set()
        try:
            return await super().receive(address)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            return ()


async def test_node_stop_returns_even_if_a_receive_swallowed_its_cancellation(clean_redis):
    with cluster_settings(
        clean_redis.url, node_id="n1", transport_backend=f"{__name__}.SwallowingTransport"
    ):
        node = get_node()
        await node.ensure_started()
        transport = get_transport()
        assert isinstance(transport, SwallowingTransport)
        listener = node._tasks[0]
        await asyncio.wait_for(transport.receiving.wait(), 10)  # the listener waits in it
        stopping = asyncio.ensure_future(node.stop())
        try:
            done, _ = await asyncio.wait([stopping], timeout=10)
            assert transport.swallowed == 1
            assert stopping in done, "Node.stop() did not return"
        finally:
            while not listener.done():
                listener.cancel()
                await asyncio.wait([listener], timeout=0.5)
            await stopping
            await transport.close()
