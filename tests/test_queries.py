"""The registry queries on the public API, as application code calls them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

import stomp_cluster
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import login_headers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


async def test_queries_follow_connects_and_subscriptions():
    assert not await stomp_cluster.ais_online("quinn")
    client = StompCommunicator(application, "/ws")
    connected = await client.connect_stomp(await login_headers("quinn"))
    await client.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/q", "receipt": "r"})
    await client.receive_frame()
    assert await stomp_cluster.ais_online("quinn")
    user = await get_user_model().objects.aget(username="quinn")
    assert await stomp_cluster.ais_online(user.pk)
    [session] = await stomp_cluster.asessions_of(user)
    assert session.session_id == connected.get("session")
    assert session.node_id == "test-node"
    assert [s.destination for s in session.subscriptions] == ["/topic/q"]
    assert await stomp_cluster.asubscriber_count("/topic/q") == 1
    assert [s.username for s in await stomp_cluster.asubscribers("/topic/q")] == ["quinn"]
    [node] = await stomp_cluster.anodes()
    assert (node.node_id, node.alive) == ("test-node", True)
    page = await stomp_cluster.asessions(user="quinn")
    assert [s.session_id for s in page.sessions] == [session.session_id]
    assert page.next_cursor is None
    await client.disconnect()
    assert not await stomp_cluster.ais_online("quinn")
    assert await stomp_cluster.asubscriber_count("/topic/q") == 0
