"""Keys only for real recipients (issue #12, item 6).

A client's SEND to ``/user/<name>/...`` reaches existing users only; anonymous clients
cannot create topic histories through a wildcard of ``HISTORY_TOPICS``.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from stomp_cluster import auth, connection_token, users
from stomp_cluster.backends import get_history
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


async def logged_in(name: str) -> StompCommunicator:
    def make() -> str:
        user = get_user_model().objects.create_user(name, password="pw")
        return connection_token(user)

    token = await database_sync_to_async(make)()
    c = StompCommunicator(application, "/ws")
    await c.connect_stomp({"login": name, "passcode": token})
    return c


async def test_a_send_to_an_unknown_user_is_refused_and_stores_nothing():
    alice = await logged_in("alice")
    await alice.send_frame("SEND", {"destination": "/user/nobody/queue/x", "receipt": "r"}, "hi")
    frame = await alice.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "unknown user nobody: message not delivered"
    assert frame.get("receipt-id") == "r"
    assert await get_history().last_id("nobody") is None


async def test_a_send_to_an_existing_user_goes_through_with_one_query(monkeypatch):
    alice = await logged_in("alice")
    await database_sync_to_async(get_user_model().objects.create_user)("bob")
    calls: list[str] = []
    original = users._exists

    def counting(name: str) -> bool:
        calls.append(name)
        return original(name)

    monkeypatch.setattr(users, "_exists", counting)
    for i in range(5):
        await alice.send_frame(
            "SEND", {"destination": "/user/bob/queue/x", "receipt": f"r{i}"}, "hi"
        )
        frame = await alice.receive_frame()
        assert frame.command is Command.RECEIPT, frame
    assert calls == ["bob"]  # cached
    assert await get_history().last_id("bob") is not None


async def test_anonymous_clients_cannot_create_histories_through_a_wildcard():
    with override_settings(
        STOMP_CLUSTER={**settings.STOMP_CLUSTER, "HISTORY_TOPICS": ["/topic/room.*", "/topic/news"]}
    ):
        anonymous = AnonymousSender()
        assert not await auth.check_permission(anonymous, "send", "/topic/room.made-up-1")
        assert await auth.check_permission(anonymous, "send", "/topic/news")
        assert await auth.check_permission(anonymous, "send", "/topic/other")
        assert await auth.check_permission(anonymous, "subscribe", "/topic/room.x")


class AnonymousSender:
    is_authenticated = False
