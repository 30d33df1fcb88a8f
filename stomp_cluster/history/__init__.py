"""Per-user message history, so that messages survive reconnects and node crashes.

Pick a backend by dotted path: :class:`MemoryHistory` for one node, :class:`RedisHistory`
for a cluster. Names are imported lazily, so that ``import stomp_cluster.history`` does not
import redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    try:
        module = _MODULES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
