"""Client-visible presence over the consumer: snapshots, joins and leaves, as a watcher sees them.

Each test runs on the in-memory backends and on a real redis-server (presence, history and
transport on it). A watcher subscribes to ``/presence/topic/room.1``; members subscribe to
``/topic/room.1``. Where a test asserts that *no* event came, a marker message sent after
the action through the same node inbox arrives first: the inbox is first in, first out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from stomp_cluster import signals
from stomp_cluster.presence.base import SessionRecord, SubscriptionRecord
from stomp_cluster.protocol import Command
from stomp_cluster.roster import PAGE_BYTES, Member, apresence_of
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import assert_error_and_close, connected_client, login_headers
from tests.support.roster import event_of, members_of, sessions_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

ROOM = "/topic/room.1"
WATCH = "/presence/topic/room.1"
MARKER = "/topic/marker"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Presence on ``/topic/room.*``, pages of 2 members; in memory or on a test Redis."""
    config: dict[str, Any] = {
        "PRESENCE_DESTINATIONS": ["/topic/room.*"],
        "PRESENCE_PAGE_SIZE": 2,
        "PASSWORD_LOGIN": True,
        "NODE_ID": "n1",
    }
    if request.param == "redis":
        config["REDIS"] = request.getfixturevalue("clean_redis").url
    with override_settings(STOMP_CLUSTER=config):
        yield request.param


async def subscribe(client, destination: str, sub_id: str = "s1") -> list[Any]:
    """SUBSCRIBE with a receipt; return the frames that came before the RECEIPT."""
    await client.send_frame(
        "SUBSCRIBE", {"id": sub_id, "destination": destination, "receipt": f"r-{sub_id}"}
    )
    frames = []
    while True:
        frame = await client.receive_frame(timeout=5)
        if frame.command is Command.RECEIPT:
            assert frame.get("receipt-id") == f"r-{sub_id}"
            return frames
        frames.append(frame)


async def session(headers: dict[str, str] | None = None):
    """A connected client and its session id."""
    client = StompCommunicator(application, "/ws")
    connected = await client.connect_stomp(headers)
    return client, connected.get("session")


async def member(destination: str = ROOM):
    """An anonymous client subscribed to *destination*; returns (client, session id)."""
    client, session_id = await session()
    assert await subscribe(client, destination) == []
    return client, session_id


async def watcher():
    """A connected client watching ROOM's presence and MARKER; returns (client, snapshot)."""
    client = await connected_client()
    snapshot = await subscribe(client, WATCH, "w")
    assert await subscribe(client, MARKER, "m") == []
    return client, snapshot


async def mark(client) -> None:
    """Send a marker to MARKER and wait for its receipt."""
    await client.send_frame("SEND", {"destination": MARKER, "receipt": "mark"}, "mark")
    frame = await client.receive_frame(timeout=5)
    assert frame.command is Command.RECEIPT


async def next_message(client) -> Any:
    frame = await client.receive_frame(timeout=5)
    assert frame.command is Command.MESSAGE, frame
    return frame


async def test_the_snapshot_lists_every_member_in_pages(backend):
    members = [await member() for _ in range(5)]
    watching = await connected_client()
    pages = await subscribe(watching, WATCH, "w")
    assert [event_of(p) for p in pages] == ["snapshot"] * 3
    assert [p.get("x-presence-page") for p in pages] == ["1/3", "2/3", "3/3"]
    assert [len(members_of(p)) for p in pages] == [2, 2, 1]
    assert {p.get("subscription") for p in pages} == {"w"}
    assert {p.get("destination") for p in pages} == {WATCH}
    assert all(p.get("x-presence-truncated") is None for p in pages)
    assert set().union(*map(sessions_of, pages)) == {sid for _, sid in members}
    assert all(m["user"] is None for p in pages for m in members_of(p))  # anonymous
    for client, _ in members:
        await client.disconnect()
    await watching.disconnect()


async def test_a_snapshot_past_the_limit_says_it_was_truncated(backend, settings):
    settings.STOMP_CLUSTER = {**settings.STOMP_CLUSTER, "PRESENCE_SNAPSHOT_LIMIT": 3}
    members = [await member() for _ in range(5)]
    watching = await connected_client()
    pages = await subscribe(watching, WATCH, "w")
    assert [len(members_of(p)) for p in pages] == [2, 1]
    assert [p.get("x-presence-truncated") for p in pages] == ["true", "true"]
    # The first three to connect, in the registry's order.
    assert set().union(*map(sessions_of, pages)) == {sid for _, sid in members[:3]}
    for client, _ in members:
        await client.disconnect()
    await watching.disconnect()


async def test_an_empty_destination_gives_one_empty_page(backend):
    watching, snapshot = await watcher()
    assert len(snapshot) == 1
    assert snapshot[0].get("x-presence-page") == "1/1"
    assert members_of(snapshot[0]) == []
    await watching.disconnect()


async def test_a_session_joins_once_and_leaves_with_its_last_subscription(backend):
    watching, _ = await watcher()
    alice, session_id = await session(await login_headers("alice"))
    assert await subscribe(alice, ROOM, "a1") == []
    assert await subscribe(alice, ROOM, "a2") == []
    await mark(alice)
    join = await next_message(watching)
    assert event_of(join) == "join"
    assert join.get("content-type") == "application/json"
    assert members_of(join) == [{"user": "alice", "session": session_id}]
    assert (await next_message(watching)).body == b"mark"  # no second join

    await alice.send_frame("UNSUBSCRIBE", {"id": "a1", "receipt": "u1"})
    assert (await alice.receive_frame()).command is Command.RECEIPT
    await mark(alice)
    assert (await next_message(watching)).body == b"mark"  # still subscribed once: no leave

    await alice.send_frame("UNSUBSCRIBE", {"id": "a2", "receipt": "u2"})
    assert (await alice.receive_frame()).command is Command.RECEIPT
    leave = await next_message(watching)
    assert event_of(leave) == "leave"
    assert members_of(leave) == [{"user": "alice", "session": session_id}]
    await alice.disconnect()
    await watching.disconnect()


async def test_a_disconnect_publishes_a_leave_after_the_registry_forgot_it(backend):
    watching, _ = await watcher()
    client, session_id = await member()
    assert sessions_of(await next_message(watching)) == {session_id}  # join
    await client.disconnect()
    leave = await next_message(watching)
    assert event_of(leave) == "leave"
    assert sessions_of(leave) == {session_id}
    # A snapshot read after the leave does not list it any more.
    assert (await apresence_of(ROOM)).members == ()
    sender = await connected_client()
    await mark(sender)
    assert (await next_message(watching)).body == b"mark"  # one leave, not one per step
    await sender.disconnect()
    await watching.disconnect()


async def test_a_destination_not_listed_has_no_presence(backend):
    client = await connected_client()
    await client.send_frame("SUBSCRIBE", {"id": "w", "destination": "/presence/topic/news"})
    await assert_error_and_close(client, "/topic/news is not in PRESENCE_DESTINATIONS")


async def test_a_user_destination_has_no_presence(backend, settings):
    settings.STOMP_CLUSTER = {**settings.STOMP_CLUSTER, "PRESENCE_DESTINATIONS": ["*"]}
    client = await connected_client()
    await client.send_frame("SUBSCRIBE", {"id": "w", "destination": "/presence/user/queue/x"})
    await assert_error_and_close(client, "not in PRESENCE_DESTINATIONS")


async def deny_presence(user: Any, action: str, destination: str) -> bool:
    """A permission hook that lets nobody watch presence."""
    return not destination.startswith("/presence/")


async def test_the_permission_hook_decides_who_may_watch(backend, settings):
    settings.STOMP_CLUSTER = {
        **settings.STOMP_CLUSTER,
        "PERMISSION_HOOK": "tests.test_roster.deny_presence",
    }
    client, _ = await member()  # the room itself is allowed
    watching = await connected_client()
    await watching.send_frame("SUBSCRIBE", {"id": "w", "destination": WATCH})
    await assert_error_and_close(watching, f"permission denied: cannot subscribe to {WATCH}")
    await client.disconnect()


async def test_clients_cannot_send_presence_events(backend):
    client = await connected_client()
    await client.send_frame("SEND", {"destination": WATCH, "x-presence": "join"}, "{}")
    await assert_error_and_close(client, f"unknown destination {WATCH}")


async def test_reaped_sessions_leave_in_one_message_per_destination(backend):
    watching, _ = await watcher()
    assert await subscribe(watching, "/presence/topic/room.2", "w2") != []
    records = tuple(
        SessionRecord(
            session_id=f"lost-{n}",
            node_id="gone",
            channel_name="",
            user_key=None,
            username=f"user{n}",
            remote_addr="",
            user_agent="",
            version="1.2",
            connected_at=float(n),
            last_seen=float(n),
            subscriptions=(
                SubscriptionRecord("a", "/topic/room.1", "auto"),
                SubscriptionRecord("b", "/topic/room.1", "auto"),
                SubscriptionRecord("c", "/topic/room.2", "auto"),
                SubscriptionRecord("d", "/topic/plain", "auto"),
            ),
        )
        for n in range(250)
    )
    # As the sweeper that reaped them fires it.
    await signals.fire(signals.stomp_sessions_reaped, node_id="gone", sessions=records)
    sender = await connected_client()
    await mark(sender)
    got = [await next_message(watching) for _ in range(3)]
    assert got[2].body == b"mark"  # nothing else came before the marker
    by_sub = {frame.get("subscription"): frame for frame in got[:2]}
    assert set(by_sub) == {"w", "w2"}
    for frame in by_sub.values():
        assert event_of(frame) == "leave"
        assert sessions_of(frame) == {r.session_id for r in records}
        assert len(members_of(frame)) == 250
        assert len(frame.body) <= PAGE_BYTES
    await sender.disconnect()
    await watching.disconnect()


async def test_presence_of_reads_the_registry_in_connection_order(backend):
    members = [await member() for _ in range(3)]
    roster = await apresence_of(ROOM)
    assert roster.members == tuple(Member(None, sid) for _, sid in members)
    assert not roster.truncated
    limited = await apresence_of(ROOM, limit=2)
    assert limited.members == roster.members[:2] and limited.truncated
    for client, _ in members:
        await client.disconnect()


async def test_a_large_leave_batch_is_split_by_bytes(backend):
    watching, _ = await watcher()
    long_names = tuple(
        SessionRecord(
            session_id=f"{n:032x}",
            node_id="gone",
            channel_name="",
            user_key=None,
            username=f"{n:04d}" + "x" * 146,  # the longest username Django allows
            remote_addr="",
            user_agent="",
            version="1.2",
            connected_at=float(n),
            last_seen=float(n),
            subscriptions=(SubscriptionRecord("a", ROOM, "auto"),),
        )
        for n in range(1000)
    )
    await signals.fire(signals.stomp_sessions_reaped, node_id="gone", sessions=long_names)
    sender = await connected_client()
    await mark(sender)
    frames = []
    while (frame := await next_message(watching)).body != b"mark":
        frames.append(frame)
    # About 200 bytes a member: 200 kB of leaves in pages of at most PAGE_BYTES.
    assert [event_of(f) for f in frames] == ["leave"] * 4
    assert all(len(f.body) <= PAGE_BYTES for f in frames)
    assert sorted(set().union(*map(sessions_of, frames))) == [r.session_id for r in long_names]
    assert sum(len(members_of(f)) for f in frames) == 1000
    await sender.disconnect()
    await watching.disconnect()
