"""System checks for ``STOMP_CLUSTER`` and the channel layer it relies on.

Two checks, registered in :meth:`StompClusterConfig.ready
<stomp_cluster.apps.StompClusterConfig.ready>` under the tag ``stomp_cluster``:

* :func:`check_settings` reports what :func:`stomp_cluster.conf.validate_settings` finds.
  The validation lives with the settings table in :mod:`stomp_cluster.conf`, because
  :func:`~stomp_cluster.conf.get_settings` raises ``ImproperlyConfigured`` with the same
  words when bad settings are used anyway; this module imports ``conf``, never the
  reverse.
* :func:`check_channel_layer` looks at how the settings fit together and with Channels'
  ``CHANNEL_LAYERS``. It recognises backends by class, with ``issubclass`` against the
  shipped ones, so that a subclass of ``MemoryPresence`` counts as in-memory and a class
  merely named alike does not.

Each check says what is wrong and, in ``hint``, what to do. The IDs are stable and listed
in ``docs/reference/checks.rst``:

* ``stomp_cluster.E001`` ``STOMP_CLUSTER`` is not a dict.
* ``stomp_cluster.E002`` unknown key in ``STOMP_CLUSTER``.
* ``stomp_cluster.E003`` a value has the wrong type or range.
* ``stomp_cluster.E004`` ``PRESENCE_BACKEND`` cannot be imported.
* ``stomp_cluster.E005`` ``PERMISSION_HOOK`` cannot be imported or is not callable.
* ``stomp_cluster.E006`` no channel layer under the configured ``CHANNEL_LAYER`` name
  (only checked with the channel-layer transport).
* ``stomp_cluster.E007`` ``NODE_HEARTBEAT_INTERVAL`` is not shorter than ``NODE_TTL``.
* ``stomp_cluster.E008`` ``HISTORY_BACKEND`` cannot be imported.
* ``stomp_cluster.E009`` ``TRANSPORT_BACKEND`` cannot be imported.
* ``stomp_cluster.E010`` a backend refuses its ``*_OPTIONS`` (unknown or invalid option).
* ``stomp_cluster.E011`` ``REDIS`` is not a Redis URL, ``(host, port)`` pair or
  connection dict.
* ``stomp_cluster.W001`` the in-memory channel layer with a shared presence backend
  (several nodes expected, but they could not reach each other), or the reverse.
* ``stomp_cluster.W002`` a channels_redis layer left at its default capacity of 100:
  under load, node channels fill and sends fail with ``DeliveryFailed``.
* ``stomp_cluster.W003`` a channels_redis host given without ``socket_timeout``:
  redis-py's default (5 s) equals the layer's blocking read, so receives time out.
* ``stomp_cluster.W004`` an in-memory history with a shared presence registry.
* ``stomp_cluster.W005`` the in-memory presence registry where several processes are
  expected: ``RedisTransport`` (meant to connect nodes), or a multi-worker server.
* ``stomp_cluster.W006`` a Redis Cluster with the channel-layer transport: channels_redis
  has no cluster support, so the layer cannot share the cluster (or a channels_redis
  host names a cluster, which cannot work).

What a check can see of the server is the environment of ``manage.py check``: the
``WEB_CONCURRENCY`` variable, which gunicorn and uvicorn both take as their number of
worker processes, and ``GUNICORN_CMD_ARGS`` (``-w``/``--workers``). A ``--workers``
given on the server's command line is invisible to it, and neither daphne nor the other
servers run the system checks when they start; so W005 is a help when it fires, not a
proof when it does not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from stomp_cluster.conf import get_settings, validate_settings
from stomp_cluster.history.memory import MemoryHistory
from stomp_cluster.presence.memory import MemoryPresence
from stomp_cluster.redis_connection import cluster_nodes
from stomp_cluster.transport import ChannelLayerTransport, RedisTransport

__all__ = ["check_channel_layer", "check_settings"]


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """System check: the ``STOMP_CLUSTER`` setting is valid."""
    value = getattr(settings, "STOMP_CLUSTER", {})
    return [Error(msg, hint=hint, id=id_) for msg, hint, id_ in validate_settings(value)]


def check_channel_layer(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """System check: a channel layer exists, fits the presence backend and is sized."""
    try:
        stomp = get_settings()
    except ImproperlyConfigured:
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    memory_presence = issubclass(import_string(stomp.PRESENCE_BACKEND), MemoryPresence)
    history = stomp.HISTORY_BACKEND
    if (
        history is not None
        and issubclass(import_string(history), MemoryHistory)
        and not memory_presence
    ):
        messages.append(
            Warning(
                "HISTORY_BACKEND keeps each node's history in its own memory while the "
                "presence registry is shared: a client that reconnects to another node "
                "cannot recover what it missed.",
                hint="Use 'stomp_cluster.history.redis.RedisHistory' in a cluster.",
                id="stomp_cluster.W004",
            )
        )
    transport = import_string(stomp.TRANSPORT_BACKEND)
    if memory_presence:
        reasons = _several_processes(os.environ)
        if issubclass(transport, RedisTransport):
            reasons.insert(0, "with RedisTransport, which connects several nodes")
        if reasons:
            messages.append(
                Warning(
                    f"The in-memory presence backend is used {'; '.join(reasons)}: each "
                    "process keeps its own registry, so a message sent in one process "
                    "reaches no client connected to another.",
                    hint="Set STOMP_CLUSTER['REDIS'] = 'redis://...' so that the processes "
                    "share one registry, or run a single server process.",
                    id="stomp_cluster.W005",
                )
            )
    if not issubclass(transport, ChannelLayerTransport):
        return messages  # the nodes do not use the channel layer
    name = stomp.CHANNEL_LAYER
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    layer_hosts = ((layers.get(name) or {}).get("CONFIG") or {}).get("hosts") or []
    if _is_cluster(stomp.REDIS) or any(_is_cluster(host) for host in layer_hosts):
        messages.append(
            Warning(
                "A Redis Cluster is configured with the channel-layer transport, but "
                "channels_redis has no Redis Cluster support: its layer cannot run on the "
                "cluster, and nodes would reach each other only through a separate Redis.",
                hint="Leave STOMP_CLUSTER['TRANSPORT_BACKEND'] at its default with REDIS set "
                "('stomp_cluster.transport.RedisTransport', which runs on the cluster), or "
                "give the channel layer a standalone Redis of its own.",
                id="stomp_cluster.W006",
            )
        )
    if name not in layers:
        return messages + [
            Error(
                f"No channel layer named {name!r} in settings.CHANNEL_LAYERS.",
                hint="Configure channels_redis.core.RedisChannelLayer there (or "
                "channels.layers.InMemoryChannelLayer for a single node), or set "
                "STOMP_CLUSTER['TRANSPORT_BACKEND'] to "
                "'stomp_cluster.transport.RedisTransport', which needs no channel layer.",
                id="stomp_cluster.E006",
            )
        ]
    backend = str(layers[name].get("BACKEND", ""))
    layer = _layer_class(backend)
    in_memory = layer is not None and issubclass(layer, InMemoryChannelLayer)
    if in_memory != memory_presence:
        messages.append(
            Warning(
                f"The channel layer is {backend} but PRESENCE_BACKEND is "
                f"{stomp.PRESENCE_BACKEND}: one is per-process, the other shared.",
                hint="Use RedisChannelLayer with RedisPresence for a cluster, or "
                "InMemoryChannelLayer with MemoryPresence for a single node.",
                id="stomp_cluster.W001",
            )
        )
    if layer is not None and issubclass(layer, RedisChannelLayer):
        config = layers[name].get("CONFIG", {}) or {}
        if "capacity" not in config and "channel_capacity" not in config:
            messages.append(
                Warning(
                    "The channels_redis layer uses its default capacity of 100 messages per "
                    "channel; node channels carry every message for a node, so under load "
                    "they fill and sends fail with DeliveryFailed.",
                    hint="Set CONFIG['capacity'] (we recommend 10000) in CHANNEL_LAYERS.",
                    id="stomp_cluster.W002",
                )
            )
        hosts = config.get("hosts") or []
        if any(not isinstance(h, dict) or "socket_timeout" not in h for h in hosts):
            messages.append(
                Warning(
                    "A channels_redis host has no socket_timeout: redis-py's default of 5 "
                    "seconds equals the layer's 5-second blocking read, so receives time "
                    "out and are retried.",
                    hint="Give each host as a dict: {'address': 'redis://...', "
                    "'socket_timeout': 10, 'max_connections': 500}.",
                    id="stomp_cluster.W003",
                )
            )
    return messages


def _is_cluster(host: Any) -> bool:
    """Whether *host* (a ``REDIS`` value or a hosts entry) names a Redis Cluster."""
    if host is None or not isinstance(host, str | Mapping):
        return False
    try:
        return cluster_nodes(host) is not None
    except ImproperlyConfigured:
        return True  # a cluster, named wrongly: reported by the settings check


def _several_processes(environ: Mapping[str, str]) -> list[str]:
    """Why *environ* says the server runs several worker processes, if it does."""
    reasons = []
    concurrency = environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit() and int(concurrency) > 1:
        reasons.append(
            f"while WEB_CONCURRENCY is {int(concurrency)} (gunicorn and uvicorn start that "
            "many worker processes)"
        )
    match = re.search(
        r"(?:^|\s)(?:-w\s*|--workers[=\s]\s*)(\d+)", environ.get("GUNICORN_CMD_ARGS", "")
    )
    if match and int(match.group(1)) > 1:
        reasons.append(f"while GUNICORN_CMD_ARGS asks gunicorn for {int(match.group(1))} workers")
    return reasons


def _layer_class(path: str) -> type | None:
    """Return the channel layer class at ``path``, or ``None``.

    A layer that cannot be imported is left to Channels, which raises when the layer is
    first used; here it counts as neither in-memory nor channels_redis.
    """
    try:
        layer = import_string(path)
    except ImportError:
        return None
    return layer if isinstance(layer, type) else None
