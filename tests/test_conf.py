"""The settings table: defaults, coercion, caching, and the limits it shares with the protocol."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from stomp_cluster import conf
from stomp_cluster.conf import DEFAULTS, Setting, StompSettings, get_settings, validate_settings
from stomp_cluster.protocol.events import Limits


def rows():
    return {f.name: f.metadata["stomp_cluster"] for f in dataclasses.fields(StompSettings)}


def test_every_field_is_a_row_of_the_table():
    assert all(isinstance(row, Setting) for row in rows().values())
    assert list(DEFAULTS) == list(rows())
    assert {key: row.default for key, row in rows().items()} == DEFAULTS


def test_every_default_is_valid():
    assert all(row.valid(row.default) for row in rows().values())
    assert validate_settings({}) == []
    assert validate_settings(dict(DEFAULTS)) == []


def test_limit_defaults_are_the_protocols():
    limits = {row.limit: DEFAULTS[key] for key, row in rows().items() if row.limit}
    assert limits == dataclasses.asdict(Limits())


@override_settings(STOMP_CLUSTER={"MAX_BODY_SIZE": 10, "MAX_TRANSACTIONS": 0})
def test_limits_of_a_connection_come_from_the_settings():
    assert get_settings().limits() == Limits(max_body_size=10, max_transactions=0)


@override_settings(STOMP_CLUSTER={"MAX_FRAME_SIZE": "big"})
def test_get_settings_raises_improperly_configured_with_the_hint():
    with pytest.raises(ImproperlyConfigured, match="at least 1024"):
        get_settings()


@override_settings(STOMP_CLUSTER={"NODE_ID": "n1", "NODE_TTL": 6, "BROKER_PREFIXES": ["/topic/"]})
def test_settings_merge_over_defaults_and_follow_override_settings():
    s = get_settings()
    assert s.NODE_ID == "n1"
    assert s.NODE_HEARTBEAT_INTERVAL == 2.0
    assert s.BROKER_PREFIXES == ("/topic/",)
    assert s.MAX_BODY_SIZE == 1_048_576


@override_settings(STOMP_CLUSTER={})
def test_none_defaults_are_worked_out():
    s = get_settings()
    assert f"-{os.getpid()}-" in s.NODE_ID
    assert s.NODE_HEARTBEAT_INTERVAL == pytest.approx(10.0 / 3)
    assert s.PERMISSION_HOOK is None
    assert s.ALLOWED_ORIGINS is None


OPTIONS = {"alias": "default"}


@override_settings(
    STOMP_CLUSTER={
        "NODE_TTL": 6,
        "NODE_HEARTBEAT_INTERVAL": 1,
        "HISTORY_MAX_AGE": 60,
        "HISTORY_TOPICS": ["/topic/news.*"],
        "APP_PREFIXES": ["/app/"],
        "ALLOWED_ORIGINS": ["example.com"],
        "TRANSPORT_OPTIONS": OPTIONS,
        "HISTORY_BACKEND": None,
    }
)
def test_values_are_coerced_to_the_field_types():
    s = get_settings()
    assert (s.NODE_TTL, s.NODE_HEARTBEAT_INTERVAL, s.HISTORY_MAX_AGE) == (6.0, 1.0, 60.0)
    assert all(type(v) is float for v in (s.NODE_TTL, s.NODE_HEARTBEAT_INTERVAL))
    assert s.HISTORY_TOPICS == ("/topic/news.*",)
    assert s.APP_PREFIXES == ("/app/",)
    assert s.ALLOWED_ORIGINS == ("example.com",)
    assert s.TRANSPORT_OPTIONS == OPTIONS and s.TRANSPORT_OPTIONS is not OPTIONS
    assert s.HISTORY_BACKEND is None


def test_get_settings_is_cached_until_the_setting_changes():
    first = get_settings()
    assert get_settings() is first
    with override_settings(STOMP_CLUSTER={"URL_PATH": "stomp"}):
        assert get_settings().URL_PATH == "stomp"
    assert get_settings() is not first
    assert get_settings() == first


def test_conf_imports_no_other_module_of_the_package_but_the_protocol():
    # conf is the bottom of the package: the checks import it, never the reverse.
    tree = ast.parse(inspect.getsource(conf))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    ours = {name for name in imported if name.startswith("stomp_cluster")}
    assert ours == {"stomp_cluster.protocol.events"}


# -- REDIS: one key for the cluster ------------------------------------------------------

REDIS_URL = "redis://redis.internal:6379/0"
RP, RH, RT = (
    "stomp_cluster.presence.redis.RedisPresence",
    "stomp_cluster.history.redis.RedisHistory",
    "stomp_cluster.transport.RedisTransport",
)


@override_settings(STOMP_CLUSTER={"REDIS": REDIS_URL})
def test_redis_puts_the_three_backends_on_that_redis():
    s = get_settings()
    assert (s.PRESENCE_BACKEND, s.HISTORY_BACKEND, s.TRANSPORT_BACKEND) == (RP, RH, RT)
    assert s.PRESENCE_OPTIONS == s.TRANSPORT_OPTIONS == {"hosts": [REDIS_URL]}
    assert s.backend_options("HISTORY_BACKEND") == {
        "max_length": 1000,
        "max_age": 86400.0,
        "hosts": [REDIS_URL],
    }


@override_settings(
    STOMP_CLUSTER={
        "REDIS": REDIS_URL,
        "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
        "HISTORY_BACKEND": None,
        "TRANSPORT_OPTIONS": {"hosts": ["redis://other:6379/1"], "capacity": 5},
    }
)
def test_a_key_set_beside_redis_wins_for_that_backend_only():
    s = get_settings()
    assert s.PRESENCE_BACKEND == "stomp_cluster.presence.memory.MemoryPresence"
    assert s.PRESENCE_OPTIONS == {}  # MemoryPresence takes no hosts: none given
    assert s.HISTORY_BACKEND is None
    assert s.TRANSPORT_BACKEND == RT
    assert s.TRANSPORT_OPTIONS == {"hosts": ["redis://other:6379/1"], "capacity": 5}


@override_settings(STOMP_CLUSTER={"REDIS": REDIS_URL, "PRESENCE_OPTIONS": {"prefix": "site"}})
def test_redis_fills_in_hosts_beside_other_options():
    assert get_settings().PRESENCE_OPTIONS == {"hosts": [REDIS_URL], "prefix": "site"}


SENTINEL = {"sentinels": [("sentinel-1", 26379)], "master_name": "mymaster"}


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("rediss://:secret@redis.internal:6380/2", "rediss://:secret@redis.internal:6380/2"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        (["redis.internal", 6379], ("redis.internal", 6379)),
        ({"address": REDIS_URL, "socket_timeout": 5}, {"address": REDIS_URL, "socket_timeout": 5}),
        (SENTINEL, SENTINEL),
    ],
)
def test_redis_takes_the_forms_of_a_hosts_entry(value, host):
    assert validate_settings({"REDIS": value}) == []
    with override_settings(STOMP_CLUSTER={"REDIS": value}):
        s = get_settings()
        assert s.PRESENCE_OPTIONS == {"hosts": [host]}
        if not isinstance(value, str):
            assert s.PRESENCE_OPTIONS["hosts"][0] is not value  # a copy


@override_settings(STOMP_CLUSTER={"REDIS": None})
def test_redis_none_keeps_the_in_memory_defaults():
    s = get_settings()
    assert s.PRESENCE_BACKEND == DEFAULTS["PRESENCE_BACKEND"]
    assert s.TRANSPORT_BACKEND == DEFAULTS["TRANSPORT_BACKEND"]
    assert s.PRESENCE_OPTIONS == {}


@override_settings(
    STOMP_CLUSTER={
        "HISTORY_MAX_LENGTH": 50,
        "HISTORY_MAX_AGE": 60,
        "HISTORY_OPTIONS": {"max_length": 7},
    }
)
def test_history_options_win_over_history_max_keys():
    assert get_settings().backend_options("HISTORY_BACKEND") == {"max_length": 7, "max_age": 60.0}


# -- the options a backend accepts, from its constructor ---------------------------------


class Strict:
    def __init__(self, *, hosts=(), prefix="p"):
        pass


class Forwarding(Strict):
    def __init__(self, *, capacity=1, **options):
        super().__init__(**options)


class Keeping:
    def __init__(self, *, a=1, **extra):
        self.extra = extra


def factory(*, alias=None):
    return Strict()


@pytest.mark.parametrize(
    ("backend", "accepted"),
    [
        (Strict, {"hosts", "prefix"}),
        (Forwarding, {"capacity", "hosts", "prefix"}),
        (Keeping, None),
        (factory, {"alias"}),
        (object, set()),
    ],
)
def test_accepted_options_come_from_the_constructor_signature(backend, accepted):
    result = conf._accepted_options(backend)
    assert (None if result is None else set(result)) == accepted


def test_accepted_options_of_the_shipped_backends():
    from stomp_cluster.history.memory import MemoryHistory
    from stomp_cluster.presence.memory import MemoryPresence
    from stomp_cluster.presence.redis import RedisPresence
    from stomp_cluster.transport import ChannelLayerTransport

    assert conf._accepted_options(MemoryPresence) == frozenset()
    assert conf._accepted_options(MemoryHistory) == {"max_length", "max_age", "max_keys"}
    assert conf._accepted_options(ChannelLayerTransport) == {"alias"}
    assert conf._accepted_options(RedisPresence) == {
        "hosts",
        "prefix",
        "socket_timeout",
        "max_connections",
        "pool_timeout",
    }
