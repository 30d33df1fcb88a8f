"""Values a :class:`~stomp_cluster.protocol.connection.StompConnection` hands out.

The events it produces (all named in one tense, ``...Requested``, plus
:class:`ProtocolFailed`), the :class:`Subscription` records it keeps, and the
:class:`Limits` it enforces. They are frozen dataclasses: compare them with ``==`` in
tests and pass them around freely. Import them from :mod:`stomp_cluster.protocol`,
which re-exports every name.

:data:`Event` is the union of every event that
:meth:`~stomp_cluster.protocol.connection.StompConnection.events_received` returns: type
a handler's argument with it and ``match`` on the classes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias

from stomp_cluster.protocol.errors import ProtocolError
from stomp_cluster.protocol.frames import Frame, Version
from stomp_cluster.typing import Destination, Headers, SubscriptionId

__all__ = [
    "AckMode",
    "AckRequested",
    "ConnectRequested",
    "DisconnectRequested",
    "Event",
    "Limits",
    "NackRequested",
    "ProtocolFailed",
    "ReceiptRequested",
    "SendRequested",
    "SubscribeRequested",
    "Subscription",
    "UnsubscribeRequested",
]


class AckMode(enum.Enum):
    """A subscription's acknowledgment mode, the SUBSCRIBE ``ack`` header."""

    AUTO = "auto"
    CLIENT = "client"  # cumulative: an ACK covers every earlier message too
    CLIENT_INDIVIDUAL = "client-individual"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One open subscription of a connection.

    Attributes:
        id: the SUBSCRIBE ``id`` header (in 1.0, the destination when absent).
        destination: where the client subscribed.
        ack: the acknowledgment mode.
        headers: headers kept for the subscription's lifetime; none from the
            protocol, which keeps the id, destination and mode only. Read the others
            (``receipt``, ``selector``, ``x-resume-from``) from the
            :class:`SubscribeRequested` event's frame while handling it.
    """

    id: SubscriptionId
    destination: Destination
    ack: AckMode
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; going over one sends an ERROR frame and closes.

    "To prevent malicious clients from exploiting memory allocation in a server,
    servers MAY place maximum limits" (1.2, Size Limits). The defaults suit browsers and
    ordinary clients; lower them for untrusted, memory-constrained deployments.
    """

    max_frame_size: int = 1_114_112  # bytes: 1 MiB of body + 64 KiB of headers
    max_body_size: int = 1_048_576  # bytes
    max_headers: int = 100  # header lines in one frame
    max_header_length: int = 8192  # bytes in one header line, without its EOL
    max_subscriptions: int = 1000  # open at once
    max_transactions: int = 16  # open at once
    max_transaction_frames: int = 1000  # SEND/ACK/NACK buffered in one transaction
    max_transaction_bytes: int = 4_194_304  # bytes of the frames buffered in one
    max_buffered_bytes: int = 8_388_608  # bytes buffered in all open transactions
    max_pending_acks: int = 10_000  # MESSAGEs sent and not yet ACKed or NACKed


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """A CONNECT or STOMP frame arrived: authenticate, then accept or refuse.

    Call :meth:`StompConnection.accept_connect
    <stomp_cluster.protocol.connection.StompConnection.accept_connect>` or
    :meth:`~stomp_cluster.protocol.connection.StompConnection.send_error`.
    Frames after the CONNECT are parsed only once you accept.

    Attributes:
        frame: the CONNECT frame.
        version: the negotiated version.
        host, login, passcode: the headers of those names, if present.
        heartbeat: the client's ``heart-beat`` header ``(cx, cy)``; ``(0, 0)`` if absent
            or in STOMP 1.0.
    """

    frame: Frame
    version: Version
    host: str | None
    login: str | None
    passcode: str | None = field(repr=False)
    heartbeat: tuple[int, int]


@dataclass(frozen=True, slots=True)
class SendRequested:
    """The client sent a message to ``destination``: check permissions and deliver it.

    ``transaction`` is set when the SEND was part of a transaction; the event then
    comes when the transaction is committed.
    """

    frame: Frame
    destination: Destination
    transaction: str | None


@dataclass(frozen=True, slots=True)
class SubscribeRequested:
    """The client subscribed; the subscription is already recorded.

    Join the destination's group, or refuse with
    :meth:`~stomp_cluster.protocol.connection.StompConnection.send_error`.
    """

    subscription: Subscription
    frame: Frame


@dataclass(frozen=True, slots=True)
class UnsubscribeRequested:
    """The client unsubscribed; the subscription and its pending acks are gone."""

    subscription: Subscription
    frame: Frame


@dataclass(frozen=True, slots=True)
class _Settlement:
    """The fields an ACK and a NACK share; each is its own event class.

    Attributes:
        subscription: the subscription the messages were delivered to.
        message_ids: the messages settled, oldest first: more than one for a
            cumulative (``client``) subscription.
        transaction: the transaction the frame was part of; the event then comes when
            it is committed.
        frame: the ACK or NACK frame.
    """

    subscription: Subscription
    message_ids: tuple[str, ...]
    transaction: str | None
    frame: Frame


@dataclass(frozen=True, slots=True)
class AckRequested(_Settlement):
    """The client acknowledged messages; ``message_ids`` lists them oldest first."""


@dataclass(frozen=True, slots=True)
class NackRequested(_Settlement):
    """The client refused messages; ``message_ids`` lists them oldest first."""


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The client said goodbye. Send any receipt that follows, flush, then close."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class ReceiptRequested:
    """The previous frame asked for a receipt.

    Handle the events before this one, then call
    :meth:`~stomp_cluster.protocol.connection.StompConnection.send_receipt` with
    ``receipt_id``.
    """

    receipt_id: str


@dataclass(frozen=True, slots=True)
class ProtocolFailed:
    """The peer broke the protocol: an ERROR frame is queued. Flush, then close."""

    error: ProtocolError


#: Any event :meth:`~stomp_cluster.protocol.connection.StompConnection.events_received`
#: returns; a consumer's handler takes this and matches on the classes.
Event: TypeAlias = (
    ConnectRequested
    | SendRequested
    | SubscribeRequested
    | UnsubscribeRequested
    | AckRequested
    | NackRequested
    | DisconnectRequested
    | ReceiptRequested
    | ProtocolFailed
)
