"""Logins that cannot starve the node (issue #12, item 4).

Credential checks run on bounded pools of their own, a verified password is remembered a
short while, failed CONNECTs are throttled, and sync hooks and handlers run on a pool so
one slow call delays only its own session. In-process, with StompCommunicator.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from stomp_cluster import auth, connection_token
from stomp_cluster.handlers import message_mapping
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from stomp_cluster.throttle import LoginThrottle, retry_message
from testproject.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PBKDF2 = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]


async def make_user(name: str, password: str = "pw") -> object:
    return await database_sync_to_async(get_user_model().objects.create_user)(
        name, password=password
    )


async def try_connect(
    headers: dict[str, str], wait: float = 10, address: str | None = None
) -> tuple[bool, str]:
    """CONNECT once; (True, "") on CONNECTED, (False, message) on ERROR."""
    c = StompCommunicator(application, "/ws")
    if address is not None:
        c.scope["client"] = [address, 50000]
    connected, _ = await c.connect(wait)
    assert connected
    await c.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost", **headers})
    frame = await c.receive_frame(wait)
    await c.disconnect()
    if frame.command is Command.CONNECTED:
        return True, ""
    assert frame.command is Command.ERROR
    return False, frame.get("message") or ""


async def test_thirty_password_connects_cost_one_hash(monkeypatch):
    """The verified-credential cache: thirty CONNECTs with one password hash the real
    PBKDF2 hasher runs once, not thirty times (each run costs ~50-100 ms of CPU)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    with override_settings(PASSWORD_HASHERS=PBKDF2):
        await make_user("alice", "s3cret")
        hashed = []
        real_encode = PBKDF2PasswordHasher.encode

        def counting_encode(self, password, salt, iterations=None):
            hashed.append(password)
            return real_encode(self, password, salt, iterations)

        monkeypatch.setattr(PBKDF2PasswordHasher, "encode", counting_encode)
        for _ in range(30):
            ok, message = await try_connect({"login": "alice", "passcode": "s3cret"})
            assert ok, message
    assert hashed == ["s3cret"]


async def test_a_changed_password_is_not_served_from_the_cache():
    user = await make_user("alice", "old")
    assert (await try_connect({"login": "alice", "passcode": "old"}))[0]

    def change() -> None:
        user.set_password("new")
        user.save()

    await database_sync_to_async(change)()
    assert await try_connect({"login": "alice", "passcode": "old"}) == (
        False,
        "authentication failed: bad login or passcode",
    )
    assert (await try_connect({"login": "alice", "passcode": "new"}))[0]


async def test_a_deactivated_user_is_not_served_from_the_cache():
    user = await make_user("alice", "pw")
    assert (await try_connect({"login": "alice", "passcode": "pw"}))[0]
    await database_sync_to_async(type(user).objects.filter(pk=user.pk).update)(is_active=False)
    assert not (await try_connect({"login": "alice", "passcode": "pw"}))[0]


async def test_a_token_connect_does_not_wait_behind_password_checks(monkeypatch):
    """Six slow wrong-password checks queue on the passwords pool; a token gets in."""
    user = await make_user("bob")
    token = await database_sync_to_async(connection_token)(user)
    release = threading.Event()

    def slow_wrong_password(request, **credentials):
        release.wait(10)  # a password check that takes its time
        return None

    monkeypatch.setattr(auth, "authenticate", slow_wrong_password)
    wrong = [
        asyncio.create_task(try_connect({"login": f"mallory{i}", "passcode": "x"}, wait=20))
        for i in range(6)
    ]
    await asyncio.sleep(0.2)
    ok, message = await try_connect({"login": "bob", "passcode": token}, wait=5)
    # Still held: had the token waited behind them, it could not have got in before this.
    held = not release.is_set() and not any(task.done() for task in wrong)
    release.set()
    assert ok, message
    assert held
    for result in await asyncio.gather(*wrong):
        assert result == (False, "authentication failed: bad login or passcode")


@override_settings(STOMP_CLUSTER={**settings.STOMP_CLUSTER, "LOGIN_FAILURES_PER_LOGIN": 3})
async def test_failed_connects_are_throttled_per_login():
    user = await make_user("carol", "right")
    token = await database_sync_to_async(connection_token)(user)
    for _ in range(3):
        ok, message = await try_connect({"login": "carol", "passcode": "wrong"})
        assert message == "authentication failed: bad login or passcode"
    ok, message = await try_connect({"login": "carol", "passcode": "right"})
    assert not ok
    assert message.startswith("too many failed logins: retry in ") and message.endswith(" s")
    # A token is cheap to check: it is never throttled.
    assert (await try_connect({"login": "carol", "passcode": token}))[0]


@override_settings(STOMP_CLUSTER={**settings.STOMP_CLUSTER, "LOGIN_FAILURES_PER_ADDRESS": 3})
async def test_failed_connects_are_throttled_per_client_address():
    await make_user("dave", "right")
    for name in ("x", "y", "z"):
        ok, _ = await try_connect({"login": name, "passcode": "wrong"}, address="10.0.0.9")
        assert not ok
    ok, message = await try_connect({"login": "dave", "passcode": "right"}, address="10.0.0.9")
    assert message.startswith("too many failed logins: retry in ")
    assert (await try_connect({"login": "dave", "passcode": "right"}, address="10.0.0.8"))[0]


def test_throttle_counts_logins_and_addresses_in_a_window():
    throttle = LoginThrottle()
    with override_settings(
        STOMP_CLUSTER={
            **settings.STOMP_CLUSTER,
            "LOGIN_FAILURES_PER_LOGIN": 2,
            "LOGIN_FAILURES_PER_ADDRESS": 3,
        }
    ):
        assert throttle.retry_after("a", "10.0.0.1", now=0) is None
        throttle.failed("a", "10.0.0.1", now=0)
        throttle.failed("a", "10.0.0.1", now=10)
        assert throttle.retry_after("a", "10.0.0.2", now=20) == pytest.approx(40)
        assert throttle.retry_after("b", "10.0.0.2", now=20) is None
        throttle.failed("b", "10.0.0.1", now=30)
        assert throttle.retry_after("c", "10.0.0.1", now=30) == pytest.approx(30)
        assert throttle.retry_after("c", "10.0.0.1", now=61) is None  # the window moved
        assert throttle.retry_after("a", None, now=71) is None
    assert retry_message(0.2) == "too many failed logins: retry in 1 s"


async def test_a_slow_sync_handler_delays_only_its_own_session(handlers):
    release = threading.Event()

    @message_mapping("/slow")
    def slow(request):
        release.wait(10)
        request.reply("/queue/done", "slow")

    @message_mapping("/fast")
    def fast(request):
        request.reply("/queue/done", "fast")

    clients = []
    for _ in range(2):
        c = StompCommunicator(application, "/ws")
        await c.connect_stomp()
        await c.send_frame(
            "SUBSCRIBE", {"id": "d", "destination": "/user/queue/done", "receipt": "r"}
        )
        assert (await c.receive_frame()).command is Command.RECEIPT
        clients.append(c)
    slow_client, fast_client = clients
    await slow_client.send_frame("SEND", {"destination": "/app/slow"}, "")
    await asyncio.sleep(0.1)
    await fast_client.send_frame("SEND", {"destination": "/app/fast"}, "")
    frame = await fast_client.receive_frame(timeout=3)
    assert frame.body == b"fast"
    release.set()
    assert (await slow_client.receive_frame(timeout=5)).body == b"slow"
    for c in clients:
        await c.disconnect()
