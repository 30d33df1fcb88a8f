"""Presence kept in this process: for one node, the test suite and the demo.

It behaves like :class:`~stomp_cluster.presence.redis.RedisPresence`, and the contract suite
holds both to the same tests, so code written against it keeps working on a cluster. TTLs
are deadlines on :func:`time.monotonic` compared when asked, with no background task: a
node is lost once its deadline has passed, as a Redis key expires. Every method runs without
awaiting, so each one is atomic on the event loop, as a Lua script is atomic on Redis.

State lives in the instance: build one per process (``stomp_cluster.node.get_presence``
does) and share it, or two consumers will not see each other. It never raises
:class:`~stomp_cluster.exceptions.PresenceUnavailable`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stomp_cluster.exceptions import NodeIdInUse
from stomp_cluster.presence.base import (
    MissedMarks,
    NodeRecord,
    PresenceBackend,
    SessionPage,
    SessionRecord,
    SubscriptionRecord,
    check_session,
    decode_cursor,
    encode_cursor,
    session_order,
    unique_subscriptions,
)

__all__ = ["MemoryPresence"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Node:
    node_id: str
    channel_name: str
    started_at: float
    last_heartbeat: float
    deadline: float  # clock() after which the node's liveness lapsed
    owner: str = ""
    missing_since: float | None = None  # clock() when a sweeper first saw it lapsed


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")


class MemoryPresence(PresenceBackend):
    """Presence in a few dictionaries, indexed like the Redis layout.

    Takes no options.
    """

    #: The monotonic clock of liveness deadlines, "missing since" marks and the sweep
    #: lock; tests replace it on an instance to drive time.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._nodes: dict[str, _Node] = {}
        self._sessions: dict[str, SessionRecord] = {}
        # Indexes, so that queries do not scan every session: by node, by user, and by
        # destination (session id -> number of its subscriptions to that destination).
        self._by_node: dict[str, set[str]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_destination: dict[str, dict[str, int]] = {}
        self._lock: tuple[str, float] | None = None
        self._stats: dict[str, tuple[tuple[str, int], ...]] = {}
        # node id -> (marks, deadline); and what take_missed returned last, for a
        # caller that takes them again.
        self._missed: dict[str, tuple[MissedMarks, float]] = {}
        self._taken: dict[str, tuple[MissedMarks, float]] = {}

    # -- index maintenance ---------------------------------------------------------------

    def _index(self, session: SessionRecord) -> None:
        sid = session.session_id
        self._sessions[sid] = session
        self._by_node.setdefault(session.node_id, set()).add(sid)
        if session.user_key is not None:
            self._by_user.setdefault(session.user_key, set()).add(sid)
        for sub in session.subscriptions:
            counts = self._by_destination.setdefault(sub.destination, {})
            counts[sid] = counts.get(sid, 0) + 1

    def _unindex(self, session_id: str, node_id: str) -> SessionRecord | None:
        session = self._sessions.get(session_id)
        if session is None or session.node_id != node_id:
            return None
        del self._sessions[session_id]
        _discard(self._by_node, node_id, session_id)
        if session.user_key is not None:
            _discard(self._by_user, session.user_key, session_id)
        for sub in session.subscriptions:
            self._uncount(sub.destination, session_id)
        return session

    def _uncount(self, destination: str, session_id: str) -> None:
        counts = self._by_destination[destination]
        counts[session_id] -= 1
        if not counts[session_id]:
            del counts[session_id]
            if not counts:
                del self._by_destination[destination]

    def _drop_node_sessions(self, node_id: str) -> list[SessionRecord]:
        removed = [self._unindex(sid, node_id) for sid in list(self._by_node.get(node_id, ()))]
        return sorted((s for s in removed if s is not None), key=session_order)

    def _alive(self, node: _Node) -> bool:
        return node.deadline > self.clock()

    # -- nodes ---------------------------------------------------------------------------

    async def register_node(self, node: NodeRecord, ttl: float) -> None:
        _check_ttl(ttl)
        old = self._nodes.get(node.node_id)
        if old is not None and old.owner and old.owner != node.owner and self._alive(old):
            raise NodeIdInUse(f"node id {node.node_id!r} is held by another live process")
        if old is not None and old.started_at != node.started_at:
            dropped = self._drop_node_sessions(node.node_id)
            if dropped:
                logger.info(
                    "Node %s restarted: dropped %d stale sessions", node.node_id, len(dropped)
                )
        self._nodes[node.node_id] = _Node(
            node_id=node.node_id,
            channel_name=node.channel_name,
            started_at=node.started_at,
            last_heartbeat=node.last_heartbeat,
            deadline=self.clock() + ttl,
            owner=node.owner,
        )

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
        _check_ttl(ttl)
        node = self._nodes.get(node_id)
        if node is None or (owner and node.owner != owner):
            return False
        if stats is not None:
            self._stats[node_id] = tuple(sorted((str(k), int(v)) for k, v in stats.items()))
        stamp = time.time() if now is None else now
        lapsed = node.deadline < self.clock()
        node.deadline = self.clock() + ttl
        node.missing_since = None
        node.last_heartbeat = stamp
        for sid in session_ids:
            session = self._sessions.get(sid)
            if session is not None and session.node_id == node_id:
                self._sessions[sid] = dataclasses.replace(session, last_seen=stamp)
        return not lapsed

    async def unregister_node(self, node_id: str) -> list[SessionRecord]:
        self._nodes.pop(node_id, None)
        return self._drop_node_sessions(node_id)

    async def nodes(self) -> list[NodeRecord]:
        return [
            NodeRecord(
                node_id=node.node_id,
                channel_name=node.channel_name,
                started_at=node.started_at,
                last_heartbeat=node.last_heartbeat,
                session_count=len(self._by_node.get(node.node_id, ())),
                alive=self._alive(node),
                stats=self._stats.get(node.node_id, ()),
            )
            for node in sorted(self._nodes.values(), key=lambda node: node.node_id)
        ]

    async def lost_nodes(self, grace: float = 0.0) -> list[str]:
        now, lost = self.clock(), []
        for node in self._nodes.values():
            if self._alive(node):
                node.missing_since = None
                continue
            if node.missing_since is None:
                node.missing_since = now
            if now - node.missing_since >= grace:
                lost.append(node.node_id)
        return sorted(lost)

    async def reap_node(self, node_id: str) -> list[SessionRecord]:
        node = self._nodes.get(node_id)
        if node is not None and self._alive(node):
            return []
        self._nodes.pop(node_id, None)
        return self._drop_node_sessions(node_id)

    async def acquire_sweep_lock(self, owner: str, ttl: float) -> bool:
        _check_ttl(ttl)
        now = self.clock()
        if self._lock is not None and self._lock[0] != owner and self._lock[1] > now:
            return False
        self._lock = (owner, now + ttl)
        return True

    async def release_sweep_lock(self, owner: str) -> bool:
        if self._lock is None or self._lock[0] != owner or self._lock[1] <= self.clock():
            return False
        self._lock = None
        return True

    async def mark_missed(self, node_id: str, marks: MissedMarks, ttl: float) -> None:
        _check_ttl(ttl)
        if not marks:
            return
        members = self._live_marks(self._missed, node_id).merged(marks)
        self._missed[node_id] = (members, self.clock() + ttl)

    async def take_missed(self, node_id: str, ttl: float, *, again: bool = False) -> MissedMarks:
        _check_ttl(ttl)
        taken = self._live_marks(self._taken, node_id) if again else MissedMarks()
        taken = taken.merged(self._live_marks(self._missed, node_id))
        self._missed.pop(node_id, None)
        self._taken[node_id] = (taken, self.clock() + ttl)
        return taken

    def _live_marks(self, table: dict[str, tuple[MissedMarks, float]], node_id: str) -> MissedMarks:
        entry = table.get(node_id)
        return entry[0] if entry is not None and entry[1] > self.clock() else MissedMarks()

    # -- sessions ------------------------------------------------------------------------

    async def add_session(self, session: SessionRecord) -> None:
        check_session(session)
        self._unindex(session.session_id, session.node_id)
        # A session id is unique across the cluster; one left on another node is replaced.
        other = self._sessions.get(session.session_id)
        if other is not None:
            self._unindex(other.session_id, other.node_id)
        subs = unique_subscriptions(session.subscriptions)
        self._index(dataclasses.replace(session, subscriptions=subs))

    async def remove_session(self, session_id: str, node_id: str) -> SessionRecord | None:
        return self._unindex(session_id, node_id)

    async def add_subscription(
        self, session_id: str, node_id: str, sub: SubscriptionRecord
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.node_id != node_id:
            return
        self._unindex(session_id, node_id)
        kept = tuple(s for s in session.subscriptions if s.id != sub.id)
        self._index(dataclasses.replace(session, subscriptions=(*kept, sub)))

    async def remove_subscription(
        self, session_id: str, node_id: str, subscription_id: str
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.node_id != node_id:
            return
        kept = tuple(s for s in session.subscriptions if s.id != subscription_id)
        if len(kept) != len(session.subscriptions):
            self._unindex(session_id, node_id)
            self._index(dataclasses.replace(session, subscriptions=kept))

    # -- queries -------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionRecord | None:
        found = self._records([session_id] if session_id in self._sessions else [])
        return found[0] if found else None

    async def is_online(self, user_key: str) -> bool:
        return bool(self._records(self._by_user.get(user_key, ())))

    async def sessions_of(self, user_key: str) -> list[SessionRecord]:
        return self._records(self._by_user.get(user_key, ()))

    async def user_nodes(self, user_key: str) -> dict[str, int]:
        return _count_by_node(self._records(self._by_user.get(user_key, ())))

    async def subscribers(self, destination: str) -> list[SessionRecord]:
        return self._records(self._by_destination.get(destination, {}))

    async def subscriber_count(self, destination: str) -> int:
        return sum((await self.destination_nodes(destination)).values())

    async def destination_nodes(self, destination: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for sid, count in self._by_destination.get(destination, {}).items():
            node_id = self._sessions[sid].node_id
            if node_id in self._nodes:
                out[node_id] = out.get(node_id, 0) + count
        return out

    async def sessions(
        self,
        *,
        node: str | None = None,
        user: str | None = None,
        destination: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> SessionPage:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        position = decode_cursor(cursor) if cursor is not None else None
        # Start from the smallest index that applies, then filter on the others.
        candidates: Iterable[str]
        if user is not None:
            candidates = self._by_user.get(user, ())
        elif destination is not None:
            candidates = self._by_destination.get(destination, {})
        elif node is not None:
            candidates = self._by_node.get(node, ())
        else:
            candidates = self._sessions
        found = [
            s
            for s in self._records(candidates, node)
            if (node is None or s.node_id == node)
            and (user is None or s.user_key == user)
            and (destination is None or any(x.destination == destination for x in s.subscriptions))
            and (position is None or session_order(s) > position)
        ]
        if len(found) > limit:
            page = found[:limit]
            return SessionPage(tuple(page), encode_cursor(session_order(page[-1])))
        return SessionPage(tuple(found), None)

    async def count_sessions(self, *, node: str | None = None) -> int:
        if node is None:
            return sum(len(self._by_node.get(node_id, ())) for node_id in self._nodes)
        return len(self._by_node.get(node, ()))

    async def close(self) -> None:
        """Nothing to release: the state stays, as data stays in Redis."""

    def _records(self, session_ids: Iterable[str], node: str | None = None) -> list[SessionRecord]:
        # Like Redis, which asks the listed nodes only, cross-node queries skip sessions
        # of nodes that are not registered.
        found = (self._sessions[sid] for sid in session_ids)
        if node is None:
            found = (s for s in found if s.node_id in self._nodes)
        return sorted(found, key=session_order)


def _discard(index: dict[str, set[str]], key: str, session_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(session_id)
        if not members:
            del index[key]


def _count_by_node(sessions: Iterable[SessionRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for session in sessions:
        out[session.node_id] = out.get(session.node_id, 0) + 1
    return out
