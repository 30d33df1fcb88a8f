"""Per-user message history, so that messages survive reconnects and node crashes.

Pick a backend by dotted path: :class:`MemoryHistory` for one node, :class:`RedisHistory`
for a cluster. Names are imported lazily, so that ``import stomp_cluster.history`` does not
import redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stomp_cluster._lazy import lazy_exports

if TYPE_CHECKING:
    from stomp_cluster.history.base import (
        BEGINNING,
        HistoryBackend,
        HistoryEntry,
        HistoryPage,
        compare_ids,
        is_valid_id,
        parse_id,
        previous_id,
    )
    from stomp_cluster.history.memory import MemoryHistory
    from stomp_cluster.history.redis import RedisHistory

__all__ = [
    "BEGINNING",
    "HistoryBackend",
    "HistoryEntry",
    "HistoryPage",
    "MemoryHistory",
    "RedisHistory",
    "compare_ids",
    "is_valid_id",
    "parse_id",
    "previous_id",
]

_MODULES = {
    "BEGINNING": "base",
    "HistoryBackend": "base",
    "HistoryEntry": "base",
    "HistoryPage": "base",
    "MemoryHistory": "memory",
    "RedisHistory": "redis",
    "compare_ids": "base",
    "is_valid_id": "base",
    "parse_id": "base",
    "previous_id": "base",
}


__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{module}" for name, module in _MODULES.items()}, __all__
)
