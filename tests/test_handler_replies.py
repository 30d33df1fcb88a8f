"""Handler replies (``@SendTo``/``@SendToUser``), subscribe replies (``@SubscribeMapping``)
and handler errors that keep the session (``/user/queue/errors``), in-process.

The demo project's handlers (testproject/stomp_handlers.py: ``/app/chat``,
``/app/whoami``, ``/app/fail``) are used where they fit; the others are registered here
and forgotten after each test (the ``handlers`` fixture).
"""

from __future__ import annotations

import json
import logging

import pytest
from django.test import override_settings

from stomp_cluster.handlers import HandlerError, Reply, message_mapping, subscribe_mapping
from stomp_cluster.protocol import Command
from stomp_cluster.queries import asubscriber_count
from tests.support.communicator import (
    assert_error_and_close,
    connected_client,
    login_headers,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


async def subscribe(c, destination, sub_id="s", **headers):
    """SUBSCRIBE and wait for the RECEIPT, so that what follows is routed."""
    await c.send_frame(
        "SUBSCRIBE", {"id": sub_id, "destination": destination, "receipt": "sub", **headers}
    )
    frame = await c.receive_frame()
    assert frame.command is Command.RECEIPT, frame
    return frame


async def send_with_receipt(c, destination, body, receipt="done"):
    """SEND asking for a receipt; return the frames up to and including the RECEIPT."""
    await c.send_frame("SEND", {"destination": destination, "receipt": receipt}, body)
    frames = []
    while not frames or frames[-1].command is not Command.RECEIPT:
        frames.append(await c.receive_frame())
    assert frames[-1].get("receipt-id") == receipt
    return frames


# -- @SendTo: the return value goes to /topic/<path> or send_to ------------------------


async def test_chat_return_value_reaches_every_topic_subscriber_with_the_sender():
    alice = await connected_client(headers=await login_headers("alice"))
    bob = await connected_client()
    await subscribe(bob, "/topic/chat")
    await alice.send_frame("SEND", {"destination": "/app/chat"}, "  hello all ")
    frame = await bob.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("destination") == "/topic/chat"
    assert frame.body == b"hello all"  # what the handler returned, not what was sent
    assert frame.get("x-sender") == "alice"
    assert frame.get("content-type") == "text/plain;charset=utf-8"
    await alice.disconnect()
    await bob.disconnect()


async def test_send_to_fills_in_the_pattern_and_encodes_dicts_as_json(handlers):
    @message_mapping("/rooms/{room}", send_to="/topic/room.{room}")
    def post(request, room):
        return {"room": room, "text": request.text()}

    c = await connected_client()
    await subscribe(c, "/topic/room.lobby")
    await c.send_frame("SEND", {"destination": "/app/rooms/lobby"}, "hi")
    frame = await c.receive_frame()
    assert frame.get("destination") == "/topic/room.lobby"
    assert frame.get("content-type") == "application/json"
    assert json.loads(frame.body) == {"room": "lobby", "text": "hi"}
    assert frame.get("x-sender") is None  # anonymous sender
    await c.disconnect()


async def test_a_reply_object_sets_headers_and_content_type_but_not_server_headers(handlers):
    @message_mapping("/raw", send_to="/topic/raw")
    async def raw(request):
        return Reply(
            b"\x00\x01",
            headers={"x-kind": "raw", "message-id": "forged", "x-sender": "the-bot"},
            content_type="application/octet-stream",
        )

    alice = await connected_client(headers=await login_headers("alice"))
    await subscribe(alice, "/topic/raw")
    await alice.send_frame("SEND", {"destination": "/app/raw"}, "")
    frame = await alice.receive_frame()
    assert frame.body == b"\x00\x01"
    assert frame.get("x-kind") == "raw"
    assert frame.get("content-type") == "application/octet-stream"
    assert frame.get("message-id") != "forged"
    assert frame.get("x-sender") == "the-bot"  # set by the handler, which we trust
    await alice.disconnect()


async def test_returning_none_sends_nothing(handlers):
    @message_mapping("/quiet")
    async def quiet(request):
        return None

    c = await connected_client()
    await subscribe(c, "/topic/quiet")
    frames = await send_with_receipt(c, "/app/quiet", "x")
    await c.send_frame("SEND", {"destination": "/topic/quiet"}, "marker")
    assert [f.command for f in frames] == [Command.RECEIPT]
    assert (await c.receive_frame()).body == b"marker"
    await c.disconnect()


def test_send_to_and_send_to_user_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        message_mapping("/x", send_to="/topic/x", send_to_user="/queue/x")


def test_send_to_with_a_placeholder_the_pattern_lacks_is_refused():
    with pytest.raises(ValueError, match="names room, which the pattern '/x' does not have"):
        message_mapping("/x", send_to="/topic/{room}")


# -- @SendToUser --------------------------------------------------------------------------


async def test_send_to_user_reaches_every_session_of_the_user_and_nobody_else(handlers):
    @message_mapping("/ask", send_to_user="/queue/answer")
    async def ask(request):
        return f"answer to {request.text()}"

    headers = await login_headers("alice")
    alice1, alice2 = (
        await connected_client(headers=headers),
        await connected_client(headers=headers),
    )
    bob = await connected_client(headers=await login_headers("bob"))
    for c in (alice1, alice2, bob):
        await subscribe(c, "/user/queue/answer")
    await alice1.send_frame("SEND", {"destination": "/app/ask"}, "q1")
    for c in (alice1, alice2):
        frame = await c.receive_frame()
        assert frame.get("destination") == "/user/queue/answer"
        assert frame.body == b"answer to q1"
    assert await bob.receive_nothing(0.2)
    for c in (alice1, alice2, bob):
        await c.disconnect()


async def test_send_to_user_from_an_anonymous_sender_reaches_that_session_only(handlers):
    @message_mapping("/ask", send_to_user="/queue/answer")
    async def ask(request):
        return "yes"

    asker, other = await connected_client(), await connected_client()
    for c in (asker, other):
        await subscribe(c, "/user/queue/answer")
    await asker.send_frame("SEND", {"destination": "/app/ask"}, "")
    assert (await asker.receive_frame()).body == b"yes"
    assert await other.receive_nothing(0.2)
    await asker.disconnect()
    await other.disconnect()


# -- @SubscribeMapping ------------------------------------------------------------------


async def test_whoami_answers_once_on_that_subscription_then_the_receipt():
    alice = await connected_client(headers=await login_headers("alice"))
    await alice.send_frame("SUBSCRIBE", {"id": "me", "destination": "/app/whoami", "receipt": "r"})
    frame = await alice.receive_frame()
    assert frame.command is Command.MESSAGE
    assert frame.get("subscription") == "me"
    assert frame.get("destination") == "/app/whoami"
    assert frame.get("message-id")
    assert json.loads(frame.body)["username"] == "alice"
    receipt = await alice.receive_frame()
    assert receipt.command is Command.RECEIPT and receipt.get("receipt-id") == "r"
    # Not a broker subscription: the registry does not know of it, nothing else comes.
    assert await asubscriber_count("/app/whoami") == 0
    await subscribe(alice, "/topic/after", "2")
    await alice.send_frame("SEND", {"destination": "/topic/after"}, "next")
    assert (await alice.receive_frame()).body == b"next"
    await alice.disconnect()


async def test_subscribe_handler_gets_placeholders_and_the_subscribe_frame(handlers):
    @subscribe_mapping("/rooms/{room}/state")
    async def state(request, room):
        return {"room": room, "frame": request.frame.command.value, "x": request.headers["x"]}

    c = await connected_client()
    await c.send_frame("SUBSCRIBE", {"id": "7", "destination": "/app/rooms/r1/state", "x": "y"})
    frame = await c.receive_frame()
    assert frame.get("subscription") == "7"
    assert json.loads(frame.body) == {"room": "r1", "frame": "SUBSCRIBE", "x": "y"}
    await c.disconnect()


async def test_subscribe_to_an_app_destination_without_a_handler_is_an_error():
    c = await connected_client()
    await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/app/chat", "receipt": "9"})
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "no subscribe handler for destination /app/chat"
    assert frame.get("receipt-id") == "9"
    assert await c.receive_close() == 1000


def deny_app_subscribe(user, action, destination):
    return not (action == "subscribe" and destination.startswith("/app/"))


@override_settings(
    STOMP_CLUSTER={"PERMISSION_HOOK": "tests.test_handler_replies.deny_app_subscribe"}
)
async def test_permission_hook_is_asked_about_app_subscriptions():
    c = await connected_client()
    await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/app/whoami"})
    await assert_error_and_close(c, "permission denied: cannot subscribe to /app/whoami")


# -- errors that keep the session ----------------------------------------------------------


async def test_handler_error_reaches_the_sender_on_its_errors_queue_and_the_session_goes_on():
    c = await connected_client()
    await subscribe(c, "/user/queue/errors", "err")
    await subscribe(c, "/topic/chat", "chat")
    frames = await send_with_receipt(c, "/app/fail", "x", receipt="f1")
    error, receipt = frames
    assert error.command is Command.MESSAGE
    assert error.get("subscription") == "err"
    assert error.get("destination") == "/user/queue/errors"
    assert error.get("x-error-destination") == "/app/fail"
    assert error.get("content-type") == "application/json"
    assert json.loads(error.body) == {"error": "nope", "destination": "/app/fail", "receipt": "f1"}
    assert receipt.command is Command.RECEIPT
    await c.send_frame("SEND", {"destination": "/app/chat"}, "still here")
    frame = await c.receive_frame()
    assert (frame.get("subscription"), frame.body) == ("chat", b"still here")
    await c.disconnect()


async def test_handler_error_goes_to_the_sending_session_not_the_users_others():
    headers = await login_headers("alice")
    sender, other_tab = (
        await connected_client(headers=headers),
        await connected_client(headers=headers),
    )
    for c in (sender, other_tab):
        await subscribe(c, "/user/queue/errors")
    await sender.send_frame("SEND", {"destination": "/app/chat"}, "   ")
    assert json.loads((await sender.receive_frame()).body)["error"] == "empty message"
    assert await other_tab.receive_nothing(0.2)
    await sender.disconnect()
    await other_tab.disconnect()


async def test_subscribe_handler_error_reaches_the_errors_queue_and_the_receipt_follows(handlers):
    @subscribe_mapping("/secret")
    def secret(request):
        raise HandlerError("not for you")

    c = await connected_client()
    await subscribe(c, "/user/queue/errors", "err")
    await c.send_frame("SUBSCRIBE", {"id": "x", "destination": "/app/secret", "receipt": "r"})
    error = await c.receive_frame()
    assert error.get("subscription") == "err"
    assert json.loads(error.body) == {
        "error": "not for you",
        "destination": "/app/secret",
        "receipt": "r",
    }
    assert (await c.receive_frame()).get("receipt-id") == "r"
    await c.disconnect()


async def test_handler_error_without_an_errors_subscription_is_dropped_and_logged(caplog):
    c = await connected_client()
    with caplog.at_level(logging.INFO, logger="stomp_cluster.consumer"):
        frames = await send_with_receipt(c, "/app/fail", "x")
    assert [f.command for f in frames] == [Command.RECEIPT]
    assert "handler error 'nope' dropped, no subscription to '/user/queue/errors'" in caplog.text
    await subscribe(c, "/topic/chat")
    await c.send_frame("SEND", {"destination": "/app/chat"}, "open")
    assert (await c.receive_frame()).body == b"open"
    await c.disconnect()


async def test_unexpected_exception_still_closes_the_session_by_default(handlers):
    @message_mapping("/boom")
    async def boom(request):
        raise RuntimeError("secret detail")

    c = await connected_client()
    await subscribe(c, "/user/queue/errors")
    await c.send_frame("SEND", {"destination": "/app/boom"}, "x")
    await assert_error_and_close(c, "internal error")


@override_settings(STOMP_CLUSTER={"HANDLER_EXCEPTIONS_KEEP_SESSION": True})
async def test_with_keep_session_an_unexpected_exception_is_a_generic_error_message(
    handlers, caplog
):
    @message_mapping("/boom")
    def boom(request):
        raise RuntimeError("secret detail")

    c = await connected_client()
    await subscribe(c, "/user/queue/errors")
    with caplog.at_level(logging.ERROR, logger="stomp_cluster.consumer"):
        error, receipt = await send_with_receipt(c, "/app/boom", "x", receipt="b")
    assert json.loads(error.body) == {
        "error": "internal error",
        "destination": "/app/boom",
        "receipt": "b",
    }
    assert b"secret" not in error.body
    assert receipt.command is Command.RECEIPT
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info and "secret detail" in caplog.text
    await c.send_frame("SEND", {"destination": "/app/fail"}, "x")
    assert json.loads((await c.receive_frame()).body)["error"] == "nope"
    await c.disconnect()


@override_settings(STOMP_CLUSTER={"HANDLER_EXCEPTIONS_KEEP_SESSION": True})
async def test_with_keep_session_protocol_errors_still_close():
    c = await connected_client()
    await c.send_frame("SEND", {}, "no destination")
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert await c.receive_close() == 1000


async def test_a_reply_that_cannot_be_routed_closes_the_session_with_the_reason(monkeypatch):
    from stomp_cluster.backends import get_presence
    from stomp_cluster.exceptions import PresenceUnavailable

    c = await connected_client()

    async def down(destination):
        raise PresenceUnavailable("registry down")

    monkeypatch.setattr(get_presence(), "destination_nodes", down)
    await c.send_frame("SEND", {"destination": "/app/chat", "receipt": "7"}, "x")
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == (
        "message not delivered: presence registry unavailable: cannot route the message"
    )
    assert frame.get("receipt-id") == "7"
    assert await c.receive_close() == 1000


async def test_a_subscribe_handler_that_returns_none_sends_only_the_receipt(handlers):
    @subscribe_mapping("/nothing")
    async def nothing(request):
        return None

    c = await connected_client()
    await c.send_frame("SUBSCRIBE", {"id": "n", "destination": "/app/nothing", "receipt": "r"})
    assert (await c.receive_frame()).get("receipt-id") == "r"
    await subscribe(c, "/topic/next", "2")
    await c.send_frame("SEND", {"destination": "/topic/next"}, "next")
    frame = await c.receive_frame()
    assert (frame.get("subscription"), frame.body) == ("2", b"next")
    await c.disconnect()


async def test_a_return_value_that_is_not_json_is_an_internal_error(handlers, caplog):
    @message_mapping("/odd")
    async def odd(request):
        return object()

    c = await connected_client()
    await c.send_frame("SEND", {"destination": "/app/odd"}, "x")
    await assert_error_and_close(c, "internal error")
    assert "is not JSON serializable" in caplog.text


async def test_send_to_user_without_broadcast_reaches_the_sending_session_only(handlers):
    @message_mapping("/ask", send_to_user="/queue/answer", broadcast=False)
    async def ask(request):
        return "just you"

    headers = await login_headers("alice")
    sender, other_tab = (
        await connected_client(headers=headers),
        await connected_client(headers=headers),
    )
    for c in (sender, other_tab):
        await subscribe(c, "/user/queue/answer")
    await sender.send_frame("SEND", {"destination": "/app/ask"}, "")
    assert (await sender.receive_frame()).body == b"just you"
    assert await other_tab.receive_nothing(0.2)
    await sender.disconnect()
    await other_tab.disconnect()


def test_broadcast_without_send_to_user_is_refused():
    with pytest.raises(ValueError, match="broadcast=False goes with send_to_user"):
        message_mapping("/x", broadcast=False)
