"""Registry of who is connected to which node, behind a small async interface.

The interface and its records are in :mod:`stomp_cluster.presence.base`. Pick a backend by
dotted path in ``STOMP_CLUSTER["PRESENCE_BACKEND"]``:
:class:`~stomp_cluster.presence.memory.MemoryPresence` for one node,
:class:`~stomp_cluster.presence.redis.RedisPresence` for a cluster. This package imports
nothing itself, so that choosing the memory backend never imports redis-py.
"""

from __future__ import annotations

__all__: list[str] = []
