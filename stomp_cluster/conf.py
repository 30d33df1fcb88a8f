"""Settings: the ``STOMP_CLUSTER`` dict, merged over documented defaults.

Read settings through :func:`get_settings`, never at import time, so that
``override_settings`` works in tests: the merged result is cached and the cache is
cleared on Django's ``setting_changed`` signal.

Every key, its unit and a line of advice are listed in ``docs/reference/settings.rst``;
keep the two in step. Wrong keys or values are reported by the system checks in
:mod:`stomp_cluster.checks` at startup, and raise ``ImproperlyConfigured`` if used anyway.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "StompSettings", "get_settings"]

DEFAULTS: dict[str, Any] = {
    # Identity of this process in the cluster; None means "<hostname>-<pid>".
    "NODE_ID": None,
    # Path of the WebSocket endpoint in stomp_cluster.routing.websocket_urlpatterns.
    "URL_PATH": "ws",
    # Server heart-beat offer (sx, sy) in milliseconds: how often we can send, and how
    # often we want to hear from the client. 0 disables that direction.
    "HEARTBEAT_SEND_MS": 10_000,
    "HEARTBEAT_RECEIVE_MS": 10_000,
    # Extra silence (milliseconds) tolerated past the negotiated client interval before
    # the connection is closed as dead.
    "HEARTBEAT_GRACE_MS": 5_000,
    # Limits of one connection (bytes or counts). A peer going over gets an ERROR frame.
    "MAX_FRAME_SIZE": 1_114_112,
    "MAX_BODY_SIZE": 1_048_576,
    "MAX_HEADERS": 100,
    "MAX_HEADER_LENGTH": 8192,
    "MAX_SUBSCRIPTIONS": 1000,
    "MAX_TRANSACTIONS": 16,
    "MAX_TRANSACTION_FRAMES": 1000,
    "MAX_PENDING_ACKS": 10_000,
    # Frames queued for one socket before it is closed as a slow consumer.
    "MAX_OUTBOX": 10_000,
    # Authentication.
    "REQUIRE_AUTHENTICATION": False,
    "PASSWORD_LOGIN": False,
    "TOKEN_MAX_AGE": 3600,  # seconds, default lifetime of connection_token()
    # Dotted path of a callable (user, action, destination) -> bool; action is
    # "subscribe" or "send" (including /app/ destinations). None allows everything but
    # anonymous SENDs to /user/<name>/...; nobody can subscribe to another user's queue.
    "PERMISSION_HOOK": None,
    # Origins allowed to open the WebSocket (host names, "*" or ".example.com" suffixes);
    # None means settings.ALLOWED_HOSTS.
    "ALLOWED_ORIGINS": None,
    # Destination prefixes.
    "BROKER_PREFIXES": ("/topic/", "/queue/"),
    "APP_PREFIXES": ("/app/",),
    "USER_PREFIX": "/user/",
    # Modules imported from every installed app at startup to register /app handlers.
    "HANDLER_MODULE": "stomp_handlers",
    # Presence registry backend (dotted path) and its keyword options.
    "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
    "PRESENCE_OPTIONS": {},
    # Message history (recovery across reconnects, offline delivery): a dotted path to a
    # history backend, or None to keep no history (at-most-once delivery).
    "HISTORY_BACKEND": "stomp_cluster.history.memory.MemoryHistory",
    "HISTORY_OPTIONS": {},
    # Bounds of each user's (and each recorded topic's) history: entries, and seconds.
    "HISTORY_MAX_LENGTH": 1000,
    "HISTORY_MAX_AGE": 86400.0,
    # fnmatch patterns of broker destinations that get a history too, e.g. "/topic/news.*".
    "HISTORY_TOPICS": (),
    # Node liveness: a node's heartbeat key lives NODE_TTL seconds and is refreshed
    # every NODE_HEARTBEAT_INTERVAL seconds (None means NODE_TTL / 3).
    "NODE_TTL": 10.0,
    "NODE_HEARTBEAT_INTERVAL": None,
    # Name of the channel layer (a key of settings.CHANNEL_LAYERS) used between nodes by
    # the default transport.
    "CHANNEL_LAYER": "default",
    # How messages travel between nodes (dotted path) and its keyword options; see
    # stomp_cluster.transport. RedisTransport is the fast one for a cluster.
    "TRANSPORT_BACKEND": "stomp_cluster.transport.ChannelLayerTransport",
    "TRANSPORT_OPTIONS": {},
}


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class StompSettings:
    """The merged ``STOMP_CLUSTER`` settings; see ``docs/reference/settings.rst``."""

    NODE_ID: str
    URL_PATH: str
    HEARTBEAT_SEND_MS: int
    HEARTBEAT_RECEIVE_MS: int
    HEARTBEAT_GRACE_MS: int
    MAX_FRAME_SIZE: int
    MAX_BODY_SIZE: int
    MAX_HEADERS: int
    MAX_HEADER_LENGTH: int
    MAX_SUBSCRIPTIONS: int
    MAX_TRANSACTIONS: int
    MAX_TRANSACTION_FRAMES: int
    MAX_PENDING_ACKS: int
    MAX_OUTBOX: int
    REQUIRE_AUTHENTICATION: bool
    PASSWORD_LOGIN: bool
    TOKEN_MAX_AGE: int
    PERMISSION_HOOK: str | None
    ALLOWED_ORIGINS: tuple[str, ...] | None
    BROKER_PREFIXES: tuple[str, ...]
    APP_PREFIXES: tuple[str, ...]
    USER_PREFIX: str
    HANDLER_MODULE: str
    PRESENCE_BACKEND: str
    PRESENCE_OPTIONS: dict[str, Any]
    HISTORY_BACKEND: str | None
    HISTORY_OPTIONS: dict[str, Any]
    HISTORY_MAX_LENGTH: int
    HISTORY_MAX_AGE: float
    HISTORY_TOPICS: tuple[str, ...]
    NODE_TTL: float
    NODE_HEARTBEAT_INTERVAL: float
    CHANNEL_LAYER: str
    TRANSPORT_BACKEND: str
    TRANSPORT_OPTIONS: dict[str, Any]


def user_settings() -> dict[str, Any]:
    """Return the raw ``STOMP_CLUSTER`` dict (empty when unset)."""
    value = getattr(django_settings, "STOMP_CLUSTER", {})
    return value if isinstance(value, dict) else {}


@functools.cache
def get_settings() -> StompSettings:
    """Return the merged settings.

    Raises:
        ImproperlyConfigured: ``STOMP_CLUSTER`` has an unknown key or a value of the
            wrong type; the system checks report the same problems at startup.
    """
    from stomp_cluster.checks import validate_settings

    errors = validate_settings(getattr(django_settings, "STOMP_CLUSTER", {}))
    if errors:
        raise ImproperlyConfigured("; ".join(f"{msg} ({hint})" for msg, hint, _ in errors))
    merged = {**DEFAULTS, **user_settings()}
    if merged["NODE_ID"] is None:
        merged["NODE_ID"] = _default_node_id()
    if merged["NODE_HEARTBEAT_INTERVAL"] is None:
        merged["NODE_HEARTBEAT_INTERVAL"] = float(merged["NODE_TTL"]) / 3
    merged["HISTORY_OPTIONS"] = dict(merged["HISTORY_OPTIONS"])
    merged["HISTORY_MAX_AGE"] = float(merged["HISTORY_MAX_AGE"])
    for key in ("BROKER_PREFIXES", "APP_PREFIXES", "HISTORY_TOPICS"):
        merged[key] = tuple(merged[key])
    if merged["ALLOWED_ORIGINS"] is not None:
        merged["ALLOWED_ORIGINS"] = tuple(merged["ALLOWED_ORIGINS"])
    merged["NODE_TTL"] = float(merged["NODE_TTL"])
    merged["NODE_HEARTBEAT_INTERVAL"] = float(merged["NODE_HEARTBEAT_INTERVAL"])
    merged["PRESENCE_OPTIONS"] = dict(merged["PRESENCE_OPTIONS"])
    merged["TRANSPORT_OPTIONS"] = dict(merged["TRANSPORT_OPTIONS"])
    return StompSettings(**merged)


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "STOMP_CLUSTER":
        get_settings.cache_clear()
