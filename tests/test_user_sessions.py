"""Sessions that end when the user does (issue #12): logout, deactivation, a password
change or a deletion closes that user's open STOMP sessions with an ERROR saying why, and
``disconnect_user`` does it on demand (also from ``manage.py stomp_cluster``).
"""

from __future__ import annotations

from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from stomp_cluster import connection_token
from stomp_cluster.accounts import adisconnect_user
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


async def connected_as(user, count: int = 2) -> list[StompCommunicator]:
    token = await database_sync_to_async(connection_token)(user)
    clients = []
    for _ in range(count):
        c = StompCommunicator(application, "/ws")
        await c.connect_stomp({"login": user.get_username(), "passcode": token})
        clients.append(c)
    return clients


async def assert_closed_because(clients: list[StompCommunicator], message: str) -> None:
    for c in clients:
        frame = await c.receive_frame(timeout=5)
        assert frame.command is Command.ERROR
        assert frame.get("message") == message
        assert await c.receive_close(timeout=5) == 1000


async def assert_still_open(c: StompCommunicator) -> None:
    await c.send_frame("SEND", {"destination": "/topic/x", "receipt": "still"}, "")
    frame = await c.receive_frame()
    assert frame.command is Command.RECEIPT


async def make_user(name: str):
    return await database_sync_to_async(get_user_model().objects.create_user)(name, password="pw")


async def test_a_password_change_closes_the_users_sessions():
    alice, bob = await make_user("alice"), await make_user("bob")
    alices = await connected_as(alice)
    [bobs] = await connected_as(bob, 1)

    def change() -> None:
        alice.set_password("new")
        alice.save()

    await database_sync_to_async(change)()
    await assert_closed_because(alices, "password changed")
    await assert_still_open(bobs)


async def test_deactivation_closes_the_users_sessions():
    alice = await make_user("alice")
    alices = await connected_as(alice)

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    await database_sync_to_async(deactivate)()
    await assert_closed_because(alices, "account deactivated")


async def test_a_save_that_changes_neither_leaves_the_sessions_open():
    alice = await make_user("alice")
    [session] = await connected_as(alice, 1)

    def touch() -> None:
        alice.first_name = "Alice"
        alice.save()

    await database_sync_to_async(touch)()
    await assert_still_open(session)


async def test_logout_closes_the_users_sessions():
    alice = await make_user("alice")
    alices = await connected_as(alice)

    def log_in_and_out() -> None:
        browser = Client()
        assert browser.login(username="alice", password="pw")
        browser.logout()

    await database_sync_to_async(log_in_and_out)()
    await assert_closed_because(alices, "logged out")


async def test_disconnect_user_closes_them_with_any_message():
    alice = await make_user("alice")
    alices = await connected_as(alice)
    assert await adisconnect_user("alice", "maintenance") == 2
    await assert_closed_because(alices, "maintenance")
    assert await adisconnect_user("alice") == 0


async def test_the_command_disconnects_a_user():
    alice = await make_user("alice")
    alices = await connected_as(alice)
    out = StringIO()
    await database_sync_to_async(call_command)(
        "stomp_cluster", "disconnect", "--user", "alice", "--reason", "bye", stdout=out
    )
    await assert_closed_because(alices, "bye")
    assert out.getvalue().count("disconnected") == 2
