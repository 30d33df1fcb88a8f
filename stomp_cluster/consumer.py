"""The Channels consumer that bridges WebSocket, the STOMP protocol core and the node.

It is the only place doing I/O for a connection: bytes in go to
:meth:`StompConnection.receive_data`, events out become signals, routing and handler
calls, and :meth:`StompConnection.data_to_send` goes back to the socket. It holds the
connection's heart-beat timers (the protocol only computes the intervals). It parses
nothing and decides no protocol rule itself.

The rules live beside it, one home each (internal modules): what a client's SEND and
SUBSCRIBE may do, and where a SEND goes, in ``stomp_cluster.client_frames`` (the
consumer turns a refusal into an ERROR); frames to ``/app/`` destinations in
``stomp_cluster.app_dispatch``; the outgoing queue, which keeps frames in order, bounds
them in frames and bytes and decides when a session is too slow, in
``stomp_cluster.outbox``.

One client cannot hurt the others:

* Input is bounded before it is parsed: a WebSocket message over
  ``MAX_WEBSOCKET_MESSAGE_SIZE`` gets an ERROR. The frames of one message are parsed and
  handled :data:`EVENTS_PER_BATCH` at a time; between batches the consumer writes what
  it queued and yields to the loop, so a message of a hundred thousand small SENDs
  delays other sessions by one batch at a time, not by the whole message.
* Output is bounded in bytes (``MAX_OUTBOX_BYTES``) and frames (``MAX_OUTBOX``) by the
  outbox; a session over it is closed as a slow consumer with an ERROR saying so.
* Client strings (destinations, ids) are logged with ``%r``, never raw, so a line
  feed in a destination cannot forge a log line.

It counts what it sees into the node's counters (``Node.stats``: connections, frames and
bytes each way, failed SENDs): plain int increments, once per received message and once
per batch of frames written, which the ``metrics/`` endpoint reads at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer

from stomp_cluster import __version__, app_dispatch, client_frames, destinations, roster, signals
from stomp_cluster.auth import authenticate_connect, origin_allowed
from stomp_cluster.conf import StompSettings, get_settings
from stomp_cluster.exceptions import DeliveryFailed, NodeIdInUse
from stomp_cluster.node import Node, get_node
from stomp_cluster.outbox import Outbox, ws_message
from stomp_cluster.presence.base import SessionRecord, SubscriptionRecord
from stomp_cluster.protocol import (
    AckRequested,
    ConnectRequested,
    DisconnectRequested,
    Event,
    Frame,
    NackRequested,
    PreparedMessage,
    ProtocolFailed,
    ReceiptRequested,
    SendRequested,
    State,
    StompConnection,
    SubscribeRequested,
    Subscription,
    UnsubscribeRequested,
    Version,
)
from stomp_cluster.recovery import RESUME_HEADER, SessionRecovery
from stomp_cluster.signals import DisconnectReason
from stomp_cluster.typing import Headers

__all__ = ["StompConsumer"]

logger = logging.getLogger(__name__)

#: Seconds a client may take between opening the WebSocket and sending CONNECT.
CONNECT_TIMEOUT = 30.0

#: Events handled between two turns of the event loop. A hundred small SENDs take a few
#: milliseconds; one WebSocket message may hold a hundred thousand.
EVENTS_PER_BATCH = 100


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


class StompConsumer(AsyncConsumer):  # type: ignore[misc]  # channels is untyped
    """One STOMP session over one WebSocket.

    Mount it with ``stomp_cluster.routing.websocket_urlpatterns``. Browser sessions are
    authenticated by their session cookie (:func:`stomp_cluster.auth.scope_user`).
    """

    # No per-consumer channel: the node fans messages out to sockets directly, which
    # saves a channel-layer receive task per connection (see stomp_cluster.node).
    # __call__ below never asks for a layer; the alias keeps Channels' own code paths
    # (channel_layer_alias lookups by tools) from finding one.
    channel_layer_alias = "__stomp_cluster_consumer_has_no_channel__"

    #: The protocol state machine; made when the WebSocket opens, since it depends on
    #: the subprotocol the client offered.
    connection: StompConnection
    #: The session's outgoing queue, made with the connection.
    _outbox: Outbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: StompSettings = get_settings()
        self.node: Node = get_node()
        #: The CONNECTED ``session`` header; "" until CONNECT succeeded.
        self.session_id = ""
        self.user: Any = None
        self.username = ""
        #: What /user/ destinations of this session route by (None: anonymous).
        self.user_key: str | None = None
        self.connected_at = 0.0
        self._closed = False
        self._accepted = False
        self._connected = False
        # Why the server is ending the session, once it decided to (an ERROR is queued):
        # the frames that follow are moot. None while the session goes on; a session
        # that ends with this still None was ended by the client.
        self._ending: DisconnectReason | None = None
        self._last_received = time.monotonic()
        # At most one pending timer per purpose ("connect", "send", "check"): a
        # heart-beat timer re-arms itself, and a list would grow with every beat.
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # What the node routes to us: destination -> subscription ids, and the reverse.
        # Only subscriptions that passed our checks are here, unlike the protocol's.
        self._subs_by_destination: dict[str, list[str]] = {}
        self._routed: dict[str, Subscription] = {}
        self._recovery = SessionRecovery(self._send_again, self.node.stats, drain=self._drain)
        self._resume_from: str | None = None
        self._receipt_headers: Headers = ()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one WebSocket: take its ASGI events one at a time, in order.

        What Channels' ``AsyncConsumer.__call__`` does for a consumer with no channel
        layer, without its ``await_many_dispatch``: that helper wraps every pending
        ``receive()`` in a task of its own to wait on several sources, and this consumer
        has one source. The task and its futures were the largest single item of an idle
        session's memory (about 3 KB of ~30 KiB, W6 in ``docs/performance.md``). Events
        are still handled one after the other, each before the next is read.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler of an ASGI event, without Channels' per-event thread hop.

        Channels' ``AsyncConsumer.dispatch`` runs ``close_old_connections`` in a worker
        thread before every event, for consumers that use the ORM directly. Every STOMP
        frame is an event here, and that hop was the largest single cost of a connect
        and of a SEND under load (``docs/performance.md``). This consumer reaches the
        database only through ``database_sync_to_async``, which closes stale
        connections itself, around each call, in the thread that uses them.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Check the origin, pick the STOMP subprotocol and accept the WebSocket."""
        origin = _header(self.scope, b"origin")
        if not origin_allowed(origin):
            logger.info("x refused WebSocket from origin %r", origin)
            await self.send({"type": "websocket.close", "code": 4003})
            raise StopConsumer
        offered = map(Version.from_subprotocol, self.scope.get("subprotocols", ()))
        version = max(filter(None, offered), key=lambda v: v.value, default=None)
        s = self.settings
        self.connection = StompConnection(
            limits=s.limits(),
            heartbeat=(s.HEARTBEAT_SEND_MS, s.HEARTBEAT_RECEIVE_MS),
            subprotocol=version,
        )
        self._outbox = Outbox(
            self.connection,
            self.send,
            self.node.stats,
            max_frames=s.MAX_OUTBOX,
            max_bytes=s.MAX_OUTBOX_BYTES,
            is_closed=self.is_closed,
            on_slow=self._slow_consumer,
            on_queued=self._recovery.state.record,
            on_closing=self._close,
        )
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if version is not None:
            accept["subprotocol"] = version.subprotocol
        try:
            await self.node.ensure_started()
        except NodeIdInUse as exc:
            await self._refuse_socket(accept, f"node id in use: {exc}")
        await self.send(accept)
        self._accepted = True
        self.node.stats["connections_opened"] += 1
        self._call_later("connect", CONNECT_TIMEOUT, self._connect_timeout)

    async def _refuse_socket(self, accept: dict[str, Any], message: str) -> NoReturn:
        """Accept the WebSocket only to say *message* in an ERROR frame, then close it.

        For a node that cannot serve at all (another live process holds its id): the
        client reads why rather than a bare refused handshake.
        """
        await self.send(accept)
        self.connection.send_error(message)
        for chunk in self.connection.data_to_send():
            await self.send(ws_message(chunk))
        await self.send({"type": "websocket.close", "code": 1011})
        raise StopConsumer

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Feed the bytes to the protocol and act on the events that come out."""
        if self._closed:
            return
        self._last_received = time.monotonic()
        self._outbox.client_spoke()
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode(errors="surrogatepass")
        self.node.stats["bytes_in"] += len(data)
        limit = self.settings.MAX_WEBSOCKET_MESSAGE_SIZE
        if len(data) > limit:
            logger.info(
                "x session %s: WebSocket message of %d bytes refused",
                self.session_id or "-",
                len(data),
            )
            if self.connection.state is not State.CLOSING:
                self._refuse(f"WebSocket message too large: {len(data)} bytes, limit is {limit}")
            await self._outbox.flush()
            return
        # Frames are logged at DEBUG by the protocol, with credentials hidden; raw bytes
        # are not logged here, since a CONNECT carries its passcode in clear.
        self.connection.receive_data(data)
        await self._process()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """The socket is gone: clean up once, then stop this consumer."""
        code = message.get("code")
        if code == 1012 and self._ending is None:
            # 1012 "service restart": the server (uvicorn) is shutting down. Not 1001,
            # which browsers also send when they leave a page.
            self._ending = DisconnectReason.SHUTDOWN
        await self._cleanup()
        raise StopConsumer

    # -- event handling ----------------------------------------------------------

    async def _process(self) -> None:
        try:
            while not self._closed:
                events = self.connection.events_received(EVENTS_PER_BATCH)
                if not events:
                    break
                # One event per frame, and one more, right after it, for a frame's
                # receipt header: a lone event is a frame.
                frames = len(events)
                if frames > 1:
                    frames -= sum(type(event) is ReceiptRequested for event in events)
                self.node.stats["frames_in"] += frames
                for event in events:
                    await self._handle(event)
                if self._outbox.over_budget():
                    self._slow_consumer()
                if len(events) >= EVENTS_PER_BATCH:
                    # More may be buffered: write what this batch queued (under uvicorn
                    # a reader that does not read holds us here, not in memory), and
                    # let every other session on the node have its turn.
                    await self._outbox.flush()
                    await asyncio.sleep(0)
        except Exception:
            logger.exception("internal error on session %s", self.session_id or "-")
            if self.connection.state is not State.CLOSING:
                self.connection.send_error("internal error")
            self._ending = DisconnectReason.ERROR
        await self._outbox.flush()

    async def _handle(self, event: Event) -> None:
        if self._ending is not None:
            # We already refused something (ERROR queued): the rest is moot, including
            # the receipt of the refused frame, which the ERROR carries as receipt-id.
            return
        if self.connection.state is State.CLOSING and not isinstance(
            event, ReceiptRequested | DisconnectRequested | ProtocolFailed
        ):
            return
        match event:
            case ConnectRequested():
                await self._on_connect(event)
            case SendRequested():
                await self._on_send(event)
            case SubscribeRequested():
                await self._on_subscribe(event.subscription, event.frame)
            case UnsubscribeRequested():
                await self._on_unsubscribe(event.subscription)
            case AckRequested():
                await self._recovery.ack(str(event.subscription.id), event.message_ids)
            case NackRequested():
                await self._recovery.nack(str(event.subscription.id), event.message_ids)
            case ReceiptRequested():
                self.connection.send_receipt(event.receipt_id, headers=self._receipt_headers)
                self._receipt_headers = ()
            case DisconnectRequested():
                pass  # the client closes the socket next: reason "client"
            case ProtocolFailed():
                logger.info(
                    "x protocol error on session %s: %r",
                    self.session_id or "-",
                    event.error.message,
                )
                self._ending = DisconnectReason.ERROR

    def _refuse(self, message: str, frame: Frame | None = None) -> None:
        # The ERROR answers the refused frame's receipt, if it asked for one.
        receipt = frame.get("receipt") if frame is not None else None
        self.connection.send_error(message, receipt_id=receipt)
        self._ending = DisconnectReason.ERROR

    async def _on_connect(self, event: ConnectRequested) -> None:
        user, error = await authenticate_connect(self.scope, event.login, event.passcode)
        if error is not None:
            self._refuse(error)
            return
        self.user = user
        if user is not None and user.is_authenticated:
            self.username = user.get_username()
            self.user_key = self.username
        self.session_id = uuid.uuid4().hex
        self._recovery.session_id = self.session_id
        self.connected_at = time.time()
        self._resume_from = event.frame.get(RESUME_HEADER)
        self.connection.accept_connect(
            session=self.session_id, server=f"stomp_cluster/{__version__}"
        )
        self._connected = True
        self._cancel_timers()
        outgoing, incoming = self.connection.heartbeat_intervals
        if outgoing:
            self._call_later("send", outgoing / 1000, self._heartbeat_send, outgoing / 1000)
        if incoming:
            limit = (incoming + self.settings.HEARTBEAT_GRACE_MS) / 1000
            self._call_later("check", limit, self._heartbeat_check, limit)
        self.node.add_session(self)
        logger.info("= session %s connected (user %r)", self.session_id, self.username)
        await signals.fire(signals.stomp_connected, consumer=self, **self._signal_kwargs())

    def _signal_kwargs(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user": self.user,
            "username": self.username,
            "node_id": self.node.node_id,
        }

    async def _on_send(self, event: SendRequested) -> None:
        destination = str(event.destination)
        frame = event.frame
        refusal = await client_frames.acheck_send(self.user, self.username, destination, frame)
        path = destinations.app_path(destination)
        if refusal is None and path is not None:
            refusal = (await app_dispatch.asend(self, destination, path, frame)).refusal
        elif refusal is None:
            stamp = self.settings.STAMP_SENDER
            try:
                refusal = await client_frames.aroute_send(
                    self.username, destination, frame, stamp_sender=stamp
                )
            except DeliveryFailed as exc:
                # An outage or a full node channel: tell the client its SEND did not go
                # through (it may retry), rather than pretend it did.
                self.node.stats["send_failed"] += 1
                logger.warning(
                    "SEND to %r from session %s failed: %s", destination, self.session_id, exc
                )
                refusal = f"message not delivered: {exc}"
        if refusal is not None:
            self._refuse(refusal, frame)

    def user_destination_key(self, destination: str) -> str | None:
        """The user key that routes *destination*, when it is a ``/user/`` one.

        Anonymous sessions may subscribe to ``/user/`` destinations too; they receive
        what is sent to their session (replies), never anything sent to a user.
        """
        if self.user_key is not None and destinations.is_user(destination):
            return self.user_key
        return None

    async def _on_subscribe(self, sub: Subscription, frame: Frame) -> None:
        destination = str(sub.destination)
        if destinations.kind(destination) is destinations.Kind.APP:
            path = destinations.app_path(destination) or ""
            outcome = await app_dispatch.asubscribe(self, destination, path, frame)
            if outcome.refusal is not None:
                self._refuse(outcome.refusal, frame)
            elif outcome.answer is not None:
                self._outbox.queue_message(str(sub.id), *outcome.answer, None)
            return
        asked = await client_frames.acheck_subscribe(
            self.user,
            destination,
            frame,
            user_key=self.user_key,
            resume_from=self._resume_from,
            settings=self.settings,
        )
        if isinstance(asked, str):
            self._refuse(asked, frame)
            return
        if asked.history_key is not None:
            self._recovery.state.begin(str(sub.id))  # hold live messages back until recovered
        first = not self.has_destination(destination)
        self._subs_by_destination.setdefault(destination, []).append(str(sub.id))
        self._routed[str(sub.id)] = sub
        self.node.subscribe(self, destination)
        await signals.fire(
            signals.stomp_subscribed,
            destination=destination,
            subscription_id=str(sub.id),
            ack=sub.ack.value,
            consumer=self,
            **self._signal_kwargs(),
        )
        # After the registry recorded it: a snapshot, or this session's join.
        for body, headers in await roster.subscribed(self, destination, first=first):
            self._outbox.queue_message(str(sub.id), body, headers, None)
        if asked.history_key is not None:
            receipt = await self._recovery.recover(
                str(sub.id),
                asked.history_key,
                destination,
                asked.resume,
                sub.ack,
                per_user=destinations.is_user(destination),
                receipted=frame.get("receipt") is not None,
                rewind=asked.rewind,
                rewind_bytes=self.settings.MAX_OUTBOX_BYTES // 2,
            )
            if receipt:
                self._receipt_headers = receipt

    def _send_again(
        self, sub_id: str, body: bytes, headers: Headers, message_id: str | None
    ) -> bool:
        """Queue a replayed, redelivered or held-back MESSAGE (for the recovery)."""
        return self._outbox.queue_message(sub_id, body, headers, message_id, replay=True)

    async def _drain(self) -> bool:
        """Hand what is queued to the server; whether the session may take more.

        Recovery calls it between pages of the history: under uvicorn it waits while
        the socket does not drain.
        """
        await self._outbox.flush()
        return not self._closed and self._ending is None

    async def _on_unsubscribe(self, sub: Subscription, *, closing: bool = False) -> None:
        if self._routed.pop(str(sub.id), None) is None:
            return  # refused at SUBSCRIBE time: never routed
        self._recovery.state.forget(str(sub.id))
        destination = str(sub.destination)
        ids = self._subs_by_destination.get(destination, [])
        if str(sub.id) in ids:
            ids.remove(str(sub.id))
        if not ids:
            self._subs_by_destination.pop(destination, None)
        self.node.unsubscribe(self, destination)
        await signals.fire(
            signals.stomp_unsubscribed,
            destination=destination,
            subscription_id=str(sub.id),
            ack=sub.ack.value,
            closing=closing,
            consumer=self,
            **self._signal_kwargs(),
        )
        if not ids and not closing:
            await roster.left(self, (destination,))

    # -- used by the node --------------------------------------------------------

    def has_destination(self, destination: str) -> bool:
        """Whether any subscription of this session is to *destination*."""
        return destination in self._subs_by_destination

    def has_user_subscriptions(self) -> bool:
        """Whether this session still has a ``/user/`` subscription."""
        return any(destinations.is_user(d) for d in self._subs_by_destination)

    def subscription_list(self) -> list[Subscription]:
        """The session's routed subscriptions."""
        return list(self._routed.values())

    def session_record(self) -> SessionRecord:
        """This session as the presence registry stores it."""
        client = self.scope.get("client") or ("", 0)
        version = self.connection.version
        return SessionRecord(
            session_id=self.session_id,
            node_id=self.node.node_id,
            channel_name=self.node.channel_name,
            user_key=self.user_key,
            username=self.username,
            remote_addr=str(client[0] or ""),
            user_agent=_header(self.scope, b"user-agent")[:256],
            version=version.value if version is not None else "",
            connected_at=self.connected_at,
            last_seen=time.time(),
            subscriptions=tuple(
                SubscriptionRecord(id=str(s.id), destination=str(s.destination), ack=s.ack.value)
                for s in self._routed.values()
            ),
        )

    def deliver(
        self,
        destination: str,
        body: bytes,
        headers: Headers,
        message_id: str | None = None,
        prepared: PreparedMessage | None = None,
    ) -> int:
        """Queue a MESSAGE on each subscription of this session to *destination*.

        Called by the node from the event loop; never waits on the socket. A
        *message_id* from a history is used as the MESSAGE's ``message-id``, and
        orders it against recovered messages (see :mod:`stomp_cluster.recovery`).

        *prepared* is the same body and headers already encoded, shared by every session
        the node delivers one message to (:class:`~stomp_cluster.protocol.PreparedMessage`).

        Returns:
            How many subscriptions it was queued on.
        """
        if self._closed or not self._connected:
            return 0
        if self._outbox.over_budget():
            self._slow_consumer()
            self.node.stats["dropped_slow_consumer"] += 1
            return 0
        ids = self._subs_by_destination.get(destination, ())
        count = 0
        for sub_id in tuple(ids):
            if not self._recovery.state.admit(sub_id, message_id, body, headers):
                if self._recovery.state.held_bytes > self.settings.MAX_OUTBOX_BYTES:
                    self._slow_consumer()  # held back by a recovery that does not end
                    break
                continue
            if self._outbox.queue_message(sub_id, body, headers, message_id, prepared, live=True):
                count += 1
        if count or self.connection.state is State.CLOSING:
            self._outbox.schedule_flush()
        return count

    def deliver_session(self, destination: str, body: bytes, headers: Headers) -> int:
        """Deliver a session-addressed message: to *destination* or its ``/user/`` form."""
        count = self.deliver(destination, body, headers)
        if not count and not destinations.is_user(destination):
            count = self.deliver(destinations.user_destination(destination), body, headers)
        return count

    def kick(self, message: str, headers: Headers = ()) -> None:
        """Close this session with an ERROR frame saying *message*, with *headers* (admin,
        CLI, a missed mark)."""
        if self._closed:
            return
        self.connection.send_error(message, headers=headers)
        self._ending = DisconnectReason.KICKED
        self._outbox.schedule_flush()

    def _slow_consumer(self) -> None:
        """Disconnect a client that does not read fast enough.

        We never drop a message silently: the client is told (if it ever reads again)
        and the session ends, so it reconnects and recovers from the history what it
        missed. The socket may be unwritable, so we clean up first and close without
        waiting on the writer.
        """
        if self._closed or self._ending is DisconnectReason.SLOW_CONSUMER:
            return
        outbox = self._outbox
        logger.warning(
            "x session %s: %d frames, %d bytes waiting, %d replayed; closing as a slow consumer",
            self.session_id,
            outbox.backlog,
            outbox.queued_bytes,
            outbox.replayed,
        )
        self._ending = DisconnectReason.SLOW_CONSUMER
        self.node.stats["slow_consumer"] += 1
        why = outbox.slow_reason(self._recovery.state.held_bytes)
        self.connection.send_error(
            f"slow consumer: {why}",
            detail="Reconnect and resume from the last message-id received "
            "(x-resume-from): what was not delivered is still in the history.",
        )

        async def close() -> None:
            if not self._outbox.flushing:
                # A socket that still drains (daphne's always does) takes the ERROR too.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._outbox.flush(), 5)
                if self._closed:
                    return
            await self._cleanup()
            try:
                await asyncio.wait_for(self.send({"type": "websocket.close", "code": 1008}), 5)
            except Exception:  # the socket is stuck or gone; the server reaps it
                logger.debug("x session %s: close after slow consumer failed", self.session_id)

        asyncio.get_running_loop().create_task(close())

    async def shutdown(self) -> None:
        """Close this session because the node is shutting down."""
        if self._closed:
            return
        self._ending = DisconnectReason.SHUTDOWN
        self.connection.send_error("server shutting down")
        await self._outbox.flush()

    # -- output, timers and cleanup ----------------------------------------------

    def is_closed(self) -> bool:
        """Whether this session has ended (it may change across an ``await``)."""
        return self._closed

    async def _close(self) -> None:
        await self._cleanup()
        # 1008 "policy violation" for a slow consumer, as when it is closed unflushed.
        slow = self._ending is DisconnectReason.SLOW_CONSUMER
        await self.send({"type": "websocket.close", "code": 1008 if slow else 1000})

    def _call_later(
        self, name: str, delay: float, callback: Callable[..., None], *args: Any
    ) -> None:
        """Run *callback* after *delay* seconds, replacing the pending timer *name*.

        Timers are handles in the event loop's heap, not tasks: thousands of idle
        sessions cost no task each (``docs/performance.md``, W4).
        """
        old = self._timers.get(name)
        if old is not None:
            old.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback, *args)

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _connect_timeout(self) -> None:
        if not self._connected and not self._closed:
            self._refuse(f"no CONNECT frame within {CONNECT_TIMEOUT:.0f} seconds")
            self._outbox.schedule_flush()

    def _heartbeat_send(self, interval: float) -> None:
        # STOMP 1.2 "Heart-beating": the server sends an EOL when it has sent nothing
        # else for the negotiated interval.
        if self._closed:
            return
        idle = time.monotonic() - self._outbox.last_sent
        if idle >= interval * 0.95:
            self.connection.send_heartbeat()
            self._outbox.schedule_flush()
            idle = 0.0
        self._call_later("send", max(interval - idle, 0.01), self._heartbeat_send, interval)

    def _heartbeat_check(self, limit: float) -> None:
        if self._closed:
            return
        silent = time.monotonic() - self._last_received
        if silent > limit:
            logger.info("x session %s silent for %.1fs: closing", self.session_id, silent)
            self.connection.send_error(f"no heart-beat from the client for {silent:.1f} seconds")
            self._ending = DisconnectReason.HEARTBEAT_TIMEOUT
            self._outbox.schedule_flush()
            return
        self._call_later("check", limit - silent + 0.01, self._heartbeat_check, limit)

    async def _cleanup(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        if self._accepted:
            self.node.stats["connections_closed"] += 1
        if not self._connected:
            return
        leaving = list(self._subs_by_destination)
        for sub in self.subscription_list():
            await self._on_unsubscribe_quietly(sub)
        self.node.remove_session(self)
        reason = self._ending or DisconnectReason.CLIENT
        logger.info("= session %s closed (%s)", self.session_id, reason.value)
        await signals.fire(
            signals.stomp_disconnected,
            reason=reason.value,
            consumer=self,
            **self._signal_kwargs(),
        )
        await roster.left(self, leaving)  # once the registry no longer lists the session

    async def _on_unsubscribe_quietly(self, sub: Subscription) -> None:
        try:
            await self._on_unsubscribe(sub, closing=True)
        except Exception:
            logger.exception("cleanup of subscription %r failed", sub.id)
