"""A live node that missed a stored message tells its sessions (issue #13: no socket open
but deaf, no loss unannounced).

A stored message whose push to a live node fails (its inbox full, the transport down) is
not a failed send: it is in the history. But the sockets on that node stay open and never
resume by themselves, so the sender leaves the node a *missed mark* in the presence
registry, and the node closes the sessions concerned, at its next heartbeat, with an
ERROR telling them to resume. What is proven here, with a real redis-server and a real
node serving in-process STOMP clients:

* a user session whose node's inbox was full when a message for it was sent gets that
  ERROR (never silence), and resuming from its ``x-resume-from`` gives it the message,
  even when later messages reached the session before its node read the mark (then the
  client's own last message-id is past the missed one);
* for a topic with a history, only the sessions subscribed to that topic are closed;
* when the mark cannot be written (the registry refuses writes), the send raises
  ``DeliveryFailed``; once the registry is back, a send leaves the mark;
* with the channel-layer transport too, a full inbox leaves the node its mark.

The sender runs in a thread of its own, with its own event loop and no node, as a view or
a task in another process would: a send from the node's own loop skips the transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import override_settings

from stomp_cluster import asend_to_user, send_to_destination, send_to_user
from stomp_cluster.backends import get_presence, get_transport
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.history.base import previous_id
from stomp_cluster.node import MISSED_MESSAGE, get_node
from stomp_cluster.presence.base import MissedMarks
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.protocol import Command, Frame
from stomp_cluster.testing import StompCommunicator
from stomp_cluster.transport import RedisTransport
from testproject.asgi import application
from tests.support.communicator import login_headers
from tests.support.procs import RedisServer
from tests.support.records import remote_node
from tests.support.waiting import await_until
from tests.test_transport import USER_DESTINATION, paths, register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


class HeldPresence(RedisPresence):
    """A Redis registry whose node takes no missed marks while ``held`` (they stay stored),
    as a node whose heartbeat comes after later messages reached its sessions."""

    held = False

    async def take_missed(self, node_id: str, ttl: float, *, again: bool = False) -> MissedMarks:
        if type(self).held:
            return MissedMarks()
        return await super().take_missed(node_id, ttl, again=again)


class HeldTransport(RedisTransport):
    """A Redis transport whose node stops reading its inbox while ``held``, as a busy
    node falls behind; ``parked`` once the reader waits outside Redis (no pop under way)."""

    held = False
    parked = False

    async def receive(self, address: str) -> Sequence[Any]:
        while type(self).held:
            type(self).parked = True
            await asyncio.sleep(0.02)
        type(self).parked = False
        return await super().receive(address)


def node_settings(server: RedisServer, path: str = "one_trip") -> override_settings:
    """A node on *server* whose inbox holds one message; user sends in one trip or three."""
    transport_hosts: list[Any] = [server.url]
    if path == "three_steps":
        transport_hosts = [("127.0.0.1", server.port)]  # the same server, not known to be
    return override_settings(
        STOMP_CLUSTER={
            **settings.STOMP_CLUSTER,
            "PRESENCE_BACKEND": f"{__name__}.HeldPresence",
            "PRESENCE_OPTIONS": {"hosts": [server.url]},
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
            "HISTORY_OPTIONS": {"hosts": [server.url]},
            "HISTORY_TOPICS": ["/topic/kept"],
            "TRANSPORT_BACKEND": f"{__name__}.HeldTransport",
            "TRANSPORT_OPTIONS": {"hosts": transport_hosts, "capacity": 1, "socket_timeout": 0.5},
            "NODE_TTL": 3,
            "NODE_HEARTBEAT_INTERVAL": 0.3,
        }
    )


@pytest.fixture
async def node_on(clean_redis) -> AsyncIterator[Any]:
    """Enter node_settings for a path; the node is stopped and the hold released after."""
    entered: list[override_settings] = []

    def enter(path: str = "one_trip") -> None:
        entered.append(node_settings(clean_redis, path))
        entered[-1].enable()

    HeldTransport.held = HeldTransport.parked = HeldPresence.held = False
    try:
        yield enter
    finally:
        HeldTransport.held = HeldPresence.held = False
        if entered:
            await get_node().stop()
            await get_transport().close()
            entered[-1].disable()


async def client_of(login: dict[str, str] | None, *subscriptions: str) -> StompCommunicator:
    """A CONNECTED client (with *login*'s headers) with one subscription per destination."""
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp(login)
    for destination in subscriptions:
        assert await subscribe(client, destination) == []
    return client


async def subscribe(client: StompCommunicator, destination: str, **headers: str) -> list[Frame]:
    """Subscribe; return the messages replayed before the RECEIPT."""
    frame = {"id": destination, "destination": destination, "receipt": "r", **headers}
    await client.send_frame("SUBSCRIBE", frame)
    replayed = []
    while (got := await client.receive_frame(timeout=5)).command is not Command.RECEIPT:
        replayed.append(got)
    return replayed


async def next_frames_until_close(client: StompCommunicator) -> list[Frame]:
    """Every frame the client gets until its server closes the socket."""
    frames = []
    while True:
        frame = await client.receive_frame(timeout=15)
        frames.append(frame)
        if frame.command is Command.ERROR:
            assert await client.receive_close(timeout=5) == 1000
            return frames


async def fill_inbox() -> None:
    """Stop the node reading its inbox, then fill it (capacity 1): the next push fails."""
    HeldTransport.held = True
    await await_until(lambda: HeldTransport.parked, 10, "the node to stop reading its inbox")
    node = get_node()
    filler = {"type": "stomp.session", "session": "nobody", "destination": "/q", "body": b""}
    await get_transport().send(node.channel_name, filler)


async def release_inbox(url: str) -> None:
    """Let the node read its inbox again, and wait until it has (the filler is gone), so
    that the next push finds room."""
    HeldTransport.held = False
    inbox = get_node().channel_name
    raw = redis.asyncio.Redis.from_url(url)

    async def drained() -> bool:
        return await raw.llen(inbox) == 0

    try:
        await await_until(drained, 10, "the node to drain its inbox")
    finally:
        await raw.aclose()


def elsewhere(send: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a sync send helper in a thread with no node, as another process would."""
    return asyncio.to_thread(send, *args, **kwargs)


@paths
async def test_a_session_whose_node_missed_a_stored_message_is_told_to_resume(
    path, node_on, clean_redis
):
    node_on(path)
    amy = await login_headers("amy")
    client = await client_of(amy, "/user/queue/n")
    await elsewhere(send_to_user, "amy", "/queue/n", "one")
    one = await client.receive_frame(timeout=5)
    assert one.body == b"one"

    await fill_inbox()
    missed = await elsewhere(send_to_user, "amy", "/queue/n", "two")
    await release_inbox(clean_redis.url)

    # Stored, and the live node counted as missed: not a failure...
    assert missed.stored and (missed.sessions, missed.missed_nodes) == (0, 1)
    # ...but the open session is told, never left to go on as if nothing was lost.
    frames = await next_frames_until_close(client)
    assert [f.command for f in frames] == [Command.ERROR]
    assert frames[0].get("message") == MISSED_MESSAGE
    assert frames[0].get("x-resume-from") == previous_id(missed.message_id)

    back = await client_of(amy)
    resumed = await subscribe(back, USER_DESTINATION, **{"x-resume-from": one.get("message-id")})
    assert [(f.body, f.get("message-id")) for f in resumed] == [(b"two", missed.message_id)]
    later = await elsewhere(send_to_user, "amy", "/queue/n", "three")
    assert later.sessions == 1
    assert (await back.receive_frame(timeout=5)).body == b"three"
    await back.disconnect()


@paths
async def test_a_miss_behind_later_deliveries_resumes_from_the_errors_header(
    path, node_on, clean_redis
):
    node_on(path)
    amy = await login_headers("amy")
    client = await client_of(amy, "/user/queue/n")
    HeldPresence.held = True  # the node will read its mark only after later messages

    await fill_inbox()
    missed = await elsewhere(send_to_user, "amy", "/queue/n", "two")
    assert missed.stored and missed.missed_nodes == 1
    await release_inbox(clean_redis.url)
    later = [await elsewhere(send_to_user, "amy", "/queue/n", body) for body in ("3", "4")]
    assert [d.sessions for d in later] == [1, 1]
    got = [await client.receive_frame(timeout=5) for _ in later]
    assert [(f.body, f.get("message-id")) for f in got] == [
        (b"3", later[0].message_id),
        (b"4", later[1].message_id),
    ]

    HeldPresence.held = False
    frames = await next_frames_until_close(client)
    assert [(f.command, f.get("message")) for f in frames] == [(Command.ERROR, MISSED_MESSAGE)]
    resume_from = frames[0].get("x-resume-from")
    assert resume_from == previous_id(missed.message_id)

    # From the last message-id it saw, the client would never see "two" again...
    back = await client_of(amy)
    after_last = await subscribe(
        back, USER_DESTINATION, **{"x-resume-from": got[-1].get("message-id")}
    )
    assert after_last == []
    await back.disconnect()
    # ...from the header's id it gets "two", and the two it has already, to skip.
    back = await client_of(amy)
    resumed = await subscribe(back, USER_DESTINATION, **{"x-resume-from": resume_from})
    assert [(f.body, f.get("message-id")) for f in resumed] == [
        (b"two", missed.message_id),
        (b"3", later[0].message_id),
        (b"4", later[1].message_id),
    ]
    await back.disconnect()


async def test_a_topic_miss_closes_only_that_topics_subscribers(node_on, clean_redis):
    node_on()
    kept = await client_of(None, "/topic/kept")
    other = await client_of(None, "/topic/other")

    await fill_inbox()
    missed = await elsewhere(send_to_destination, "/topic/kept", "lost in the inbox")
    await release_inbox(clean_redis.url)

    assert missed.stored and missed.missed_nodes == 1
    frames = await next_frames_until_close(kept)
    assert [(f.command, f.get("message")) for f in frames] == [(Command.ERROR, MISSED_MESSAGE)]
    assert frames[0].get("x-resume-from") == previous_id(missed.message_id)
    # The subscriber of another topic on the same node stays open and served.
    news = await elsewhere(send_to_destination, "/topic/other", "still here")
    assert news.sessions == 1
    frame = await other.receive_frame(timeout=5)
    assert (frame.command, frame.body) == (Command.MESSAGE, b"still here")
    await other.disconnect()


# -- the registry cannot take the mark ---------------------------------------------------


async def test_a_miss_the_registry_cannot_note_raises_delivery_failed(clean_redis):
    # The registry on a server of its own; history and transport on the test server. The
    # registry is paused for writes: the lookups (reads) answer, the mark (a script) cannot.
    registry = RedisServer()
    registry.start()
    raw = redis.asyncio.Redis.from_url(registry.url)
    try:
        with override_settings(
            STOMP_CLUSTER={
                "NODE_ID": "sender",
                "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
                "PRESENCE_OPTIONS": {"hosts": [registry.url], "socket_timeout": 0.5},
                "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
                "HISTORY_OPTIONS": {"hosts": [clean_redis.url]},
                "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
                "TRANSPORT_OPTIONS": {"hosts": [clean_redis.url], "capacity": 1},
            }
        ):
            await register({"far-0": 1})
            transport = get_transport()
            assert isinstance(transport, RedisTransport)
            await transport.send(transport.address("far-0"), {"type": "stomp.publish"})  # full

            # Long enough that only the presence client's timeout can end the mark's wait.
            await raw.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
            with pytest.raises(DeliveryFailed, match="stored but not pushed to node far-0"):
                await elsewhere(send_to_user, "ursula", "/queue/n", "x")
            await raw.execute_command("CLIENT", "UNPAUSE")

            # Registry back: the send is noted for far-0, whose heartbeat would take it.
            again = await elsewhere(send_to_user, "ursula", "/queue/n", "x")
            assert again.stored and again.missed_nodes == 1
            marks = await get_presence().take_missed("far-0", 10)
            assert marks == MissedMarks(users={"ursula": again.message_id})
            await get_presence().close()
            await transport.close()
    finally:
        await raw.aclose()
        registry.close()


# -- the channel-layer transport ---------------------------------------------------------

SMALL_LAYER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1}}
}


@override_settings(CHANNEL_LAYERS=SMALL_LAYER)
@pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory")
async def test_a_full_channel_layer_inbox_leaves_the_node_a_mark_for_the_user():
    await remote_node("slow", "specific.slow!s", user="amy", destination=USER_DESTINATION)
    await get_channel_layer().send("specific.slow!s", {"type": "stomp.publish"})  # now full

    delivery = await asend_to_user("amy", "/queue/n", "kept")

    assert delivery.stored and delivery.missed_nodes == 1
    # What node "slow" takes with its next heartbeat: close amy's sessions.
    marks = await get_presence().take_missed("slow", 10)
    assert marks == MissedMarks(users={"amy": delivery.message_id})
