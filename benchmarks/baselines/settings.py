"""Settings of the Channels baseline: no database, no apps but Channels.

``BENCH_LAYER`` picks the channels_redis layer: ``core`` (``RedisChannelLayer``, default
capacity 100) or ``pubsub`` (``RedisPubSubChannelLayer``). Both get an explicit pool size
and socket timeout: redis-py 8's defaults (100 connections, 5 s) break channels_redis 4.3
under load (``docs/performance.md``, earlier measurements), and we want to measure the
layer, not that.
"""

from __future__ import annotations

import os

SECRET_KEY = "stomp-cluster-bench-baseline"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, object] = {}
USE_TZ = True
ASGI_APPLICATION = "benchmarks.baselines.channels_app.application"

_REDIS_URL = os.environ["REDIS_URL"]
_HOST = {"address": _REDIS_URL, "socket_timeout": 10, "max_connections": 500}

if os.environ.get("BENCH_LAYER", "core") == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_HOST], "prefix": "bench"},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_HOST], "prefix": "bench"},
        }
    }
