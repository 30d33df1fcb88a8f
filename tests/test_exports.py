"""The public API is pinned: a change here is a change users see."""

from __future__ import annotations

import stomp_cluster
import stomp_cluster.protocol


def test_top_level_names():
    assert sorted(stomp_cluster.__all__) == [
        "Delivery",
        "adisconnect_session",
        "ais_online",
        "anodes",
        "asend_to_destination",
        "asend_to_session",
        "asend_to_user",
        "asessions",
        "asessions_of",
        "asubscriber_count",
        "asubscribers",
        "connection_token",
        "disconnect_session",
        "is_online",
        "message_mapping",
        "nodes",
        "send_to_destination",
        "send_to_session",
        "send_to_user",
        "sessions",
        "sessions_of",
        "subscribe_mapping",
        "subscriber_count",
        "subscribers",
    ]
    for name in stomp_cluster.__all__:
        assert getattr(stomp_cluster, name) is not None


def test_every_module_declares_all():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(stomp_cluster.__path__, "stomp_cluster."):
        if ".management" in info.name or info.name.endswith(("apps", "migrations")):
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
