"""Small per-process caches with a time to live and a bounded size.

The logins and the ``/user/`` routing of a node ask the database the same questions many
times a second (is this token's user still active, does this username exist, is this the
password we checked a moment ago). Each answer is kept here for a few seconds. A cache
holds at most ``max_entries`` answers, the oldest dropped first, so a client that asks
about many made-up names cannot grow it without bound.

Every cache registers itself, so that :func:`clear_caches` empties them all: when a user
changes (its password, its activity), the receivers of :mod:`stomp_cluster.accounts` clear
this node's caches at once; other nodes forget within their time to live.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Generic, TypeVar

__all__ = ["TTLCache", "clear_caches"]

K = TypeVar("K")
V = TypeVar("V")

_caches: weakref.WeakSet[TTLCache[object, object]] = weakref.WeakSet()


class TTLCache(Generic[K, V]):
    """A mapping whose entries expire *ttl* seconds after they were set.

    Args:
        max_entries: the most entries kept; setting one more drops the oldest.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        _caches.add(self)  # type: ignore[arg-type]

    def get(self, key: K) -> V | None:
        """The live value of *key*, or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= time.monotonic():
                del self._entries[key]
                return None
            return found[1]

    def set(self, key: K, value: V, ttl: float) -> None:
        """Keep *value* for *key* during *ttl* seconds; a *ttl* of 0 or less keeps nothing."""
        if ttl <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (time.monotonic() + ttl, value)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def discard(self, key: K) -> None:
        """Forget *key*."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def clear_caches() -> None:
    """Empty every cache of this process."""
    for cache in list(_caches):
        cache.clear()
