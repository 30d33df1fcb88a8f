"""Who is connected where: the presence registry's questions, for application code.

Each function has a sync twin for views and an async one (``a`` prefix) for consumers
and async views. They read the registry configured in ``STOMP_CLUSTER`` (the same one
every node writes), so the answer covers the whole cluster::

    from stomp_cluster import is_online, sessions_of

    if is_online("alice"):
        ...

Users may be given as a user object, a primary key or a username, as for
:func:`stomp_cluster.send_to_user`.

Raises:
    PresenceUnavailable: from every function, when the registry cannot be reached.

:func:`ahistory` (and :func:`history`) read a destination's stored messages instead,
from the history backend: a topic listed in ``HISTORY_TOPICS``, or a user's own
destination. They raise
:class:`~stomp_cluster.exceptions.HistoryUnavailable` when the history cannot be reached.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from stomp_cluster import destinations
from stomp_cluster.backends import get_history
from stomp_cluster.backends import get_presence as _presence
from stomp_cluster.history.base import parse_id
from stomp_cluster.presence.base import NodeRecord, SessionPage, SessionRecord
from stomp_cluster.users import UserRef, auser_key

__all__ = [
    "HISTORY_LIMIT",
    "StoredMessage",
    "ahistory",
    "ais_online",
    "anodes",
    "asessions",
    "asessions_of",
    "asubscriber_count",
    "asubscribers",
    "history",
    "is_online",
    "nodes",
    "sessions",
    "sessions_of",
    "subscriber_count",
    "subscribers",
]


#: The most messages one :func:`ahistory` call returns.
HISTORY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a destination's history, as :func:`ahistory` returns it.

    Attributes:
        message_id: Its history id, the MESSAGE ``message-id`` its subscribers got;
            pass it as ``since`` to read what came after it.
        destination: Where it was sent (a user's messages have the ``/user/`` form).
        body: The frame body, bytes as sent.
        headers: The extra headers it was sent with, in order (``content-type``, ...).
        timestamp: When the history stored it (UTC), from the id's milliseconds.
    """

    message_id: str
    destination: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    timestamp: datetime.datetime


async def ahistory(
    destination: str,
    *,
    limit: int = 100,
    since: str | None = None,
    user: UserRef | None = None,
) -> list[StoredMessage]:
    """The stored messages of *destination*, oldest first.

    Without *since*, the newest *limit* messages (the last page of a chat room); with
    it, at most *limit* messages sent after the message-id *since* (exclusive): pass the
    last one's ``message_id`` again to read on. A history is bounded by
    ``HISTORY_MAX_LENGTH`` and ``HISTORY_MAX_AGE``, so older messages may be gone.

    Args:
        destination: A topic listed in ``HISTORY_TOPICS`` (``/topic/chat``), or, with
            *user*, one of that user's destinations (``/queue/notify`` or
            ``/user/queue/notify``).
        limit: At most this many messages, from 1 to :data:`HISTORY_LIMIT`.
        since: A ``message-id`` of this history; only later messages are returned.
        user: Whose messages, for a user destination: a user object, a primary key or a
            username.

    Raises:
        ValueError: *destination* keeps no history (not in ``HISTORY_TOPICS``,
            ``HISTORY_BACKEND`` is None, or a user destination without *user*); *limit*
            is out of range; *since* is not a message-id.
        HistoryUnavailable: the history backend cannot be reached.
        LookupError: *user* is a pk that matches no user.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= HISTORY_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {HISTORY_LIMIT}, got {limit!r}")
    if since is not None:
        parse_id(since)  # ValueError names the bad id
    backend = get_history()
    if user is not None:
        key: str | None = await auser_key(user) if backend is not None else None
        destination = destinations.user_destination(destination)
    elif destinations.is_user(destination):
        raise ValueError(f"{destination} is a user destination: pass user= to read its history")
    else:
        key = destinations.topic_history_key(destination)
    if backend is None or key is None:
        raise ValueError(
            f"{destination} keeps no history: list it in HISTORY_TOPICS "
            "(and set HISTORY_BACKEND), or send to users"
        )
    after = since
    if after is None:
        after = await backend.rewind_point(key, limit, destination=destination)
    page = await backend.read(key, after, destination=destination, limit=limit)
    return [
        StoredMessage(
            message_id=entry.id,
            destination=entry.destination,
            body=entry.body,
            headers=entry.headers,
            timestamp=datetime.datetime.fromtimestamp(
                parse_id(entry.id)[0] / 1000, tz=datetime.UTC
            ),
        )
        for entry in page.entries
    ]


def history(
    destination: str,
    *,
    limit: int = 100,
    since: str | None = None,
    user: UserRef | None = None,
) -> list[StoredMessage]:
    """Sync twin of :func:`ahistory`."""
    result: list[StoredMessage] = async_to_sync(ahistory)(
        destination, limit=limit, since=since, user=user
    )
    return result


async def ais_online(user: UserRef) -> bool:
    """Whether *user* has at least one live session on any node."""
    return await _presence().is_online(await auser_key(user))


async def asessions_of(user: UserRef) -> list[SessionRecord]:
    """The live sessions of *user*, on every node."""
    return await _presence().sessions_of(await auser_key(user))


async def asubscribers(destination: str) -> list[SessionRecord]:
    """The sessions subscribed to *destination*, each once."""
    return await _presence().subscribers(destination)


async def asubscriber_count(destination: str) -> int:
    """How many subscriptions to *destination* exist; cheap (no records are read)."""
    return await _presence().subscriber_count(destination)


async def anodes() -> list[NodeRecord]:
    """The nodes, with their last heartbeat, session count and liveness."""
    return await _presence().nodes()


async def asessions(
    *,
    node: str | None = None,
    user: UserRef | None = None,
    destination: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> SessionPage:
    """One page of sessions, oldest first; pass ``page.next_cursor`` for the next.

    It never scans the whole registry: a page costs one round trip per node.
    """
    key = None if user is None else await auser_key(user)
    return await _presence().sessions(
        node=node, user=key, destination=destination, cursor=cursor, limit=limit
    )


def is_online(user: UserRef) -> bool:
    """Sync twin of :func:`ais_online`."""
    result: bool = async_to_sync(ais_online)(user)
    return result


def sessions_of(user: UserRef) -> list[SessionRecord]:
    """Sync twin of :func:`asessions_of`."""
    result: list[SessionRecord] = async_to_sync(asessions_of)(user)
    return result


def subscribers(destination: str) -> list[SessionRecord]:
    """Sync twin of :func:`asubscribers`."""
    result: list[SessionRecord] = async_to_sync(asubscribers)(destination)
    return result


def subscriber_count(destination: str) -> int:
    """Sync twin of :func:`asubscriber_count`."""
    result: int = async_to_sync(asubscriber_count)(destination)
    return result


def nodes() -> list[NodeRecord]:
    """Sync twin of :func:`anodes`."""
    result: list[NodeRecord] = async_to_sync(anodes)()
    return result


def sessions(
    *,
    node: str | None = None,
    user: UserRef | None = None,
    destination: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> SessionPage:
    """Sync twin of :func:`asessions`."""
    result: SessionPage = async_to_sync(asessions)(
        node=node, user=user, destination=destination, cursor=cursor, limit=limit
    )
    return result
