"""Errors of the STOMP protocol core.

The whole package's exceptions form one tree; this module defines the protocol part,
and :mod:`stomp_cluster.exceptions` re-exports it next to the rest::

    StompClusterError
    ├── ProtocolError          the peer broke STOMP: ERROR frame, then close
    │   ├── MalformedFrame
    │   ├── FrameTooLarge      carries size and limit
    │   ├── LimitExceeded      carries the limit's name and value
    │   └── UnsupportedVersion
    ├── InvalidState           also an AssertionError: our code drove the protocol out of order
    ├── DeliveryFailed         (stomp_cluster.exceptions)
    └── BackendUnavailable     (stomp_cluster.exceptions: presence, history, transport)

We separate the peer's mistakes from our own, as h11 does: a :class:`ProtocolError`
becomes an ERROR frame for that one connection, while :class:`InvalidState` is a bug that
tests should catch.
"""

from __future__ import annotations

__all__ = [
    "FrameTooLarge",
    "InvalidState",
    "LimitExceeded",
    "MalformedFrame",
    "ProtocolError",
    "StompClusterError",
    "UnsupportedVersion",
]


class StompClusterError(Exception):
    """Base class of every exception raised by stomp_cluster."""


class ProtocolError(StompClusterError):
    """The peer broke the STOMP protocol.

    The connection answers with exactly one ERROR frame and closes.

    Args:
        message: short and safe to show the peer; it becomes the ERROR frame's
            ``message`` header. Say what was expected and what arrived.
        detail: optional longer text for the ERROR frame's body, such as the offending
            header or line.
        receipt_id: the ``receipt`` header of the offending frame, echoed as
            ``receipt-id`` so that a client waiting for that receipt is released.
    """

    def __init__(
        self, message: str, detail: str | None = None, *, receipt_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.receipt_id = receipt_id


class MalformedFrame(ProtocolError):
    """The bytes received are not a valid STOMP frame, or a required header is missing."""


class FrameTooLarge(ProtocolError):
    """A frame (or its body) is larger than the configured limit.

    Args:
        size: how many bytes the frame or body has (or was announced by
            ``content-length``).
        limit: the configured maximum.
        what: ``"frame"`` or ``"body"``, for the message.
        at_least: ``size`` is a lower bound, because the frame was refused before it
            was complete.

    Attributes:
        size: see above.
        limit: the configured maximum.
    """

    def __init__(
        self, size: int, limit: int, *, what: str = "frame", at_least: bool = False
    ) -> None:
        # When a frame is refused before it is complete we only know a lower bound.
        qualifier = "at least " if at_least else ""
        super().__init__(f"{what} of {qualifier}{size} bytes exceeds limit of {limit}")
        self.size = size
        self.limit = limit


class LimitExceeded(ProtocolError):
    """The peer went over a per-connection limit other than size.

    Attributes:
        limit_name: which limit, such as ``"headers"`` or ``"subscriptions"``.
        limit: the configured maximum.
    """

    def __init__(self, limit_name: str, limit: int, *, message: str | None = None) -> None:
        super().__init__(message or f"too many {limit_name}: limit is {limit}")
        self.limit_name = limit_name
        self.limit = limit


class UnsupportedVersion(ProtocolError):
    """The client accepts no STOMP version that this server speaks.

    Attributes:
        supported: the versions the server offers, as wire strings.
    """

    def __init__(self, supported: tuple[str, ...], offered: str) -> None:
        versions = ",".join(supported)
        super().__init__(
            f"Supported protocol versions are {versions}",
            f"The client accepts {offered!r}; this server speaks {versions}.",
        )
        self.supported = supported


class InvalidState(StompClusterError, AssertionError):
    """Our own code drove the protocol out of order: a bug, not the peer's fault."""
