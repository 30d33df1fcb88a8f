"""STOMP over WebSocket for Django Channels, across a cluster of nodes.

Public names are imported lazily (module ``__getattr__``), so that importing the package
touches neither models nor settings before Django's apps are ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stomp_cluster._lazy import lazy_exports

__version__ = "0.1.0.dev0"

__all__ = [
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

_LAZY = {
    "Delivery": "stomp_cluster.send",
    "adisconnect_session": "stomp_cluster.send",
    "asend_to_destination": "stomp_cluster.send",
    "asend_to_session": "stomp_cluster.send",
    "asend_to_user": "stomp_cluster.send",
    "disconnect_session": "stomp_cluster.send",
    "send_to_destination": "stomp_cluster.send",
    "send_to_session": "stomp_cluster.send",
    "send_to_user": "stomp_cluster.send",
    "connection_token": "stomp_cluster.tokens",
    "message_mapping": "stomp_cluster.handlers",
    "subscribe_mapping": "stomp_cluster.handlers",
    "ais_online": "stomp_cluster.queries",
    "anodes": "stomp_cluster.queries",
    "asessions": "stomp_cluster.queries",
    "asessions_of": "stomp_cluster.queries",
    "asubscriber_count": "stomp_cluster.queries",
    "asubscribers": "stomp_cluster.queries",
    "is_online": "stomp_cluster.queries",
    "nodes": "stomp_cluster.queries",
    "sessions": "stomp_cluster.queries",
    "sessions_of": "stomp_cluster.queries",
    "subscriber_count": "stomp_cluster.queries",
    "subscribers": "stomp_cluster.queries",
}

if TYPE_CHECKING:
    from stomp_cluster.handlers import message_mapping, subscribe_mapping
    from stomp_cluster.queries import (
        ais_online,
        anodes,
        asessions,
        asessions_of,
        asubscriber_count,
        asubscribers,
        is_online,
        nodes,
        sessions,
        sessions_of,
        subscriber_count,
        subscribers,
    )
    from stomp_cluster.send import (
        Delivery,
        adisconnect_session,
        asend_to_destination,
        asend_to_session,
        asend_to_user,
        disconnect_session,
        send_to_destination,
        send_to_session,
        send_to_user,
    )
    from stomp_cluster.tokens import connection_token


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
