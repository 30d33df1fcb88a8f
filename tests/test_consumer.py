"""The consumer, driven in-process through Channels' communicator (StompCommunicator)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import override_settings

from stomp_cluster import asend_to_session, asend_to_user, signals
from stomp_cluster.consumer import StompConsumer
from stomp_cluster.handlers import HandlerError, message_mapping
from stomp_cluster.messages import Publish
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import (
    assert_error_and_close,
    connected_client,
    login_headers,
    make_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


client = connected_client


async def test_connected_frame_headers():
    communicator = StompCommunicator(application, "/ws")
    frame = await communicator.connect_stomp()
    assert frame.get("version") == "1.2"
    assert len(frame.get("session") or "") == 32
    assert (frame.get("server") or "").startswith("stomp_cluster/")
    assert frame.get("heart-beat") == "10000,10000"
    await communicator.disconnect()


async def test_topic_send_reaches_every_subscriber_with_message_headers():
    alice, bob = await client(), await client()
    for c in (alice, bob):
        await c.send_frame("SUBSCRIBE", {"id": "s1", "destination": "/topic/news", "receipt": "r1"})
        receipt = await c.receive_frame()
        assert receipt.command is Command.RECEIPT and receipt.get("receipt-id") == "r1"
    await alice.send_frame("SEND", {"destination": "/topic/news", "x-custom": "a:b"}, "hello")
    for c in (alice, bob):
        frame = await c.receive_frame()
        assert frame.command is Command.MESSAGE
        assert frame.get("destination") == "/topic/news"
        assert frame.get("subscription") == "s1"
        assert frame.get("message-id")
        assert frame.get("x-custom") == "a:b"
        assert frame.body == b"hello"
    await alice.disconnect()
    await bob.disconnect()


async def test_unsubscribed_session_gets_nothing():
    alice, bob = await client(), await client()
    for c in (alice, bob):
        await c.send_frame("SUBSCRIBE", {"id": "s1", "destination": "/topic/a", "receipt": "r"})
        await c.receive_frame()
    await bob.send_frame("UNSUBSCRIBE", {"id": "s1", "receipt": "u"})
    assert (await bob.receive_frame()).get("receipt-id") == "u"
    await alice.send_frame("SEND", {"destination": "/topic/a", "receipt": "sent"}, "x")
    frames = [await alice.receive_frame(), await alice.receive_frame()]
    assert {f.command for f in frames} == {Command.MESSAGE, Command.RECEIPT}
    assert await bob.receive_nothing(0.2)
    await alice.disconnect()
    await bob.disconnect()


async def test_echo_handler_replies_to_sender_only():
    alice, bob = await client(), await client()
    for c in (alice, bob):
        await c.send_frame(
            "SUBSCRIBE", {"id": "e", "destination": "/user/queue/echo", "receipt": "r"}
        )
        await c.receive_frame()
    await alice.send_frame("SEND", {"destination": "/app/echo"}, "ping")
    frame = await alice.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("destination") == "/user/queue/echo"
    assert frame.body == b"ping"
    assert await bob.receive_nothing(0.2)
    await alice.disconnect()
    await bob.disconnect()


async def test_send_to_unknown_destination_is_an_error_that_closes_only_that_session():
    bad, good = await client(), await client()
    await good.send_frame("SUBSCRIBE", {"id": "0", "destination": "/topic/t", "receipt": "r"})
    await good.receive_frame()
    await bad.send_frame("SEND", {"destination": "/nowhere", "receipt": "77"}, "x")
    frame = await bad.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "unknown destination /nowhere"
    assert frame.get("receipt-id") == "77"
    assert await bad.receive_close() == 1000
    await good.send_frame("SEND", {"destination": "/topic/t"}, "still here")
    assert (await good.receive_frame()).body == b"still here"
    await good.disconnect()


async def test_unmapped_app_destination_is_an_error():
    c = await client()
    await c.send_frame("SEND", {"destination": "/app/missing"}, "x")
    await assert_error_and_close(c, "no handler for destination /app/missing")


async def test_handler_exception_gives_generic_error_and_other_sessions_carry_on(handlers, caplog):
    @message_mapping("/boom")
    async def boom(request):
        raise RuntimeError("secret detail")

    victim, other = await client(), await client()
    await victim.send_frame("SEND", {"destination": "/app/boom"}, "x")
    frame = await victim.receive_frame()
    assert frame.command is Command.ERROR and frame.get("message") == "internal error"
    assert b"secret" not in frame.body
    assert "secret detail" in caplog.text
    await other.send_frame("SUBSCRIBE", {"id": "e", "destination": "/user/queue/echo"})
    await other.send_frame("SEND", {"destination": "/app/echo"}, "ok")
    assert (await other.receive_frame()).body == b"ok"
    await other.disconnect()


async def test_handler_error_message_reaches_the_client(handlers):
    @message_mapping("/refuse/{what}")
    def refuse(request, what):
        raise HandlerError(f"no {what} here")

    c = await client()
    await c.send_frame("SUBSCRIBE", {"id": "e", "destination": "/user/queue/errors"})
    await c.send_frame("SEND", {"destination": "/app/refuse/cheese", "receipt": "r"}, "x")
    frame = await c.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("x-error-destination") == "/app/refuse/cheese"
    assert b'"error":"no cheese here"' in frame.body
    assert (await c.receive_frame()).get("receipt-id") == "r"  # and the session goes on
    await c.disconnect()


async def test_sync_handler_can_use_the_orm_and_reply(handlers):
    @message_mapping("/count-users")
    def count_users(request):
        request.reply("/queue/count", str(get_user_model().objects.count()))

    await make_user("zed")
    c = await client()
    await c.send_frame("SUBSCRIBE", {"id": "c", "destination": "/user/queue/count", "receipt": "r"})
    await c.receive_frame()
    await c.send_frame("SEND", {"destination": "/app/count-users"}, "")
    frame = await c.receive_frame()
    assert frame.body == b"1"
    assert frame.get("content-type") == "text/plain;charset=utf-8"
    await c.disconnect()


async def test_token_login_sets_the_user_and_user_destinations_are_private():
    alice = await client(headers=await login_headers("alice"))
    bob = await client(headers=await login_headers("bob"))
    for c in (alice, bob):
        await c.send_frame(
            "SUBSCRIBE", {"id": "n", "destination": "/user/queue/notify", "receipt": "r"}
        )
        await c.receive_frame()
    delivery = await asend_to_user("alice", "/queue/notify", {"text": "hi"})
    assert delivery.sessions == 1 and delivery.nodes == 1
    frame = await alice.receive_frame()
    assert frame.body == b'{"text":"hi"}'
    assert frame.get("content-type") == "application/json"
    assert frame.get("destination") == "/user/queue/notify"
    assert await bob.receive_nothing(0.2)
    await alice.disconnect()
    await bob.disconnect()


async def test_send_to_user_accepts_pk_object_and_full_destination():
    headers = await login_headers("carol")
    c = await client(headers=headers)
    await c.send_frame("SUBSCRIBE", {"id": "n", "destination": "/user/queue/n", "receipt": "r"})
    await c.receive_frame()
    user = await database_sync_to_async(get_user_model().objects.get)(username="carol")
    await asend_to_user(user.pk, "/queue/n", "by pk")
    await asend_to_user(user, "/user/queue/n", b"by object")
    assert (await c.receive_frame()).body == b"by pk"
    assert (await c.receive_frame()).body == b"by object"
    await c.disconnect()


async def test_client_can_send_to_another_users_destination():
    alice = await client(headers=await login_headers("alice"))
    bob = await client(headers=await login_headers("bob"))
    await bob.send_frame(
        "SUBSCRIBE", {"id": "n", "destination": "/user/queue/inbox", "receipt": "r"}
    )
    await bob.receive_frame()
    await alice.send_frame("SEND", {"destination": "/user/bob/queue/inbox"}, "psst")
    assert (await bob.receive_frame()).body == b"psst"
    await alice.disconnect()
    await bob.disconnect()


async def test_anonymous_cannot_send_to_user_destinations():
    c = await client()
    await c.send_frame("SEND", {"destination": "/user/bob/queue/inbox"}, "psst")
    await assert_error_and_close(c, "permission denied")


async def test_subscribing_to_another_users_destination_is_refused():
    c = await client(headers=await login_headers("mallory"))
    await c.send_frame("SUBSCRIBE", {"id": "x", "destination": "/user/alice/queue/notify"})
    await assert_error_and_close(c, "cannot subscribe to /user/alice/queue/notify")


async def test_send_to_session_reaches_that_session_only():
    a, b = await client(), await client()
    for c in (a, b):
        await c.send_frame(
            "SUBSCRIBE", {"id": "s", "destination": "/user/queue/direct", "receipt": "r"}
        )
        await c.receive_frame()
    # The session id is the CONNECTED frame's session header.
    first = StompCommunicator(application, "/ws")
    connected = await first.connect_stomp()
    await first.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": "/user/queue/direct", "receipt": "r"}
    )
    await first.receive_frame()
    delivery = await asend_to_session(connected.get("session"), "/queue/direct", "only you")
    assert delivery.sessions == 1
    assert (await first.receive_frame()).body == b"only you"
    assert await a.receive_nothing(0.1) and await b.receive_nothing(0.1)
    missing = await asend_to_session("0" * 32, "/queue/direct", "nobody")
    assert missing.sessions == 0
    for c in (a, b, first):
        await c.disconnect()


async def test_bad_passcode_is_refused():
    await make_user("dave")
    communicator = StompCommunicator(application, "/ws")
    await communicator.connect()
    await communicator.send_frame(
        "CONNECT", {"accept-version": "1.2", "login": "dave", "passcode": "nope"}
    )
    await assert_error_and_close(communicator, "authentication failed")


async def test_password_login_when_enabled():
    await make_user("erin")
    c = await client(headers={"login": "erin", "passcode": "pw"})
    await c.disconnect()


@override_settings(STOMP_CLUSTER={"REQUIRE_AUTHENTICATION": True})
async def test_anonymous_refused_when_authentication_required():
    communicator = StompCommunicator(application, "/ws")
    await communicator.connect()
    await communicator.send_frame("CONNECT", {"accept-version": "1.2"})
    await assert_error_and_close(communicator, "authentication required")


def deny_secret(user, action, destination):
    return not destination.startswith("/topic/secret")


@override_settings(STOMP_CLUSTER={"PERMISSION_HOOK": "tests.test_consumer.deny_secret"})
async def test_permission_hook_refuses_subscribe_and_send():
    c = await client()
    await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/secret"})
    await assert_error_and_close(c, "permission denied: cannot subscribe to /topic/secret")
    c = await client()
    await c.send_frame("SEND", {"destination": "/topic/secret.x", "receipt": "9"}, "x")
    frame = await c.receive_frame()
    assert frame.get("message") == "permission denied: cannot send to /topic/secret.x"
    assert frame.get("receipt-id") == "9"


async def test_foreign_origin_is_refused():
    communicator = StompCommunicator(
        application, "/ws", headers=[(b"origin", b"http://evil.example")]
    )
    connected, code = await communicator.connect()
    assert not connected and code == 4003


async def test_allowed_origin_is_accepted():
    communicator = StompCommunicator(
        application, "/ws", headers=[(b"origin", b"http://localhost:8000")]
    )
    await communicator.connect_stomp()
    await communicator.disconnect()


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
async def test_every_version_round_trips_escaped_headers(version):
    c = await client(version)
    await c.send_frame("SUBSCRIBE", {"id": "v", "destination": "/topic/v", "receipt": "r"})
    await c.receive_frame()
    value = "plain" if version == "1.0" else "a:b\\c"
    await c.send_frame("SEND", {"destination": "/topic/v", "x-h": value}, "body")
    frame = await c.receive_frame()
    assert frame.get("x-h") == value
    await c.disconnect()


async def test_transaction_delivers_only_on_commit():
    c = await client()
    await c.send_frame("SUBSCRIBE", {"id": "t", "destination": "/topic/tx", "receipt": "r"})
    await c.receive_frame()
    await c.send_frame("BEGIN", {"transaction": "tx1"})
    await c.send_frame("SEND", {"destination": "/topic/tx", "transaction": "tx1"}, "one")
    assert await c.receive_nothing(0.2)
    await c.send_frame("COMMIT", {"transaction": "tx1", "receipt": "c"})
    frames = [await c.receive_frame(), await c.receive_frame()]
    assert [f.command for f in frames] == [Command.MESSAGE, Command.RECEIPT]
    await c.send_frame("BEGIN", {"transaction": "tx2"})
    await c.send_frame("SEND", {"destination": "/topic/tx", "transaction": "tx2"}, "two")
    await c.send_frame("ABORT", {"transaction": "tx2", "receipt": "a"})
    assert (await c.receive_frame()).command is Command.RECEIPT
    assert await c.receive_nothing(0.2)
    await c.disconnect()


async def test_disconnect_with_receipt_then_close():
    c = await client()
    await c.send_frame("DISCONNECT", {"receipt": "bye"})
    frame = await c.receive_frame()
    assert frame.command is Command.RECEIPT and frame.get("receipt-id") == "bye"
    assert await c.receive_close() == 1000


@override_settings(STOMP_CLUSTER={"HEARTBEAT_SEND_MS": 50, "HEARTBEAT_RECEIVE_MS": 0})
async def test_server_sends_heartbeats_when_asked():
    c = await client(headers={"heart-beat": "0,50"})
    frames = []
    for _ in range(3):
        message = await c.receive_output(1)
        frames.append(message.get("text"))
    assert frames == ["\n", "\n", "\n"]
    await c.disconnect()


@override_settings(STOMP_CLUSTER={"HEARTBEAT_SEND_MS": 10, "HEARTBEAT_RECEIVE_MS": 10})
async def test_heart_beats_keep_one_timer_each_however_long_the_session_lives():
    from stomp_cluster.node import get_node

    c = await client(headers={"heart-beat": "10,10"})
    (consumer,) = get_node().sessions.values()
    for _ in range(30):  # thirty beats each way, about 0.3 s
        assert (await c.receive_output(1)).get("text") == "\n"
        await c.send_to(text_data="\n")
    # One pending timer to send the next beat, one to check the client's: a list of
    # every timer ever armed would have grown by two per beat, for as long as it lives.
    assert sorted(consumer._timers) == ["check", "send"]
    assert all(not t.cancelled() for t in consumer._timers.values())
    await c.disconnect()
    assert consumer._timers == {}


@override_settings(STOMP_CLUSTER={"HEARTBEAT_RECEIVE_MS": 50, "HEARTBEAT_GRACE_MS": 50})
async def test_silent_client_is_closed_after_interval_plus_grace():
    events = []

    async def receiver(sender, reason, **kwargs):
        events.append(reason)

    signals.stomp_disconnected.connect(receiver)
    try:
        c = await client(headers={"heart-beat": "50,0"})
        await assert_error_and_close(c, "no heart-beat from the client")
        await asyncio.sleep(0.05)
        assert events == ["heartbeat_timeout"]
    finally:
        signals.stomp_disconnected.disconnect(receiver)


async def test_signals_fire_once_each_with_session_and_reason():
    seen = []

    def record(name):
        async def receiver(sender, **kwargs):
            assert sender is StompConsumer
            seen.append((name, kwargs.get("destination"), kwargs.get("reason")))

        return receiver

    receivers = {
        signals.stomp_connected: record("connected"),
        signals.stomp_subscribed: record("subscribed"),
        signals.stomp_unsubscribed: record("unsubscribed"),
        signals.stomp_disconnected: record("disconnected"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        c = await client()
        await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/s", "receipt": "r"})
        await c.receive_frame()
        await c.send_frame("DISCONNECT", {"receipt": "d"})
        await c.receive_frame()
        await c.receive_close()
        await c.disconnect()
        await asyncio.sleep(0.05)
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    assert seen == [
        ("connected", None, None),
        ("subscribed", "/topic/s", None),
        ("unsubscribed", "/topic/s", None),
        ("disconnected", None, "client"),
    ]


async def test_failing_signal_receiver_does_not_break_the_connection(caplog):
    def broken(sender, **kwargs):
        raise ValueError("receiver bug")

    signals.stomp_subscribed.connect(broken)
    try:
        c = await client()
        await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/s", "receipt": "r"})
        assert (await c.receive_frame()).command is Command.RECEIPT
        await c.disconnect()
    finally:
        signals.stomp_subscribed.disconnect(broken)
    assert "receiver bug" in caplog.text


async def test_malformed_frame_gets_error_and_close():
    c = await client()
    await c.send_to(text_data="BOGUS\n\n\x00")
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR and "unknown command" in (frame.get("message") or "")
    assert await c.receive_close() == 1000


@override_settings(STOMP_CLUSTER={"MAX_OUTBOX": 5, "NODE_ID": "test-node"})
async def test_client_that_falls_behind_is_closed_as_slow_consumer_and_others_keep_going():
    from stomp_cluster.node import get_node

    reasons = []

    async def receiver(sender, reason, **kwargs):
        reasons.append(reason)

    signals.stomp_disconnected.connect(receiver)
    try:
        slow, fast = await client(), await client()
        for c in (slow, fast):
            await c.send_frame(
                "SUBSCRIBE", {"id": "1", "destination": "/topic/firehose", "receipt": "r"}
            )
            await c.receive_frame()
        node = get_node()
        # Ten messages queued for the slow socket before its writer gets a turn.
        slow_consumer = next(s for s in node.sessions.values() if s.session_id != "")
        for n in range(10):
            slow_consumer.deliver("/topic/firehose", str(n).encode(), ())
        frames = [await slow.receive_frame() for _ in range(6)]
        assert [f.body for f in frames[:5]] == [b"0", b"1", b"2", b"3", b"4"]
        assert frames[5].command is Command.ERROR
        assert frames[5].get("message") == "slow consumer: more than 5 messages waiting"
        await asyncio.sleep(0.05)
        assert reasons == ["slow_consumer"]
        assert node.stats["slow_consumer"] == 1
        assert node.stats["dropped_slow_consumer"] == 5
        assert node.stats["delivered"] == 5
        node.deliver(Publish("/topic/firehose", b"still flowing", ()))
        assert (await fast.receive_frame()).body == b"still flowing"
        await fast.disconnect()
    finally:
        signals.stomp_disconnected.disconnect(receiver)


def deny_app(user, action, destination):
    return not destination.startswith("/app/")


@override_settings(STOMP_CLUSTER={"PERMISSION_HOOK": "tests.test_consumer.deny_app"})
async def test_permission_hook_is_asked_about_app_destinations_too():
    c = await client()
    await c.send_frame("SEND", {"destination": "/app/echo", "receipt": "5"}, "x")
    frame = await c.receive_frame()
    assert frame.get("message") == "permission denied: cannot send to /app/echo"
    assert frame.get("receipt-id") == "5"


async def test_refused_subscribe_error_answers_its_receipt():
    c = await client()
    await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/elsewhere", "receipt": "42"})
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "unknown destination /elsewhere"
    assert frame.get("receipt-id") == "42"
    assert await c.receive_close() == 1000


async def test_send_that_cannot_be_routed_is_refused_with_the_reason(monkeypatch):
    from stomp_cluster.backends import get_presence
    from stomp_cluster.exceptions import PresenceUnavailable

    c = await client()

    async def down(destination):
        raise PresenceUnavailable("registry down")

    monkeypatch.setattr(get_presence(), "destination_nodes", down)
    await c.send_frame("SEND", {"destination": "/topic/t", "receipt": "7"}, "x")
    frame = await c.receive_frame()
    assert frame.get("message") == (
        "message not delivered: presence registry unavailable: cannot route the message"
    )
    assert frame.get("receipt-id") == "7"
