"""System checks: exact messages under override_settings."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from stomp_cluster.checks import check_channel_layer, check_settings
from stomp_cluster.presence.memory import MemoryPresence


def test_default_settings_pass():
    assert check_settings() == []
    assert check_channel_layer() == []


@override_settings(STOMP_CLUSTER=["NODE_ID"])
def test_not_a_dict():
    assert check_settings() == [
        Error(
            "STOMP_CLUSTER must be a dict, not list.",
            hint="Set STOMP_CLUSTER = {...} in your settings, or remove it to use the defaults.",
            id="stomp_cluster.E001",
        )
    ]


@override_settings(STOMP_CLUSTER={"NODE_TTLL": 5})
def test_unknown_key_suggests_the_close_one():
    assert check_settings() == [
        Error(
            "Unknown key 'NODE_TTLL' in STOMP_CLUSTER.",
            hint="Did you mean 'NODE_TTL'?",
            id="stomp_cluster.E002",
        )
    ]


@override_settings(STOMP_CLUSTER={"HEARTBEAT_SEND_MS": -1})
def test_wrong_value_says_what_to_set():
    assert check_settings() == [
        Error(
            "STOMP_CLUSTER['HEARTBEAT_SEND_MS'] is -1.",
            hint="Set it to a whole number of milliseconds, 0 or more.",
            id="stomp_cluster.E003",
        )
    ]


@override_settings(STOMP_CLUSTER={"PRESENCE_BACKEND": "nowhere.Backend"})
def test_backend_not_importable():
    [error] = check_settings()
    assert error.id == "stomp_cluster.E004"
    assert error.msg.startswith("PRESENCE_BACKEND 'nowhere.Backend' cannot be imported")


@override_settings(STOMP_CLUSTER={"PERMISSION_HOOK": "stomp_cluster.conf.DEFAULTS"})
def test_permission_hook_not_callable():
    assert check_settings() == [
        Error(
            "PERMISSION_HOOK 'stomp_cluster.conf.DEFAULTS' is not callable.",
            hint="Point it at a function hook(user, action, destination) -> bool.",
            id="stomp_cluster.E005",
        )
    ]


@override_settings(STOMP_CLUSTER={"NODE_TTL": 3, "NODE_HEARTBEAT_INTERVAL": 3})
def test_heartbeat_interval_must_be_shorter_than_ttl():
    [error] = check_settings()
    assert error.id == "stomp_cluster.E007"


@override_settings(CHANNEL_LAYERS={})
def test_missing_channel_layer():
    assert check_channel_layer() == [
        Error(
            "No channel layer named 'default' in settings.CHANNEL_LAYERS.",
            hint="Configure channels_redis.core.RedisChannelLayer there (or "
            "channels.layers.InMemoryChannelLayer for a single node), or set "
            "STOMP_CLUSTER['TRANSPORT_BACKEND'] to "
            "'stomp_cluster.transport.RedisTransport', which needs no channel layer.",
            id="stomp_cluster.E006",
        )
    ]


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}}
)
def test_redis_layer_with_memory_presence_and_default_capacity_warns():
    ids = [m.id for m in check_channel_layer()]
    assert ids == ["stomp_cluster.W001", "stomp_cluster.W002"]
    assert all(isinstance(m, Warning) for m in check_channel_layer())


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"], "capacity": 10_000},
        }
    },
    STOMP_CLUSTER={
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
    },
)
def test_redis_host_without_socket_timeout_warns():
    [warning] = check_channel_layer()
    assert warning.id == "stomp_cluster.W003"
    assert "socket_timeout" in warning.hint


@override_settings(STOMP_CLUSTER={"HISTORY_BACKEND": "nowhere.History"})
def test_history_backend_not_importable():
    [error] = check_settings()
    assert error.id == "stomp_cluster.E008"
    assert error.hint.startswith("Use 'stomp_cluster.history.memory.MemoryHistory' (one node)")


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": 10}], "capacity": 10},
        }
    },
    STOMP_CLUSTER={"PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence"},
)
def test_memory_history_in_a_cluster_warns():
    [warning] = check_channel_layer()
    assert warning.id == "stomp_cluster.W004"
    assert warning.hint == "Use 'stomp_cluster.history.redis.RedisHistory' in a cluster."


class InProcessRegistry(MemoryPresence):
    """Still a per-process registry, whatever its name."""


class RedisLookalikeMemoryPresence:
    """Named like the in-memory registry, but not one: checks go by class, not name."""


_REDIS_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": 10}], "capacity": 10},
    }
}


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    STOMP_CLUSTER={"PRESENCE_BACKEND": f"{__name__}.InProcessRegistry"},
)
def test_a_subclass_of_memory_presence_counts_as_in_memory():
    assert check_channel_layer() == []


@override_settings(
    CHANNEL_LAYERS=_REDIS_LAYER,
    STOMP_CLUSTER={"PRESENCE_BACKEND": f"{__name__}.RedisLookalikeMemoryPresence"},
)
def test_a_class_named_like_memory_presence_counts_as_shared():
    assert [m.id for m in check_channel_layer()] == ["stomp_cluster.W004"]


# -- REDIS (E011) and the keys of *_OPTIONS (E010) ----------------------------------------

_REDIS_ACCEPTS = (
    "Set it to a redis://, rediss:// or unix:// URL, a (host, port) pair, a dict of "
    "connection arguments (with an 'address' URL, or a Sentinel's 'sentinels' and "
    "'master_name'), a Redis Cluster as a redis+cluster://host:port,host:port/ URL or a dict "
    "with 'startup_nodes', or None."
)


@override_settings(STOMP_CLUSTER={"REDIS": "redis://127.0.0.1:6379/0"})
def test_one_redis_key_passes_every_check(monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    assert check_settings() == []
    assert check_channel_layer() == []  # RedisTransport: no channel layer needed


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://redis:6379", "a URL must start with redis://, rediss:// or unix://"),
        ("redis://redis:port/0", "its port is not a number"),
        ("unix://", "a unix:// URL needs the path of the socket"),
        (("redis", "6379"), "a pair must be (host, port), such as ('localhost', 6379)"),
        (
            {"sentinels": [("s", 26379)]},
            "a Sentinel dict needs 'master_name', the name of the monitored master",
        ),
        ({"address": 6379}, "its 'address' must be a redis://, rediss:// or unix:// URL"),
        (6379, "int is none of the accepted types"),
    ],
)
def test_a_bad_redis_value_fails_with_what_is_wrong(value, why):
    with override_settings(STOMP_CLUSTER={"REDIS": value}):
        assert check_settings() == [
            Error(
                f"STOMP_CLUSTER['REDIS'] is {value!r}: {why}.",
                hint=_REDIS_ACCEPTS,
                id="stomp_cluster.E011",
            )
        ]


@override_settings(STOMP_CLUSTER={"REDIS": "redis://x:6379/0", "HISTORY_OPTIONS": {"hots": []}})
def test_a_typo_in_history_options_fails_naming_the_accepted_keys():
    assert check_settings() == [
        Error(
            "Unknown key 'hots' in STOMP_CLUSTER['HISTORY_OPTIONS']: "
            "stomp_cluster.history.redis.RedisHistory accepts hosts, max_age, "
            "max_connections, max_length, prefix, socket_timeout.",
            hint="Did you mean 'hosts'?",
            id="stomp_cluster.E010",
        )
    ]


@override_settings(STOMP_CLUSTER={"PRESENCE_OPTIONS": {"hosts": ["redis://x"]}})
def test_an_option_the_in_memory_backend_does_not_take_fails():
    assert check_settings() == [
        Error(
            "Unknown key 'hosts' in STOMP_CLUSTER['PRESENCE_OPTIONS']: "
            "stomp_cluster.presence.memory.MemoryPresence accepts no options.",
            hint="Remove it.",
            id="stomp_cluster.E010",
        )
    ]


@override_settings(
    STOMP_CLUSTER={
        "TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport",
        "TRANSPORT_OPTIONS": {"capcity": 5, "bach": 10},
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
    }
)
def test_every_unknown_key_is_reported():
    assert [(e.msg.split(":")[0], e.hint) for e in check_settings()] == [
        ("Unknown key 'bach' in STOMP_CLUSTER['TRANSPORT_OPTIONS']", "Did you mean 'batch'?"),
        ("Unknown key 'capcity' in STOMP_CLUSTER['TRANSPORT_OPTIONS']", "Did you mean 'capacity'?"),
    ]


@override_settings(STOMP_CLUSTER={"HISTORY_OPTIONS": {"max_length": 0}})
def test_history_options_are_built_by_the_check_too():
    [error] = check_settings()
    assert error.id == "stomp_cluster.E010"
    assert error.msg == (
        "stomp_cluster.history.memory.MemoryHistory refuses STOMP_CLUSTER['HISTORY_OPTIONS']: "
        "History 'max_length' must be a positive integer, got 0."
    )


class AnyOptionsPresence(MemoryPresence):
    """A backend of a user's own that keeps whatever options it is given."""

    def __init__(self, **options):
        self.options = options


@override_settings(
    STOMP_CLUSTER={
        "PRESENCE_BACKEND": f"{__name__}.AnyOptionsPresence",
        "PRESENCE_OPTIONS": {"anything": 1},
    }
)
def test_a_backend_that_keeps_its_kwargs_accepts_any_key():
    assert check_settings() == []


# -- W005: the in-memory registry where several processes are expected ------------------

_W005_HINT = (
    "Set STOMP_CLUSTER['REDIS'] = 'redis://...' so that the processes share one registry, "
    "or run a single server process."
)


def w005(why):
    return Warning(
        f"The in-memory presence backend is used {why}: each process keeps its own "
        "registry, so a message sent in one process reaches no client connected to another.",
        hint=_W005_HINT,
        id="stomp_cluster.W005",
    )


@pytest.fixture
def environ(monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    return monkeypatch


def test_several_workers_with_the_in_memory_registry_warn(environ):
    environ.setenv("WEB_CONCURRENCY", "4")
    assert check_channel_layer() == [
        w005("while WEB_CONCURRENCY is 4 (gunicorn and uvicorn start that many worker processes)")
    ]


@pytest.mark.parametrize("args", ["--workers 3", "--bind :8000 -w3", "--workers=3 -k x"])
def test_gunicorn_workers_in_its_environment_warn(environ, args):
    environ.setenv("GUNICORN_CMD_ARGS", args)
    assert check_channel_layer() == [w005("while GUNICORN_CMD_ARGS asks gunicorn for 3 workers")]


@pytest.mark.parametrize(
    ("name", "value"),
    [("WEB_CONCURRENCY", "1"), ("WEB_CONCURRENCY", "auto"), ("GUNICORN_CMD_ARGS", "-w 1")],
)
def test_one_worker_does_not_warn(environ, name, value):
    environ.setenv(name, value)
    assert check_channel_layer() == []


@override_settings(STOMP_CLUSTER={"TRANSPORT_BACKEND": "stomp_cluster.transport.RedisTransport"})
def test_redis_transport_with_the_in_memory_registry_warns(environ):
    environ.setenv("WEB_CONCURRENCY", "2")
    assert check_channel_layer() == [
        w005(
            "with RedisTransport, which connects several nodes; while WEB_CONCURRENCY is 2 "
            "(gunicorn and uvicorn start that many worker processes)"
        )
    ]


@override_settings(STOMP_CLUSTER={"REDIS": "redis://127.0.0.1:6379/0"})
def test_several_workers_on_a_shared_registry_do_not_warn(environ):
    environ.setenv("WEB_CONCURRENCY", "8")
    assert check_channel_layer() == []
