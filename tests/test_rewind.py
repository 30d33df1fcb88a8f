"""``x-rewind: N``: the last N stored messages of a destination, then live ones."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster.protocol import Command
from stomp_cluster.recovery import parse_rewind
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import login_headers
from tests.support.procs import free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]

TOPICS = {**settings.STOMP_CLUSTER, "HISTORY_TOPICS": ["/topic/room.*"]}


async def connect(headers=None):
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp(headers)
    return client


async def subscribe(client, destination, sub_id="s", **headers):
    """SUBSCRIBE with a receipt; the MESSAGEs before the RECEIPT, and the RECEIPT."""
    frame = {"id": sub_id, "destination": destination, "receipt": "r", **headers}
    await client.send_frame("SUBSCRIBE", frame)
    messages = []
    while (frame := await client.receive_frame()).command is not Command.RECEIPT:
        messages.append(frame)
    return frame, messages


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_rewind_delivers_the_last_messages_marked_then_live_ones():
    for n in range(5):
        await asend_to_destination("/topic/room.1", f"m{n}")
    await asend_to_destination("/topic/room.2", "another room")
    client = await connect()

    receipt, messages = await subscribe(client, "/topic/room.1", **{"x-rewind": "3"})

    assert [m.body for m in messages] == [b"m2", b"m3", b"m4"]
    assert [m.get("x-rewind") for m in messages] == ["true"] * 3
    assert receipt.get("x-recovered") is None
    await asend_to_destination("/topic/room.1", "live")
    live = await client.receive_frame()
    assert (live.body, live.get("x-rewind")) == (b"live", None)
    assert int(live.get("message-id").split("-")[0]) >= int(
        messages[-1].get("message-id").split("-")[0]
    )
    await client.disconnect()


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_rewind_of_more_than_is_stored_gets_what_there_is_without_a_gap_notice():
    await asend_to_destination("/topic/room.1", "only")
    client = await connect()
    receipt, messages = await subscribe(client, "/topic/room.1", **{"x-rewind": "50"})
    assert [m.body for m in messages] == [b"only"]
    assert receipt.get("x-recovered") is None
    _, none = await subscribe(client, "/topic/room.1", "t", **{"x-rewind": "0"})
    assert none == []
    await client.disconnect()


@override_settings(STOMP_CLUSTER={**TOPICS, "MAX_REWIND": 2})
async def test_rewind_is_capped_by_max_rewind():
    for n in range(5):
        await asend_to_destination("/topic/room.1", f"m{n}")
    client = await connect()
    _, messages = await subscribe(client, "/topic/room.1", **{"x-rewind": "1000000"})
    assert [m.body for m in messages] == [b"m3", b"m4"]
    await client.disconnect()


@override_settings(STOMP_CLUSTER={**TOPICS, "MAX_OUTBOX_BYTES": 65536})
async def test_rewind_is_capped_in_bytes_by_half_the_outbox_budget():
    for n in range(4):
        await asend_to_destination("/topic/room.1", bytes([n]) * 12_000)
    client = await connect()
    receipt, messages = await subscribe(client, "/topic/room.1", **{"x-rewind": "4"})
    # 32 KiB holds two of the newest bodies, not three; the session lives on.
    assert [m.body[:1] for m in messages] == [b"\x02", b"\x03"]
    await asend_to_destination("/topic/room.1", "still connected")
    assert (await client.receive_frame()).body == b"still connected"
    await client.disconnect()


@pytest.mark.parametrize("value", ["-1", "2.5", "ten", "", " 3", "١"])
@override_settings(STOMP_CLUSTER=TOPICS)
async def test_a_bad_rewind_count_is_an_error(value):
    client = await connect()
    await client.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": "/topic/room.1", "x-rewind": value}
    )
    frame = await client.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "x-rewind must be a whole number of messages, such as 10"


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_rewind_on_a_destination_without_history_is_an_error():
    client = await connect()
    await client.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": "/topic/chat", "x-rewind": "5", "receipt": "r"}
    )
    frame = await client.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "x-rewind: /topic/chat keeps no history"
    assert frame.get("receipt-id") == "r"


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_resume_from_wins_over_rewind():
    sent = [(await asend_to_destination("/topic/room.1", f"m{n}")).message_id for n in range(5)]
    client = await connect()
    receipt, messages = await subscribe(
        client, "/topic/room.1", **{"x-rewind": "1", "x-resume-from": sent[1]}
    )
    assert [m.body for m in messages] == [b"m2", b"m3", b"m4"]
    assert [m.get("x-rewind") for m in messages] == [None] * 3
    assert receipt.get("x-recovered") == "true"
    await client.disconnect()


async def test_rewind_on_a_user_destination_reads_that_users_history():
    headers = await login_headers("wendy")
    client = await connect(headers)
    await subscribe(client, "/user/queue/feed")
    for n in range(4):
        await asend_to_user("wendy", "/queue/feed", f"f{n}")
    await asend_to_user("wendy", "/queue/other", "not this queue")
    seen = [await client.receive_frame() for _ in range(4)]
    assert [m.get("x-rewind") for m in seen] == [None] * 4
    await client.disconnect()

    back = await connect(headers)
    _, messages = await subscribe(back, "/user/queue/feed", **{"x-rewind": "2"})
    assert [m.body for m in messages] == [b"f2", b"f3"]
    assert [m.get("message-id") for m in messages] == [m.get("message-id") for m in seen[2:]]
    await back.disconnect()


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_a_senders_rewind_header_is_not_forwarded():
    client = await connect()
    await subscribe(client, "/topic/room.1")
    await asend_to_destination("/topic/room.1", "forged", {"x-rewind": "true"})
    assert (await client.receive_frame()).get("x-rewind") is None
    await client.disconnect()


@override_settings(STOMP_CLUSTER=TOPICS)
async def test_messages_sent_during_a_rewind_arrive_once_in_order():
    for n in range(150):  # more than one page of the history read
        await asend_to_destination("/topic/room.1", f"old{n}")
    client = await connect()

    async def sender():
        for n in range(50):
            await asend_to_destination("/topic/room.1", f"new{n}")
            await asyncio.sleep(0)

    task = asyncio.create_task(sender())
    await client.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": "/topic/room.1", "x-rewind": "120"}
    )
    await task
    bodies = []
    while not bodies or bodies[-1] != b"new49":
        bodies.append((await client.receive_frame()).body)
    # The 120 newest at subscribe time (some "new" ones may be among them), then the rest.
    expected = [f"old{n}".encode() for n in range(150)] + [f"new{n}".encode() for n in range(50)]
    start = expected.index(bodies[0])
    assert bodies == expected[start:]
    assert len(bodies) >= 120 and bodies[0] in expected[30:]
    await client.disconnect()


async def test_rewind_with_the_history_down_says_nothing_could_be_recovered():
    dead = {"hosts": [f"redis://127.0.0.1:{free_port()}/0"], "socket_timeout": 0.5}
    down = {
        **TOPICS,
        "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
        "HISTORY_OPTIONS": dead,
    }
    with override_settings(STOMP_CLUSTER=down):
        client = await connect()
        receipt, messages = await subscribe(client, "/topic/room.1", **{"x-rewind": "5"})
        assert receipt.get("x-recovered") == "false"
        assert messages == []
        # Without a receipt, a gap MESSAGE says it.
        await client.send_frame(
            "SUBSCRIBE", {"id": "t", "destination": "/topic/room.2", "x-rewind": "5"}
        )
        gap = await client.receive_frame()
        assert (gap.get("x-gap"), gap.get("x-recovered"), gap.body) == ("true", "false", b"")
        await client.disconnect()


async def test_rewind_on_a_client_ack_subscription_delivers_messages_to_acknowledge():
    headers = await login_headers("carl")
    for n in range(3):
        await asend_to_user("carl", "/queue/jobs", f"j{n}")
    client = await connect(headers)
    _, pending = await subscribe(client, "/user/queue/jobs", ack="client-individual")
    assert [m.body for m in pending] == [b"j0", b"j1", b"j2"]  # waited while offline
    for m in pending:
        await client.send_frame("ACK", {"id": m.get("ack")})
    await client.disconnect()

    back = await connect(headers)
    _, messages = await subscribe(
        back, "/user/queue/jobs", ack="client-individual", **{"x-rewind": "2"}
    )
    assert [m.body for m in messages] == [b"j1", b"j2"]
    assert [m.get("x-rewind") for m in messages] == ["true", "true"]
    await back.send_frame("ACK", {"id": messages[0].get("ack"), "receipt": "a"})
    assert (await back.receive_frame()).command is Command.RECEIPT
    await back.disconnect()


def test_parse_rewind_takes_ascii_whole_numbers_only():
    assert parse_rewind("0") == 0
    assert parse_rewind("42") == 42
    assert [parse_rewind(v) for v in ["-1", "+1", "1.0", "1e3", "٣", ""]] == [None] * 6
