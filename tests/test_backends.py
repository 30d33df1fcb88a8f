"""The backend factory with REDIS, and the warning of a send that only this process sees."""

from __future__ import annotations

import warnings

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_session, send_to_user
from stomp_cluster.backends import get_history, get_presence, get_transport, reset
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.history.redis import RedisHistory
from stomp_cluster.node import get_node
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.send import disconnect_session
from stomp_cluster.transport import RedisTransport

pytestmark = pytest.mark.django_db(transaction=True)

#: Nothing listens there: building a backend opens no connection, using one fails fast.
CLOSED = "redis://127.0.0.1:1/0"

IN_MEMORY = "nothing outside this process can receive this message"


@override_settings(
    STOMP_CLUSTER={"REDIS": CLOSED, "HISTORY_MAX_LENGTH": 5, "HISTORY_OPTIONS": {"max_age": 9}}
)
def test_redis_builds_the_three_redis_backends_on_one_host():
    presence, history, transport = get_presence(), get_history(), get_transport()
    assert isinstance(presence, RedisPresence) and presence.host == CLOSED
    assert isinstance(history, RedisHistory) and history.host == CLOSED
    assert (history.max_length, history.max_age) == (5, 9.0)
    assert isinstance(transport, RedisTransport) and transport.host == CLOSED
    # What lets send_to_user take one round trip.
    assert transport.shares_redis_with(presence, history)


@override_settings(STOMP_CLUSTER={"REDIS": CLOSED})
def test_backends_are_built_once_until_reset():
    presence = get_presence()
    assert get_presence() is presence
    reset()
    assert get_presence() is not presence


# -- in-memory honesty -------------------------------------------------------------------


async def test_a_send_outside_a_node_with_the_in_memory_registry_warns():
    with pytest.warns(UserWarning, match=IN_MEMORY) as record:
        delivery = await asend_to_destination("/topic/x", "hi")
    assert (delivery.sessions, delivery.nodes) == (0, 0)
    assert record[0].filename == __file__  # points at the caller


async def test_a_session_send_outside_a_node_warns_too():
    with pytest.warns(UserWarning, match=IN_MEMORY) as record:
        await asend_to_session("nobody", "/queue/x", "hi")
    assert record[0].filename == __file__


def test_the_sync_twins_warn():
    with pytest.warns(UserWarning, match=IN_MEMORY):
        send_to_user("ghost", "/queue/x", "hi", live_only=True)


def test_disconnect_does_not_warn_its_false_says_enough():
    assert disconnect_session("nobody") is False


async def test_a_send_inside_a_running_node_does_not_warn():
    node = get_node()
    await node.ensure_started()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            delivery = await asend_to_destination("/topic/x", "hi")
        assert (delivery.sessions, delivery.nodes) == (0, 0)
    finally:
        await node.stop()


@override_settings(STOMP_CLUSTER={"REDIS": CLOSED})
def test_a_send_with_a_shared_registry_does_not_warn():
    # Under filterwarnings = error a warning would be raised before the registry is asked.
    with pytest.raises(DeliveryFailed, match="unavailable"):
        async_to_sync(asend_to_destination)("/topic/x", "hi")
