"""Settings of the testproject with its Redis behind Sentinel, for the failover tests.

``testproject.settings`` reads one Redis URL (``REDIS_URL``) from the environment; a node
that follows failovers needs the sentinels' addresses and the monitored name instead. This
module imports those settings and points the one ``STOMP_CLUSTER["REDIS"]`` setting (the
presence registry, the history and the transport) and the channel layer at the sentinels:

* ``STOMP_SENTINELS``: ``host:port,host:port,...`` of the sentinels.
* ``STOMP_SENTINEL_MASTER``: the name they monitor the primary under.

Pass it as ``DJANGO_SETTINGS_MODULE=tests.support.sentinel_settings``.
"""

from __future__ import annotations

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import STOMP_CLUSTER

__all__ = ["CHANNEL_LAYERS", "SENTINEL_HOST", "STOMP_CLUSTER"]


def _sentinels(value: str) -> list[tuple[str, int]]:
    pairs = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        pairs.append((host, int(port)))
    return pairs


#: The Sentinel form of a Redis host, as ``STOMP_CLUSTER["REDIS"]`` accepts it.
SENTINEL_HOST: dict[str, object] = {
    "sentinels": _sentinels(os.environ["STOMP_SENTINELS"]),
    "master_name": os.environ["STOMP_SENTINEL_MASTER"],
}

STOMP_CLUSTER = {**STOMP_CLUSTER, "REDIS": SENTINEL_HOST}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{**SENTINEL_HOST, "socket_timeout": 10}],
            "prefix": "stomp_demo",
            "capacity": 10_000,
        },
    }
}
