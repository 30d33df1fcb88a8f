"""Registry of who is connected to which node, behind a small async interface.

Pick a backend by dotted path in ``STOMP_CLUSTER["PRESENCE_BACKEND"]``:
:class:`MemoryPresence` for one node, :class:`RedisPresence` for a cluster. Names are
imported lazily, so that ``import stomp_cluster.presence`` does not import redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stomp_cluster._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{module}" for name, module in _MODULES.items()}, __all__
)
