"""The send helpers: routing by the registry, what they return, and what they refuse."""

from __future__ import annotations

import re

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_session, asend_to_user, send_to_user
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.send import encode_body
from tests.support.records import remote_node

# These tests send from outside a node, with the in-memory registry (tests/test_backends.py
# checks the warning that says so).
pytestmark = pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory")

SMALL_LAYER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2}}
}


async def test_destination_send_puts_one_message_on_each_holding_node():
    await remote_node("far-1", "specific.far1!a")
    await remote_node("far-2", "specific.far2!b")
    delivery = await asend_to_destination("/topic/x", {"n": 1})
    assert (delivery.sessions, delivery.nodes) == (2, 2)
    layer = get_channel_layer()
    for channel in ("specific.far1!a", "specific.far2!b"):
        message = await layer.receive(channel)
        assert message["type"] == "stomp.publish"
        assert message["destination"] == "/topic/x"
        assert message["body"] == b'{"n":1}'
        assert ("content-type", "application/json") in message["headers"]


async def test_nobody_subscribed_is_not_an_error():
    delivery = await asend_to_destination("/topic/empty", "hello")
    assert (delivery.sessions, delivery.nodes) == (0, 0)
    assert not delivery


async def test_user_send_reaches_only_nodes_holding_that_user():
    await remote_node("far-1", "specific.far1!a", user="alice", destination="/user/queue/n")
    await remote_node("far-2", "specific.far2!b", user="bob", destination="/user/queue/n")
    delivery = await asend_to_user("alice", "/queue/n", "hi")
    assert (delivery.sessions, delivery.nodes) == (1, 1)
    message = await get_channel_layer().receive("specific.far1!a")
    # The history id travels with the message and becomes its message-id.
    assert re.fullmatch(r"\d+-\d+", message.pop("id"))
    assert message == {
        "type": "stomp.user",
        "user": "alice",
        "destination": "/user/queue/n",
        "body": b"hi",
        "headers": (("content-type", "text/plain;charset=utf-8"),),
    }


async def test_session_send_goes_to_the_node_holding_it():
    session = await remote_node("far-3", "specific.far3!c")
    delivery = await asend_to_session(session, "/queue/direct", b"\x00raw")
    assert (delivery.sessions, delivery.nodes) == (1, 1)
    message = await get_channel_layer().receive("specific.far3!c")
    assert message["session"] == session and message["body"] == b"\x00raw"


@override_settings(CHANNEL_LAYERS=SMALL_LAYER)
async def test_full_node_channel_raises_delivery_failed_instead_of_dropping():
    await remote_node("slow", "specific.slow!s")
    await remote_node("fast", "specific.fast!f")
    layer = get_channel_layer()
    for _ in range(2):  # capacity 2: fill the slow node's channel
        await layer.send("specific.slow!s", {"type": "stomp.publish"})
    with pytest.raises(
        DeliveryFailed, match="not delivered to node slow: its channel is full"
    ) as info:
        await asend_to_destination("/topic/x", "one")
    assert info.value.reached == 1  # the fast node still got it
    assert (await layer.receive("specific.fast!f"))["body"] == b"one"


async def test_user_destinations_cannot_be_broadcast():
    with pytest.raises(ValueError, match="use send_to_user"):
        await asend_to_destination("/user/queue/echo", "everyone?")


@pytest.mark.django_db
def test_sync_twin_works_from_sync_code():
    delivery = send_to_user("nobody", "/queue/n", "x")
    assert (delivery.sessions, delivery.nodes) == (0, 0)


@pytest.mark.django_db
def test_unknown_pk_is_a_lookup_error():
    with pytest.raises(LookupError, match="no user with pk 999"):
        send_to_user(999, "/queue/n", "x")


def test_encode_body_types_and_reserved_headers():
    assert encode_body("é", None, None) == (
        "é".encode(),
        (("content-type", "text/plain;charset=utf-8"),),
    )
    assert encode_body(b"\x00", None, None) == (b"\x00", ())
    assert encode_body([1], {"x": "1"}, None) == (
        b"[1]",
        (("x", "1"), ("content-type", "application/json")),
    )
    payload, headers = encode_body("b", {"destination": "/evil", "message-id": "1"}, "text/csv")
    assert headers == (("content-type", "text/csv"),)
    # The recovery headers are the server's: a sender cannot fake a gap or a recovery.
    forged = {"x-recovered": "false", "x-gap": "true", "redelivered": "true"}
    assert encode_body("b", forged, None)[1] == (("content-type", "text/plain;charset=utf-8"),)
    with pytest.raises(TypeError):
        encode_body(object(), None, None)
