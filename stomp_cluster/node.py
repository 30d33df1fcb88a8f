"""This process as one node of the cluster: node-level routing and fan-out.

Theory of operation
-------------------
Each ASGI server process is a *node*. It owns one inbox of the transport (its *node
channel*: a channel-layer channel, or a Redis list with :class:`RedisTransport`; see
:mod:`stomp_cluster.transport`) and holds the table of its local STOMP sessions.
Messages between nodes travel once per node, never once per socket:

* The presence registry knows which nodes hold subscribers of a destination and which
  hold a user's sessions (:meth:`PresenceBackend.destination_nodes`,
  :meth:`~PresenceBackend.user_nodes`). A send asks it once, then puts one message on
  the node channel of each such node (:mod:`stomp_cluster.send`); that node encodes a
  MESSAGE frame for each matching local subscription (:meth:`Node.deliver`). A message
  for this very node skips the transport. The messages are typed
  (:mod:`stomp_cluster.messages`).
* A session-addressed message goes to the node channel of the node holding the session.

Measured on a 2-core machine (``docs/performance.md``), per-socket group fan-out through a
channel layer delivers 2.4–4.4k messages/s where node-level fan-out reaches tens of
thousands, hence this design. It also means consumers need no channel of their own: the
consumer sets no channel layer, saving a receive task per socket.

The node knows its sessions only through the small :class:`LocalSession` interface,
which :class:`~stomp_cluster.consumer.StompConsumer` implements: the node sits below the
consumer in the layers and never imports it.

We route by the registry rather than by channel-layer groups because ``group_send``
drops messages for a full channel silently, while ``send`` raises ``ChannelFull``: a send
helper can then tell its caller (:class:`~stomp_cluster.exceptions.DeliveryFailed`).
It also leaves no dead node channel in any group when a node crashes: reaping the node
in the registry is enough.

The SUBSCRIBE's RECEIPT is sent after the registry holds the subscription (the
``stomp_subscribed`` receivers run first), so a message sent after the client holds that
receipt is routed to its node.

The node also keeps the presence registry current: it registers itself, refreshes its
heartbeat with the ids of its live sessions, re-registers everything when the registry
forgot it (Redis restarted) or when a registry call failed meanwhile, and sweeps the
sessions of nodes whose heartbeat lapsed. When its server stops, it closes its sessions,
removes itself from the registry and gives up the sweep lock (``Node.shutdown()``):
daphne tells it through a Twisted shutdown trigger, uvicorn and gunicorn through the ASGI
lifespan (:mod:`stomp_cluster.lifespan`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from stomp_cluster import destinations, signals
from stomp_cluster.backends import get_presence, get_transport
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import NodeIdInUse, PresenceUnavailable
from stomp_cluster.history.base import previous_id
from stomp_cluster.messages import Kick, NodeMessage, Publish, ToSession, ToUser, from_wire
from stomp_cluster.presence.base import (
    MissedMarks,
    NodeRecord,
    PresenceBackend,
    SessionRecord,
    earliest_id,
)
from stomp_cluster.protocol import PreparedMessage
from stomp_cluster.typing import Headers

__all__ = [
    "MISSED_MESSAGE",
    "LocalSession",
    "Node",
    "Sweep",
    "current_node",
    "get_node",
    "sweep_lost_nodes",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PROCESS_OWNER = secrets.token_hex(16)

#: The most sessions one ``stomp_sessions_reaped`` signal carries: a sweep fires one per
#: batch, and yields to the event loop between batches.
REAP_BATCH = 1000

#: The ERROR message of a session closed because its node was fenced: messages sent
#: while the registry had forgotten the node may not have reached it.
FENCED_MESSAGE = (
    "node fenced: messages may have been missed; reconnect and resume with x-resume-from"
)

#: The ERROR message of a session closed because a stored message meant for it was not
#: pushed to this node (its inbox was full, or the transport failed): the sender left
#: the node a missed mark in the registry. The message is in the history; the ERROR's
#: ``x-resume-from`` header holds the id just before the earliest message missed.
MISSED_MESSAGE = (
    "a message for this session did not reach its server; reconnect and resume from this"
    " frame's x-resume-from, skipping message-ids already received"
)

#: The counters of ``Node.stats`` that each heartbeat publishes to the registry: those of
#: delivery, which the CLI and the admin show for every node. The traffic counters stay
#: in the process, for its ``metrics/`` endpoint.
_PUBLISHED_STATS = frozenset(
    {
        "delivered",
        "dropped_session_gone",
        "dropped_slow_consumer",
        "recovered",
        "redelivered",
        "slow_consumer",
    }
)


class LocalSession(Protocol):
    """What the node needs of a local session; the consumer implements it."""

    @property
    def session_id(self) -> str:
        """The session's cluster-wide id."""

    def deliver(
        self,
        destination: str,
        body: bytes,
        headers: Headers,
        message_id: str | None = None,
        prepared: PreparedMessage | None = None,
    ) -> int:
        """Queue a MESSAGE on each subscription to *destination*; return how many."""

    def deliver_session(self, destination: str, body: bytes, headers: Headers) -> int:
        """Deliver a session-addressed message; return on how many subscriptions."""

    def kick(self, message: str, headers: Headers = ()) -> None:
        """Close the session with an ERROR frame saying *message*, with *headers*."""

    async def shutdown(self) -> None:
        """Close the session because the node is shutting down."""

    def has_destination(self, destination: str) -> bool:
        """Whether a subscription of the session is to *destination*."""

    def has_user_subscriptions(self) -> bool:
        """Whether the session still has a ``/user/`` subscription."""

    def user_destination_key(self, destination: str) -> str | None:
        """The user key that routes *destination* to this session, if it is a user one."""

    def session_record(self) -> SessionRecord:
        """The session as the presence registry stores it."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep removed: the lost nodes, and their sessions."""

    nodes: list[str]
    sessions: list[SessionRecord]


async def sweep_lost_nodes(
    presence: PresenceBackend, sweeper_id: str, ttl: float, grace: float = 0.0
) -> Sweep | None:
    """Remove the sessions of lost nodes, if *sweeper_id* gets the sweep lock.

    A node counts as lost once its liveness has been lapsed for *grace* seconds by the
    registry's clock (:meth:`PresenceBackend.lost_nodes`): nodes pass one ``NODE_TTL``,
    so that after a registry outage the first node back does not reap the others before
    they could heartbeat; an operator's ``stomp_cluster sweep`` passes none.

    Fires ``stomp_sessions_reaped`` once per batch of at most 1,000 removed
    sessions, then ``stomp_disconnected`` (reason ``"node_lost"``, ``consumer=None``) for
    each session of the batch, and yields to the event loop between batches: reaping a
    node of 10,000 sessions never holds the loop for more than one batch's signals. Used
    by every node's heartbeat and by ``manage.py stomp_cluster sweep``. The lock is left
    to expire after *ttl* (or to be released by the caller), so that the nodes do not all
    sweep at once.

    Returns:
        What this call removed, or None when another process holds the lock (it sweeps
        instead).
    """
    if not await presence.acquire_sweep_lock(sweeper_id, ttl):
        return None
    lost = await presence.lost_nodes(grace)
    removed: list[SessionRecord] = []
    for node_id in lost:
        # Once reaped, the node is out of routing too: sends ask the registry.
        sessions = await presence.reap_node(node_id)
        logger.info("node %s lost: reaped %d sessions", node_id, len(sessions))
        for start in range(0, len(sessions), REAP_BATCH):
            if start:
                # Let the sessions of this node and its heartbeat run between batches.
                await asyncio.sleep(0)
            await _signal_reaped(node_id, tuple(sessions[start : start + REAP_BATCH]))
        removed.extend(sessions)
    return Sweep(nodes=lost, sessions=removed)


async def _signal_reaped(node_id: str, batch: tuple[SessionRecord, ...]) -> None:
    """Fire the signals of one batch of reaped sessions: the bulk one, then each session's."""
    await signals.fire(signals.stomp_sessions_reaped, node_id=node_id, sessions=batch)
    for record in batch:
        await signals.fire(
            signals.stomp_disconnected,
            session_id=record.session_id,
            user=None,
            username=record.username,
            node_id=node_id,
            reason=signals.DisconnectReason.NODE_LOST.value,
            consumer=None,
        )


class Node:
    """The cluster node that this process is.

    There is one per process and event loop (see :func:`get_node`). Consumers register
    their sessions and subscriptions with it; it keeps the local routing tables, its
    entry in the presence registry and the node channel listener.
    """

    def __init__(self) -> None:
        settings = get_settings()
        self.node_id = settings.NODE_ID
        #: Random per process (shared by the nodes of a process's event loops, which
        #: tests create one after another): proves to the registry that this process
        #: holds the id (see "One node id, one process" in
        #: :mod:`stomp_cluster.presence.base`).
        self.owner = _PROCESS_OWNER
        #: Why this node refuses to serve, once it learnt another process holds its id.
        self.refused: str | None = None
        self.transport = get_transport()
        self.presence = get_presence()
        self.channel_name = ""
        self.started_at = time.time()
        self.sessions: dict[str, LocalSession] = {}
        #: The node's counters since the process started, read by the ``metrics/``
        #: endpoint at scrape time (:mod:`stomp_cluster.metrics`): plain int increments
        #: where things happen, so that counting costs the hot path nothing more. The
        #: delivery counters are also published with each heartbeat (CLI
        #: ``stomp_cluster nodes``, the admin's Nodes page): ``delivered`` (MESSAGE
        #: frames queued), ``dropped_slow_consumer`` and ``dropped_session_gone``
        #: (messages not delivered), ``slow_consumer`` (sessions closed as slow
        #: consumers), ``recovered`` and ``redelivered`` (history messages). The others
        #: stay in this process: ``connections_opened`` and ``connections_closed``
        #: (WebSockets accepted, and those of them since gone), ``frames_in``/
        #: ``frames_out`` and ``bytes_in``/``bytes_out`` (STOMP frames, heart-beats left
        #: out, and WebSocket payload bytes, heart-beats included), ``send_failed``
        #: (client SENDs refused with ``DeliveryFailed``), ``auth_failed_credentials`` and
        #: ``auth_failed_required`` (CONNECTs refused by authentication).
        self.stats: Counter[str] = Counter()
        #: How many subscriptions of local sessions the node routes to: a gauge, kept by
        #: :meth:`subscribe` and :meth:`unsubscribe`.
        self.subscription_count = 0
        # destination -> sessions with at least one subscription to it (broker destinations)
        self._topic_sessions: dict[str, set[LocalSession]] = defaultdict(set)
        # user key -> sessions of that user with at least one /user/ subscription
        self._user_sessions: dict[str, set[LocalSession]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._started = False
        self._resync = False
        self._maintenance: asyncio.Task[None] | None = None
        # The reply of the last take_missed was lost: take those marks again.
        self._retake_missed = False

    # -- lifecycle ---------------------------------------------------------------

    async def ensure_started(self) -> None:
        """Create the node channel and start the background tasks, once."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:  # another task started it while we waited
                return  # type: ignore[unreachable]  # mypy narrows across the await
            if self.refused is not None:
                raise NodeIdInUse(self.refused)
            self.channel_name = await self.transport.open(self.node_id)
            try:
                await self._register()
            except NodeIdInUse as exc:
                self._refuse(str(exc))
                raise
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._listen(), name="stomp_cluster.node.listen"),
                loop.create_task(self._heartbeat(), name="stomp_cluster.node.heartbeat"),
            ]
            self._started = True
            self._install_shutdown_hook()
            logger.info("node %s started (channel %s)", self.node_id, self.channel_name)

    def _install_shutdown_hook(self) -> None:
        # Daphne runs on Twisted's asyncio reactor and, on SIGTERM, stops the reactor
        # and cancels applications without sending them websocket.disconnect. A
        # "before shutdown" trigger runs while the sockets are still open: our sessions
        # get their ERROR frame, and the node leaves the registry. Daphne has no ASGI
        # lifespan; uvicorn and gunicorn's uvicorn workers stop the node through
        # stomp_cluster.lifespan instead, which says goodbye in their SIGTERM handler.
        if "twisted.internet.reactor" not in sys.modules:
            return
        # Imported here: only under daphne, where the reactor is already running.
        from twisted.internet import defer, reactor

        def before_shutdown() -> Any:
            return defer.Deferred.fromFuture(asyncio.ensure_future(self.shutdown()))

        # Twisted's stubs declare the trigger phase wrongly as a callable.
        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)  # type: ignore[arg-type]

    async def shutdown(self) -> None:
        """Close every local session (reason ``"shutdown"``) and leave the cluster.

        Each session still open gets an ERROR frame saying ``server shutting down``
        before its socket closes (:meth:`close_sessions`); then :meth:`stop`. Called
        when the server stops: by a Twisted shutdown trigger under daphne, by
        :class:`~stomp_cluster.lifespan.LifespanApp` under uvicorn.
        """
        await self.close_sessions()
        await self.stop()

    async def close_sessions(self) -> None:
        """Close every local session with an ERROR frame saying ``server shutting down``.

        The node goes on (:meth:`stop` leaves the cluster). Each session's ERROR is
        written before its socket is closed, unless the client does not read.
        """
        logger.info("node %s shutting down with %d sessions", self.node_id, len(self.sessions))
        for consumer in list(self.sessions.values()):
            try:
                await consumer.shutdown()
            except Exception:
                logger.exception(
                    "node %s: closing session %s failed", self.node_id, consumer.session_id
                )

    async def stop(self) -> None:
        """Stop background tasks and leave the cluster (clean shutdown).

        Unregisters the node and its sessions, so that ``stomp_cluster nodes`` stops
        listing it at once, and gives up the sweep lock if this node holds it, so that
        another node sweeps at its next heartbeat rather than once the lock expires. A
        registry that cannot be reached is left to expire both (``NODE_TTL``).
        """
        if self._maintenance is not None:
            self._tasks.append(self._maintenance)
            self._maintenance = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # asyncio.wait neither raises the tasks' errors nor swallows our own
            # cancellation; the timeout bounds a task that ignores its cancellation.
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                logger.warning("node %s: task %s did not stop", self.node_id, task.get_name())
        self._tasks = []
        try:
            await self.presence.unregister_node(self.node_id)
            await self.presence.release_sweep_lock(self.node_id)
        except PresenceUnavailable:
            # One wait for an unreachable registry, not two: a hung Redis costs a whole
            # socket_timeout per call, and the server is waiting for us to exit.
            logger.warning("presence registry unavailable; node %s left to expire", self.node_id)
        self._started = False

    async def _register(self) -> None:
        settings = get_settings()
        now = time.time()
        record = NodeRecord(
            node_id=self.node_id,
            channel_name=self.channel_name,
            started_at=self.started_at,
            last_heartbeat=now,
            session_count=len(self.sessions),
            alive=True,
            owner=self.owner,
        )
        try:
            await self.presence.register_node(record, settings.NODE_TTL)
        except PresenceUnavailable:
            logger.warning("presence registry unavailable; node %s will retry", self.node_id)
            self._resync = True

    # -- sessions and subscriptions ----------------------------------------------

    # The presence registry itself is written by the receivers in
    # stomp_cluster.presence.receivers, on the signals the consumer fires; the node only
    # routes.

    def add_session(self, consumer: LocalSession) -> None:
        """Make a CONNECTED session reachable by session-addressed messages."""
        self.sessions[consumer.session_id] = consumer

    def remove_session(self, consumer: LocalSession) -> None:
        """Forget a session; its subscriptions must have been removed first."""
        self.sessions.pop(consumer.session_id, None)

    def subscribe(self, consumer: LocalSession, destination: str) -> None:
        """Deliver what this node receives for *destination* to *consumer* too."""
        self.subscription_count += 1
        user_key = consumer.user_destination_key(destination)
        if user_key is not None:
            self._user_sessions[user_key].add(consumer)
        elif not destinations.is_user(destination):
            self._topic_sessions[destination].add(consumer)
        # An anonymous /user/ subscription is reached only by replies to its own
        # session (StompRequest.reply, send_to_session), never by a broadcast.

    def unsubscribe(self, consumer: LocalSession, destination: str) -> None:
        """Undo :meth:`subscribe` once *consumer* has no subscription left that needs it.

        Called once for each :meth:`subscribe`, when that subscription ends.
        """
        self.subscription_count -= 1
        user_key = consumer.user_destination_key(destination)
        if user_key is not None:
            if not consumer.has_user_subscriptions():
                self._discard(self._user_sessions, user_key, consumer)
        elif not consumer.has_destination(destination):
            self._discard(self._topic_sessions, destination, consumer)

    @staticmethod
    def _discard(index: dict[str, set[LocalSession]], key: str, consumer: LocalSession) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(consumer)
            if not members:
                del index[key]

    async def presence_call(self, call: Awaitable[T]) -> T | None:
        """Await a presence-registry call; on an outage log, mark for resync, return None.

        A registry outage must not break the socket: the node serves locally and writes
        everything again once the registry answers (see :meth:`resync`).
        """
        try:
            return await call
        except PresenceUnavailable:
            if not self._resync:
                logger.warning("presence registry unavailable; node %s keeps serving", self.node_id)
            self._resync = True
            return None

    # -- delivery ----------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.1
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # On Python 3.11, redis-py's asyncio.wait_for can swallow a cancellation
                # that lands as a command completes (CPython gh-86296): the receive then
                # returns normally from a cancelled task. Stop anyway.
                raise asyncio.CancelledError
            try:
                messages = await self.transport.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(
                    "node %s: transport receive failed; retrying", self.node_id, exc_info=True
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for wire in messages:
                try:
                    self.deliver(from_wire(wire))
                except Exception:
                    logger.exception(
                        "node %s: could not deliver %r", self.node_id, wire.get("type")
                    )

    def deliver(self, message: NodeMessage) -> int:
        """Fan one node-level message out to the local sessions it concerns.

        Returns:
            How many subscriptions it was delivered to (sessions, for a :class:`Kick`).
        """
        match message:
            case Publish():
                targets: Iterable[LocalSession] = tuple(
                    self._topic_sessions.get(message.destination, ())
                )
            case ToUser():
                targets = tuple(self._user_sessions.get(message.user, ()))
            case ToSession():
                consumer = self.sessions.get(message.session)
                if consumer is None:
                    self.stats["dropped_session_gone"] += 1
                    return 0
                return consumer.deliver_session(message.destination, message.body, message.headers)
            case Kick():
                consumer = self.sessions.get(message.session)
                if consumer is None:
                    return 0
                consumer.kick(message.message)
                return 1
        # Encoded once for all the local sessions (see PreparedMessage).
        body, headers = message.body, message.headers
        prepared = PreparedMessage(body, headers)
        return sum(
            consumer.deliver(message.destination, body, headers, message.id, prepared)
            for consumer in targets
        )

    # -- heartbeat, resync and sweeping ------------------------------------------

    async def _heartbeat(self) -> None:
        # The heartbeat only beats: the resync and the sweep run in a task of their own
        # (one at a time), so that a long resync cannot make the node miss its TTL.
        settings = get_settings()
        while True:
            await asyncio.sleep(settings.NODE_HEARTBEAT_INTERVAL)
            try:
                # Both calls share one pipeline (the heartbeat's connection): one trip.
                beat, missed = await asyncio.gather(
                    self.presence.heartbeat_node(
                        self.node_id,
                        settings.NODE_TTL,
                        session_ids=list(self.sessions),
                        stats={k: v for k, v in self.stats.items() if k in _PUBLISHED_STATS},
                        owner=self.owner,
                    ),
                    self.presence.take_missed(
                        self.node_id, settings.NODE_TTL * 3, again=self._retake_missed
                    ),
                    return_exceptions=True,
                )
                if isinstance(missed, BaseException):
                    # The store may have cleared the marks and lost the reply.
                    self._retake_missed = True
                    if not isinstance(missed, PresenceUnavailable):
                        logger.error(
                            "node %s: taking missed marks failed", self.node_id, exc_info=missed
                        )
                else:
                    self._retake_missed = False
                    if beat is not False:  # False: fenced below, every session closed
                        self._close_missed(missed)
                if isinstance(beat, BaseException):
                    raise beat
                known = beat
            except asyncio.CancelledError:
                raise
            except PresenceUnavailable:
                if not self._resync:
                    logger.warning("presence registry unavailable; node %s retries", self.node_id)
                self._resync = True
                continue
            except Exception:
                logger.exception("node %s: heartbeat failed", self.node_id)
                self._resync = True
                continue
            if not known:
                # At once, even while a resync or sweep runs: this heartbeat refreshed
                # the liveness, so the next one says "known" again, and a lapse passed
                # over here would leave sockets open that senders skipped meanwhile.
                self._fence()
                self._resync = True
            if self._maintenance is not None and not self._maintenance.done():
                continue  # a resync or sweep is still running; the next one follows it
            self._maintenance = asyncio.get_running_loop().create_task(
                self._maintain(), name="stomp_cluster.node.maintain"
            )

    async def _maintain(self) -> None:
        """Resync if needed, then sweep: the heartbeat's work that may take long."""
        try:
            if self._resync:
                await self.resync()
            await self.sweep()
        except asyncio.CancelledError:
            raise
        except PresenceUnavailable:
            if not self._resync:
                logger.warning("presence registry unavailable; node %s retries", self.node_id)
            self._resync = True
        except NodeIdInUse as exc:
            self._refuse(str(exc))
            for task in self._tasks:
                task.cancel()
        except Exception:
            logger.exception("node %s: resync or sweep failed", self.node_id)
            self._resync = True

    def _fence(self) -> None:
        """Close every local session: the registry forgot this node, so it is fenced.

        The registry forgot the node (another node reaped it, or Redis restarted empty,
        or another process took its id), or the node's liveness lapsed (a Redis stall
        longer than ``NODE_TTL``: senders saw it as dead and pushed nothing to it): sends
        made meanwhile did not route here, and no one knows what the sessions missed.
        Keeping them open could leave a socket open but deaf, so each gets an ERROR frame
        telling its client to reconnect and resume (:data:`FENCED_MESSAGE`); the node then
        registers again and serves new sessions.
        """
        if not self.sessions:
            return
        logger.warning(
            "node %s was fenced (forgotten by the registry): closing %d sessions",
            self.node_id,
            len(self.sessions),
        )
        for consumer in list(self.sessions.values()):
            consumer.kick(FENCED_MESSAGE)
            # Closing, not to be registered again by the resync that follows.
            self.sessions.pop(consumer.session_id, None)

    def _close_missed(self, missed: MissedMarks) -> None:
        """Close the sessions that may have missed a stored message (:mod:`~stomp_cluster.send`).

        A sender could not push a stored message to this node (its inbox was full, or the
        transport failed) and left a missed mark naming the user or the topic. The
        sessions concerned stay open otherwise, and would go on receiving later messages
        without ever learning of the gap; closed with :data:`MISSED_MESSAGE`, their
        clients reconnect and resume from the history. We close rather than replay here:
        a replay would need the client's position in every subscription, which the resume
        handshake already gathers. A session subscribed since the miss is closed too (the
        mark does not say when): a needless reconnect, never a loss.
        """
        if not missed:
            return
        # Each session resumes from just before the earliest message it missed: later
        # ones may have reached it before this heartbeat read the mark.
        targets: dict[LocalSession, str] = {}
        if missed.everything:
            targets = dict.fromkeys(self.sessions.values(), missed.since)
        else:
            marked = [
                (self._user_sessions, missed.users),
                (self._topic_sessions, missed.destinations),
            ]
            for index, marks in marked:
                for name, message_id in marks.items():
                    for consumer in index.get(name, ()):
                        targets[consumer] = earliest_id((targets.get(consumer, ""), message_id))
        logger.warning(
            "node %s missed stored messages (%s): closing %d sessions so that they resume",
            self.node_id,
            "all"
            if missed.everything
            else f"{len(missed.users)} users, {len(missed.destinations)} destinations",
            len(targets),
        )
        for consumer, message_id in targets.items():
            consumer.kick(MISSED_MESSAGE, _resume_headers(message_id))

    def _refuse(self, reason: str) -> None:
        """Stop serving for good: another live process holds this node's id."""
        logger.error(
            "node %s refuses to serve: %s (give each process its own NODE_ID)",
            self.node_id,
            reason,
        )
        self.refused = reason
        for consumer in list(self.sessions.values()):
            consumer.kick(f"node id in use: {reason}")

    async def resync(self) -> None:
        """Write this node, its sessions and their subscriptions to the registry again.

        Called when the registry forgot the node (Redis restarted empty) or when a
        registry call failed meanwhile, so that entries written or removed during the
        outage cannot be left half-done.
        """
        logger.info("node %s: re-registering %d sessions", self.node_id, len(self.sessions))
        self._resync = False
        # Registering first checks that the id is still ours (NodeIdInUse otherwise).
        await self._register()
        # Then every local session is written again, each replacing its old entry and
        # subscriptions in one atomic step (the backend pipelines them, 500 per round trip
        # with Redis), and only then are the entries that are no longer local removed.
        # Never "unregister, then add back": a send in between would find none of this
        # node's sessions and skip its open sockets.
        local = list(self.sessions.values())
        await self.presence.add_sessions([consumer.session_record() for consumer in local])
        here = {consumer.session_id for consumer in local}
        stale: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.presence.sessions(node=self.node_id, cursor=cursor, limit=1000)
            stale.extend(r.session_id for r in page.sessions if r.session_id not in here)
            cursor = page.next_cursor
            if cursor is None:
                break
        if stale:
            await asyncio.gather(
                *(self.presence.remove_session(sid, self.node_id) for sid in stale)
            )

    async def sweep(self) -> list[SessionRecord]:
        """Remove the sessions of lost nodes, if this node holds the sweep lock.

        Returns:
            The sessions removed by this call; others may have been removed by another
            node holding the lock.
        """
        ttl = get_settings().NODE_TTL
        swept = await sweep_lost_nodes(self.presence, self.node_id, ttl, grace=ttl)
        return [] if swept is None else swept.sessions


_nodes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Node] = weakref.WeakKeyDictionary()


def current_node() -> Node | None:
    """The started node of the running event loop, if any (None in a WSGI process)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    node = _nodes.get(loop)
    return node if node is not None and node._started else None


def get_node() -> Node:
    """Return the node of the running event loop (one per process in practice).

    Keyed by loop because channel-layer and Redis connections belong to one loop;
    tests that run each case on a new loop get a fresh node.
    """
    loop = asyncio.get_running_loop()
    node = _nodes.get(loop)
    if node is None:
        node = _nodes[loop] = Node()
    return node


def _resume_headers(message_id: str) -> Headers:
    """The ``x-resume-from`` of an ERROR for a session that missed *message_id*: the id
    just before it (none if *message_id* is not a stream id past ``0-0``)."""
    try:
        return (("x-resume-from", previous_id(message_id)),)
    except ValueError:
        return ()
