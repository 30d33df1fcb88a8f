"""Presence records for tests: a node, a session and a subscription with plain defaults.

Tests fill a registry through its own API with these, so that what they check is what a
real node would have written.
"""

from __future__ import annotations

import time

from stomp_cluster.node import get_presence
from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord

__all__ = ["node", "remote_node", "session", "sub"]


def node(node_id: str = "node-a", *, started_at: float = 1000.0) -> NodeRecord:
    """A live node record whose heartbeat is now."""
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
    """A subscription record."""
    return SubscriptionRecord(sub_id, destination, ack)


async def remote_node(
    node_id: str, channel: str, *, user: str | None = None, destination: str = "/topic/x"
) -> str:
    """Register, in this process's registry, a session held by another (fake) node.

    Returns:
        The session's id; it holds one subscription, ``0``, to *destination*.
    """
    presence = get_presence()
    now = time.time()
    await presence.register_node(NodeRecord(node_id, channel, now, now, 0, True), 30)
    session_id = f"{node_id}-session"
    await presence.add_session(
        SessionRecord(
            session_id, node_id, channel, user, user or "", "127.0.0.1", "test", "1.2", now, now
        )
    )
    await presence.add_subscription(
        session_id, node_id, SubscriptionRecord("0", destination, "auto")
    )
    return session_id
