"""Settings: the ``STOMP_CLUSTER`` dict, read through one table.

Theory of operation
-------------------

Every setting is a key of one dict, ``STOMP_CLUSTER``, in the Django settings. The keys
are described once, by the fields of :class:`StompSettings`: each field is a key, its
static annotation is the type code reads, and its ``metadata`` holds a :class:`Setting`,
the key's row of the table: its default, what it accepts (in words and as a predicate),
how a valid value is coerced to the field's type, and one line saying what it is for.
Everything else is derived from those rows:

* :data:`DEFAULTS`, the key -> default dict;
* :func:`validate_settings`, which the system checks (:mod:`stomp_cluster.checks`) and
  :func:`get_settings` share, so both report a problem in the same words;
* :func:`get_settings`, which merges the user's dict over the defaults and coerces it;
* the reference page ``docs/reference/settings.rst``, whose Default and Accepts columns
  and the first words of whose Advice column ``tests/test_settings_docs.py`` checks
  against the table.

A new setting is therefore one new field here and one new row in the reference page.

The limits a connection enforces are the protocol's: their defaults are those of
:class:`~stomp_cluster.protocol.events.Limits`, read from it rather than written again,
and :meth:`StompSettings.limits` builds the ``Limits`` of a connection from the settings.

Two keys default to ``None`` meaning "work it out": ``NODE_ID`` (``"<hostname>-<pid>-<random>"``)
and ``NODE_HEARTBEAT_INTERVAL`` (a third of ``NODE_TTL``). Their rows carry a ``derive``
function, so that the merged :class:`StompSettings` always holds a concrete value and
code never tests for ``None``. That is also why the fields have no dataclass defaults:
the default a user may write is not always a value of the field's type.
:class:`StompSettings` is built by :func:`get_settings` only, which passes every key.

``REDIS`` is a default for other keys rather than a value code reads: with it set,
:func:`get_settings` makes each backend key the user left out name the shipped Redis
backend, and gives each backend whose constructor takes ``hosts`` the value ``[REDIS]``
unless its ``*_OPTIONS`` has ``hosts``. What the user wrote wins, key by key. So the
three backends share one Redis, written the same way, which lets ``send_to_user`` take
one round trip, and code that reads ``PRESENCE_BACKEND`` sees the backend in use.

Read settings through :func:`get_settings`, never at import time, so that
``override_settings`` works in tests: the merged result is cached and the cache is
cleared on Django's ``setting_changed`` signal.

Errors
------

:func:`validate_settings` returns ``(message, hint, check id)`` triples; the IDs are
stable and listed in ``docs/reference/checks.rst``:

* ``stomp_cluster.E001`` ``STOMP_CLUSTER`` is not a dict.
* ``stomp_cluster.E002`` unknown key (the hint suggests a key spelled alike).
* ``stomp_cluster.E003`` a value the key's row does not accept.
* ``stomp_cluster.E004`` / ``E008`` / ``E009`` the presence, history or transport backend
  cannot be imported.
* ``stomp_cluster.E010`` a backend refuses its ``*_OPTIONS``: a key its constructor does
  not take (named, with those it takes), or a value it refuses when built.
* ``stomp_cluster.E011`` ``REDIS`` is none of the forms a Redis host is given in.
* ``stomp_cluster.E005`` ``PERMISSION_HOOK`` cannot be imported or is not callable.
* ``stomp_cluster.E007`` ``NODE_HEARTBEAT_INTERVAL`` is not shorter than ``NODE_TTL``.

The checks after E003 (and E011) run only once every key is valid, and E010 only once
every backend imports. :func:`get_settings` raises ``ImproperlyConfigured`` with all of them.

This module imports no other part of ``stomp_cluster`` but the protocol's ``Limits``:
it sits at the bottom of the package, and the backends it checks are imported by their
dotted paths, when validated.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from stomp_cluster.protocol.events import Limits

__all__ = [
    "DEFAULTS",
    "BackendCheck",
    "Setting",
    "StompSettings",
    "get_settings",
    "user_settings",
    "validate_settings",
]


@dataclass(frozen=True, slots=True)
class BackendCheck:
    """How to check a backend setting at startup.

    Attributes:
        check_id: reported when the dotted path cannot be imported.
        hint: the fix, naming the shipped backends.
        options: the ``*_OPTIONS`` key whose keyword arguments the backend is built with.
            Check ``E010`` compares its keys with the constructor's and builds the
            backend with them (building one opens no connection).
        redis: the shipped Redis backend, the default of the key when ``REDIS`` is set.
        implied: options the backend gets from other keys, as ``(option, key)`` pairs
            (the history's ``max_length`` from ``HISTORY_MAX_LENGTH``); ``*_OPTIONS``
            wins over them.
    """

    check_id: str
    hint: str
    options: str
    redis: str
    implied: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table: everything known about one key.

    Attributes:
        default: the value used when the key is left out, as a user would write it.
        accepts: what the key accepts, with its unit, as a phrase that completes
            "Set it to ..." (the hint of check ``E003`` and the Accepts column of the
            settings reference).
        valid: whether a value given by the user is acceptable.
        doc: one line saying what the key is for; the Advice column of the settings
            reference starts with it.
        coerce: turns an accepted value into the field's type (``list`` to ``tuple``,
            ``int`` to ``float``, a copy of a dict); ``None`` is never coerced.
        derive: for a key whose ``None`` means "work it out": computes the value from
            the merged, uncoerced settings.
        backend: for a backend's dotted path, how to check it at startup.
        limit: the :class:`~stomp_cluster.protocol.events.Limits` field this key sets.
        check_id: the check that reports a value ``valid`` refuses.
        explain: for a refused value, what is wrong with it, in a few words that follow
            the value in the check's message.
        secret: the value is a secret (API keys): a check's message never shows it.
    """

    default: Any
    accepts: str
    valid: Callable[[Any], bool]
    doc: str
    coerce: Callable[[Any], Any] | None = None
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    backend: BackendCheck | None = None
    limit: str | None = None
    check_id: str = "stomp_cluster.E003"
    explain: Callable[[Any], str] | None = None
    secret: bool = False


_META = "stomp_cluster"
_LIMITS = Limits()


def _setting(default: Any, **row: Any) -> Any:
    """A field of :class:`StompSettings` with its row of the table, and no default.

    Typed ``Any`` because the value is a :class:`dataclasses.Field`, which mypy would
    otherwise check against the annotation. The price: mypy believes every field has a
    default, and would accept ``StompSettings()``, which fails. Only :func:`get_settings`
    builds one, passing every key.
    """
    # A secret stays out of the settings' repr, which may end up in a log.
    return field(metadata={_META: Setting(default, **row)}, repr=not row.get("secret", False))


def _limit(name: str, **row: Any) -> Any:
    """A setting that sets the protocol limit ``name``, with its default."""
    return _setting(getattr(_LIMITS, name), limit=name, **row)


# Predicates. bool is an int in Python; a setting that wants a number refuses True.


def _int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _seconds_or_zero(v: Any) -> bool:
    return _positive_number(v) or (
        isinstance(v, int | float) and not isinstance(v, bool) and v == 0
    )


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _non_empty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _dotted_path(v: Any) -> bool:
    return isinstance(v, str) and "." in v


def _dict(v: Any) -> bool:
    return isinstance(v, dict)


def _strings(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(isinstance(s, str) for s in v)


def _prefix(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("/") and v.endswith("/")


def _prefixes(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(_prefix(p) for p in v)


def _user_prefix(v: Any) -> bool:
    return _prefix(v) and len(v) > 2


def _networks(v: Any) -> bool:
    if not _strings(v):
        return False
    try:
        for network in v:
            ipaddress.ip_network(network)
    except ValueError:
        return False
    return True


def _api_keys(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(
        isinstance(k, str) and len(k) >= 16 and k.isascii() and k.isprintable() and " " not in k
        for k in v
    )


def _or_none(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or valid(v)


_REDIS_SCHEMES = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def _node_problem(node: Any) -> str | None:
    """What is wrong with *node* as a Redis Cluster startup node, or None."""
    if isinstance(node, str):
        host, sep, port = node.rpartition(":")
        if sep and host and port.isdigit():
            return None
    elif (
        isinstance(node, list | tuple)
        and len(node) == 2
        and _non_empty_str(node[0])
        and _int(1)(node[1])
    ):
        return None
    return f"a Redis Cluster startup node must be 'host:port' or (host, port), not {node!r}"


def _cluster_problem(v: Any) -> str | None:
    """What is wrong with a Redis Cluster URL or ``startup_nodes`` dict, or None."""
    if isinstance(v, str):
        rest = v.partition("://")[2]
        netloc, _, path = rest.partition("/")
        nodes: Any = [node for node in netloc.rpartition("@")[2].split(",") if node]
        db = path.partition("?")[0] or "0"
    else:
        nodes, db = v["startup_nodes"], v.get("db", 0)
        if isinstance(nodes, str) or not isinstance(nodes, list | tuple):
            return "'startup_nodes' must be a list of 'host:port' strings or (host, port) pairs"
    if str(db) != "0":
        return "a Redis Cluster has only database 0: share one with another key prefix"
    if not nodes:
        return "a Redis Cluster needs at least one startup node"
    for node in nodes:
        problem = _node_problem(node)
        if problem:
            return problem
    return None


def _redis_problem(v: Any) -> str | None:
    """What is wrong with ``v`` as the ``REDIS`` setting, or ``None`` when it is fine.

    The forms are those of a ``hosts`` entry of the Redis backends: a URL, a
    ``(host, port)`` pair, or a dict of connection arguments (with an optional
    ``"address"`` URL, or a Sentinel's ``"sentinels"`` and ``"master_name"``). A Redis
    Cluster is a ``redis+cluster://h1:p1,h2:p2/`` URL or a dict with ``"startup_nodes"``.
    """
    if v is None:
        return None
    if isinstance(v, str):
        if v.partition("://")[0].lower() in _CLUSTER_SCHEMES:
            return _cluster_problem(v)
        parts = urlsplit(v)
        if parts.scheme not in _REDIS_SCHEMES:
            return "a URL must start with redis://, rediss:// or unix://"
        if parts.scheme == "unix" and not parts.path:
            return "a unix:// URL needs the path of the socket"
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            return "its port is not a number"
        return None
    if isinstance(v, list | tuple):
        if len(v) == 2 and _non_empty_str(v[0]) and _int(1)(v[1]):
            return None
        return "a pair must be (host, port), such as ('localhost', 6379)"
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            return "the keys of a dict are redis-py connection arguments, as strings"
        if "address" in v:
            if not isinstance(v["address"], str):
                return "its 'address' must be a redis://, rediss:// or unix:// URL"
            return _redis_problem(v["address"])
        if "startup_nodes" in v:
            return _cluster_problem(v)
        if "sentinels" in v:
            sentinels = v["sentinels"]
            if not isinstance(sentinels, list | tuple) or not sentinels:
                return "'sentinels' must be a list of (host, port) pairs"
            if not _non_empty_str(v.get("master_name")):
                return "a Sentinel dict needs 'master_name', the name of the monitored master"
        return None
    return f"{type(v).__name__} is none of the accepted types"


def _redis(v: Any) -> bool:
    return _redis_problem(v) is None


def _explain_redis(v: Any) -> str:
    return _redis_problem(v) or ""


def _copy_host(v: Any) -> Any:
    return dict(v) if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v


#: Drawn once per import, so that settings merged again keep the same default NODE_ID.
_RANDOM_SUFFIX = secrets.token_hex(4)


def _default_node_id(merged: Mapping[str, Any]) -> str:
    # hostname-pid alone collides: every container's server is often PID 1, and a
    # hostname can be shared. The random suffix makes the default unique per process (a
    # forked worker shares it, but not its pid).
    return f"{socket.gethostname()}-{os.getpid()}-{_RANDOM_SUFFIX}"


def _third_of_node_ttl(merged: Mapping[str, Any]) -> float:
    return float(merged["NODE_TTL"]) / 3


def _frame_size_and_slack(merged: Mapping[str, Any]) -> int:
    # One whole frame, plus room for a few small ones beside it (64 KiB).
    return int(merged["MAX_FRAME_SIZE"]) + 65_536


_MS = "a whole number of milliseconds, 0 or more"
_POSITIVE = "a positive whole number"
_BOOL = "True or False"
_KWARGS = "a dict of keyword arguments"
_PREFIXES = "a list of prefixes that start and end with '/'"
_SECONDS = "a positive number of seconds"


@dataclass(frozen=True, slots=True)
class StompSettings:
    """The merged ``STOMP_CLUSTER`` settings, and the table that describes them.

    Get it from :func:`get_settings`. Each attribute is a key of ``STOMP_CLUSTER``;
    ``dataclasses.fields(StompSettings)`` gives each key's :class:`Setting` under
    ``metadata["stomp_cluster"]``. Every key, its default and a line of advice are in the
    settings reference of the documentation.
    """

    # Identity of this process in the cluster.
    NODE_ID: str = _setting(
        None,
        accepts="a non-empty string, or None for '<hostname>-<pid>-<random>'",
        valid=_or_none(_non_empty_str),
        derive=_default_node_id,
        doc="The identity of this process in the cluster.",
    )

    # The WebSocket endpoint.
    URL_PATH: str = _setting(
        "ws",
        accepts="a URL path string such as 'ws'",
        valid=_str,
        doc="The path of the WebSocket endpoint in stomp_cluster.routing, without slashes.",
    )

    # Heart-beats: the server's offer (sx, sy) in its CONNECTED frame, and the grace past
    # the client's interval.
    HEARTBEAT_SEND_MS: int = _setting(
        10_000,
        accepts=_MS,
        valid=_int(0),
        doc="The server's offer: how often it can send a heart-beat.",
    )
    HEARTBEAT_RECEIVE_MS: int = _setting(
        10_000,
        accepts=_MS,
        valid=_int(0),
        doc="How often the server wants to hear from the client.",
    )
    HEARTBEAT_GRACE_MS: int = _setting(
        5_000,
        accepts=_MS,
        valid=_int(0),
        doc="Silence tolerated beyond the client's interval before the connection is closed.",
    )

    # Limits of one connection: a client that goes over one gets an ERROR frame. All but
    # MAX_OUTBOX are the protocol's Limits, whose defaults they share.
    MAX_FRAME_SIZE: int = _limit(
        "max_frame_size",
        accepts="a whole number of bytes, at least 1024",
        valid=_int(1024),
        doc="The largest frame, from command to final NUL.",
    )
    MAX_BODY_SIZE: int = _limit(
        "max_body_size",
        accepts="a whole number of bytes",
        valid=_int(0),
        doc="The largest body.",
    )
    MAX_HEADERS: int = _limit(
        "max_headers",
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Header lines in one frame.",
    )
    MAX_HEADER_LENGTH: int = _limit(
        "max_header_length",
        accepts="a whole number of bytes, at least 64",
        valid=_int(64),
        doc="The longest header line, without its end of line.",
    )
    MAX_SUBSCRIPTIONS: int = _limit(
        "max_subscriptions",
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Subscriptions open at once on one connection.",
    )
    MAX_TRANSACTIONS: int = _limit(
        "max_transactions",
        accepts="a whole number, 0 disables transactions",
        valid=_int(0),
        doc="Transactions open at once.",
    )
    MAX_TRANSACTION_FRAMES: int = _limit(
        "max_transaction_frames",
        accepts=_POSITIVE,
        valid=_int(1),
        doc="SEND, ACK and NACK frames held in one transaction until its COMMIT.",
    )
    MAX_PENDING_ACKS: int = _limit(
        "max_pending_acks",
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Messages sent in client or client-individual mode and not yet acknowledged.",
    )
    MAX_TRANSACTION_BYTES: int = _limit(
        "max_transaction_bytes",
        accepts="a whole number of bytes, at least 1024",
        valid=_int(1024),
        doc="Bytes of SEND frames held in one transaction until its COMMIT.",
    )
    MAX_BUFFERED_BYTES: int = _limit(
        "max_buffered_bytes",
        accepts="a whole number of bytes, at least 1024",
        valid=_int(1024),
        doc="Bytes held in all the open transactions of one connection together.",
    )
    MAX_OUTBOX: int = _setting(
        10_000,
        accepts="a positive whole number of frames",
        valid=_int(1),
        doc="Frames waiting to be written to one socket.",
    )
    MAX_OUTBOX_BYTES: int = _setting(
        8_388_608,
        accepts="a whole number of bytes, at least 65536",
        valid=_int(65_536),
        doc="Bytes queued to one session and not yet taken by the ASGI server.",
    )
    MAX_WEBSOCKET_MESSAGE_SIZE: int = _setting(
        None,
        accepts="a whole number of bytes, at least 1024, or None for MAX_FRAME_SIZE + 64 KiB",
        valid=_or_none(_int(1024)),
        derive=_frame_size_and_slack,
        doc="The largest WebSocket message a client may send.",
    )
    STAMP_SENDER: bool = _setting(
        True,
        accepts=_BOOL,
        valid=_bool,
        doc="Set x-sender to the sender's login on messages from client SENDs.",
    )

    # Authentication and permissions.
    REQUIRE_AUTHENTICATION: bool = _setting(
        False,
        accepts=_BOOL,
        valid=_bool,
        doc="Refuse anonymous CONNECTs.",
    )
    PASSWORD_LOGIN: bool = _setting(
        False,
        accepts=_BOOL,
        valid=_bool,
        doc="Accept a Django password as the CONNECT passcode.",
    )
    TOKEN_MAX_AGE: int = _setting(
        3600,
        accepts="a whole number of seconds",
        valid=_int(1),
        doc="The default lifetime of connection_token().",
    )
    PASSWORD_WORKERS: int = _setting(
        2,
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Threads of this node that check passwords; more checks wait their turn.",
    )
    LOGIN_WORKERS: int = _setting(
        4,
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Threads of this node for token users and session cookies at CONNECT.",
    )
    HANDLER_WORKERS: int = _setting(
        8,
        accepts=_POSITIVE,
        valid=_int(1),
        doc="Threads of this node for sync permission hooks and sync /app/ handlers.",
    )
    HANDLER_EXCEPTIONS_KEEP_SESSION: bool = _setting(
        False,
        accepts=_BOOL,
        valid=_bool,
        doc="Report an unexpected exception in an /app/ handler on /user/queue/errors "
        "and keep the session open.",
    )
    AUTH_CACHE_TTL: float = _setting(
        60.0,
        accepts="a number of seconds, 0 turns the cache off",
        valid=_seconds_or_zero,
        coerce=float,
        doc="How long a verified login and password are remembered by this node.",
    )
    USER_CACHE_TTL: float = _setting(
        5.0,
        accepts="a number of seconds, 0 turns the cache off",
        valid=_seconds_or_zero,
        coerce=float,
        doc="How long this node remembers a token's user and which usernames exist.",
    )
    LOGIN_FAILURES_PER_LOGIN: int = _setting(
        10,
        accepts="a whole number, 0 turns this throttle off",
        valid=_int(0),
        doc="Failed CONNECTs one login may make in LOGIN_FAILURE_WINDOW on one node.",
    )
    LOGIN_FAILURES_PER_ADDRESS: int = _setting(
        30,
        accepts="a whole number, 0 turns this throttle off",
        valid=_int(0),
        doc="Failed CONNECTs one client address may make in LOGIN_FAILURE_WINDOW on one node.",
    )
    LOGIN_FAILURE_WINDOW: float = _setting(
        60.0,
        accepts=_SECONDS,
        valid=_positive_number,
        coerce=float,
        doc="The window failed CONNECTs are counted in, and the longest a client is told to wait.",
    )
    PERMISSION_HOOK: str | None = _setting(
        None,
        accepts="a dotted path to a callable, or None",
        valid=_or_none(_non_empty_str),
        doc='A dotted path to hook(user, action, destination) -> bool, with action "subscribe" '
        'or "send".',
    )
    ALLOWED_ORIGINS: tuple[str, ...] | None = _setting(
        None,
        accepts="a list of host names (or '*'), or None to use ALLOWED_HOSTS",
        valid=_or_none(_strings),
        coerce=tuple,
        doc="Browser origins allowed to open the WebSocket.",
    )

    # Destinations and /app/ handlers.
    BROKER_PREFIXES: tuple[str, ...] = _setting(
        ("/topic/", "/queue/"),
        accepts=_PREFIXES,
        valid=_prefixes,
        coerce=tuple,
        doc="Destinations the server relays to subscribers.",
    )
    APP_PREFIXES: tuple[str, ...] = _setting(
        ("/app/",),
        accepts=_PREFIXES,
        valid=_prefixes,
        coerce=tuple,
        doc="SENDs to these run the @message_mapping handler of the rest of the path.",
    )
    USER_PREFIX: str = _setting(
        "/user/",
        accepts="a prefix that starts and ends with '/', such as '/user/'",
        valid=_user_prefix,
        doc="User destinations.",
    )
    HANDLER_MODULE: str = _setting(
        "stomp_handlers",
        accepts="a module name",
        valid=_non_empty_str,
        doc="The module imported from every installed app at startup to register /app/ handlers.",
    )

    # One Redis for the whole cluster: the default of the three backends below.
    REDIS: str | tuple[str, int] | dict[str, Any] | None = _setting(
        None,
        accepts="a redis://, rediss:// or unix:// URL, a (host, port) pair, a dict of "
        "connection arguments (with an 'address' URL, or a Sentinel's 'sentinels' and "
        "'master_name'), a Redis Cluster as a redis+cluster://host:port,host:port/ URL or "
        "a dict with 'startup_nodes', or None",
        valid=_redis,
        coerce=_copy_host,
        check_id="stomp_cluster.E011",
        explain=_explain_redis,
        doc="One Redis for presence, history and the transport: a cluster in one key.",
    )

    # Presence registry.
    PRESENCE_BACKEND: str = _setting(
        "stomp_cluster.presence.memory.MemoryPresence",
        accepts="a dotted path to a class",
        valid=_dotted_path,
        backend=BackendCheck(
            "stomp_cluster.E004",
            "Use 'stomp_cluster.presence.memory.MemoryPresence' (one node) or "
            "'stomp_cluster.presence.redis.RedisPresence' (a cluster).",
            options="PRESENCE_OPTIONS",
            redis="stomp_cluster.presence.redis.RedisPresence",
        ),
        doc="The registry of sessions, subscriptions and nodes.",
    )
    PRESENCE_OPTIONS: dict[str, Any] = _setting(
        {},
        accepts=_KWARGS,
        valid=_dict,
        coerce=dict,
        doc="The keyword arguments of the presence backend.",
    )

    # Message history (recovery across reconnects, offline delivery).
    HISTORY_BACKEND: str | None = _setting(
        "stomp_cluster.history.memory.MemoryHistory",
        accepts="a dotted path to a history backend class, or None for no history",
        valid=_or_none(_dotted_path),
        backend=BackendCheck(
            "stomp_cluster.E008",
            "Use 'stomp_cluster.history.memory.MemoryHistory' (one node), "
            "'stomp_cluster.history.redis.RedisHistory' (a cluster), or None.",
            options="HISTORY_OPTIONS",
            redis="stomp_cluster.history.redis.RedisHistory",
            implied=(("max_length", "HISTORY_MAX_LENGTH"), ("max_age", "HISTORY_MAX_AGE")),
        ),
        doc="Where messages to users are kept for recovery and redelivery.",
    )
    HISTORY_OPTIONS: dict[str, Any] = _setting(
        {},
        accepts=_KWARGS,
        valid=_dict,
        coerce=dict,
        doc="The keyword arguments of the history backend; its max_length and max_age win "
        "over HISTORY_MAX_LENGTH and HISTORY_MAX_AGE.",
    )
    HISTORY_MAX_LENGTH: int = _setting(
        1000,
        accepts="a positive whole number of messages",
        valid=_int(1),
        doc="The most messages kept per user (all destinations together) and per recorded topic.",
    )
    HISTORY_MAX_AGE: float = _setting(
        86400.0,
        accepts=_SECONDS,
        valid=_positive_number,
        coerce=float,
        doc="How long a message is kept.",
    )
    HISTORY_TOPICS: tuple[str, ...] = _setting(
        (),
        accepts="a list of fnmatch patterns such as '/topic/news.*'",
        valid=_strings,
        coerce=tuple,
        doc="Broker destinations that get a history of their own.",
    )
    MAX_REWIND: int = _setting(
        100,
        accepts="a whole number of messages, 0 or more",
        valid=_int(0),
        doc="The most messages one SUBSCRIBE's x-rewind delivers.",
    )
    IDEMPOTENCY_TTL: float = _setting(
        300.0,
        accepts=_SECONDS,
        valid=_positive_number,
        coerce=float,
        doc="How long a send's idempotency_key is remembered.",
    )

    # Client-visible presence (stomp_cluster.roster).
    PRESENCE_DESTINATIONS: tuple[str, ...] = _setting(
        (),
        accepts="a list of fnmatch patterns such as '/topic/room.*'",
        valid=_strings,
        coerce=tuple,
        doc="Broker destinations whose members clients may watch at /presence/<destination>.",
    )
    PRESENCE_PAGE_SIZE: int = _setting(
        100,
        accepts="a positive whole number of members",
        valid=_int(1),
        doc="The most members one presence MESSAGE (snapshot page or leave batch) lists.",
    )
    PRESENCE_SNAPSHOT_LIMIT: int = _setting(
        1000,
        accepts="a positive whole number of members",
        valid=_int(1),
        doc="The most members a presence snapshot lists; past it, it says it was truncated.",
    )

    # Node liveness.
    NODE_TTL: float = _setting(
        10.0,
        accepts=_SECONDS,
        valid=_positive_number,
        coerce=float,
        doc="How long a node's liveness key lives in the registry.",
    )
    NODE_HEARTBEAT_INTERVAL: float = _setting(
        None,
        accepts="a positive number of seconds, or None for NODE_TTL / 3",
        valid=_or_none(_positive_number),
        coerce=float,
        derive=_third_of_node_ttl,
        doc="How often a node refreshes its liveness key and sweeps.",
    )

    # Between nodes.
    CHANNEL_LAYER: str = _setting(
        "default",
        accepts="a key of settings.CHANNEL_LAYERS",
        valid=_str,
        doc="Used only by ChannelLayerTransport: the layer the nodes talk through.",
    )
    TRANSPORT_BACKEND: str = _setting(
        "stomp_cluster.transport.ChannelLayerTransport",
        accepts="a dotted path to a class",
        valid=_dotted_path,
        backend=BackendCheck(
            "stomp_cluster.E009",
            "Use 'stomp_cluster.transport.ChannelLayerTransport' (the channel layer) or "
            "'stomp_cluster.transport.RedisTransport' (a cluster).",
            options="TRANSPORT_OPTIONS",
            redis="stomp_cluster.transport.RedisTransport",
        ),
        doc="How a message reaches the nodes that hold its recipients.",
    )
    TRANSPORT_OPTIONS: dict[str, Any] = _setting(
        {},
        accepts=_KWARGS,
        valid=_dict,
        coerce=dict,
        doc="The keyword arguments of the transport.",
    )

    # The HTTP endpoints of stomp_cluster.urls (health).
    ENDPOINTS_ALLOWED_NETWORKS: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1"),
        accepts="a list of IP networks such as '10.0.0.0/8' or addresses such as '::1'",
        valid=_networks,
        coerce=tuple,
        doc="Client addresses that may read the endpoints of stomp_cluster.urls; others get 403.",
    )

    # The HTTP publish API (stomp_cluster.publish).
    PUBLISH_API_KEYS: tuple[str, ...] = _setting(
        (),
        accepts="a list of secret strings of at least 16 printable ASCII characters, no spaces",
        valid=_api_keys,
        coerce=tuple,
        secret=True,
        doc="The API keys of the HTTP publish API; empty turns the API off (404).",
    )
    PUBLISH_MAX_REQUEST_SIZE: int = _setting(
        1_048_576,
        accepts="a whole number of bytes, at least 1024",
        valid=_int(1024),
        doc="The largest request body the publish API reads; larger ones get 413.",
    )
    PUBLISH_MAX_BATCH: int = _setting(
        100,
        accepts=_POSITIVE,
        valid=_int(1),
        doc="The most messages in one batch request of the publish API.",
    )

    def limits(self) -> Limits:
        """Return the :class:`~stomp_cluster.protocol.events.Limits` of a connection."""
        return Limits(**{row.limit: getattr(self, key) for key, row in _ROWS if row.limit})

    def backend_options(self, key: str) -> dict[str, Any]:
        """Return the keyword arguments the backend of *key* is built with.

        Its ``*_OPTIONS`` (with ``hosts`` from ``REDIS`` already in it, see
        :func:`get_settings`) over the options it takes from other keys: for the history,
        ``max_length`` and ``max_age`` from ``HISTORY_MAX_LENGTH`` and ``HISTORY_MAX_AGE``.

        Args:
            key: ``"PRESENCE_BACKEND"``, ``"HISTORY_BACKEND"`` or ``"TRANSPORT_BACKEND"``.
        """
        check = _BACKENDS[key]
        implied = {option: getattr(self, source) for option, source in check.implied}
        options: dict[str, Any] = getattr(self, check.options)
        return {**implied, **options}


#: The table: each key with its row, in the order of the fields.
_ROWS: tuple[tuple[str, Setting], ...] = tuple(
    (f.name, f.metadata[_META]) for f in dataclasses.fields(StompSettings)
)

#: Each key's default, as a user would write it (``None`` for a worked-out value).
DEFAULTS: dict[str, Any] = {key: row.default for key, row in _ROWS}

#: The backend keys, with how each is checked and built.
_BACKENDS: dict[str, BackendCheck] = {key: row.backend for key, row in _ROWS if row.backend}


def _accepted_options(backend: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments *backend* takes, read from its constructor's signature.

    ``None`` means any: a constructor with ``**kwargs`` that keeps them. One that passes
    them on to its base class (its code calls ``super``) takes what that base's
    constructor takes too, up the class hierarchy. Our own classes' ``**options`` never
    keep anything: the shipped backends pass them to their base class, whose constructor
    takes them only to refuse them with a clear message. ``object`` takes nothing.
    """
    inits: list[tuple[type | None, Any]]
    if isinstance(backend, type):
        inits = [(k, k.__dict__["__init__"]) for k in backend.__mro__ if "__init__" in k.__dict__]
    else:
        inits = [(None, backend)]
    names: set[str] = set()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for owner, init in inits:
        if owner is object:
            break
        try:
            parameters = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None  # a constructor written in C, or otherwise opaque: trust it
        if owner is not None:
            parameters = parameters[1:]  # self
        names.update(p.name for p in parameters if p.kind in keyword)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
        code = getattr(init, "__code__", None)
        if code is None or "super" not in code.co_names:  # the **kwargs stop here
            if owner is not None and owner.__module__.startswith("stomp_cluster."):
                break
            return None
    return frozenset(names)


def _merge(value: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``STOMP_CLUSTER`` over the defaults, with ``REDIS`` applied.

    With ``REDIS`` set, a backend key the user left out defaults to the shipped Redis
    backend, and a backend whose constructor takes ``hosts`` gets ``[REDIS]`` as its
    ``hosts`` unless its ``*_OPTIONS`` gives them: what the user wrote wins, key by key.
    Values are not coerced yet.
    """
    merged = {**DEFAULTS, **value}
    redis = merged["REDIS"]
    if redis is None:
        return merged
    for key, check in _BACKENDS.items():
        if key not in value:
            merged[key] = check.redis
        path, options = merged[key], merged[check.options]
        if path is None or not isinstance(options, dict) or "hosts" in options:
            continue
        try:
            accepted = _accepted_options(import_string(path))
        except ImportError:
            continue  # E004, E008 or E009 reports it
        if accepted is not None and "hosts" in accepted:
            merged[check.options] = {"hosts": [_copy_host(redis)], **options}
    return merged


def user_settings() -> dict[str, Any]:
    """Return the raw ``STOMP_CLUSTER`` dict (empty when unset or not a dict).

    Unvalidated: for code that must run even when the settings are wrong, such as
    :meth:`~stomp_cluster.apps.StompClusterConfig.ready`, which leaves reporting them to
    the system checks.
    """
    value = getattr(django_settings, "STOMP_CLUSTER", {})
    return value if isinstance(value, dict) else {}


def validate_settings(value: Any) -> list[tuple[str, str, str]]:
    """Validate a raw ``STOMP_CLUSTER`` value against the table.

    Args:
        value: what the user set ``STOMP_CLUSTER`` to.

    Returns:
        ``(message, hint, id)`` triples, empty when the value is fine. Shared by the
        system check and by :func:`get_settings`, so that both report the same words.
    """
    if not isinstance(value, dict):
        return [
            (
                f"STOMP_CLUSTER must be a dict, not {type(value).__name__}.",
                "Set STOMP_CLUSTER = {...} in your settings, or remove it to use the defaults.",
                "stomp_cluster.E001",
            )
        ]
    rows = dict(_ROWS)
    errors: list[tuple[str, str, str]] = []
    for key in sorted(value):
        if key not in rows:
            close = difflib.get_close_matches(str(key), rows, n=1)
            hint = (
                f"Did you mean {close[0]!r}?" if close else "Remove it; see the settings reference."
            )
            errors.append((f"Unknown key {key!r} in STOMP_CLUSTER.", hint, "stomp_cluster.E002"))
        elif not rows[key].valid(value[key]):
            row = rows[key]
            why = f": {row.explain(value[key])}" if row.explain is not None else ""
            shown = "not accepted (a secret: not shown)" if row.secret else repr(value[key])
            errors.append(
                (
                    f"STOMP_CLUSTER[{key!r}] is {shown}{why}.",
                    f"Set it to {row.accepts}.",
                    row.check_id,
                )
            )
    if errors:
        return errors
    merged = _merge(value)
    errors += _check_backends(merged)
    errors += _check_permission_hook(merged["PERMISSION_HOOK"])
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


def _check_backends(merged: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """E004, E008, E009: each backend imports; then E010: each accepts its options.

    E010 first compares the keys of each ``*_OPTIONS`` with those the backend's
    constructor takes (:func:`_accepted_options`), so that a typo is named with the
    accepted keys; then it builds the backend, which checks the values.
    """
    errors: list[tuple[str, str, str]] = []
    built: list[tuple[str, Callable[..., Any], BackendCheck]] = []
    for key, check in _BACKENDS.items():
        path = merged[key]
        if path is None:
            continue
        try:
            backend = import_string(path)
        except ImportError as exc:
            errors.append(
                (f"{key} {path!r} cannot be imported: {exc}.", check.hint, check.check_id)
            )
        else:
            built.append((path, backend, check))
    if errors:
        return errors
    for path, backend, check in built:
        options = merged[check.options]
        accepted = _accepted_options(backend)
        unknown = [] if accepted is None else sorted(set(options) - accepted)
        for name in unknown:
            assert accepted is not None
            close = difflib.get_close_matches(str(name), accepted, n=1)
            errors.append(
                (
                    f"Unknown key {name!r} in STOMP_CLUSTER[{check.options!r}]: {path} "
                    f"accepts {', '.join(sorted(accepted)) or 'no options'}.",
                    f"Did you mean {close[0]!r}?" if close else "Remove it.",
                    "stomp_cluster.E010",
                )
            )
        if unknown:
            continue
        implied = {option: merged[source] for option, source in check.implied}
        # Building a backend opens no connection: it only checks its options.
        try:
            backend(**{**implied, **options})
        except (ImproperlyConfigured, TypeError, ValueError) as exc:
            errors.append(
                (
                    f"{path} refuses STOMP_CLUSTER[{check.options!r}]: {exc}",
                    f"Fix {check.options}; the backend's docstring lists its options.",
                    "stomp_cluster.E010",
                )
            )
    return errors


def _check_permission_hook(hook: str | None) -> list[tuple[str, str, str]]:
    """E005: ``PERMISSION_HOOK`` names something callable."""
    if hook is None:
        return []
    try:
        func = import_string(hook)
    except ImportError as exc:
        func, reason = None, f"cannot be imported: {exc}"
    else:
        reason = "is not callable"
    if callable(func):
        return []
    return [
        (
            f"PERMISSION_HOOK {hook!r} {reason}.",
            "Point it at a function hook(user, action, destination) -> bool.",
            "stomp_cluster.E005",
        )
    ]


@functools.cache
def get_settings() -> StompSettings:
    """Return the merged settings, coerced to the types of :class:`StompSettings`.

    Cached; the cache is cleared when ``STOMP_CLUSTER`` changes (``override_settings``).

    Raises:
        ImproperlyConfigured: ``STOMP_CLUSTER`` has an unknown key or a value of the
            wrong type; the system checks report the same problems at startup.
    """
    errors = validate_settings(getattr(django_settings, "STOMP_CLUSTER", {}))
    if errors:
        raise ImproperlyConfigured("; ".join(f"{msg} ({hint})" for msg, hint, _ in errors))
    merged = _merge(user_settings())
    values: dict[str, Any] = {}
    for key, row in _ROWS:
        value = merged[key]
        if value is None:
            value = row.derive(merged) if row.derive is not None else None
        elif row.coerce is not None:
            value = row.coerce(value)
        values[key] = value
    return StompSettings(**values)


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "STOMP_CLUSTER":
        get_settings.cache_clear()
