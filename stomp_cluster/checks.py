"""System checks for ``STOMP_CLUSTER`` and the channel layer it relies on.

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
* ``stomp_cluster.W001`` the in-memory channel layer with a shared presence backend
  (several nodes expected, but they could not reach each other), or the reverse.
* ``stomp_cluster.W002`` a channels_redis layer left at its default capacity of 100:
  under load, node channels fill and sends fail with ``DeliveryFailed``.
* ``stomp_cluster.W003`` a channels_redis host given without ``socket_timeout``:
  redis-py's default (5 s) equals the layer's blocking read, so receives time out.
* ``stomp_cluster.W004`` an in-memory history with a shared presence registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

__all__ = ["check_channel_layer", "check_settings", "validate_settings"]


def _is_int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _is_prefixes(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(
        isinstance(p, str) and p.startswith("/") and p.endswith("/") for p in v
    )


def _is_optional_str(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(v))


_VALIDATORS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "NODE_ID": (_is_optional_str, "a non-empty string, or None for '<hostname>-<pid>'"),
    "URL_PATH": (lambda v: isinstance(v, str), "a URL path string such as 'ws'"),
    "HEARTBEAT_SEND_MS": (_is_int(0), "a whole number of milliseconds, 0 or more"),
    "HEARTBEAT_RECEIVE_MS": (_is_int(0), "a whole number of milliseconds, 0 or more"),
    "HEARTBEAT_GRACE_MS": (_is_int(0), "a whole number of milliseconds, 0 or more"),
    "MAX_FRAME_SIZE": (_is_int(1024), "a whole number of bytes, at least 1024"),
    "MAX_BODY_SIZE": (_is_int(0), "a whole number of bytes"),
    "MAX_HEADERS": (_is_int(1), "a positive whole number"),
    "MAX_HEADER_LENGTH": (_is_int(64), "a whole number of bytes, at least 64"),
    "MAX_SUBSCRIPTIONS": (_is_int(1), "a positive whole number"),
    "MAX_TRANSACTIONS": (_is_int(0), "a whole number, 0 disables transactions"),
    "MAX_TRANSACTION_FRAMES": (_is_int(1), "a positive whole number"),
    "MAX_PENDING_ACKS": (_is_int(1), "a positive whole number"),
    "MAX_OUTBOX": (_is_int(1), "a positive whole number of frames"),
    "REQUIRE_AUTHENTICATION": (lambda v: isinstance(v, bool), "True or False"),
    "PASSWORD_LOGIN": (lambda v: isinstance(v, bool), "True or False"),
    "TOKEN_MAX_AGE": (_is_int(1), "a whole number of seconds"),
    "PERMISSION_HOOK": (_is_optional_str, "a dotted path to a callable, or None"),
    "ALLOWED_ORIGINS": (
        lambda v: v is None or (isinstance(v, list | tuple) and all(isinstance(o, str) for o in v)),
        "a list of host names (or '*'), or None to use ALLOWED_HOSTS",
    ),
    "BROKER_PREFIXES": (_is_prefixes, "a list of prefixes that start and end with '/'"),
    "APP_PREFIXES": (_is_prefixes, "a list of prefixes that start and end with '/'"),
    "USER_PREFIX": (
        lambda v: isinstance(v, str) and v.startswith("/") and v.endswith("/") and len(v) > 2,
        "a prefix that starts and ends with '/', such as '/user/'",
    ),
    "HANDLER_MODULE": (lambda v: isinstance(v, str) and bool(v), "a module name"),
    "PRESENCE_BACKEND": (lambda v: isinstance(v, str) and "." in v, "a dotted path to a class"),
    "PRESENCE_OPTIONS": (lambda v: isinstance(v, dict), "a dict of keyword arguments"),
    "HISTORY_BACKEND": (
        lambda v: v is None or (isinstance(v, str) and "." in v),
        "a dotted path to a history backend class, or None for no history",
    ),
    "HISTORY_OPTIONS": (lambda v: isinstance(v, dict), "a dict of keyword arguments"),
    "HISTORY_MAX_LENGTH": (_is_int(1), "a positive whole number of messages"),
    "HISTORY_MAX_AGE": (_is_number, "a positive number of seconds"),
    "HISTORY_TOPICS": (
        lambda v: isinstance(v, list | tuple) and all(isinstance(p, str) for p in v),
        "a list of fnmatch patterns such as '/topic/news.*'",
    ),
    "NODE_TTL": (_is_number, "a positive number of seconds"),
    "NODE_HEARTBEAT_INTERVAL": (
        lambda v: v is None or _is_number(v),
        "a positive number of seconds, or None for NODE_TTL / 3",
    ),
    "CHANNEL_LAYER": (lambda v: isinstance(v, str), "a key of settings.CHANNEL_LAYERS"),
    "TRANSPORT_BACKEND": (lambda v: isinstance(v, str) and "." in v, "a dotted path to a class"),
    "TRANSPORT_OPTIONS": (lambda v: isinstance(v, dict), "a dict of keyword arguments"),
}


#: Backend settings checked for importability: (key, hint, check id).
_BACKENDS = (
    (
        "PRESENCE_BACKEND",
        "Use 'stomp_cluster.presence.memory.MemoryPresence' (one node) or "
        "'stomp_cluster.presence.redis.RedisPresence' (a cluster).",
        "stomp_cluster.E004",
    ),
    (
        "HISTORY_BACKEND",
        "Use 'stomp_cluster.history.memory.MemoryHistory' (one node), "
        "'stomp_cluster.history.redis.RedisHistory' (a cluster), or None.",
        "stomp_cluster.E008",
    ),
    (
        "TRANSPORT_BACKEND",
        "Use 'stomp_cluster.transport.ChannelLayerTransport' (the channel layer) or "
        "'stomp_cluster.transport.RedisTransport' (a cluster).",
        "stomp_cluster.E009",
    ),
)

#: Backends built from their options by the check, to report a bad option at startup.
_OPTIONS = (
    ("PRESENCE_BACKEND", "PRESENCE_OPTIONS"),
    ("TRANSPORT_BACKEND", "TRANSPORT_OPTIONS"),
)


def validate_settings(value: Any) -> list[tuple[str, str, str]]:
    """Validate a raw ``STOMP_CLUSTER`` value.

    Returns:
        ``(message, hint, id)`` triples, empty when the value is fine. Shared by the
        system check and by :func:`stomp_cluster.conf.get_settings`, so that both
        report the same words.
    """
    if not isinstance(value, dict):
        return [
            (
                f"STOMP_CLUSTER must be a dict, not {type(value).__name__}.",
                "Set STOMP_CLUSTER = {...} in your settings, or remove it to use the defaults.",
                "stomp_cluster.E001",
            )
        ]
    errors: list[tuple[str, str, str]] = []
    for key in sorted(value):
        if key not in _VALIDATORS:
            close = difflib.get_close_matches(str(key), _VALIDATORS, n=1)
            hint = (
                f"Did you mean {close[0]!r}?" if close else "Remove it; see the settings reference."
            )
            errors.append((f"Unknown key {key!r} in STOMP_CLUSTER.", hint, "stomp_cluster.E002"))
            continue
        valid, expected = _VALIDATORS[key]
        if not valid(value[key]):
            errors.append(
                (
                    f"STOMP_CLUSTER[{key!r}] is {value[key]!r}.",
                    f"Set it to {expected}.",
                    "stomp_cluster.E003",
                )
            )
    if errors:
        return errors
    from stomp_cluster.conf import DEFAULTS

    merged = {**DEFAULTS, **value}
    for key, hint, check_id in _BACKENDS:
        path = merged[key]
        if path is None:
            continue
        try:
            import_string(path)
        except ImportError as exc:
            errors.append((f"{key} {path!r} cannot be imported: {exc}.", hint, check_id))
    if not errors:
        for key, options_key in _OPTIONS:
            # Building a backend opens no connection: it only checks its options.
            try:
                import_string(merged[key])(**merged[options_key])
            except (ImproperlyConfigured, TypeError, ValueError) as exc:
                errors.append(
                    (
                        f"{merged[key]} refuses STOMP_CLUSTER[{options_key!r}]: {exc}",
                        f"Fix {options_key}; the backend's docstring lists its options.",
                        "stomp_cluster.E010",
                    )
                )
    hook = merged["PERMISSION_HOOK"]
    if hook is not None:
        try:
            func = import_string(hook)
        except ImportError as exc:
            func, reason = None, f"cannot be imported: {exc}"
        else:
            reason = "is not callable"
        if not callable(func):
            errors.append(
                (
                    f"PERMISSION_HOOK {hook!r} {reason}.",
                    "Point it at a function hook(user, action, destination) -> bool.",
                    "stomp_cluster.E005",
                )
            )
    ttl = float(merged["NODE_TTL"])
    interval = merged["NODE_HEARTBEAT_INTERVAL"]
    if interval is not None and float(interval) >= ttl:
        errors.append(
            (
                f"NODE_HEARTBEAT_INTERVAL ({interval}) is not shorter than NODE_TTL ({ttl}): "
                "nodes would be declared lost between two heartbeats.",
                "Make NODE_HEARTBEAT_INTERVAL at most a third of NODE_TTL, or leave it None.",
                "stomp_cluster.E007",
            )
        )
    return errors


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """System check: the ``STOMP_CLUSTER`` setting is valid."""
    value = getattr(settings, "STOMP_CLUSTER", {})
    return [Error(msg, hint=hint, id=id_) for msg, hint, id_ in validate_settings(value)]


def check_channel_layer(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """System check: a channel layer exists, fits the presence backend and is sized."""
    value = getattr(settings, "STOMP_CLUSTER", {})
    if validate_settings(value):
        return []  # reported by check_settings
    from stomp_cluster.conf import DEFAULTS

    merged = {**DEFAULTS, **value}
    messages: list[CheckMessage] = []
    memory_presence = merged["PRESENCE_BACKEND"].endswith("MemoryPresence")
    history = merged["HISTORY_BACKEND"]
    if history is not None and history.endswith("MemoryHistory") and not memory_presence:
        messages.append(
            Warning(
                "HISTORY_BACKEND keeps each node's history in its own memory while the "
                "presence registry is shared: a client that reconnects to another node "
                "cannot recover what it missed.",
                hint="Use 'stomp_cluster.history.redis.RedisHistory' in a cluster.",
                id="stomp_cluster.W004",
            )
        )
    if not merged["TRANSPORT_BACKEND"].endswith(".ChannelLayerTransport"):
        return messages  # the nodes do not use the channel layer
    name = merged["CHANNEL_LAYER"]
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if name not in layers:
        return [
            Error(
                f"No channel layer named {name!r} in settings.CHANNEL_LAYERS.",
                hint="Configure channels_redis.core.RedisChannelLayer there (or "
                "channels.layers.InMemoryChannelLayer for a single node).",
                id="stomp_cluster.E006",
            )
        ]
    backend = str(layers[name].get("BACKEND", ""))
    in_memory = backend.endswith("InMemoryChannelLayer")
    if in_memory != memory_presence:
        messages.append(
            Warning(
                f"The channel layer is {backend} but PRESENCE_BACKEND is "
                f"{merged['PRESENCE_BACKEND']}: one is per-process, the other shared.",
                hint="Use RedisChannelLayer with RedisPresence for a cluster, or "
                "InMemoryChannelLayer with MemoryPresence for a single node.",
                id="stomp_cluster.W001",
            )
        )
    if backend.startswith("channels_redis.core."):
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
        if backend.endswith("RedisChannelLayer") and any(
            not isinstance(h, dict) or "socket_timeout" not in h for h in hosts
        ):
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
