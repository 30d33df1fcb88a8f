"""End to end with @stomp/stompjs 7 (under Node) against a real 2-node daphne cluster.

stompjs is what browsers run, so these tests follow what a web page does. Skipped when
``node`` is not installed. Destinations are unique per test: the nodes are shared.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterator

import pytest

from tests.support.clients import StompPyClient, unique
from tests.support.cluster import topic_pair, user_queue_pair
from tests.support.nodes import AsgiNode
from tests.support.stompjs import StompJsClient, body_bytes, received_before_marker

JsFactory = Callable[..., StompJsClient]


@pytest.fixture
def js(tokens: Callable[[str], str]) -> Iterator[JsFactory]:
    """``js(node, user="alice", versions=None, **connect_kwargs)``: a connected client."""
    opened: list[StompJsClient] = []

    def make(
        node: AsgiNode, user: str = "alice", *, connect: bool = True, **kwargs: object
    ) -> StompJsClient:
        c = StompJsClient()
        opened.append(c)
        if connect:
            c.connect(node.ws_url, login=user, passcode=tokens(user), **kwargs)  # type: ignore[arg-type]
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def across(two_nodes: list[AsgiNode], js: JsFactory) -> Callable[..., tuple]:
    """``receiver, sender, dest = across("name", **options, sender={...})``: see
    :func:`tests.support.cluster.topic_pair`."""
    return functools.partial(topic_pair, two_nodes, js)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_every_version_connects_and_round_trips_a_message(two_nodes, js, version):
    node_a, _ = two_nodes
    c = js(node_a, versions=[version])
    connected = c.wait_for("connected")
    assert connected["headers"].get("version", "1.0") == version
    assert connected["headers"].get("session")
    assert connected["headers"].get("server")
    dest = f"/topic/{unique('js')}"
    sub = c.subscribe(dest, "sub-1", receipt="r-sub")
    c.send(dest, f"hello {version}")
    message = c.wait_for_message()
    assert message["body"] == f"hello {version}"
    assert message["headers"]["subscription"] == sub
    assert message["headers"]["destination"] == dest
    c.disconnect()
    c.wait_for("disconnected")
    c.wait_for("ws-close")


def test_stompjs_offers_all_versions_and_gets_1_2(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a)
    assert c.wait_for("ws-open")["protocol"] == "v12.stomp"
    assert c.wait_for("connected")["version"] == "1.2"


def test_topic_send_on_node_a_reaches_subscriber_on_node_b(across):
    receiver, sender, dest = across("x")
    sender.send(dest, "across", {"x-trace": "42"})
    message = receiver.wait_for_message()
    assert message["body"] == "across"
    assert message["headers"]["x-trace"] == "42"


def test_echo_replies_on_the_user_queue(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a, "carol")
    c.subscribe("/user/queue/echo", "echo", receipt="r")
    token = unique("ping")
    c.send("/app/echo", token)
    reply = c.wait_for_message()
    assert token in reply["body"]
    assert reply["headers"]["subscription"] == "echo"


def test_receipts_for_send_subscribe_unsubscribe_and_disconnect(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a)
    dest = f"/topic/{unique('rcpt')}"
    sub = c.subscribe(dest, receipt="r-sub")
    c.send(dest, "one", receipt="r-send")
    c.wait_for_message(lambda e: e["body"] == "one")
    c.unsubscribe(sub, receipt="r-unsub")
    c.disconnect()
    assert c.wait_for("disconnected")["headers"]["receipt-id"]
    assert c.find("error") == []


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_ack_and_nack_in_client_modes(two_nodes, js, version, mode):
    node_a, node_b = two_nodes
    dest = f"/queue/{unique('ack')}"
    c = js(node_b, "bob", versions=[version])
    c.subscribe(dest, "s", {"ack": mode}, receipt="r")
    sender = js(node_a, "alice")
    for i in range(3):
        sender.send(dest, f"m{i}")
    first, second, third = c.wait_for_messages(3)
    if version == "1.2":
        assert first["headers"].get("ack")
    c.ack(first, headers={"receipt": "r-ack"})
    c.wait_for_receipt("r-ack")
    c.nack(second, headers={"receipt": "r-nack"})
    c.wait_for_receipt("r-nack")
    c.ack(third)
    sender.send(dest, "alive")
    c.wait_for_message(lambda e: e["body"] == "alive")
    assert c.find("error") == []


@pytest.mark.parametrize("mode", ["client", "client-individual"])
def test_a_nacked_message_on_a_user_queue_comes_again_redelivered(two_nodes, js, mode):
    bob, alice, to_bob, sub = user_queue_pair(two_nodes, js, "nack", headers={"ack": mode})
    alice.send(to_bob, "job", receipt="r-job")
    first = bob.wait_for_message()
    assert first["body"] == "job"
    assert "redelivered" not in first["headers"]
    bob.nack(first, headers={"receipt": "r-nack"})
    bob.wait_for_receipt("r-nack")
    again = bob.wait_for_messages(2)[1]
    assert again["body"] == "job"
    assert again["headers"]["message-id"] == first["headers"]["message-id"]
    assert again["headers"].get("redelivered") == "true"
    bob.ack(again, headers={"receipt": "r-ack"})
    bob.wait_for_receipt("r-ack")
    # Acknowledged now: no third copy.
    assert received_before_marker(alice, to_bob, bob, sub) == ["job", "job"]
    assert bob.find("error") == []


def test_transaction_commit_and_abort(two_nodes, js):
    node_a, node_b = two_nodes
    dest = f"/topic/{unique('tx')}"
    receiver = js(node_b, "bob")
    sub = receiver.subscribe(dest, receipt="r")
    c = js(node_a)

    tx = c.begin("tx-commit")
    c.send(dest, "committed", {"transaction": tx})
    assert received_before_marker(c, dest, receiver, sub) == []
    c.commit(tx)
    receiver.wait_for_message(lambda e: e["body"] == "committed")

    tx = c.begin("tx-abort")
    c.send(dest, "aborted", {"transaction": tx})
    c.abort(tx)
    first_marker, *rest = received_before_marker(c, dest, receiver, sub)
    assert rest == ["committed"]  # and never "aborted"
    assert c.find("error") == []


def test_header_escaping_round_trips_in_1_2(across):
    # stompjs escapes header values in 1.2 only, and trims their whitespace.
    receiver, sender, dest = across("esc", versions=["1.2"], sender={"versions": ["1.2"]})
    headers = {"x-colon": "a:b", "x-nl": "one\ntwo", "x-bs": "back\\slash", "x-cr": "c\rr"}
    sender.send(dest, "escaped", headers)
    message = receiver.wait_for_message()
    for name, value in headers.items():
        assert message["headers"].get(name) == value, name


def test_stompjs_receives_headers_escaped_by_stomppy(two_nodes, js, tokens):
    node_a, node_b = two_nodes
    dest = f"/topic/{unique('esc2')}"
    receiver = js(node_b, "bob")
    receiver.subscribe(dest, receipt="r")
    with StompPyClient(node_a.ws_url, "1.2") as sender:
        sender.connect("alice", tokens("alice"))
        sender.send(dest, "x", headers={"x-h": "a:b\\d\ne"}, receipt=True)
    # No backslash right before a "c": stompjs 7.5 unescapes with chained replace()
    # calls, so it reads the escaped backslash + "c" as a backslash + ":" (its bug).
    assert receiver.wait_for_message()["headers"]["x-h"] == "a:b\\d\ne"


def test_binary_body_with_nul_bytes(across):
    receiver, sender, dest = across("bin")
    body = b"\x00\x01\xff\xfe" + bytes(range(256)) + b"\x00"
    sender.send(dest, binary_body=body, headers={"content-type": "application/octet-stream"})
    message = receiver.wait_for_message()
    assert body_bytes(message) == body
    assert message["headers"]["content-length"] == str(len(body))


def test_a_thousand_messages_arrive_in_order(across):
    receiver, sender, dest = across("order")
    for i in range(1000):
        sender.send(dest, str(i))
    messages = receiver.wait_for_messages(1000, timeout=90)
    assert [m["body"] for m in messages] == [str(i) for i in range(1000)]


def test_a_one_mebibyte_body(across):
    receiver, sender, dest = across("big")
    body = ("abcdefghijklmnop" * 65536)[: 1024 * 1024]
    sender.send(dest, body, receipt="r-big", timeout=30)
    message = receiver.wait_for_message(timeout=30)
    assert message["length"] == len(body)
    assert message["body"] == body


def test_large_frames_split_into_websocket_chunks(across):
    receiver, sender, dest = across(
        "chunks", sender={"split_large_frames": True, "max_websocket_chunk_size": 1000}
    )
    body = "".join(f"{i:06d}é" for i in range(5000))
    sender.send(dest, body, receipt="r-split")
    assert receiver.wait_for_message()["body"] == body


def test_binary_websocket_frames(across):
    receiver, sender, dest = across(
        "binws", force_binary_ws_frames=True, sender={"force_binary_ws_frames": True}
    )
    sender.send(dest, "in binary messages", receipt="r-bin")
    assert receiver.wait_for_message()["body"] == "in binary messages"


def test_malformed_frame_surfaces_as_stomp_error_then_close(two_nodes, js):
    node_a, _ = two_nodes
    bystander = js(node_a, "bob")
    dest = f"/topic/{unique('by')}"
    bystander.subscribe(dest, receipt="r")
    c = js(node_a)
    c.raw("FROB\n\n\x00")
    error = c.wait_for("error")
    # Exactly the protocol's message: a bug of ours would say "internal error" instead.
    assert error["headers"].get("message") == "unknown command 'FROB'"
    c.wait_for("ws-close")
    assert len(c.find("error")) == 1
    bystander.send(dest, "fine")
    bystander.wait_for_message(lambda e: e["body"] == "fine")


def test_raw_binary_websocket_message_from_stompjs_socket(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a)
    dest = f"/topic/{unique('rawbin')}"
    sub = c.subscribe(dest, receipt="r")
    frame = f"SEND\ndestination:{dest}\ncontent-length:3\n\n".encode() + b"a\x00b\x00"
    c.raw(frame)
    message = c.wait_for_message(lambda e: e["headers"].get("subscription") == sub)
    assert base64.b64decode(message["base64"]) == b"a\x00b"


# -- heart-beats -----------------------------------------------------------------------------


def server_heart_beat(c: StompJsClient) -> tuple[int, int]:
    """The CONNECTED frame's ``heart-beat``: what the server sends, what it wants (ms)."""
    sx, sy = c.wait_for("connected")["headers"]["heart-beat"].split(",")
    return int(sx), int(sy)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_server_heart_beats_reach_stompjs(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a, heartbeat_incoming=500, heartbeat_outgoing=500)
    sx, _ = server_heart_beat(c)
    assert sx > 0
    interval = max(sx, 500) / 1000
    c.wait_for("heartbeat-received", timeout=3 * interval + 10)
    second = c.mark()
    c.wait_for("heartbeat-received", timeout=3 * interval + 10, since=second)
    assert c.find(("heartbeat-lost", "ws-close")) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_closes_a_stompjs_client_that_goes_silent(two_nodes, js):
    node_a, _ = two_nodes
    c = js(node_a, heartbeat_outgoing=200, heartbeat_incoming=0)
    _, sy = server_heart_beat(c)
    assert sy > 0, "the server does not ask for heart-beats"
    c.silence()
    c.wait_for("ws-close", timeout=max(200, sy) / 1000 * 3 + 60)


# -- servers ---------------------------------------------------------------------------------


def test_stompjs_on_a_uvicorn_node(cluster, js):
    (node,) = cluster(1, server="uvicorn")
    c = js(node)
    dest = f"/topic/{unique('uv')}"
    c.subscribe(dest, receipt="r")
    c.send(dest, "uvicorn")
    assert c.wait_for_message()["body"] == "uvicorn"
