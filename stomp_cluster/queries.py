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
"""

from __future__ import annotations

from asgiref.sync import async_to_sync

from stomp_cluster.backends import get_presence as _presence
from stomp_cluster.presence.base import NodeRecord, SessionPage, SessionRecord
from stomp_cluster.users import UserRef, auser_key

__all__ = [
    "ais_online",
    "anodes",
    "asessions",
    "asessions_of",
    "asubscriber_count",
    "asubscribers",
    "is_online",
    "nodes",
    "sessions",
    "sessions_of",
    "subscriber_count",
    "subscribers",
]


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
