"""Hostile clients against one consumer: each test attacks, then checks what users see.

The consumer is driven in-process (StompCommunicator), where, as under daphne, the
server takes every frame at once: the byte budget must hold by our own accounting.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.test import override_settings

from stomp_cluster import asend_to_user
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import assert_error_and_close, login_headers
from tests.support.communicator import connected_client as client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]

KIB = 1024


async def subscribed(c: StompCommunicator, destination: str, sub_id: str = "s") -> None:
    await c.send_frame("SUBSCRIBE", {"id": sub_id, "destination": destination, "receipt": "r"})
    assert (await c.receive_frame()).command is Command.RECEIPT


async def round_trip(c: StompCommunicator, destination: str, body: str) -> None:
    await c.send_frame("SEND", {"destination": destination}, body)
    frame = await c.receive_frame(timeout=10)
    assert frame.body == body.encode()


# Item 3: one WebSocket message cannot freeze the node.


async def test_a_websocket_message_over_the_limit_is_refused_with_an_error():
    c = await client()
    await c.send_to(bytes_data=b"SEND\ndestination:/topic/t\n\n" + b"x" * 1_200_000 + b"\0")
    await assert_error_and_close(c, "WebSocket message too large: 1200028 bytes, limit is 1179648")


@override_settings(STOMP_CLUSTER={"MAX_WEBSOCKET_MESSAGE_SIZE": 16 * KIB * KIB})
async def test_many_small_sends_in_one_message_do_not_hold_other_sessions():
    attacker, bob = await client(), await client()
    await subscribed(bob, "/topic/bob")
    frames = b"SEND\ndestination:/topic/void\n\n\0" * 30_000
    await attacker.send_to(bytes_data=frames + b"SEND\ndestination:/topic/void\nreceipt:end\n\n\0")
    await asyncio.sleep(0)  # the attacker's message is being handled
    await round_trip(bob, "/topic/bob", "still here")
    # Bob's round trip went through between the attacker's batches, before its last.
    assert attacker.output_queue.empty()
    receipt = await attacker.receive_frame(timeout=30)
    assert receipt.get("receipt-id") == "end"
    await attacker.disconnect()
    await bob.disconnect()


# Item 1: a byte budget per session for everything queued to it.


@override_settings(STOMP_CLUSTER={"MAX_OUTBOX_BYTES": 256 * KIB})
async def test_replay_into_many_subscriptions_is_cut_at_the_budget_and_stays_recoverable():
    headers = await login_headers("replayer")
    for n in range(40):
        await asend_to_user("replayer", "/queue/inbox", f"{n:03}".encode() + b"x" * 20 * KIB)
    attacker = StompCommunicator(application, "/ws")
    await attacker.connect_stomp(headers)
    subscribes = "".join(
        f"SUBSCRIBE\nid:{n}\ndestination:/user/queue/inbox\nx-resume-from:0-0\n\n\0"
        for n in range(20)
    )
    await attacker.send_to(text_data=subscribes)  # 40 x 20 KiB x 20 = 16 MiB asked for
    received = []
    while (frame := await attacker.receive_frame(timeout=10)).command is Command.MESSAGE:
        received.append(frame)
    assert frame.command is Command.ERROR
    # "bytes waiting" when one page overflows, "bytes replayed ..." when pages do.
    assert (frame.get("message") or "").startswith("slow consumer: more than 262144 bytes")
    assert 0 < len(received) <= 256 // 20 + 1  # the budget, and one message over it
    # What it missed is still there: resume from the last id seen.
    last = received[-1].get("message-id")
    again = StompCommunicator(application, "/ws")
    await again.connect_stomp(headers)
    await again.send_frame(
        "SUBSCRIBE", {"id": "1", "destination": "/user/queue/inbox", "x-resume-from": last}
    )
    frame = await again.receive_frame()
    assert frame.body[:3] == b"%03d" % (int(received[-1].body[:3]) + 1)
    await again.disconnect()


@override_settings(STOMP_CLUSTER={"MAX_OUTBOX_BYTES": 256 * KIB})
async def test_many_subscriptions_to_one_topic_cannot_multiply_memory():
    attacker, bob = await client(), await client()
    subscribes = "".join(f"SUBSCRIBE\nid:{n}\ndestination:/topic/big\n\n\0" for n in range(100))
    await attacker.send_to(text_data=subscribes + "SEND\ndestination:/topic/x\nreceipt:r\n\n\0")
    assert (await attacker.receive_frame()).command is Command.RECEIPT
    await subscribed(bob, "/topic/big")
    await bob.send_frame("SEND", {"destination": "/topic/big"}, "y" * 50 * KIB)  # x100 copies
    assert (await bob.receive_frame()).command is Command.MESSAGE
    messages = 0
    while (frame := await attacker.receive_frame()).command is Command.MESSAGE:
        messages += 1
    assert frame.get("message") == "slow consumer: more than 262144 bytes waiting"
    assert messages <= 256 // 50 + 1
    await round_trip(bob, "/topic/big", "bob is fine")
    await bob.disconnect()


@override_settings(STOMP_CLUSTER={"MAX_OUTBOX_BYTES": 256 * KIB, "NODE_ID": "test-node"})
async def test_live_messages_held_back_by_a_recovery_count_against_the_budget():
    from stomp_cluster.node import get_node

    c = StompCommunicator(application, "/ws")
    await c.connect_stomp(await login_headers("holder"))
    await subscribed(c, "/user/queue/inbox")
    consumer = next(s for s in get_node().sessions.values() if s.username == "holder")
    consumer._recovery.state.begin("s")  # as while a long history is read
    for n in range(1, 4):
        consumer.deliver("/user/queue/inbox", b"x" * 100 * KIB, (), message_id=f"{n}-0")
    frame = await c.receive_frame()
    assert frame.get("message") == "slow consumer: more than 262144 bytes waiting"
    assert await c.receive_close() == 1008


# Item 2: input limits in bytes.


async def test_a_transaction_over_its_bytes_is_refused():
    c = await client()
    await c.send_frame("BEGIN", {"transaction": "t"})
    for _ in range(8):
        await c.send_frame("SEND", {"destination": "/topic/t", "transaction": "t"}, "x" * 600_000)
    await assert_error_and_close(c, "too many bytes in transaction: limit is 4194304")


# Item 5: server-owned headers.


async def test_server_owned_headers_cannot_be_forged_and_the_sender_is_stamped():
    sender = StompCommunicator(application, "/ws")
    await sender.connect_stomp(await login_headers("mallory"))
    bob = await client()
    await subscribed(bob, "/topic/news")
    forged = {
        "destination": "/topic/news",
        "x-sender": "admin",
        "x-recovered": "true",
        "redelivered": "true",
        "message-id": "1-1",
        "user-id": "mallory",
    }
    await sender.send_frame("SEND", forged, "hi")
    frame = await bob.receive_frame()
    assert frame.get("x-sender") == "mallory"
    assert [k for k, _ in frame.headers].count("x-sender") == 1
    assert frame.get("x-recovered") is None and frame.get("redelivered") is None
    assert frame.get("message-id") != "1-1"
    # Anonymous senders carry no x-sender at all.
    anonymous = await client()
    await anonymous.send_frame("SEND", {"destination": "/topic/news", "x-sender": "admin"}, "a")
    assert (await bob.receive_frame()).get("x-sender") is None
    await bob.disconnect()


async def test_a_redelivery_carries_only_the_servers_redelivered_header_first():
    sender = StompCommunicator(application, "/ws")
    await sender.connect_stomp(await login_headers("forger"))
    rita = StompCommunicator(application, "/ws")
    await rita.connect_stomp(await login_headers("rita"))
    await rita.send_frame(
        "SUBSCRIBE",
        {"id": "s", "destination": "/user/queue/in", "ack": "client-individual", "receipt": "r"},
    )
    assert (await rita.receive_frame()).command is Command.RECEIPT
    forged = {"destination": "/user/rita/queue/in", "redelivered": "false", "x-recovered": "true"}
    await sender.send_frame("SEND", forged, "hello")
    first = await rita.receive_frame()
    assert first.get("redelivered") is None and first.get("x-recovered") is None
    await rita.send_frame("NACK", {"id": first.get("ack") or ""})
    again = await rita.receive_frame()
    names = [name for name, _ in again.headers]
    assert names.count("redelivered") == 1 and again.get("redelivered") == "true"
    # After destination, message-id, subscription and ack: the server's, then the sender's.
    assert names.index("redelivered") == 4
    assert names.index("x-sender") == 5 and again.get("x-sender") == "forger"


async def test_a_send_with_someone_elses_user_id_is_refused():
    sender = StompCommunicator(application, "/ws")
    await sender.connect_stomp(await login_headers("eve"))
    await sender.send_frame("SEND", {"destination": "/topic/news", "user-id": "admin"}, "x")
    await assert_error_and_close(sender, "user-id header 'admin' is not the login of this session")


@override_settings(STOMP_CLUSTER={"STAMP_SENDER": False})
async def test_stamping_can_be_turned_off():
    sender = StompCommunicator(application, "/ws")
    await sender.connect_stomp(await login_headers("quiet"))
    await subscribed(sender, "/topic/news")
    await sender.send_frame("SEND", {"destination": "/topic/news", "x-sender": "admin"}, "x")
    assert (await sender.receive_frame()).get("x-sender") is None


# Item 7: NUL bytes and log injection.


async def test_nul_in_a_header_value_is_refused():
    c = await client()
    await c.send_to(bytes_data=b"SEND\ndestination:/topic/a\0b\n\n\0")
    await assert_error_and_close(c, "NUL byte in header")


async def test_destinations_are_logged_escaped(monkeypatch, caplog):
    from stomp_cluster.backends import get_presence
    from stomp_cluster.exceptions import PresenceUnavailable

    async def down(destination):
        raise PresenceUnavailable("registry down")

    monkeypatch.setattr(get_presence(), "destination_nodes", down)
    c = await client()
    with caplog.at_level(logging.WARNING, logger="stomp_cluster.consumer"):
        await c.send_frame("SEND", {"destination": "/topic/t\nFAKE entry"}, "x")
        await c.receive_frame()
    assert "/topic/t\\nFAKE entry" in caplog.text
    assert "\nFAKE entry" not in caplog.text
