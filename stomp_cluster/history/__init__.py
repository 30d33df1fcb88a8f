"""Per-user message history, so that messages survive reconnects and node crashes.

The interface, its records and the message-id helpers are in
:mod:`stomp_cluster.history.base`. Pick a backend by dotted path in
``STOMP_CLUSTER["HISTORY_BACKEND"]``: :class:`~stomp_cluster.history.memory.MemoryHistory`
for one node, :class:`~stomp_cluster.history.redis.RedisHistory` for a cluster. This package
imports nothing itself, so that choosing the memory backend never imports redis-py.
"""

from __future__ import annotations

__all__: list[str] = []
