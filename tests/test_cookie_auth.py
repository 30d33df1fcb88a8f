"""A STOMP session's user from the WebSocket handshake's Django session cookie.

The consumer reads the cookie itself (no ``AuthMiddlewareStack``), only for a CONNECT
without a ``passcode``; wrapped in Channels' ``AuthMiddlewareStack`` it uses
``scope["user"]`` instead. Either way the client sees the same user.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

import stomp_cluster.routing
from stomp_cluster import asend_to_user, auth, connection_token
from stomp_cluster.handlers import message_mapping
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import assert_error_and_close

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]

ANONYMOUS = "<anonymous>"


@pytest.fixture
def whoami(handlers):
    """``SEND /app/whoami`` replies on ``/user/queue/whoami`` with the session's user."""

    @message_mapping("/whoami")
    async def handler(request):
        user = request.user
        name = user.get_username() if user.is_authenticated else ANONYMOUS
        await request.areply("/queue/whoami", name)


@pytest.fixture
def session_user_calls(monkeypatch) -> list[str]:
    """The session keys ``stomp_cluster.auth._session_user`` was called with."""
    calls: list[str] = []
    original = auth._session_user

    def counting(key: str):
        calls.append(key)
        return original(key)

    monkeypatch.setattr(auth, "_session_user", counting)
    return calls


def _create_and_log_in(name: str) -> str:
    get_user_model().objects.create_user(name, password="pw")
    browser = Client()
    assert browser.login(username=name, password="pw")
    return browser.cookies[settings.SESSION_COOKIE_NAME].value


async def logged_in_session(name: str) -> str:
    """Create user *name*, log it in over HTTP and return its session cookie's value."""
    return await database_sync_to_async(_create_and_log_in)(name)


def cookie(session_key: str) -> list[tuple[bytes, bytes]]:
    """Handshake headers with the session cookie among others, as a browser sends it."""
    value = f"csrftoken=abc123; {settings.SESSION_COOKIE_NAME}={session_key}; theme=dark"
    return [(b"cookie", value.encode("latin-1"))]


async def token_headers(name: str) -> dict[str, str]:
    user = await database_sync_to_async(get_user_model().objects.get)(username=name)
    return {"login": name, "passcode": await sync_to_async(connection_token)(user)}


async def client(app=application, handshake=None, connect=None) -> StompCommunicator:
    communicator = StompCommunicator(app, "/ws", headers=handshake)
    await communicator.connect_stomp(connect)
    return communicator


async def ask_name(c: StompCommunicator) -> str:
    """Who the server thinks this session is."""
    await c.send_frame(
        "SUBSCRIBE", {"id": "who", "destination": "/user/queue/whoami", "receipt": "w"}
    )
    receipt = await c.receive_frame()
    assert receipt.command is Command.RECEIPT and receipt.get("receipt-id") == "w"
    await c.send_frame("SEND", {"destination": "/app/whoami"}, "")
    frame = await c.receive_frame()
    assert frame.command is Command.MESSAGE, frame
    await c.send_frame("UNSUBSCRIBE", {"id": "who"})
    return frame.body.decode()


async def subscribe_x(c: StompCommunicator) -> None:
    await c.send_frame("SUBSCRIBE", {"id": "x", "destination": "/user/queue/x", "receipt": "rx"})
    receipt = await c.receive_frame()
    assert receipt.command is Command.RECEIPT and receipt.get("receipt-id") == "rx"


async def assert_anonymous_send_refused(c: StompCommunicator) -> None:
    """An anonymous session may not SEND to a user destination: ERROR, then close."""
    await c.send_frame("SEND", {"destination": "/user/somebody/queue/inbox"}, "psst")
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "permission denied: cannot send to /user/somebody/queue/inbox"
    assert await c.receive_close() == 1000


async def session_exists(key: str) -> bool:
    return await database_sync_to_async(Session.objects.filter(session_key=key).exists)()


# 1. A logged-in browser session's cookie makes the STOMP session that user.


async def test_session_cookie_makes_the_stomp_session_that_user(whoami):
    key = await logged_in_session("alice")
    await logged_in_session("bob")
    alice = await client(handshake=cookie(key))
    assert await ask_name(alice) == "alice"
    await subscribe_x(alice)

    delivery = await asend_to_user("alice", "/queue/x", "for alice")
    assert delivery.sessions == 1
    frame = await alice.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("destination") == "/user/queue/x"
    assert frame.body == b"for alice"

    missed = await asend_to_user("bob", "/queue/x", "for bob")
    assert missed.sessions == 0
    await asend_to_user("alice", "/queue/x", "marker")  # after bob's, on the same path
    assert (await alice.receive_frame()).body == b"marker"
    await alice.disconnect()


async def test_cookie_user_may_send_to_user_destinations():
    key = await logged_in_session("alice")
    await logged_in_session("bob")
    bob = await client(connect=await token_headers("bob"))
    await subscribe_x(bob)
    alice = await client(handshake=cookie(key))
    await alice.send_frame("SEND", {"destination": "/user/bob/queue/x", "receipt": "s"}, "hi")
    assert (await alice.receive_frame()).get("receipt-id") == "s"
    assert (await bob.receive_frame()).body == b"hi"
    await alice.disconnect()
    await bob.disconnect()


# 2. No cookie: anonymous, or refused when authentication is required.


async def test_no_cookie_is_anonymous(whoami):
    c = await client()
    assert await ask_name(c) == ANONYMOUS
    await assert_anonymous_send_refused(c)


async def test_cookie_without_a_session_is_anonymous(whoami):
    c = await client(handshake=[(b"cookie", b"csrftoken=abc123; theme=dark")])
    assert await ask_name(c) == ANONYMOUS
    await assert_anonymous_send_refused(c)


@override_settings(STOMP_CLUSTER={"REQUIRE_AUTHENTICATION": True})
async def test_authentication_required_refuses_no_cookie_and_accepts_a_cookie(whoami):
    refused = StompCommunicator(application, "/ws")
    assert (await refused.connect())[0]
    await refused.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost"})
    await assert_error_and_close(refused, "authentication required")

    key = await logged_in_session("alice")
    accepted = await client(handshake=cookie(key))
    assert await ask_name(accepted) == "alice"
    await accepted.disconnect()


# 3. An unknown session key: anonymous, not an error.


@pytest.mark.parametrize(
    "key",
    ["0123456789abcdefghijklmnopqrstuv", "short", "../../etc/passwd", "x" * 5000, "%ff;\x7f"],
    ids=["unknown", "too-short", "path", "huge", "bytes"],
)
async def test_unknown_or_garbage_session_key_is_anonymous(whoami, key):
    await logged_in_session("alice")
    c = await client(handshake=cookie(key))
    assert await ask_name(c) == ANONYMOUS
    await assert_anonymous_send_refused(c)


@override_settings(STOMP_CLUSTER={"REQUIRE_AUTHENTICATION": True})
async def test_unknown_session_key_is_refused_when_authentication_required():
    c = StompCommunicator(application, "/ws", headers=cookie("0123456789abcdefghijklmnopqrstuv"))
    assert (await c.connect())[0]
    await c.send_frame("CONNECT", {"accept-version": "1.2", "host": "localhost"})
    await assert_error_and_close(c, "authentication required")


# 4. A session whose user changed password since logging in: anonymous.


async def test_session_invalidated_by_password_change_is_anonymous(whoami):
    key = await logged_in_session("alice")
    before = await client(handshake=cookie(key))
    assert await ask_name(before) == "alice"
    await before.disconnect()

    def change_password():
        user = get_user_model().objects.get(username="alice")
        user.set_password("new password")
        user.save()

    await database_sync_to_async(change_password)()
    after = await client(handshake=cookie(key))
    assert await ask_name(after) == ANONYMOUS
    # Django's get_user() flushed the stale session, as it would on an HTTP request.
    assert not await session_exists(key)
    await assert_anonymous_send_refused(after)


# 5. A token passcode wins over the cookie.


async def test_token_passcode_wins_over_another_users_cookie(whoami):
    bob_key = await logged_in_session("bob")
    await logged_in_session("alice")
    c = await client(handshake=cookie(bob_key), connect=await token_headers("alice"))
    assert await ask_name(c) == "alice"
    await subscribe_x(c)
    assert (await asend_to_user("bob", "/queue/x", "for bob")).sessions == 0
    assert (await asend_to_user("alice", "/queue/x", "for alice")).sessions == 1
    assert (await c.receive_frame()).body == b"for alice"
    await asend_to_user("alice", "/queue/x", "marker")
    assert (await c.receive_frame()).body == b"marker"  # nothing for bob in between
    await c.disconnect()


async def test_bad_passcode_with_a_valid_cookie_is_refused_not_the_cookie_user():
    key = await logged_in_session("alice")
    c = StompCommunicator(application, "/ws", headers=cookie(key))
    assert (await c.connect())[0]
    await c.send_frame("CONNECT", {"accept-version": "1.2", "login": "alice", "passcode": "wrong"})
    await assert_error_and_close(c, "authentication failed")


# 6. Wrapped in Channels' AuthMiddlewareStack: the same user for the same cookie.


async def test_auth_middleware_stack_gives_the_same_user(whoami, session_user_calls):
    key = await logged_in_session("alice")
    wrapped = AuthMiddlewareStack(URLRouter(stomp_cluster.routing.websocket_urlpatterns))

    plain = await client(application, handshake=cookie(key))
    assert await ask_name(plain) == "alice"
    await plain.disconnect()
    assert session_user_calls == [key]

    stacked = await client(wrapped, handshake=cookie(key))
    assert await ask_name(stacked) == "alice"
    await subscribe_x(stacked)
    assert (await asend_to_user("alice", "/queue/x", "hi")).sessions == 1
    assert (await stacked.receive_frame()).body == b"hi"
    await stacked.disconnect()
    # The middleware resolved the user; the consumer did not resolve it again.
    assert session_user_calls == [key]

    for app in (application, wrapped):
        anonymous = await client(app)
        assert await ask_name(anonymous) == ANONYMOUS
        await anonymous.disconnect()
        unknown = await client(app, handshake=cookie("0123456789abcdefghijklmnopqrstuv"))
        assert await ask_name(unknown) == ANONYMOUS
        await unknown.disconnect()


async def test_session_middleware_stack_without_auth_gives_the_same_user(
    whoami, session_user_calls
):
    # Channels' CookieMiddleware parses the cookies into scope["cookies"], no scope["user"].
    key = await logged_in_session("alice")
    wrapped = SessionMiddlewareStack(URLRouter(stomp_cluster.routing.websocket_urlpatterns))
    c = await client(wrapped, handshake=cookie(key))
    assert await ask_name(c) == "alice"
    await c.disconnect()
    assert session_user_calls == [key]


@override_settings(SESSION_COOKIE_NAME="shop_session")
async def test_session_cookie_name_setting_is_honoured(whoami):
    key = await logged_in_session("alice")
    c = await client(handshake=cookie(key))
    assert await ask_name(c) == "alice"
    await c.disconnect()
    default_name = [(b"cookie", f"sessionid={key}".encode())]
    c = await client(handshake=default_name)
    assert await ask_name(c) == ANONYMOUS
    await c.disconnect()


# 7. Cost: the cookie's user is resolved only when a CONNECT needs it.


async def test_cookie_user_is_resolved_only_for_a_cookie_connect(session_user_calls):
    alice_key = await logged_in_session("alice")
    await logged_in_session("bob")

    no_cookie = await client()
    await no_cookie.disconnect()
    assert session_user_calls == []

    other_cookies = await client(handshake=[(b"cookie", b"csrftoken=abc123")])
    await other_cookies.disconnect()
    assert session_user_calls == []

    token = await client(handshake=cookie(alice_key), connect=await token_headers("bob"))
    await token.disconnect()
    assert session_user_calls == []

    password = await client(handshake=cookie(alice_key), connect={"login": "bob", "passcode": "pw"})
    await password.disconnect()
    assert session_user_calls == []

    by_cookie = await client(handshake=cookie(alice_key))
    await by_cookie.disconnect()
    assert session_user_calls == [alice_key]


async def test_a_session_signed_with_a_fallback_secret_stays_logged_in(whoami):
    # After a SECRET_KEY rotation, Django's get_user() would cycle the session's key, which
    # no WebSocket response can hand to the browser: its cookie would then point at a
    # deleted row. The consumer accepts the session as it is; HTTP cycles it later.
    from django.contrib.sessions.models import Session

    key = await logged_in_session("alice")
    old = settings.SECRET_KEY
    with override_settings(SECRET_KEY="rotated-" + old, SECRET_KEY_FALLBACKS=[old]):
        for _ in range(2):
            c = await client(handshake=cookie(key))
            assert await ask_name(c) == "alice"
            await c.disconnect()
        keys = await database_sync_to_async(
            lambda: list(Session.objects.values_list("session_key", flat=True))
        )()
    assert keys == [key]
