"""Signal receivers that keep the presence registry, as Spring users do by hand.

Connected in :meth:`StompClusterConfig.ready` with a ``dispatch_uid`` each. They are
idempotent: writing a session or subscription twice leaves one entry, and removing one
that is gone is a no-op, so a resync or a retried signal does no harm. A registry
outage is logged once and the node writes everything again when it is back.
"""

from __future__ import annotations

from typing import Any

from stomp_cluster import signals
from stomp_cluster.presence.base import SubscriptionRecord

__all__ = ["connect_receivers"]


async def on_connected(*, consumer: Any, **kwargs: Any) -> None:
    """Write the new session."""
    node = consumer.node
    await node.presence_call(node.presence.add_session(consumer.session_record()))


async def on_subscribed(
    *,
    consumer: Any,
    session_id: str,
    destination: str,
    subscription_id: str,
    ack: str,
    **kwargs: Any,
) -> None:
    """Add the subscription to the session and the destination's index."""
    node = consumer.node
    record = SubscriptionRecord(id=subscription_id, destination=destination, ack=ack)
    await node.presence_call(node.presence.add_subscription(session_id, node.node_id, record))


async def on_unsubscribed(
    *, consumer: Any, session_id: str, subscription_id: str, closing: bool = False, **kwargs: Any
) -> None:
    """Remove the subscription, unless the whole session is about to go."""
    if closing:
        return  # remove_session drops it in the same round trip as the session
    node = consumer.node
    await node.presence_call(
        node.presence.remove_subscription(session_id, node.node_id, subscription_id)
    )


async def on_disconnected(*, consumer: Any, session_id: str, **kwargs: Any) -> None:
    """Remove the session, unless a sweeper already did (``consumer`` is None then)."""
    if consumer is None:
        return
    node = consumer.node
    await node.presence_call(node.presence.remove_session(session_id, node.node_id))


def connect_receivers() -> None:
    """Connect the receivers above to the package's signals (idempotent)."""
    signals.stomp_connected.connect(on_connected, dispatch_uid="stomp_cluster.presence.connected")
    signals.stomp_subscribed.connect(
        on_subscribed, dispatch_uid="stomp_cluster.presence.subscribed"
    )
    signals.stomp_unsubscribed.connect(
        on_unsubscribed, dispatch_uid="stomp_cluster.presence.unsubscribed"
    )
    signals.stomp_disconnected.connect(
        on_disconnected, dispatch_uid="stomp_cluster.presence.disconnected"
    )
