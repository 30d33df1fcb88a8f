"""The outbox's accounting: frames and bytes queued, budgets, and what a flush writes.

Driven with a real :class:`StompConnection` and a recording writer in place of the
socket; end-to-end slow consumers are in test_consumer.py and test_limits.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from stomp_cluster.outbox import Outbox, ws_message
from stomp_cluster.protocol import Command, State, StompConnection
from tests.support.protocol import connected, parse
from tests.support.waiting import await_until

BODY = b"x" * 100


def subscribed(*ids: str) -> StompConnection:
    conn = connected()
    for sub_id in ids:
        conn.receive_data(f"SUBSCRIBE\nid:{sub_id}\ndestination:/topic/a\n\n\x00".encode())
    conn.events_received()
    conn.data_to_send()
    return conn


class Session:
    """What the consumer gives an outbox: a socket that records, and its life."""

    def __init__(self, conn: StompConnection, *, max_frames=1000, max_bytes=100_000):
        self.written: list[dict] = []
        self.queued_while_writing: list[int] = []
        self.slow = 0
        self.closing = 0
        self.closed = False
        #: Close the session after this many writes (as a slow-consumer close would).
        self.close_after: int | None = None
        self.stats: Counter[str] = Counter()
        self.queued_ids: list[tuple[str, str]] = []
        self.outbox = Outbox(
            conn,
            self.write,
            self.stats,
            max_frames=max_frames,
            max_bytes=max_bytes,
            is_closed=lambda: self.closed,
            on_slow=self.on_slow,
            on_queued=lambda sub_id, message_id: self.queued_ids.append((sub_id, message_id)),
            on_closing=self.on_closing,
        )

    async def write(self, message: dict) -> None:
        self.queued_while_writing.append(self.outbox.queued_bytes)
        self.written.append(message)
        if self.close_after is not None and len(self.written) >= self.close_after:
            self.closed = True
        await asyncio.sleep(0)

    def on_slow(self) -> None:
        self.slow += 1

    async def on_closing(self) -> None:
        self.closing += 1


def test_a_queued_message_counts_its_wire_bytes_and_one_delivery():
    conn = subscribed("1")
    session = Session(conn)
    outbox = session.outbox

    assert outbox.queue_message("1", BODY, (), None)

    assert outbox.queued_bytes == conn.outgoing_bytes > len(BODY)
    assert session.stats["delivered"] == 1
    assert outbox.backlog == 0  # only live deliveries count against MAX_OUTBOX
    assert outbox.replayed == 0
    assert session.slow == 0


def test_only_messages_from_a_history_are_reported_for_their_ack():
    session = Session(subscribed("1", "2"))

    session.outbox.queue_message("1", BODY, (), None)
    session.outbox.queue_message("2", BODY, (), "1700000000000-0")
    session.outbox.queue_message("3", BODY, (), "1700000000000-1")  # no such subscription

    assert session.queued_ids == [("2", "1700000000000-0")]


def test_a_message_for_a_gone_subscription_is_not_counted():
    session = Session(subscribed("1"))

    assert not session.outbox.queue_message("2", BODY, (), None)

    assert session.outbox.queued_bytes == 0
    assert session.stats["delivered"] == 0


def test_live_messages_count_frames_until_the_frame_budget_is_reached():
    session = Session(subscribed("1"), max_frames=3)
    outbox = session.outbox

    for _ in range(2):
        outbox.queue_message("1", BODY, (), None, live=True)
    assert outbox.backlog == 2
    assert not outbox.over_budget()

    outbox.queue_message("1", BODY, (), None, live=True)
    assert outbox.backlog == 3
    assert outbox.over_budget()
    assert outbox.slow_reason() == "more than 3 messages waiting"


def test_going_over_the_byte_budget_queues_the_message_and_reports_a_slow_consumer():
    session = Session(subscribed("1"), max_bytes=250)
    outbox = session.outbox

    outbox.queue_message("1", BODY, (), None)
    assert session.slow == 0
    outbox.queue_message("1", BODY, (), None)
    outbox.queue_message("1", BODY, (), None)

    assert session.stats["delivered"] == 3  # queued all the same
    assert session.slow >= 1
    assert outbox.over_budget()
    assert outbox.slow_reason() == "more than 250 bytes waiting"


def test_bytes_held_back_by_a_recovery_count_as_waiting():
    session = Session(subscribed("1"), max_bytes=250)

    assert session.outbox.slow_reason(held_bytes=251) == "more than 250 bytes waiting"
    assert session.outbox.slow_reason(held_bytes=250).endswith(
        "bytes replayed without a frame from the client"
    )


async def test_replay_is_bounded_by_what_was_handed_over_since_the_client_spoke():
    conn = subscribed("1")
    session = Session(conn)
    outbox = session.outbox
    # Each message is flushed at once, as daphne takes everything: only replay counts.
    outbox.queue_message("1", BODY, (), "1-0", replay=True)
    one = outbox.replayed
    await outbox.flush()
    outbox.max_bytes = 2 * one

    outbox.queue_message("1", BODY, (), "1-1", replay=True)
    await outbox.flush()
    assert outbox.replayed == 2 * one
    assert outbox.queued_bytes == 0
    assert session.slow == 0

    outbox.client_spoke()
    assert outbox.replayed == 0
    for n in range(3):
        outbox.queue_message("1", BODY, (), f"2-{n}", replay=True)
        await outbox.flush()

    assert outbox.replayed == 3 * one
    assert session.slow == 1  # on the third, not before
    assert outbox.slow_reason() == (
        f"more than {2 * one} bytes replayed without a frame from the client"
    )


async def test_flush_writes_everything_in_order_and_counts_it():
    conn = subscribed("1")
    session = Session(conn)
    outbox = session.outbox
    outbox.queue_message("1", b"caf\xc3\xa9", (), None, live=True)
    outbox.queue_message("1", b"\xff\xfe", (), None, live=True)
    conn.send_heartbeat()
    queued = outbox.queued_bytes

    await outbox.flush()

    assert [m["type"] for m in session.written] == ["websocket.send"] * 3
    first = parse(session.written[0]["text"].encode())
    assert first.body == "café".encode()
    second = parse(session.written[1]["bytes"])  # not UTF-8: sent as binary
    assert second.body == b"\xff\xfe"
    assert session.written[2] == {"type": "websocket.send", "text": "\n"}
    # What is waiting shrinks by each frame as it is written.
    assert session.queued_while_writing[0] == queued
    assert session.queued_while_writing == sorted(session.queued_while_writing, reverse=True)
    assert (outbox.backlog, outbox.queued_bytes) == (0, 0)
    assert session.stats["frames_out"] == 2  # heart-beats are not frames
    assert session.stats["bytes_out"] == queued
    assert session.closing == 0


async def test_flush_after_an_error_closes_the_session():
    conn = subscribed("1")
    session = Session(conn)
    conn.send_error("bye")
    assert conn.state is State.CLOSING

    await session.outbox.flush()

    assert parse(session.written[-1]["text"].encode()).command is Command.ERROR
    assert session.closing == 1


async def test_flush_stops_writing_once_the_session_is_closed():
    conn = subscribed("1")
    session = Session(conn)
    for _ in range(3):
        session.outbox.queue_message("1", BODY, (), None, live=True)
    session.close_after = 1

    await session.outbox.flush()

    assert len(session.written) == 1
    assert session.outbox.backlog == 2  # never written: the socket is not ours any more


async def test_many_scheduled_flushes_run_one_task():
    conn = subscribed("1")
    session = Session(conn)
    tasks_before = len(asyncio.all_tasks())
    for _ in range(50):
        session.outbox.queue_message("1", BODY, (), None, live=True)
        session.outbox.schedule_flush()

    assert len(asyncio.all_tasks()) == tasks_before + 1
    await await_until(
        lambda: len(session.written) == 50 and not session.outbox.flushing,
        what="the one flush to write 50 frames",
    )
    assert session.outbox.backlog == 0


@pytest.mark.parametrize(("chunk", "key"), [(b"MESSAGE\n\n\x00", "text"), (b"\xc3\x28", "bytes")])
def test_ws_message_is_text_for_utf8_and_bytes_otherwise(chunk, key):
    message = ws_message(chunk)

    assert message["type"] == "websocket.send"
    assert set(message) == {"type", key}
