"""The presence interface: who is connected to which node, and what they subscribe to.

Theory of operation
===================

Every cluster node (one ASGI server process) registers itself with
:meth:`PresenceBackend.register_node` and then keeps a *liveness TTL* alive by calling
:meth:`~PresenceBackend.heartbeat_node` more often than that TTL. Its consumers record each
STOMP session and subscription as it comes and goes. Any node can then answer "is this user
online?", "which nodes hold subscribers of this destination?" and "list the sessions" for
the admin, without asking the other nodes.

Disconnect handlers do not always run: a process can be killed, a machine can lose power.
Rather than trusting them, every node runs a sweeper now and then. One node at a time wins
:meth:`~PresenceBackend.acquire_sweep_lock`, lists :meth:`~PresenceBackend.lost_nodes`
(nodes whose TTL lapsed while they are still listed) and calls
:meth:`~PresenceBackend.reap_node` on each. Reaping removes a lost node's sessions in one
atomic step and hands them to exactly one caller, even when two sweepers race, so that the
"disconnected" signal fires once per session.

A node whose heartbeat comes back ``False`` has been forgotten (it was reaped, or Redis
restarted empty): it must call :meth:`~PresenceBackend.register_node` again and re-add its
live sessions with :meth:`~PresenceBackend.add_session`, which is idempotent.

Fencing with a grace period
===========================

A lapsed TTL alone does not make a node lost. After a Redis stall or outage longer than
the TTL every node's liveness key has lapsed at once, and the first node back must not
reap the others before they had their own chance to heartbeat. So
:meth:`~PresenceBackend.lost_nodes` takes a *grace*: the first time it sees a node's
liveness lapsed it marks the node "missing since now", by the store's clock (Redis
``TIME``), not by the caller's; it reports the node lost only once that mark is *grace*
seconds old. A heartbeat or a registration clears the mark. The node sweeper passes one
``NODE_TTL``, so a live node always gets a full TTL after the store came back.

One node id, one process
========================

:attr:`NodeRecord.owner` is a random token drawn once per process. Registration refuses
(:class:`~stomp_cluster.exceptions.NodeIdInUse`) while another owner holds the id and is
alive, and a heartbeat under another owner's token returns ``False``: two processes
started with one ``NODE_ID`` can never share one inbox or drop each other's sessions. A
restarted process (new token) takes the id over once the old one's liveness lapsed, or at
once after the old one unregistered cleanly.

Backends
========

:class:`~stomp_cluster.presence.memory.MemoryPresence` keeps everything in the process (one
node: tests, the demo). :class:`~stomp_cluster.presence.redis.RedisPresence` shares it
across the cluster. Both pass the same contract suite (``tests/presence/test_contract.py``).
Every method is a coroutine; sync code (the admin, ``send_to_user``) goes through
``asgiref.sync.async_to_sync`` at its edge.

Errors
======

A backend that cannot reach its store raises
:class:`~stomp_cluster.exceptions.PresenceUnavailable`. Callers degrade: a node keeps serving
its own sockets and re-registers them when the store is back. Programming errors (a bad
cursor, a non-positive ``limit``) raise :class:`ValueError`; unknown options raise
:class:`~django.core.exceptions.ImproperlyConfigured`.

Visibility
==========

Queries that span the cluster (``node=None``) cover the registered nodes only, since the
Redis backend finds the sessions by asking each listed node: register a node before adding
its sessions. A node that is lost but not yet reaped is still listed, so its sessions stay
visible until a sweeper reaps them, at most about one TTL plus one sweep interval.

Missed marks
============

A sender whose push of a *stored* message to a live node failed (its inbox full, the
transport down) cannot leave it there: the node's sockets stay open and never resume, so
their clients would never learn of the gap. It calls :meth:`~PresenceBackend.mark_missed`
with what the node missed (the user key of a user message, the destination of a topic
one, with the message's id); the node takes its marks with
:meth:`~PresenceBackend.take_missed` on its heartbeat and closes the sessions concerned with
an ERROR telling them to resume from just before the earliest message they missed (a mark
keeps the smallest id when marked again: later messages may have reached the session
before its node read the mark). Marks are bounded
(:data:`MISSED_CAP`; past it a node's mark says "everything") and expire after the TTL the
sender gives, since a node that stops heartbeating is fenced anyway.

Ordering
========

Lists of sessions are ordered by ``(connected_at, session_id)``, the order of
:meth:`~PresenceBackend.sessions` pages, so that results are stable and comparable across
backends. Subscriptions inside a :class:`SessionRecord` keep the order they were added in.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "MISSED_CAP",
    "MissedMarks",
    "NodeRecord",
    "PresenceBackend",
    "SessionPage",
    "SessionRecord",
    "SubscriptionRecord",
    "check_session",
    "decode_cursor",
    "earliest_id",
    "encode_cursor",
    "session_order",
    "unique_subscriptions",
]


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One STOMP subscription of a session.

    Attributes:
        id: The SUBSCRIBE frame's ``id`` header, unique within its session.
        destination: The subscribed destination, such as ``/topic/chat``.
        ack: The acknowledgement mode: ``"auto"``, ``"client"`` or ``"client-individual"``.
    """

    id: str
    destination: str
    ack: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One connected STOMP session, as every node of the cluster sees it.

    Attributes:
        session_id: Unique across the cluster; the ``session`` header of CONNECTED.
        node_id: The node whose process holds the socket.
        channel_name: The channel of the node holding the session (consumers have no
            channel of their own: the node fans out to them).
        user_key: The key messages to the user are routed by (the username) for an
            authenticated user, ``None`` when anonymous.
        username: The user's name, ``""`` when anonymous.
        remote_addr: The client's address as the ASGI server saw it.
        user_agent: The ``User-Agent`` of the WebSocket handshake.
        version: The negotiated STOMP version: ``"1.0"``, ``"1.1"`` or ``"1.2"``.
        connected_at: Unix time (seconds) of the CONNECT.
        last_seen: Unix time (seconds) of the last heartbeat that covered this session.
        subscriptions: Active subscriptions, in the order they were added.
    """

    session_id: str
    node_id: str
    channel_name: str
    user_key: str | None
    username: str
    remote_addr: str
    user_agent: str
    version: str
    connected_at: float
    last_seen: float
    subscriptions: tuple[SubscriptionRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One cluster node (one ASGI server process).

    Attributes:
        node_id: Unique per process incarnation. A node that restarts under the same id
            with a new ``started_at`` is treated as a new incarnation (see
            :meth:`PresenceBackend.register_node`).
        channel_name: The node's channel-layer channel, for node-level messages.
        started_at: Unix time (seconds) the process started.
        last_heartbeat: Unix time (seconds) of its last registration or heartbeat.
        session_count: Sessions registered on it (ignored by ``register_node``).
        alive: ``False`` once its liveness TTL lapsed (ignored by ``register_node``).
        owner: The random token of the process that holds the id (see "One node id, one
            process" above); empty for callers that do not fence (tests, tools).
    """

    node_id: str
    channel_name: str
    started_at: float
    last_heartbeat: float
    session_count: int
    alive: bool
    #: The node's delivery counters (``delivered``, ``recovered``, ``redelivered``,
    #: ``slow_consumer``, ``dropped_<reason>``), as of its last heartbeat.
    stats: tuple[tuple[str, int], ...] = ()
    owner: str = ""


#: The most marks one node holds (:meth:`PresenceBackend.mark_missed`); past it, the
#: node's mark says that every session may have missed something.
MISSED_CAP = 1000


@dataclass(frozen=True, slots=True)
class MissedMarks:
    """What a node's sessions may have missed: stored messages not pushed to the node.

    Each mark keeps the id of the *earliest* message missed (a stream id, ``"<ms>-<seq>"``):
    the sessions concerned resume from just before it, so that a message they missed is
    not behind later ones they received meanwhile.

    Attributes:
        everything: every session of the node may have missed a message (more marks
            than :data:`MISSED_CAP`).
        users: user key -> id of the earliest user message the node missed for it.
        destinations: destination -> id of the earliest topic message (with a history)
            it missed there.
        since: with *everything*, the id of the earliest message missed of all.
    """

    everything: bool = False
    users: Mapping[str, str] = field(default_factory=dict)
    destinations: Mapping[str, str] = field(default_factory=dict)
    since: str = ""

    def __bool__(self) -> bool:
        return self.everything or bool(self.users) or bool(self.destinations)

    def members(self) -> list[tuple[str, str]]:
        """The marks as a backend stores them: ``(member, earliest id)`` pairs, members
        being ``"*"``, ``"u:<key>"``, ``"d:<destination>"``.

        More than :data:`MISSED_CAP` of them become one ``"*"`` with the earliest id.
        """
        pairs = [(f"u:{u}", i) for u, i in sorted(self.users.items())] + [
            (f"d:{d}", i) for d, i in sorted(self.destinations.items())
        ]
        if self.everything or len(pairs) > MISSED_CAP:
            ids = [i for _, i in pairs] + ([self.since] if self.since else [])
            return [("*", earliest_id(ids))]
        return pairs

    @classmethod
    def from_members(cls, members: Iterable[tuple[str, str]]) -> MissedMarks:
        """The marks :meth:`members` stored, the earliest id of each member kept (unknown
        members count as everything)."""
        users: dict[str, str] = {}
        dests: dict[str, str] = {}
        ids: list[str] = []
        everything = False
        for member, message_id in members:
            ids.append(message_id)
            kind, colon, name = member.partition(":")
            table = users if kind == "u" and colon else dests if kind == "d" and colon else None
            if table is None:
                everything = True
            else:
                table[name] = earliest_id((table.get(name, message_id), message_id))
        if everything or len(users) + len(dests) > MISSED_CAP:
            return cls(everything=True, since=earliest_id(ids))
        return cls(users=users, destinations=dests)

    def merged(self, other: MissedMarks) -> MissedMarks:
        """These marks and *other*'s, keeping the earliest id of a member marked twice."""
        return MissedMarks.from_members(self.members() + other.members())

    def resume_from(self, users: Iterable[str], destinations: Iterable[str]) -> str:
        """The earliest missed id concerning a session of *users* subscribed to
        *destinations* (:attr:`since` for everything; ``""`` if none concerns it)."""
        if self.everything:
            return self.since
        ids = [self.users[u] for u in users if u in self.users]
        ids += [self.destinations[d] for d in destinations if d in self.destinations]
        return earliest_id(ids)


def _id_key(message_id: str) -> tuple[int, int]:
    ms, dash, seq = message_id.partition("-")
    try:
        return int(ms), int(seq) if dash else 0
    except ValueError:
        return (-1, -1)  # not a stream id: sorts first, the safe side of a resume


def earliest_id(ids: Iterable[str]) -> str:
    """The smallest of stream ids *ids*, compared numerically (``""`` if none)."""
    return min((i for i in ids if i), key=_id_key, default="")


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of :meth:`PresenceBackend.sessions`.

    Attributes:
        sessions: At most ``limit`` sessions, ordered by ``(connected_at, session_id)``.
        next_cursor: Pass it back to get the next page; ``None`` on the last page.
    """

    sessions: tuple[SessionRecord, ...]
    next_cursor: str | None


def session_order(session: SessionRecord) -> tuple[float, str]:
    """Return the sort key of every session list: ``(connected_at, session_id)``."""
    return (session.connected_at, session.session_id)


def check_session(session: SessionRecord) -> None:
    """Reject a session that a backend could not index faithfully.

    Raises:
        ValueError: If the session id contains NUL, which the Redis backend uses to join a
            session id and a subscription id in its destination indexes. Ours are UUIDs.
    """
    if "\x00" in session.session_id:
        raise ValueError(f"session id may not contain NUL: {session.session_id!r}")


def unique_subscriptions(subs: Iterable[SubscriptionRecord]) -> tuple[SubscriptionRecord, ...]:
    """Return *subs* with one subscription per id, as every backend stores them.

    A repeated id keeps the position of its first occurrence and the value of its last, as
    if each one had been added in turn with :meth:`PresenceBackend.add_subscription`.
    """
    return tuple({sub.id: sub for sub in subs}.values())


def encode_cursor(position: tuple[float, str]) -> str:
    """Turn the sort key of the last session of a page into an opaque cursor.

    Pages continue *after* a position rather than at an offset, so that sessions which
    connect or leave between two pages neither shift nor repeat the others. ``repr`` of a
    float round-trips exactly, so ties on ``connected_at`` stay exact too.
    """
    raw = json.dumps([repr(position[0]), position[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Return the position an :func:`encode_cursor` cursor stands for.

    A cursor comes back from a client (the admin's query string), so anything else is
    refused here, before a backend sees it: a score that is not a finite number (``nan``
    and ``inf`` would reach Redis as a range it rejects), deep nesting, any other shape.

    Raises:
        ValueError: If the cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, session_id = json.loads(raw)
        if not isinstance(score, str) or not isinstance(session_id, str):
            raise TypeError(cursor)
        position = float(score)
        if not math.isfinite(position):
            raise ValueError(cursor)
        return (position, session_id)
    except (binascii.Error, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"invalid presence cursor: {cursor[:100]!r}") from exc


class PresenceBackend(abc.ABC):
    """The registry of nodes, sessions and subscriptions, shared by the cluster.

    Subclasses take their settings (``STOMP_CLUSTER["PRESENCE_OPTIONS"]``) as keyword
    arguments, consume the ones they know and pass the rest to this constructor, which
    rejects leftovers so that a typo fails loudly instead of being ignored.

    All methods may raise :class:`~stomp_cluster.exceptions.PresenceUnavailable`; the
    session changes (``add_session``, ``remove_session``, ``add_subscription``,
    ``remove_subscription``) are atomic, so a failure never leaves half a change behind.
    """

    def __init__(self, **options: Any) -> None:
        if options:
            raise ImproperlyConfigured(
                f"Unknown option(s) for {type(self).__name__}: {', '.join(sorted(options))}. "
                "Remove them from STOMP_CLUSTER['PRESENCE_OPTIONS']."
            )

    # -- nodes -------------------------------------------------------------------------

    @abc.abstractmethod
    async def register_node(self, node: NodeRecord, ttl: float) -> None:
        """Register *node* (again) as alive for *ttl* seconds.

        Idempotent: call it at start-up and whenever :meth:`heartbeat_node` returns
        ``False``. Registering keeps the sessions already recorded for the node, since after
        a lost heartbeat they are still connected, unless the stored record has another
        ``started_at``: that is a previous incarnation of the process, whose sockets are
        gone, so its sessions are dropped (and logged at INFO).

        ``node.session_count`` and ``node.alive`` are ignored.

        Raises:
            NodeIdInUse: Another live process (another non-empty ``owner``) holds the id.
        """

    @abc.abstractmethod
    async def heartbeat_node(
        self,
        node_id: str,
        ttl: float,
        *,
        session_ids: Sequence[str] = (),
        now: float | None = None,
        stats: Mapping[str, int] | None = None,
        owner: str = "",
    ) -> bool:
        """Extend the node's liveness by *ttl* seconds and touch its live sessions.

        Sets ``last_heartbeat`` of the node and ``last_seen`` of each of *session_ids* that
        is still registered on this node to *now* (default: the current Unix time). Sessions
        that are gone are not recreated. *stats*, the node's counters, replace the ones
        :meth:`nodes` reports. One round trip.

        Returns:
            ``False`` when the node's record was missing (reaped, unregistered, or Redis
            restarted empty) or is held by another *owner* (when *owner* is given); nothing
            was refreshed then. Also ``False`` when the node's liveness had lapsed (its TTL
            passed without a heartbeat, say while Redis stalled): it is refreshed, but
            senders saw the node as dead meanwhile and pushed nothing to it. Either way the
            caller is fenced: it must call :meth:`register_node` and re-add its sessions,
            and cannot know what it missed meanwhile.
        """

    @abc.abstractmethod
    async def unregister_node(self, node_id: str) -> list[SessionRecord]:
        """Remove the node and all its sessions at a clean shutdown.

        Returns:
            The sessions removed, so that the caller can send their signals.
        """

    @abc.abstractmethod
    async def nodes(self) -> list[NodeRecord]:
        """Return the registered nodes, ordered by ``node_id``.

        A node whose liveness TTL lapsed stays listed with ``alive=False`` until it is
        reaped.
        """

    @abc.abstractmethod
    async def lost_nodes(self, grace: float = 0.0) -> list[str]:
        """Return the ids of listed nodes whose liveness has been lapsed for *grace* seconds.

        Marks each node newly seen lapsed as missing since now, by the store's clock, and
        reports it only once the mark is *grace* seconds old (see "Fencing with a grace
        period"); with no grace, every lapsed node. Their sessions (if any) are still
        registered: call :meth:`reap_node` on each.
        """

    @abc.abstractmethod
    async def reap_node(self, node_id: str) -> list[SessionRecord]:
        """Remove a lost node and its sessions, in one atomic step.

        Exactly-once: when several sweepers reap the same node concurrently, one gets the
        sessions and the others get ``[]``. A node that is alive again (it heartbeated or
        re-registered meanwhile) is left alone and ``[]`` is returned.

        Returns:
            The sessions this call removed.
        """

    @abc.abstractmethod
    async def acquire_sweep_lock(self, owner: str, ttl: float) -> bool:
        """Try to become the cluster's only sweeper for *ttl* seconds.

        Returns ``True`` when *owner* got the lock, or already held it (then its TTL is
        renewed), and ``False`` while another owner holds it.
        """

    @abc.abstractmethod
    async def release_sweep_lock(self, owner: str) -> bool:
        """Give up the sweep lock early, if *owner* holds it.

        Returns:
            ``True`` if *owner* held the lock and released it.
        """

    @abc.abstractmethod
    async def mark_missed(self, node_id: str, marks: MissedMarks, ttl: float) -> None:
        """Note that *node_id*'s sessions may have missed a stored message (see "Missed
        marks"), for *ttl* seconds, in one round trip.

        Marks add up, keeping for each member the earliest id; past :data:`MISSED_CAP`
        the node's mark becomes "everything", with the earliest id of all.
        """

    @abc.abstractmethod
    async def take_missed(self, node_id: str, ttl: float, *, again: bool = False) -> MissedMarks:
        """Return the marks of *node_id* and clear them, atomically, in one round trip.

        What was taken is kept aside for *ttl* seconds: a caller that did not get the
        reply of its previous call (an outage may lose a reply after the store cleared the
        marks) passes *again* and gets those marks back too, with the new ones (the
        earliest id of a member kept).
        """

    # -- sessions ----------------------------------------------------------------------

    @abc.abstractmethod
    async def add_session(self, session: SessionRecord) -> None:
        """Record *session* with its subscriptions, atomically, in one round trip.

        Idempotent: adding a session that exists replaces it (and its subscriptions and
        index entries), which is how a node re-adds its sessions after a lost heartbeat.

        Raises:
            ValueError: If the session id contains NUL (see :func:`check_session`).
        """

    async def add_sessions(self, sessions: Sequence[SessionRecord]) -> None:
        """Record each of *sessions* as :meth:`add_session` does, in few round trips.

        What a node's resync calls with all its sessions. Each session is still written
        atomically; the batch is not. This default awaits one :meth:`add_session` after
        another; a networked backend pipelines them in batches.
        """
        for session in sessions:
            await self.add_session(session)

    @abc.abstractmethod
    async def remove_session(self, session_id: str, node_id: str) -> SessionRecord | None:
        """Remove a session and its subscriptions, atomically, in one round trip.

        Returns:
            The removed session, or ``None`` when it was already gone (idempotent).
        """

    @abc.abstractmethod
    async def add_subscription(
        self, session_id: str, node_id: str, sub: SubscriptionRecord
    ) -> None:
        """Record a subscription of a session, atomically, in one round trip.

        A subscription with the same id replaces the previous one. Does nothing when the
        session is not registered (it was removed or reaped meanwhile), so that no index
        entry can outlive its session.
        """

    @abc.abstractmethod
    async def remove_subscription(
        self, session_id: str, node_id: str, subscription_id: str
    ) -> None:
        """Remove a subscription, atomically, in one round trip. Idempotent."""

    # -- queries -----------------------------------------------------------------------

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> SessionRecord | None:
        """Return the session with this id, on whichever node, or ``None``."""

    @abc.abstractmethod
    async def is_online(self, user_key: str) -> bool:
        """Return whether the user has at least one registered session."""

    @abc.abstractmethod
    async def sessions_of(self, user_key: str) -> list[SessionRecord]:
        """Return the user's sessions on every node."""

    @abc.abstractmethod
    async def user_nodes(self, user_key: str) -> dict[str, int]:
        """Return ``{node_id: number of the user's sessions there}``, without zeros.

        Cheaper than :meth:`sessions_of`: no session record is read.
        """

    @abc.abstractmethod
    async def subscribers(self, destination: str) -> list[SessionRecord]:
        """Return the sessions subscribed to *destination*, each once.

        A session subscribed twice (two subscription ids) appears once, with both
        subscriptions in its record.
        """

    @abc.abstractmethod
    async def subscriber_count(self, destination: str) -> int:
        """Return the number of subscriptions (not sessions) to *destination*."""

    @abc.abstractmethod
    async def destination_nodes(self, destination: str) -> dict[str, int]:
        """Return ``{node_id: number of subscriptions to destination there}``, no zeros."""

    @abc.abstractmethod
    async def sessions(
        self,
        *,
        node: str | None = None,
        user: str | None = None,
        destination: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> SessionPage:
        """Return one page of sessions, ordered by ``(connected_at, session_id)``.

        The filters combine (AND). The cursor is opaque and names the last session
        returned, so a page never repeats or skips a session that stays connected, even
        when others connect or leave between pages. No backend scans its whole store.

        Raises:
            ValueError: If *limit* is below 1 or *cursor* is not one of ours.
        """

    @abc.abstractmethod
    async def count_sessions(self, *, node: str | None = None) -> int:
        """Return the number of sessions, on one node or on all."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the backend's resources (connections). It may be used again after."""
