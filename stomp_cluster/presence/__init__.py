"""Registry of who is connected to which node, behind a small async interface.

Pick a backend by dotted path in ``STOMP_CLUSTER["PRESENCE_BACKEND"]``:
:class:`MemoryPresence` for one node, :class:`RedisPresence` for a cluster. Names are
imported lazily, so that ``import stomp_cluster.presence`` does not import redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stomp_cluster.presence.base import (
        NodeRecord,
        PresenceBackend,
        SessionPage,
        SessionRecord,
        SubscriptionRecord,
    )
    from stomp_cluster.presence.memory import MemoryPresence
    from stomp_cluster.presence.redis import RedisPresence

__all__ = [
    "MemoryPresence",
    "NodeRecord",
    "PresenceBackend",
    "RedisPresence",
    "SessionPage",
    "SessionRecord",
    "SubscriptionRecord",
]

_MODULES = {
    "MemoryPresence": "memory",
    "NodeRecord": "base",
    "PresenceBackend": "base",
    "RedisPresence": "redis",
    "SessionPage": "base",
    "SessionRecord": "base",
    "SubscriptionRecord": "base",
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
