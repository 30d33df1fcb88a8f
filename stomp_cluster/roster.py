"""Client-visible presence: who is subscribed to a destination, then who joins and leaves.

Theory of operation
===================

A broker destination listed in ``PRESENCE_DESTINATIONS`` (say ``/topic/room.1``) has a
companion, ``/presence/topic/room.1``, that clients may subscribe to (when the
``PERMISSION_HOOK`` lets them ``"subscribe"`` to it). A subscription there receives:

1. a **snapshot**: the sessions subscribed to ``/topic/room.1`` on every node, read from
   the presence registry, in one or more MESSAGEs (``x-presence: snapshot``,
   ``x-presence-page: 1/3``...), at most ``PRESENCE_PAGE_SIZE`` members and
   :data:`PAGE_BYTES` of JSON each, at most ``PRESENCE_SNAPSHOT_LIMIT`` members in all
   (``x-presence-truncated: true`` when there were more);
2. then live **events**: ``x-presence: join`` when a session's first subscription to
   ``/topic/room.1`` is accepted, ``x-presence: leave`` when its last one ends
   (UNSUBSCRIBE, disconnect of any kind, its node reaped). One event per session,
   cluster-wide, whatever the number of its subscriptions.

Every body is JSON, ``{"members": [{"user": "alice", "session": "3f2a..."}]}``, ``user``
being ``null`` for an anonymous session. A leave may list many members: the sweeper that
reaps a lost node publishes one leave per destination for each batch of its sessions
(``stomp_sessions_reaped``, at most 1,000 sessions), split only when its JSON passes
:data:`PAGE_BYTES`, rather than one per session. Other leaves and joins list one member.

Events travel the ordinary broadcast path (:func:`~stomp_cluster.send.asend_to_destination`
to the companion destination: one message per node holding watchers), so they need no
transport of their own and cost one registry lookup when nobody watches.

Ordering and races
==================

Each side writes the registry before it reads it: a watcher's subscription is recorded
before its snapshot is read, and a member's subscription is recorded (or removed) before
its join (or leave) is published, which is when the watchers are looked up. So a member
that a watcher's snapshot misses is announced to it by a join, and a member it saw leaves
with a leave. The price, as with Centrifugo: an event may repeat the snapshot (a join for
a member already listed, a leave for one never listed) and may arrive while the snapshot
is still being sent; clients keep a set keyed by ``session`` and apply events to it, which
makes repeats harmless. The snapshot is complete when the page ``n/n`` arrives, and before
the subscription's RECEIPT.

What this module does not see: a node that the sweeper reaped while it was still alive
(fenced after a registry stall) re-adds its sessions without new joins, so its members
stay "left" for watchers until they subscribe again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import async_to_sync

from stomp_cluster import destinations, signals
from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import BackendUnavailable, DeliveryFailed
from stomp_cluster.presence.base import SessionRecord
from stomp_cluster.send import asend_to_destination
from stomp_cluster.typing import Headers

__all__ = [
    "PAGE_BYTES",
    "PRESENCE_HEADER",
    "Member",
    "Participant",
    "Roster",
    "apresence_of",
    "connect_receivers",
    "left",
    "on_sessions_reaped",
    "presence_of",
    "refusal",
    "subscribed",
]

logger = logging.getLogger(__name__)

#: The header that says what a presence MESSAGE is: ``snapshot``, ``join`` or ``leave``.
PRESENCE_HEADER = "x-presence"

#: The most bytes of JSON one presence MESSAGE body holds (a page also stops at
#: ``PRESENCE_PAGE_SIZE`` members). A single member always fits: a username is short.
PAGE_BYTES = 65536

# Sessions read from the registry per round trip while building a snapshot: each read is
# one bounded script per node, and the loop yields between them.
_READ_PAGE = 500


@dataclass(frozen=True, slots=True)
class Member:
    """One session present at a destination.

    Attributes:
        user: The username, or ``None`` for an anonymous session.
        session: The session id (the CONNECTED ``session`` header), unique in the cluster.
    """

    user: str | None
    session: str

    @classmethod
    def of(cls, record: SessionRecord) -> Member:
        """The member a registry session record stands for."""
        return cls(user=record.username or None, session=record.session_id)

    def as_json(self) -> dict[str, str | None]:
        """The member as presence MESSAGE bodies list it."""
        return {"user": self.user, "session": self.session}


@dataclass(frozen=True, slots=True)
class Roster:
    """What :func:`apresence_of` found.

    Attributes:
        members: The sessions subscribed, ordered by ``(connected_at, session_id)``.
        truncated: Whether there were more than the limit asked for.
    """

    members: tuple[Member, ...]
    truncated: bool


class Participant(Protocol):
    """A session as :func:`subscribed` and :func:`left` need it: the consumer is one.

    A protocol, because the consumer sits above this module's layer.
    """

    @property
    def session_id(self) -> str: ...

    @property
    def username(self) -> str: ...


async def apresence_of(destination: str, *, limit: int | None = None) -> Roster:
    """Return who is subscribed to *destination*, cluster-wide, as a snapshot shows it.

    Works for any destination, listed in ``PRESENCE_DESTINATIONS`` or not: server code is
    trusted. The registry is read in bounded pages, so that a large destination does not
    hold Redis or the event loop for long.

    Args:
        destination: A broker destination such as ``/topic/room.1``.
        limit: The most members to return (default ``PRESENCE_SNAPSHOT_LIMIT``).

    Raises:
        BackendUnavailable: The presence registry cannot be reached.
        ValueError: *limit* is below 1.
    """
    if limit is None:
        limit = get_settings().PRESENCE_SNAPSHOT_LIMIT
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    presence = get_presence()
    members: list[Member] = []
    cursor: str | None = None
    while True:
        # One more than wanted, to know whether there were more.
        want = min(_READ_PAGE, limit + 1 - len(members))
        page = await presence.sessions(destination=destination, cursor=cursor, limit=want)
        members.extend(Member.of(record) for record in page.sessions)
        if len(members) > limit:
            return Roster(tuple(members[:limit]), truncated=True)
        if page.next_cursor is None:
            return Roster(tuple(members), truncated=False)
        cursor = page.next_cursor


def presence_of(destination: str, *, limit: int | None = None) -> Roster:
    """Sync twin of :func:`apresence_of`, for views, tasks and the shell."""
    return async_to_sync(apresence_of)(destination, limit=limit)


def refusal(destination: str) -> str | None:
    """Why a SUBSCRIBE to the presence destination *destination* is refused, or None.

    Refused when the destination it watches is not a broker destination listed in
    ``PRESENCE_DESTINATIONS``. The ``PERMISSION_HOOK`` is asked separately, as for any
    SUBSCRIBE.
    """
    target = destinations.presence_target(destination)
    if target is None or not destinations.presence_enabled(target):
        return f"{target or destination} is not in PRESENCE_DESTINATIONS"
    return None


async def subscribed(
    session: Participant, destination: str, *, first: bool
) -> list[tuple[bytes, Headers]]:
    """Act on a subscription the registry has just recorded.

    For a presence destination, return the snapshot MESSAGEs (body and headers) for the
    caller to queue on that subscription only. For a destination with a presence, and
    the session's *first* subscription to it, publish the session's join. Otherwise,
    nothing.
    """
    target = destinations.presence_target(destination)
    if target is not None:
        return await _snapshot(target)
    if first and destinations.presence_enabled(destination):
        await _publish(destination, "join", [_member(session)])
    return []


async def left(session: Participant, destinations_left: Iterable[str]) -> None:
    """Publish the session's leave on each of *destinations_left* that has a presence.

    Call it once the registry no longer lists the session there: after the
    UNSUBSCRIBE of its last subscription to a destination, or after the session ended.
    """
    for destination in destinations_left:
        if destinations.presence_enabled(destination):
            await _publish(destination, "leave", [_member(session)])


async def on_sessions_reaped(
    *, node_id: str, sessions: Sequence[SessionRecord], **kwargs: Any
) -> None:
    """Publish the leaves of a lost node's sessions: one event per destination per page.

    Connected to ``stomp_sessions_reaped``, which fires once per batch on the sweeper
    that reaped them, so each leave is published once, cluster-wide.
    """
    by_destination: dict[str, list[Member]] = {}
    enabled: dict[str, bool] = {}
    for record in sessions:
        for destination in {sub.destination for sub in record.subscriptions}:
            if destination not in enabled:
                enabled[destination] = destinations.presence_enabled(destination)
            if enabled[destination]:
                by_destination.setdefault(destination, []).append(Member.of(record))
    for destination, members in by_destination.items():
        # Bounded by bytes only: a batch (at most 1,000 sessions) is one MESSAGE per
        # destination unless its JSON passes PAGE_BYTES.
        await _publish(destination, "leave", members, size=len(members))


def connect_receivers() -> None:
    """Connect :func:`on_sessions_reaped` to ``stomp_sessions_reaped`` (idempotent)."""
    signals.stomp_sessions_reaped.connect(
        on_sessions_reaped, dispatch_uid="stomp_cluster.roster.sessions_reaped"
    )


def _member(session: Participant) -> Member:
    return Member(user=session.username or None, session=session.session_id)


def _pages(members: Sequence[Member], size: int | None = None) -> list[bytes]:
    """JSON bodies of at most *size* (``PRESENCE_PAGE_SIZE``) members and
    :data:`PAGE_BYTES` each."""
    if size is None:
        size = get_settings().PRESENCE_PAGE_SIZE
    pages: list[bytes] = []
    chunk: list[bytes] = []
    used = 0
    for member in members:
        item = json.dumps(member.as_json(), separators=(",", ":")).encode()
        if chunk and (len(chunk) >= size or used + len(item) + 1 > PAGE_BYTES):
            pages.append(_body(chunk))
            chunk, used = [], 0
        chunk.append(item)
        used += len(item) + 1
    if chunk or not pages:
        pages.append(_body(chunk))
    return pages


def _body(items: list[bytes]) -> bytes:
    return b'{"members":[' + b",".join(items) + b"]}"


async def _snapshot(target: str) -> list[tuple[bytes, Headers]]:
    error = ""
    try:
        roster = await apresence_of(target)
    except BackendUnavailable as exc:
        # Degrade: an empty, truncated snapshot that says why; the events still come.
        logger.warning("presence snapshot of %r failed: %s", target, exc)
        roster, error = Roster((), truncated=True), "presence registry unavailable"
    bodies = _pages(roster.members)
    messages = []
    for number, body in enumerate(bodies, 1):
        headers: list[tuple[str, str]] = [
            ("content-type", "application/json"),
            (PRESENCE_HEADER, "snapshot"),
            ("x-presence-page", f"{number}/{len(bodies)}"),
        ]
        if roster.truncated:
            headers.append(("x-presence-truncated", "true"))
        if error:
            headers.append(("x-presence-error", error))
        messages.append((body, tuple(headers)))
    return messages


async def _publish(
    destination: str, event: str, members: Sequence[Member], size: int | None = None
) -> None:
    """Publish *event* for *members* on the presence destination of *destination*.

    A failure is logged, not raised (WARNING for a delivery failure, ERROR with the
    traceback for anything else): a lost presence event must not fail the SUBSCRIBE, the
    UNSUBSCRIBE or the cleanup that caused it.
    """
    target = destinations.presence_destination(destination)
    for body in _pages(members, size):
        try:
            await asend_to_destination(target, body, {PRESENCE_HEADER: event}, "application/json")
        except DeliveryFailed as exc:
            logger.warning("presence %s on %r not delivered: %s", event, target, exc)
        except Exception:
            # A bug, but the session's cleanup must go on: log it and carry on.
            logger.exception("presence %s on %r failed", event, target)
