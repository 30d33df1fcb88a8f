"""Redis backends on the test redis-server, with the key prefix the tests look under.

Fixtures build their backends here (``tests/*/conftest.py``), and tests that look at
Redis keys behind a backend's back compute the key names with :func:`stream_key`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stomp_cluster.history.redis import RedisHistory
from stomp_cluster.presence.redis import RedisPresence
from tests.support.procs import RedisServer
from tests.support.redis_cluster import RedisCluster

__all__ = [
    "PREFIX",
    "cluster_url",
    "digest",
    "make_cluster_backend",
    "make_cluster_history",
    "make_redis_backend",
    "make_redis_history",
    "stream_key",
]

PREFIX = "test"

# Short timeouts, so that a test of an outage fails fast rather than at the suite timeout.
_OPTIONS: dict[str, Any] = {"prefix": PREFIX, "socket_timeout": 1.0, "max_connections": 20}


def make_redis_backend(server: RedisServer, **options: Any) -> RedisPresence:
    """A Redis presence backend on *server*; *options* override the test defaults."""
    return RedisPresence(hosts=[server.url], **{**_OPTIONS, **options})


def make_redis_history(server: RedisServer, **options: Any) -> RedisHistory:
    """A Redis history backend on *server*; *options* override the test defaults."""
    return RedisHistory(hosts=[server.url], **{**_OPTIONS, **options})


def cluster_url(cluster: RedisCluster) -> str:
    """*cluster* as a ``redis+cluster://`` URL, the form of the ``REDIS`` setting."""
    return "redis+cluster://" + ",".join(cluster.startup_nodes) + "/"


def make_cluster_backend(cluster: RedisCluster, **options: Any) -> RedisPresence:
    """A Redis presence backend on the Redis Cluster *cluster* (given as a URL)."""
    return RedisPresence(hosts=[cluster_url(cluster)], **{**_OPTIONS, **options})


def make_cluster_history(cluster: RedisCluster, **options: Any) -> RedisHistory:
    """A Redis history backend on *cluster* (given as a ``startup_nodes`` dict)."""
    hosts = [{"startup_nodes": cluster.startup_nodes}]
    return RedisHistory(hosts=hosts, **{**_OPTIONS, **options})


def digest(value: str) -> str:
    """The hash the Redis backends put in a key in place of a user key (SHA-1, 20 hex)."""
    return hashlib.sha1(value.encode()).hexdigest()[:20]


def stream_key(user_key: str) -> str:
    """The Redis key of *user_key*'s history stream."""
    return f"{PREFIX}:h:{{{digest(user_key)}}}"
