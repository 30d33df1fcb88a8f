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
    ├── NodeIdInUse            another live process holds this node's NODE_ID
    └── BackendUnavailable     a backend is unreachable; callers degrade, never crash
        ├── PresenceUnavailable    the presence registry
        ├── HistoryUnavailable     the message history
        └── TransportUnavailable   the node-to-node transport

Each Redis backend raises its own subclass (the memory backends never raise them), so a
caller can tell which part of the cluster is down: a history outage, for instance, must not
make a node register its sessions again, which a presence outage does. Catch
:class:`BackendUnavailable` where any of them means the same to you.

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
    "HistoryUnavailable",
    "InvalidState",
    "LimitExceeded",
    "MalformedFrame",
    "NodeIdInUse",
    "PresenceUnavailable",
    "ProtocolError",
    "StompClusterError",
    "TransportUnavailable",
    "UnsupportedVersion",
]


class NodeIdInUse(StompClusterError):
    """Another live process is registered under this node's ``NODE_ID``.

    Raised by ``PresenceBackend.register_node``: two processes with one id would share one
    inbox and drop each other's sessions, so the second one does not start.
    """


class DeliveryFailed(StompClusterError):
    """A send helper could not hand the message to the transport between nodes.

    Raised when the layer refuses the message (for instance a full channel) or is
    unreachable. The message may still have reached some nodes; see ``reached``.
    """

    def __init__(self, message: str, *, reached: int = 0) -> None:
        super().__init__(message)
        self.reached = reached


class BackendUnavailable(StompClusterError):
    """A backend (presence, history, transport) cannot be reached.

    Callers degrade rather than crash: they serve what they can without it, or report
    :class:`DeliveryFailed` when a send cannot work without it. The message names the
    backend and the cause, for instance ``"message history unreachable: Timeout reading
    from socket"``.
    """


class PresenceUnavailable(BackendUnavailable):
    """The presence registry cannot be reached.

    A node keeps serving its local sockets and registers them again when the registry
    comes back; queries such as ``is_online()`` raise it to their caller.
    """


class HistoryUnavailable(BackendUnavailable):
    """The message history cannot be reached.

    Sends that record history fail with :class:`DeliveryFailed`; recovery and redelivery
    skip what they cannot read. The presence registry is not affected.
    """


class TransportUnavailable(BackendUnavailable):
    """The node-to-node transport cannot be reached.

    Sends fail with :class:`DeliveryFailed`; a node keeps waiting on its inbox and reads
    again when the transport comes back.
    """
