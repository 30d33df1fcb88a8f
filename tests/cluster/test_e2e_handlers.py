"""``/app/`` handlers end to end: replies, subscribe replies and errors that keep the
session, with stomp.py and @stomp/stompjs against a real 2-node daphne cluster.

The handlers are the demo project's (testproject/stomp_handlers.py): ``/app/chat``
answers on ``/topic/chat``, ``/app/note`` on the sender's ``/user/queue/notes``,
``SUBSCRIBE /app/whoami`` once, and ``/app/fail`` raises ``HandlerError("nope")``. The
nodes are shared by the module, so each test looks for bodies of its own (``unique()``).
Where a test shows that something did not arrive, it waits for a later marker instead of
sleeping.
"""

from __future__ import annotations

import json

from tests.support.clients import unique
from tests.support.stompjs import messages_of


def on_sub(sub_id):
    return lambda m: m.headers.get("subscription") == sub_id


# -- stomp.py --------------------------------------------------------------------------------


def test_chat_reply_reaches_a_subscriber_on_the_other_node(two_nodes, stomppy):
    node_a, node_b = two_nodes
    bob = stomppy(node_b, "bob")
    bob.subscribe("/topic/chat", "chat")
    alice = stomppy(node_a, "alice")
    text = unique("hello")
    alice.send("/app/chat", f"  {text}  ")
    message = bob.wait_for_message(lambda m: m.body == text)
    assert message.headers["destination"] == "/topic/chat"
    assert message.headers["x-sender"] == "alice"
    assert message.headers["content-type"].startswith("text/plain")


def test_send_to_user_reaches_the_senders_sessions_on_both_nodes_only(two_nodes, stomppy):
    node_a, node_b = two_nodes
    here, there = stomppy(node_a, "alice"), stomppy(node_b, "alice")
    carol = stomppy(node_b, "carol")
    for c in (here, there, carol):
        c.subscribe("/user/queue/notes", "notes")
    note = unique("note")
    here.send("/app/note", note)
    for c in (here, there):
        assert c.wait_for_message(lambda m, note=note: m.body == note).headers["destination"] == (
            "/user/queue/notes"
        )
    # carol's own note comes after alice's would have: she sees hers only.
    mine = unique("carol")
    carol.send("/app/note", mine)
    carol.wait_for_message(lambda m: m.body == mine)
    assert [m.body for m in carol.listener.messages] == [mine]


def test_whoami_answers_once_with_the_username_and_nothing_later(two_nodes, stomppy):
    node_a, _ = two_nodes
    carol = stomppy(node_a, "carol")
    carol.subscribe("/app/whoami", "me")  # waits for the RECEIPT, which follows the answer
    answers = [m for m in carol.listener.messages if m.headers["subscription"] == "me"]
    assert len(answers) == 1
    assert answers[0].headers["destination"] == "/app/whoami"
    assert answers[0].headers["message-id"]
    assert json.loads(answers[0].body)["username"] == "carol"
    # Later traffic on this session (a chat reply, from the other node) comes, and
    # nothing more on "me".
    carol.subscribe("/topic/chat", "chat")
    text = unique("later")
    stomppy(two_nodes[1], "bob").send("/app/chat", text)
    carol.wait_for_message(lambda m: m.body == text)
    assert len([m for m in carol.listener.messages if m.headers["subscription"] == "me"]) == 1


def test_handler_error_reaches_the_sender_and_the_session_goes_on(two_nodes, stomppy):
    node_a, node_b = two_nodes
    alice = stomppy(node_a, "alice")
    other_tab = stomppy(node_b, "alice")
    for c in (alice, other_tab):
        c.subscribe("/user/queue/errors", "errors")
        c.subscribe("/topic/chat", "chat")
    receipt = unique("fail")
    alice.send("/app/fail", "x", receipt=receipt)  # waits for the RECEIPT
    error = alice.wait_for_message(on_sub("errors"))
    assert json.loads(error.body) == {
        "error": "nope",
        "destination": "/app/fail",
        "receipt": receipt,
    }
    assert error.headers["x-error-destination"] == "/app/fail"
    assert not alice.listener.errors
    # Same session, next SEND: it works, and reaches the other node.
    text = unique("after")
    alice.send("/app/chat", text)
    for c in (alice, other_tab):
        c.wait_for_message(lambda m, text=text: m.body == text)
    # The error went to the sending session alone, not to alice's other session.
    assert not [m for m in other_tab.listener.messages if m.headers["subscription"] == "errors"]


# -- @stomp/stompjs ---------------------------------------------------------------------------


def test_stompjs_chat_reply_crosses_nodes(two_nodes, stompjs):
    node_a, node_b = two_nodes
    bob = stompjs(node_b, "bob")
    bob.subscribe("/topic/chat", "chat", receipt="r")
    alice = stompjs(node_a, "alice")
    text = unique("js-hello")
    alice.send("/app/chat", text)
    message = bob.wait_for_message(lambda e: e["body"] == text)
    assert message["headers"]["x-sender"] == "alice"


def test_stompjs_whoami_answers_once(two_nodes, stompjs):
    node_a, _ = two_nodes
    c = stompjs(node_a, "carol")
    sub = c.subscribe("/app/whoami", receipt="r-me")  # stompjs picks the id
    answers = c.find("message", lambda e: e["headers"].get("subscription") == sub)
    assert len(answers) == 1
    assert json.loads(answers[0]["body"])["username"] == "carol"
    c.subscribe("/user/queue/echo", "echo", receipt="r-echo")
    token = unique("js-echo")
    c.send("/app/echo", token)
    c.wait_for_message(lambda e: e["body"] == token)
    assert len(messages_of(c, sub)) == 1


def test_stompjs_handler_error_keeps_the_session(two_nodes, stompjs):
    node_a, node_b = two_nodes
    alice = stompjs(node_a, "alice")
    bob = stompjs(node_b, "bob")
    alice.subscribe("/user/queue/errors", "errors", receipt="r-err")
    bob.subscribe("/topic/chat", "chat", receipt="r-chat")
    alice.send("/app/fail", "x", receipt="r-fail")
    error = alice.wait_for_message(lambda e: e["headers"].get("subscription") == "errors")
    assert json.loads(error["body"])["error"] == "nope"
    alice.send("/app/chat", "   ", receipt="r-empty")  # refused by the handler, too
    refusals = alice.wait_for_messages(
        2, lambda e: e["headers"].get("subscription") == "errors", timeout=10
    )
    assert json.loads(refusals[1]["body"])["error"] == "empty message"
    text = unique("js-after")
    alice.send("/app/chat", text)
    bob.wait_for_message(lambda e: e["body"] == text)
    assert not alice.find(("error", "ws-close"))
