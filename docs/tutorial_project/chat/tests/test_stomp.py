"""The tests of the testing guide (docs/howto/testing.rst), run on the tutorial's chat."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient, override_settings

from mysite.asgi import application
from stomp_cluster import asend_to_user, connection_token
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator

pytestmark = pytest.mark.django_db(transaction=True)


async def connect_as(username):
    """A connected client, authenticated with a connection token."""
    user = await sync_to_async(get_user_model().objects.create_user)(username)
    token = await sync_to_async(connection_token)(user)
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp({"login": username, "passcode": token})
    return client


async def test_chat_message_reaches_the_room():
    alice = await connect_as("alice")
    await alice.send_frame(
        "SUBSCRIBE", {"id": "0", "destination": "/topic/chat.lobby", "receipt": "r0"}
    )
    assert (await alice.receive_frame()).command is Command.RECEIPT
    await alice.send_frame("SEND", {"destination": "/app/chat/lobby"}, "hi")
    message = await alice.receive_frame()
    assert message.command is Command.MESSAGE
    assert json.loads(message.body) == {"user": "alice", "text": "hi"}
    await alice.disconnect()


async def test_empty_chat_message_is_refused():
    erin = await connect_as("erin")
    await erin.send_frame("SUBSCRIBE", {"id": "e", "destination": "/user/queue/errors"})
    await erin.send_frame("SEND", {"destination": "/app/chat/lobby", "receipt": "r"}, " ")
    error = await erin.receive_frame()
    assert error.command is Command.MESSAGE
    assert error.get("destination") == "/user/queue/errors"
    assert json.loads(error.body)["error"] == "a chat message has 1 to 500 characters"
    receipt = await erin.receive_frame()  # the SEND was handled: the session goes on
    assert receipt.get("receipt-id") == "r"
    await erin.disconnect()


@override_settings(
    STOMP_CLUSTER={
        "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
        "PERMISSION_HOOK": "chat.permissions.stomp_permission",
    }
)
async def test_direct_publish_is_refused():
    mallory = await connect_as("mallory")
    await mallory.send_frame("SEND", {"destination": "/topic/chat.lobby"}, "spoofed")
    error = await mallory.receive_frame()
    assert error.command is Command.ERROR
    assert error.get("message") == "permission denied: cannot send to /topic/chat.lobby"


async def test_notification_reaches_the_user():
    bob = await connect_as("bob")
    await bob.send_frame(
        "SUBSCRIBE", {"id": "n", "destination": "/user/queue/notify", "receipt": "r"}
    )
    await bob.receive_frame()
    delivery = await asend_to_user("bob", "/queue/notify", {"text": "hello"})
    assert delivery.sessions == 1
    message = await bob.receive_frame()
    assert message.get("destination") == "/user/queue/notify"
    await bob.disconnect()


async def test_notify_view():
    dave = await connect_as("dave")
    await dave.send_frame(
        "SUBSCRIBE", {"id": "n", "destination": "/user/queue/notify", "receipt": "r"}
    )
    await dave.receive_frame()
    web = AsyncClient()
    await web.aforce_login(await get_user_model().objects.acreate(username="carol"))
    response = await web.post("/chat/notify/", {"to": "dave", "text": "hey"})
    assert response.json() == {"sessions": 1, "nodes": 1}
    assert json.loads((await dave.receive_frame()).body)["text"] == "hey"
    await dave.disconnect()
