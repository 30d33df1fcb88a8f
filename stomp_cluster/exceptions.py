"""Exceptions raised by stomp_cluster.

::

    StompClusterError
    ├── ProtocolError          the peer broke STOMP: ERROR frame, then close
    │   ├── MalformedFrame
    │   ├── FrameTooLarge      carries size and limit
    │   ├── LimitExceeded      carries the limit's name and value
    │   └── UnsupportedVersion
    ├── InvalidState           also an AssertionError: our code drove the protocol out of order
    ├── DeliveryFailed         the send helper could not hand a message to the transport
    └── PresenceUnavailable    the presence backend is unreachable; callers degrade, never crash

Configuration mistakes raise Django's :class:`~django.core.exceptions.ImproperlyConfigured`
and are reported by system checks too.
"""

from __future__ import annotations

from stomp_cluster.protocol.errors import (
    FrameTooLarge,
    InvalidState,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    StompClusterError,
    UnsupportedVersion,
)

__all__ = [
    "BackendUnavailable",
    "DeliveryFailed",
    "FrameTooLarge",
    "InvalidState",
    "LimitExceeded",
    "MalformedFrame",
    "PresenceUnavailable",
    "ProtocolError",
    "StompClusterError",
    "UnsupportedVersion",
]


class DeliveryFailed(StompClusterError):
    """A send helper could not hand the message to the transport between nodes.

    Raised when the layer refuses the message (for instance a full channel) or is
    unreachable. The message may still have reached some nodes; see ``reached``.
    """

    def __init__(self, message: str, *, reached: int = 0) -> None:
        super().__init__(message)
        self.reached = reached


class BackendUnavailable(StompClusterError):
    """A backend (presence, history, transport) is unreachable."""


class PresenceUnavailable(BackendUnavailable):
    """The presence backend cannot be reached.

    Callers degrade rather than crash: a node keeps serving its local sockets and
    re-registers them when the backend comes back.
    """
