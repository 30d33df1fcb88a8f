"""A presence registry filled with made-up nodes and sessions, for the operators' tools.

The admin pages and ``manage.py stomp_cluster`` are tested against the same fake cluster,
written through the backend's own API. Times that the tools show as "… ago" are set far
enough in the past that what they show stays the same for tens of seconds: a slow test
on a loaded machine still sees "2 minutes ago", where "2 seconds ago" would have moved on.
"""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync

from stomp_cluster.backends import get_presence
from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord

__all__ = [
    "ALICE",
    "BOB",
    "HEARTBEAT_AGE",
    "HEARTBEAT_AGO",
    "SEEN_AGE",
    "SEEN_AGO",
    "fill",
    "fill_chat",
    "node_record",
    "session_record",
]

#: Session ids of :func:`fill_chat`'s users.
ALICE = "a11ce000000000000000000000000001"
BOB = "b0b00000000000000000000000000002"

#: How long ago each node's last heartbeat was, in seconds, and how the tools say it
#: (the same from 120 s to 179 s).
HEARTBEAT_AGE = 125.0
HEARTBEAT_AGO = "2\xa0minutes ago"

#: How long ago each session was last seen, in seconds, and how the tools say it (the
#: same for the next 40 s).
SEEN_AGE = 3 * 3600 + 5 * 60 + 20.0
SEEN_AGO = "3\xa0hours, 5\xa0minutes ago"


def node_record(node_id: str) -> NodeRecord:
    """A node that started a minute before its last heartbeat."""
    beat = time.time() - HEARTBEAT_AGE
    return NodeRecord(node_id, f"specific.{node_id}!", beat - 60, beat, 0, True)


def session_record(
    session_id: str,
    node_id: str,
    username: str = "",
    *,
    at: float = 1_700_000_000.0,
    subs: tuple[tuple[str, str], ...] = (),
) -> SessionRecord:
    """A session of *username* ("": anonymous) on *node_id*; *subs* are (id, destination)."""
    return SessionRecord(
        session_id=session_id,
        node_id=node_id,
        channel_name=f"specific.{node_id}!",
        user_key=username or None,
        username=username,
        remote_addr="10.0.0.7",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0",
        version="1.2",
        connected_at=at,
        last_seen=time.time() - SEEN_AGE,
        subscriptions=tuple(SubscriptionRecord(i, d, "auto") for i, d in subs),
    )


@async_to_sync
async def fill(nodes: list[str], sessions: list[SessionRecord], ttl: float = 60.0) -> None:
    """Register *nodes* (alive for *ttl* seconds), then add *sessions*."""
    presence = get_presence()
    for node_id in nodes:
        await presence.register_node(node_record(node_id), ttl)
    for record in sessions:
        await presence.add_session(record)


def fill_chat() -> None:
    """node-a holds alice, node-b holds bob, both in ``/topic/chat``; bob also has a
    ``/user/queue/n`` subscription. Alice connected first (at 1000.0, bob at 2000.0)."""
    fill(
        ["node-a", "node-b"],
        [
            session_record(ALICE, "node-a", "alice", at=1000.0, subs=(("0", "/topic/chat"),)),
            session_record(
                BOB, "node-b", "bob", at=2000.0, subs=(("0", "/topic/chat"), ("1", "/user/queue/n"))
            ),
        ],
    )
