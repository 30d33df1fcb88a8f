"""Type aliases shared across the package.

Identifiers that are plain strings on the wire get :class:`~typing.NewType` wrappers so
that mypy catches a subscription id passed where a destination is expected.
"""

from __future__ import annotations

from typing import NewType

__all__ = [
    "ConnectionId",
    "Destination",
    "Headers",
    "NodeId",
    "SubscriptionId",
]

#: A STOMP subscription id, unique within one connection (the SUBSCRIBE ``id`` header).
SubscriptionId = NewType("SubscriptionId", str)
#: A STOMP destination such as ``/topic/chat`` or ``/user/queue/notify``.
Destination = NewType("Destination", str)
#: A session id, unique across the cluster; the ``session`` header of CONNECTED.
ConnectionId = NewType("ConnectionId", str)
#: The id of one cluster node (one ASGI server process).
NodeId = NewType("NodeId", str)

#: Frame headers in wire order; repeated names are allowed and the first one wins.
Headers = tuple[tuple[str, str], ...]
