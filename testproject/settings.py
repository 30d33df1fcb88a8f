"""Settings of the test and demo project.

Read from the environment, so that the same project runs as any node of a cluster:

* ``REDIS_URL``: when set, ``STOMP_CLUSTER['REDIS']`` (the presence registry, the
  history and the transport on that Redis) and the channels_redis layer; otherwise the
  in-memory backends and layer (a single node).
* ``STOMP_NODE_ID``: this node's id (default ``<hostname>-<pid>``).
* ``STOMP_NODE_TTL``: node heartbeat TTL in seconds (default 10).
* ``DATABASE_PATH``: the SQLite file (default ``db.sqlite3`` next to ``manage.py``).
* ``STOMP_TRANSPORT``: how nodes reach each other with Redis: ``redis`` (the default,
  :class:`stomp_cluster.transport.RedisTransport`) or ``layer`` (the channel layer).
* ``STOMP_CHANNEL_LAYER=pubsub``: channels_redis's pub/sub layer instead of the core one.
* ``STOMP_HISTORY_MAX_LENGTH``: messages kept per user for recovery (default 1000).
* ``STOMP_INBOX_CAPACITY``: messages a node's inbox holds (``RedisTransport``, 10,000).
* ``STOMP_PUBLISH_KEY``: the API key of the HTTP publish API at ``/stomp/publish/``
  (at least 16 characters); unset, the API is off (404).
* ``REDIS_CLUSTER_NODES=host:port,host:port,...``: every backend on that Redis Cluster
  (it wins over ``REDIS_URL``); nodes reach each other through ``RedisTransport`` on the
  cluster, and the channel layer is in memory (channels_redis has no cluster support,
  and with ``RedisTransport`` nodes never use the layer to reach each other).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "stomp-cluster-demo-secret-key-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "stomp_cluster",
    "testproject",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE_PATH", str(BASE_DIR / "testproject" / "db.sqlite3")),
        # Several nodes share one SQLite file in the demo and tests: wait for locks.
        "OPTIONS": {"timeout": 20},
    }
}

# The demo users' passwords are not secrets; a fast hasher keeps the password login of
# the demo cheap. Real projects keep Django's default (see docs: tokens).
PASSWORD_HASHERS = os.environ.get(
    "DJANGO_PASSWORD_HASHERS", "django.contrib.auth.hashers.PBKDF2PasswordHasher"
).split(",")

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_CLUSTER_NODES = os.environ.get("REDIS_CLUSTER_NODES", "")
if REDIS_CLUSTER_NODES:
    REDIS_URL = ""  # the cluster below wins

if REDIS_URL and os.environ.get("STOMP_CHANNEL_LAYER") == "pubsub":
    # channels_redis's pub/sub layer: nothing queues in Redis, so a node channel never
    # fills there (it queues in the receiving process instead; see docs/topics/delivery).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10, "max_connections": 500}],
                "prefix": "stomp_demo",
            },
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's 5 s socket timeout equals the layer's 5 s blocking read, so
                # receives time out spuriously; its asyncio pool also caps at 100
                # connections. Set both (see docs/howto/deploy-a-cluster).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10, "max_connections": 500}],
                "prefix": "stomp_demo",
                # Node channels carry every message for a node: see docs/topics/delivery.
                "capacity": 10_000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

STOMP_CLUSTER: dict[str, object] = {
    # One key for the cluster: presence, history and RedisTransport on this Redis. Left
    # None (REDIS_URL unset, as `make demo` does without Redis): one node, in memory.
    "REDIS": REDIS_URL or None,
    "NODE_ID": os.environ.get("STOMP_NODE_ID") or None,
    "NODE_TTL": float(os.environ.get("STOMP_NODE_TTL", "10")),
    "HISTORY_MAX_LENGTH": int(os.environ.get("STOMP_HISTORY_MAX_LENGTH", "1000")),
    # The demo lets scripts log in with a password; tokens are the scalable way.
    "PASSWORD_LOGIN": True,
    # The chat keeps a history: a SUBSCRIBE with x-rewind: 20 gets its last 20 lines.
    "HISTORY_TOPICS": ["/topic/chat"],
}
if os.environ.get("STOMP_PUBLISH_KEY"):
    STOMP_CLUSTER["PUBLISH_API_KEYS"] = [os.environ["STOMP_PUBLISH_KEY"]]
if REDIS_CLUSTER_NODES:
    STOMP_CLUSTER["REDIS"] = f"redis+cluster://{REDIS_CLUSTER_NODES}/"
if REDIS_URL and os.environ.get("STOMP_TRANSPORT", "redis") != "redis":
    # The channel layer instead of RedisTransport: a key set here wins over REDIS.
    STOMP_CLUSTER["TRANSPORT_BACKEND"] = "stomp_cluster.transport.ChannelLayerTransport"
if os.environ.get("STOMP_MAX_OUTBOX"):
    STOMP_CLUSTER["MAX_OUTBOX"] = int(os.environ["STOMP_MAX_OUTBOX"])
if (
    os.environ.get("STOMP_INBOX_CAPACITY")
    and STOMP_CLUSTER["REDIS"]
    and "TRANSPORT_BACKEND" not in STOMP_CLUSTER
):
    # RedisTransport's node inbox size (10,000 by default): the benchmarks shrink it to
    # make a live node refuse pushes, as a node that falls behind its senders does.
    STOMP_CLUSTER["TRANSPORT_OPTIONS"] = {"capacity": int(os.environ["STOMP_INBOX_CAPACITY"])}
if os.environ.get("STOMP_HEARTBEAT_GRACE_MS"):
    STOMP_CLUSTER["HEARTBEAT_GRACE_MS"] = int(os.environ["STOMP_HEARTBEAT_GRACE_MS"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "stomp_cluster": {
            "handlers": ["console"],
            "level": os.environ.get("STOMP_LOG_LEVEL", "INFO"),
        },
    },
}
# Client presence (stomp_cluster.roster) for the demo's rooms and the cluster tests.
STOMP_CLUSTER["PRESENCE_DESTINATIONS"] = ["/topic/room.*"]
