"""Type aliases shared across the package.

Identifiers that are plain strings on the wire get :class:`~typing.NewType` wrappers so
that mypy catches a subscription id passed where a destination is expected. ASGI
aliases live here too, and nowhere else, so that public signatures need no other ``Any``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NewType

__all__ = [
    "ASGIMessage",
    "ConnectionId",
    "Destination",
    "Headers",
    "NodeId",
    "Receive",
    "Scope",
    "Send",
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

#: An ASGI connection scope.
Scope = MutableMapping[str, Any]
#: An ASGI event, received or sent (not to be confused with :mod:`stomp_cluster.messages`).
ASGIMessage = MutableMapping[str, Any]
#: The ASGI ``receive`` callable.
Receive = Callable[[], Awaitable[ASGIMessage]]
#: The ASGI ``send`` callable.
Send = Callable[[ASGIMessage], Awaitable[None]]
