"""System checks: exact messages under override_settings."""

from __future__ import annotations

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
