"""Histories kept in this process: for one node, the test suite and the demo.

It behaves like :class:`~stomp_cluster.history.redis.RedisHistory`, and the contract suite
holds both to the same tests. Ids are made the way Redis makes stream ids: the wall-clock
millisecond, and a sequence number within it; when the clock stands still or goes back, the
last id's millisecond is kept and the sequence goes up, so ids still increase. Ages are
measured on ids, as Redis's ``MINID`` does, and a history expires ``max_age`` after its last
append, like a Redis key with a TTL. Every method runs without awaiting, so each one is
atomic on the event loop, as a Lua script is atomic on Redis.

State lives in the instance: build one per process and share it. Memory is bounded in
three ways, so that clients cannot grow it without end:

* ``max_length`` entries per history, as in Redis;
* ``max_keys`` histories (option, 10,000 by default): an append that would start one more
  drops the history whose last append is the oldest, as Redis under ``maxmemory`` with an
  LRU policy would drop keys. Histories that expired are dropped by later appends
  (oldest first, cheaply: the histories are kept in the order of their last append);
* ``max_length`` pending and acknowledged cursors per history, one per destination: past
  that, the oldest destination's cursor is forgotten (its messages are then redelivered
  from the history's start, or not at all once they left it). A history never holds more
  than ``max_length`` destinations' messages anyway.

It never raises :class:`~stomp_cluster.exceptions.HistoryUnavailable`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from stomp_cluster.history.base import (
    BEGINNING,
    HistoryBackend,
    HistoryEntry,
    HistoryPage,
    compare_ids,
    format_id,
    is_complete,
    parse_id,
    previous_id,
)
from stomp_cluster.typing import Headers

__all__ = ["MemoryHistory"]


@dataclass(slots=True)
class _History:
    """One user's history: what a Redis Stream and its pending hash hold."""

    expires_ms: int  # wall-clock ms at which the whole history is gone (the key's TTL)
    max_deleted: tuple[int, int]  # newest id removed, or the start marker
    last: tuple[int, int] = (0, 0)  # the last id generated
    added: int = 0  # entries ever added
    ids: list[tuple[int, int]] = field(default_factory=list)  # parallel to entries, sorted
    entries: list[HistoryEntry] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)  # destination -> first pending id
    acked: dict[str, str] = field(default_factory=dict)  # destination -> ack cursor

    def drop_head(self, count: int) -> None:
        """Remove the *count* oldest entries and remember the newest of them."""
        if count > 0:
            self.max_deleted = self.ids[count - 1]
            del self.ids[:count]
            del self.entries[:count]


def _bound(cursors: dict[str, str], most: int) -> None:
    """Forget the oldest cursors of *cursors* past *most*."""
    while len(cursors) > most:
        del cursors[next(iter(cursors))]


class MemoryHistory(HistoryBackend):
    """Histories in a dictionary of per-user lists.

    Takes the options of :class:`~stomp_cluster.history.base.HistoryBackend`, and
    ``max_keys``: the most histories kept at once (10,000 by default).
    """

    def __init__(
        self,
        *,
        max_length: int = 1000,
        max_age: float = 86400.0,
        max_keys: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(max_length=max_length, max_age=max_age, **options)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ImproperlyConfigured(
                f"History 'max_keys' must be a positive integer, got {max_keys!r}."
            )
        self.max_keys = max_keys
        # Ordered by last append, so that expired histories are found at the front.
        self._histories: dict[str, _History] = {}
        #: Wall-clock seconds; tests replace it to move the clock back.
        self.clock: Callable[[], float] = time.time

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _get(self, user_key: str, now: int) -> _History | None:
        history = self._histories.get(user_key)
        if history is not None and history.expires_ms <= now:
            del self._histories[user_key]
            return None
        return history

    def _expire(self, now: int) -> None:
        # Deadlines follow the order of appends, except when the clock went back; then a
        # late one is simply found by _get instead of here.
        expired = []
        for user_key, history in self._histories.items():
            if history.expires_ms > now:
                break
            expired.append(user_key)
        for user_key in expired:
            del self._histories[user_key]

    async def append(
        self,
        user_key: str,
        destination: str,
        body: bytes,
        headers: Headers,
        *,
        pending: bool = False,
    ) -> str:
        now = self._now_ms()
        self._expire(now)
        history = self._get(user_key, now)
        if history is not None:
            del self._histories[user_key]  # re-added below, at the end: the latest append
        last_ms, last_seq = (0, 0) if history is None else history.last
        new = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        entry_id = format_id(*new)
        if history is None:
            # A history that starts counts everything before it as removed: an id the
            # client got from a previous history (expired, or lost) reads as incomplete.
            history = _History(expires_ms=0, max_deleted=parse_id(previous_id(entry_id)))
        self._histories[user_key] = history
        while len(self._histories) > self.max_keys:
            del self._histories[next(iter(self._histories))]  # the least recently appended
        history.expires_ms = now + self.max_age_ms
        history.last = new
        history.added += 1
        history.ids.append(new)
        history.entries.append(
            HistoryEntry(
                id=entry_id,
                destination=destination,
                body=bytes(body),
                headers=tuple((name, value) for name, value in headers),
            )
        )
        # By age first, then by count, as the Redis script does; both remove the oldest.
        history.drop_head(bisect.bisect_left(history.ids, (new[0] - self.max_age_ms, 0)))
        history.drop_head(len(history.ids) - self.max_length)
        if pending:
            history.pending.setdefault(destination, entry_id)
            _bound(history.pending, self.max_length)
        return entry_id

    async def read(
        self,
        user_key: str,
        after: str,
        *,
        destination: str | None = None,
        limit: int = 10_000,
    ) -> HistoryPage:
        start = parse_id(after)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        history = self._get(user_key, self._now_ms())
        if history is None:
            return HistoryPage(
                (), is_complete(start, exists=False, length=0, added=0, max_deleted=(0, 0))
            )
        found: list[HistoryEntry] = []
        for i in range(bisect.bisect_right(history.ids, start), len(history.ids)):
            entry = history.entries[i]
            if destination is None or entry.destination == destination:
                found.append(entry)
                if len(found) >= limit:
                    break
        complete = is_complete(
            start,
            exists=True,
            length=len(history.ids),
            added=history.added,
            max_deleted=history.max_deleted,
        )
        return HistoryPage(tuple(found), complete)

    async def rewind_point(
        self,
        user_key: str,
        count: int,
        *,
        destination: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count!r}")
        history = self._get(user_key, self._now_ms())
        if history is None or not history.ids:
            return BEGINNING
        oldest, taken, used = None, 0, 0
        for entry in reversed(history.entries):
            if taken >= count:
                break
            if destination is not None and entry.destination != destination:
                continue
            used += len(entry.body)
            if max_bytes is not None and used > max_bytes:
                break
            oldest, taken = entry.id, taken + 1
        return previous_id(oldest) if oldest is not None else format_id(*history.ids[-1])

    async def take_pending(self, user_key: str, destination: str) -> str | None:
        history = self._get(user_key, self._now_ms())
        return None if history is None else history.pending.pop(destination, None)

    async def set_acked(self, user_key: str, destination: str, message_id: str) -> None:
        parse_id(message_id)
        history = self._get(user_key, self._now_ms())
        if history is None:
            return  # expired: nothing left to redeliver either
        current = history.acked.get(destination)
        if current is None or compare_ids(message_id, current) > 0:
            history.acked[destination] = message_id
            _bound(history.acked, self.max_length)

    async def acked(self, user_key: str, destination: str) -> str | None:
        history = self._get(user_key, self._now_ms())
        return None if history is None else history.acked.get(destination)

    async def last_id(self, user_key: str) -> str | None:
        history = self._get(user_key, self._now_ms())
        if history is None or not history.ids:
            return None
        return format_id(*history.ids[-1])

    async def close(self) -> None:
        """Nothing to release."""
