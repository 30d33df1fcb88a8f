"""The server side of one STOMP connection, without I/O.

Theory of operation
===================

:class:`StompConnection` is a state machine fed with bytes. The consumer, which owns the
WebSocket, drives it in a loop:

1. bytes arrive: call :meth:`~StompConnection.receive_data`, then
   :meth:`~StompConnection.events_received`, and handle each event in order;
2. write each item of :meth:`~StompConnection.data_to_send` as one WebSocket message;
3. once :attr:`~StompConnection.state` is :attr:`State.CLOSING`, flush and close the
   socket.

The protocol answers by itself whatever needs no outside knowledge: version
negotiation, validation of every frame, subscription and transaction bookkeeping, and
an ERROR frame on malformed input. Anything that needs the world (authentication,
delivery, receipts that must follow a side effect) becomes an event, and the consumer
answers with :meth:`~StompConnection.accept_connect`, :meth:`~StompConnection.send_message`,
:meth:`~StompConnection.send_receipt` or :meth:`~StompConnection.send_error`.

The work is split three ways. This module decides: which state, which frame to answer
with, which headers a MESSAGE gets. ``ClientState`` (in ``client_state.py``) keeps what
the client has open (subscriptions, unacknowledged messages, transactions) and its
limits. :mod:`~stomp_cluster.protocol.frames` turns the decisions into bytes,
with the caches that make a fan-out cheap
(:class:`~stomp_cluster.protocol.frames.MessageEncoder`).

States move only through the ``_TRANSITIONS`` table::

    AWAITING_CONNECT --CONNECT/STOMP--> CONNECT_PENDING --accept_connect()--> CONNECTED
           |                                  |                                  |
           +-------- error -------------------+------ error, DISCONNECT ---------+--> CLOSING

In CONNECT_PENDING the consumer is deciding (authentication is usually asynchronous),
so bytes received after the CONNECT frame are buffered but not parsed: the version they
must be decoded with is only settled by accept_connect(). In CLOSING everything
received is ignored and no event is produced.

An error, whether the peer's (:class:`ProtocolError`) or the consumer's refusal
(:meth:`~StompConnection.send_error`), queues exactly one ERROR frame. It always goes
out last: receipts the consumer sends for frames that came before the bad one are
written first, and nothing is written after it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

from stomp_cluster.protocol.client_state import ClientState
from stomp_cluster.protocol.errors import (
    InvalidState,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    UnsupportedVersion,
)
from stomp_cluster.protocol.events import (
    AckMode,
    ConnectRequested,
    DisconnectRequested,
    Event,
    Limits,
    ProtocolFailed,
    ReceiptRequested,
    SendRequested,
    SubscribeRequested,
    Subscription,
    UnsubscribeRequested,
)
from stomp_cluster.protocol.frames import (
    SUPPORTED_VERSIONS,
    Command,
    Frame,
    MessageEncoder,
    PreparedMessage,
    Version,
    _message_head,
    _shorten,
    encode_frame,
)
from stomp_cluster.protocol.heartbeat import negotiate_heartbeat, parse_heartbeat
from stomp_cluster.protocol.reader import FrameReader
from stomp_cluster.typing import Destination, Headers, SubscriptionId

__all__ = ["State", "StompConnection"]

logger = logging.getLogger(__name__)


class State(enum.Enum):
    """Where a :class:`StompConnection` stands; see the module's theory of operation."""

    AWAITING_CONNECT = "awaiting-connect"
    CONNECT_PENDING = "connect-pending"  # CONNECT received, the consumer is deciding
    CONNECTED = "connected"
    # ERROR queued or DISCONNECT handled: input is ignored, and the consumer flushes
    # data_to_send() and closes the socket. The one signal to close; nothing duplicates it.
    CLOSING = "closing"


_Trigger: TypeAlias = Literal["CONNECT", "accept_connect", "DISCONNECT", "error"]

# Every state change, in one place. A pair missing from the table is our own bug.
_TRANSITIONS: dict[tuple[State, _Trigger], State] = {
    (State.AWAITING_CONNECT, "CONNECT"): State.CONNECT_PENDING,
    (State.CONNECT_PENDING, "accept_connect"): State.CONNECTED,
    (State.CONNECTED, "DISCONNECT"): State.CLOSING,
    (State.AWAITING_CONNECT, "error"): State.CLOSING,
    (State.CONNECT_PENDING, "error"): State.CLOSING,
    (State.CONNECTED, "error"): State.CLOSING,
}


# Headers send_message() sets itself, dropped from the caller's.


class StompConnection:
    """The server side of one STOMP connection, as a sans-I/O state machine.

    See the module docstring for how to drive it.

    Args:
        limits: per-connection limits.
        heartbeat: ``(sx, sy)`` in milliseconds, what the server offers in CONNECTED:
            it can send a heart-beat every ``sx`` ms and wants one every ``sy`` ms.
        subprotocol: the version named by the negotiated WebSocket subprotocol, used
            when CONNECT has no ``accept-version`` header.
        supported_versions: the versions this server accepts.

    Attributes:
        state: the current :class:`State` (read-only). Once it is
            :attr:`State.CLOSING`, flush :meth:`data_to_send`, then close the socket.
        version: the negotiated version, set once CONNECT is received (read-only).
        heartbeat_intervals: ``(outgoing_ms, incoming_ms)`` once accepted, else
            ``(0, 0)``; see :func:`~stomp_cluster.protocol.heartbeat.negotiate_heartbeat`.
    """

    __slots__ = (
        "_accepted",
        "_client_heartbeat",
        "_client_state",
        "_debug",
        "_error_frame",
        "_events",
        "_message_counter",
        "_messages",
        "_outgoing",
        "_outgoing_bytes",
        "_reader",
        "_sealed",
        "_server_heartbeat",
        "_subprotocol",
        "_subscriptions",
        "_supported",
        "heartbeat_intervals",
        "limits",
        "state",
        "version",
    )

    def __init__(
        self,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen, so sharing the default is safe
        heartbeat: tuple[int, int] = (10_000, 10_000),
        subprotocol: Version | None = None,
        supported_versions: Iterable[Version] = SUPPORTED_VERSIONS,
    ) -> None:
        self.limits = limits
        self.state = State.AWAITING_CONNECT
        self.version: Version | None = None
        self.heartbeat_intervals = (0, 0)
        self._server_heartbeat = heartbeat
        self._client_heartbeat = (0, 0)
        self._subprotocol = subprotocol
        self._supported = tuple(v for v in SUPPORTED_VERSIONS if v in set(supported_versions))
        self._reader = FrameReader(
            max_frame_size=limits.max_frame_size,
            max_body_size=limits.max_body_size,
            max_headers=limits.max_headers,
            max_header_length=limits.max_header_length,
        )
        self._accepted = False
        self._client_state = ClientState(limits)
        self._subscriptions = MappingProxyType(self._client_state.subscriptions)
        self._message_counter = 0
        self._messages: MessageEncoder | None = None  # from accept_connect(), in the version
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0  # the size of _outgoing, for the consumer's byte budget
        self._error_frame: bytes | None = None
        self._sealed = False  # the ERROR frame went out; nothing follows it
        # Checked once per connection, as formatting every frame would be costly.
        self._debug = logger.isEnabledFor(logging.DEBUG)

    @property
    def outgoing_bytes(self) -> int:
        """Bytes queued for :meth:`data_to_send` and not yet taken: what this connection
        holds for its peer, which a server bounds per session."""
        if self._error_frame is None:
            return self._outgoing_bytes
        return self._outgoing_bytes + len(self._error_frame)

    @property
    def subscriptions(self) -> Mapping[SubscriptionId, Subscription]:
        """The open subscriptions by id, as a read-only live view."""
        return self._subscriptions

    # Input.

    def receive_data(self, data: bytes | str) -> None:
        """Buffer bytes received from the peer.

        Then call :meth:`events_received`. Ignored once the connection is closing.

        Args:
            data: a WebSocket message; text messages are encoded as UTF-8.
        """
        if self.state is State.CLOSING:
            return
        if isinstance(data, str):
            data = data.encode(errors="surrogatepass")
        self._reader.feed(data)

    def events_received(self, limit: int | None = None) -> list[Event]:
        """Parse the buffered bytes and return the events they produce, in order.

        Handle each event in turn, then write :meth:`data_to_send`. Parsing stops at a
        CONNECT (until :meth:`accept_connect`), a DISCONNECT or an error.

        Args:
            limit: parse no more frames once this many events are ready, and leave the
                rest of the buffer for the next call. One WebSocket message may hold
                a hundred thousand small frames; a caller that handles events in
                batches of *limit* and lets other work run between batches cannot be
                held by one peer for longer than a batch takes. A frame may produce
                more than one event (a COMMIT gives its whole transaction), so a
                batch can exceed *limit* by one frame's events. ``None``: parse all.

        Returns:
            The new events; empty if no complete frame has arrived.
        """
        while self.state is State.CONNECTED or self.state is State.AWAITING_CONNECT:
            if limit is not None and len(self._events) >= limit:
                break
            try:
                frame = self._reader.next_frame()
                if frame is None:
                    break
                if self._debug:
                    logger.debug("< %s", frame)
                self._handle(frame)
            except ProtocolError as error:
                self._fail(error)
        events, self._events = self._events, []
        return events

    def _handle(self, frame: Frame) -> None:
        try:
            command = frame.command
            if self.state is State.AWAITING_CONNECT:
                if command is not Command.CONNECT and command is not Command.STOMP:
                    raise ProtocolError(
                        f"expected CONNECT frame, got {command.value}",
                        "The first frame of a connection must be CONNECT or STOMP.",
                    )
                self._on_connect(frame)
                # Receipts are for frames "other than CONNECT" (1.2, Header receipt):
                # CONNECTED is the answer.
                return
            _HANDLERS[command](self, frame)
        except ProtocolError as error:
            # "if the frame included a receipt header, the ERROR frame SHOULD set the
            # receipt-id header to match the value of the receipt header" (1.2, ERROR)
            error.receipt_id = frame.get("receipt")
            raise
        receipt = frame.get("receipt")
        if receipt is not None:
            # "This will cause the server to acknowledge the processing of the client
            # frame with a RECEIPT frame" (1.2, Header receipt), once the consumer has
            # handled the events before this one.
            self._events.append(ReceiptRequested(receipt))

    # Frame handlers, one per client command, dispatched through _HANDLERS.

    def _on_connect(self, frame: Frame) -> None:
        version = self._negotiate(frame.get("accept-version"))
        heartbeat = (0, 0)
        value = frame.get("heart-beat")
        # STOMP 1.0 has no heart-beating; the header means nothing there.
        if value is not None and version is not Version.V1_0:
            heartbeat = parse_heartbeat(value)
        self.version = version
        self._client_heartbeat = heartbeat
        self._transition("CONNECT")
        self._events.append(
            ConnectRequested(
                frame,
                version,
                frame.get("host"),
                frame.get("login"),
                frame.get("passcode"),
                heartbeat,
            )
        )

    def _negotiate(self, accept_version: str | None) -> Version:
        if accept_version is None:
            # "If the accept-version header is missing, it means that the client only
            # supports version 1.0 of the protocol." (1.2, Protocol Negotiation) We trust
            # the WebSocket subprotocol when there is one, as browsers' clients set it.
            offered = {self._subprotocol or Version.V1_0}
        else:
            values = {part.strip(" ") for part in accept_version.split(",")}
            offered = {version for version in Version if version.value in values}
        common = [version for version in self._supported if version in offered]
        if not common:
            # "If the client and server do not share any common protocol versions, then
            # the sever MUST respond with an ERROR frame" (1.2, Protocol Negotiation)
            raise UnsupportedVersion(
                tuple(version.value for version in self._supported),
                accept_version if accept_version is not None else "1.0",
            )
        # "the highest protocol version that both the client and server have in common"
        return common[-1]

    def _on_second_connect(self, frame: Frame) -> None:
        raise ProtocolError("already connected", "CONNECT may only be sent once.")

    def _on_send(self, frame: Frame) -> None:
        # "It has one REQUIRED header, destination, which indicates where to send the
        # message." (1.2, SEND)
        destination = Destination(_require(frame, "destination"))
        transaction = frame.get("transaction")
        event = SendRequested(frame, destination, transaction)
        if transaction is None:
            self._events.append(event)
        else:
            self._client_state.buffer(transaction, event)

    def _on_subscribe(self, frame: Frame) -> None:
        destination = Destination(_require(frame, "destination"))
        subscription_id = frame.get("id")
        if not subscription_id:
            if self.version is not Version.V1_0:
                # "an id header MUST be included in the frame to uniquely identify the
                # subscription" (1.2, SUBSCRIBE id Header)
                raise MalformedFrame("missing id header in SUBSCRIBE")
            subscription_id = destination  # 1.0 made the id optional
        # "If the header is not set, it defaults to auto." (1.2, SUBSCRIBE ack Header)
        mode = frame.get("ack") or "auto"
        try:
            ack = AckMode(mode)
        except ValueError:
            raise MalformedFrame(
                f"invalid ack mode {_shorten(mode)!r}",
                "The valid values for the ack header are auto, client, or client-individual.",
            ) from None
        # The frame's other headers stay on the event: a subscription lives as long as
        # the connection, and keeping a hundred 8 KiB headers each would let 1,000
        # subscriptions hold 800 MiB.
        subscription = Subscription(SubscriptionId(subscription_id), destination, ack)
        self._client_state.subscribe(subscription)
        self._events.append(SubscribeRequested(subscription, frame))

    def _on_unsubscribe(self, frame: Frame) -> None:
        subscription_id = frame.get("id")
        destination = frame.get("destination")
        if subscription_id:
            subscription = self._client_state.unsubscribe(subscription_id=subscription_id)
        elif self.version is Version.V1_0 and destination:
            # 1.0: "It requires either a destination header or an id header" (UNSUBSCRIBE)
            subscription = self._client_state.unsubscribe(destination=destination)
        else:
            # "an id header MUST be included in the frame to uniquely identify the
            # subscription to remove" (1.2, UNSUBSCRIBE)
            raise MalformedFrame("missing id header in UNSUBSCRIBE")
        self._events.append(UnsubscribeRequested(subscription, frame))

    def _on_ack(self, frame: Frame) -> None:
        if self.version is Version.V1_2:
            # "NACK takes the same headers as ACK: id (REQUIRED) and transaction
            # (OPTIONAL)." (1.2, NACK)
            _require(frame, "id")
        else:
            # 1.1: "ACK has two REQUIRED headers: message-id [...] and subscription";
            # 1.0: "ACK has one required header, message-id".
            _require(frame, "message-id")
            if self.version is Version.V1_1:
                _require(frame, "subscription")
        pending = self._client_state.find_pending(frame, self.version)
        transaction = frame.get("transaction")
        if transaction is None:
            self._events.append(self._client_state.acknowledge(pending))
        else:
            # "indicating that the message acknowledgment SHOULD be part of the named
            # transaction" (1.2, ACK): checked now, settled on COMMIT.
            self._client_state.buffer(transaction, pending)

    def _on_begin(self, frame: Frame) -> None:
        # "The transaction header is REQUIRED" (1.2, BEGIN)
        self._client_state.begin(_require(frame, "transaction"))

    def _on_commit(self, frame: Frame) -> None:
        # "The transaction header is REQUIRED and MUST specify the identifier of the
        # transaction to commit." (1.2, COMMIT)
        self._events.extend(self._client_state.commit(_require(frame, "transaction")))

    def _on_abort(self, frame: Frame) -> None:
        # "The transaction header is REQUIRED and MUST specify the identifier of the
        # transaction to abort." (1.2, ABORT)
        self._client_state.abort(_require(frame, "transaction"))

    def _on_disconnect(self, frame: Frame) -> None:
        # "Any started transactions which have not been committed will be implicitly
        # aborted if the client sends a DISCONNECT frame" (1.2, BEGIN)
        self._client_state.abort_all()
        self._transition("DISCONNECT")
        self._events.append(DisconnectRequested(frame))

    # Output.

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write, and forget them.

        Write each item as one WebSocket message, in order. Then, if :attr:`state` is
        :attr:`State.CLOSING`, close the socket.

        Returns:
            Whole frames and heart-beat EOLs; an ERROR frame is always the last item.
        """
        data, self._outgoing = self._outgoing, []
        self._outgoing_bytes = 0
        if self._error_frame is not None:
            data.append(self._error_frame)
            self._error_frame = None
            self._sealed = True
        return data

    def accept_connect(self, *, session: str, server: str | None = None) -> None:
        """Accept the client's CONNECT: queue CONNECTED and start parsing frames.

        Call it after a :class:`ConnectRequested` event, once the client is
        authenticated. Then call :meth:`events_received` again: bytes received after
        the CONNECT frame were left unparsed until now. Read
        :attr:`heartbeat_intervals` to start the heart-beat timers.

        Args:
            session: the ``session`` header, unique across the cluster.
            server: the ``server`` header, such as ``"stomp-cluster/0.1"``.

        Raises:
            InvalidState: unless a CONNECT is awaiting a decision.
        """
        if self.state is not State.CONNECT_PENDING:
            raise InvalidState(f"accept_connect() in state {self.state.name}")
        version = self.version
        assert version is not None
        headers = []
        if version is not Version.V1_0:
            # "version : The version of the STOMP protocol the session will be using."
            headers.append(("version", version.value))
        headers.append(("session", session))
        if server is not None:
            headers.append(("server", server))
        if version is not Version.V1_0:
            sx, sy = self._server_heartbeat
            headers.append(("heart-beat", f"{sx},{sy}"))
            self.heartbeat_intervals = negotiate_heartbeat(
                self._client_heartbeat, self._server_heartbeat
            )
        self._transition("accept_connect")
        self._accepted = True
        self._reader.version = version
        self._messages = MessageEncoder(version)
        self._queue(Frame(Command.CONNECTED, tuple(headers)))

    def send_message(
        self,
        subscription_id: SubscriptionId,
        body: bytes | PreparedMessage,
        *,
        headers: Headers = (),
        message_id: str | None = None,
        destination: Destination | None = None,
    ) -> str | None:
        """Queue a MESSAGE for one subscription, then call :meth:`data_to_send`.

        Args:
            subscription_id: the subscription the message is delivered to.
            body: the message body, or a :class:`PreparedMessage` holding the body and
                extra headers, encoded once for every subscription it is sent to (then
                *headers* is ignored).
            headers: extra headers, such as ``content-type`` and the sender's user
                headers; ``destination``, ``message-id``, ``subscription``, ``ack`` and
                ``content-length`` are set here and dropped from them.
            message_id: the ``message-id``; a per-connection counter if ``None``. It
                should be unique among the connection's unacknowledged messages.
            destination: the ``destination`` header; the subscription's by default.

        Returns:
            The message id, or ``None`` if nothing was queued: the subscription is gone
            (normal when a message crosses an UNSUBSCRIBE), the connection is not
            connected, or the client has too many unacknowledged messages. In that
            last case an ERROR is queued and :attr:`state` is :attr:`State.CLOSING`.
        """
        if self.state is not State.CONNECTED:
            return None
        subscription = self._client_state.subscriptions.get(subscription_id)
        if subscription is None:
            return None
        if message_id is None:
            self._message_counter += 1
            message_id = str(self._message_counter)
        try:
            ack = self._client_state.add_message(subscription, message_id)
        except LimitExceeded as error:
            self._fail(error, emit=False)
            return None
        if self.version is not Version.V1_2:
            # Only 1.2 relates an ACK to its MESSAGE by an ack header: "the MESSAGE frame
            # MUST also contain an ack header with an arbitrary value. This header will be
            # used to relate the message to a subsequent ACK or NACK frame." (1.2, MESSAGE)
            # 1.0 and 1.1 use the message-id.
            ack = None
        if destination is None:
            destination = subscription.destination
        prepared = body if isinstance(body, PreparedMessage) else PreparedMessage(body, headers)
        # Set by accept_connect(): we are CONNECTED.
        messages = self._messages
        assert messages is not None
        if self._debug:
            head = _message_head(destination, subscription.id, message_id, ack)
            logger.debug("> %s", prepared.frame(head))
        frame = messages.encode(prepared, destination, subscription.id, message_id, ack)
        self._outgoing.append(frame)
        self._outgoing_bytes += len(frame)
        return message_id

    def send_receipt(self, receipt_id: str, *, headers: Headers = ()) -> None:
        """Queue a RECEIPT, then call :meth:`data_to_send`.

        Call it for each :class:`ReceiptRequested`, after handling the events before it.
        Dropped if the connection's ERROR frame has already been sent.

        Args:
            receipt_id: the ``receipt_id`` of the event.
            headers: extra headers, such as the outcome of a recovery
                (``x-recovered``); a ``receipt-id`` among them is ignored.

        Raises:
            InvalidState: before :meth:`accept_connect`.
        """
        if not self._accepted:
            raise InvalidState(f"send_receipt() in state {self.state.name}")
        # "A RECEIPT frame MUST include the header receipt-id, where the value is the
        # value of the receipt header in the frame which this is a receipt for."
        extra = tuple((k, v) for k, v in headers if k != "receipt-id")
        self._queue(Frame(Command.RECEIPT, (("receipt-id", receipt_id), *extra)))

    def send_error(
        self,
        message: str,
        *,
        detail: str | None = None,
        receipt_id: str | None = None,
        headers: Headers = (),
    ) -> None:
        """Refuse the client: queue an ERROR frame and expect to close.

        Use it for your own refusals: failed authentication, a forbidden destination,
        a handler that failed, a kicked user. Then call :meth:`data_to_send` and close
        the socket. Does nothing if the connection is already closing.

        Args:
            message: a short, safe description for the ``message`` header.
            detail: longer text for the body, sent as ``text/plain``.
            receipt_id: the ``receipt`` of the frame being refused, if any.
            headers: extra headers for the ERROR frame.
        """
        if self.state is State.CLOSING:
            return
        self._fail(ProtocolError(message, detail, receipt_id=receipt_id), headers, emit=False)

    def send_heartbeat(self) -> None:
        """Queue a heart-beat EOL, then call :meth:`data_to_send`.

        Call it when the outgoing interval passed without anything sent. Does nothing
        unless connected.
        """
        if self.state is State.CONNECTED:
            # "if the sender has no real STOMP frame to send, it MUST send an
            # end-of-line (EOL)" (1.2, Heart-beating)
            self._outgoing.append(b"\n")
            self._outgoing_bytes += 1

    # Internals.

    def _transition(self, trigger: _Trigger) -> None:
        try:
            state = _TRANSITIONS[self.state, trigger]
        except KeyError:  # the callers check the state first: this is our bug
            raise InvalidState(f"no transition from {self.state.name} on {trigger}") from None
        if self._debug:
            logger.debug("= %s", state.name)
        self.state = state

    def _queue(self, frame: Frame) -> None:
        if self._sealed:
            return
        if self._debug:
            logger.debug("> %s", frame)
        data = encode_frame(frame, self.version if self._accepted else None)
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)

    def _fail(self, error: ProtocolError, headers: Headers = (), *, emit: bool = True) -> None:
        """Queue the one ERROR frame and start closing."""
        # "The ERROR frame SHOULD contain a message header with a short description of
        # the error, and the body MAY contain more detailed information" (1.2, ERROR)
        error_headers = [("message", error.message)]
        if error.receipt_id is not None:
            error_headers.append(("receipt-id", error.receipt_id))
        if isinstance(error, UnsupportedVersion):
            error_headers.append(("version", ",".join(error.supported)))
        error_headers.extend(headers)
        body = b""
        if error.detail:
            # "ERROR frames SHOULD include a content-length header and a content-type
            # header if a body is present." (1.2, ERROR)
            error_headers.append(("content-type", "text/plain"))
            body = error.detail.encode(errors="replace")
        frame = Frame(Command.ERROR, tuple(error_headers), body)
        if self._debug:
            logger.debug("x %s", frame)
        # Until CONNECTED the client does not know the version, hence whether to
        # unescape: send the headers as they are, as CONNECT and CONNECTED do.
        self._error_frame = encode_frame(frame, self.version if self._accepted else None)
        self._transition("error")
        self._client_state.abort_all()
        if emit:
            self._events.append(ProtocolFailed(error))


def _require(frame: Frame, name: str) -> str:
    """Return a required header, which must be present and not empty."""
    value = frame.get(name)
    if not value:
        raise MalformedFrame(
            f"missing {name} header in {frame.command.value}",
            f"{frame.command.value} frames require a non-empty {name} header.",
        )
    return value


_HANDLERS = {
    Command.CONNECT: StompConnection._on_second_connect,
    Command.STOMP: StompConnection._on_second_connect,
    Command.SEND: StompConnection._on_send,
    Command.SUBSCRIBE: StompConnection._on_subscribe,
    Command.UNSUBSCRIBE: StompConnection._on_unsubscribe,
    Command.ACK: StompConnection._on_ack,
    Command.NACK: StompConnection._on_ack,
    Command.BEGIN: StompConnection._on_begin,
    Command.COMMIT: StompConnection._on_commit,
    Command.ABORT: StompConnection._on_abort,
    Command.DISCONNECT: StompConnection._on_disconnect,
}
