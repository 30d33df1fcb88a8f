"""Missed marks, on every backend: what senders leave a node whose push failed, and what
the node takes with its heartbeat (see "Missed marks" in stomp_cluster.presence.base)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from stomp_cluster.presence.base import MISSED_CAP, MissedMarks
from tests.support.counting import count_round_trips
from tests.support.records import node

HOSTILE = ["a}b{c", "*", "\n", "", "u:x", "d:/topic/x", "é\r\nü", "a" * 300]


def users(*keys: str, at: str = "5-0") -> MissedMarks:
    return MissedMarks(users=dict.fromkeys(keys, at))


def topics(*destinations: str, at: str = "5-0") -> MissedMarks:
    return MissedMarks(destinations=dict.fromkeys(destinations, at))


async def test_marks_add_up_per_node_and_a_take_clears_them(backend):
    await backend.mark_missed("node-a", users("amy"), 30)
    await backend.mark_missed("node-a", topics("/topic/news", at="7-1"), 30)
    await backend.mark_missed("node-a", users("amy", "bob", at="6-0"), 30)
    await backend.mark_missed("node-b", users("cid"), 30)

    assert await backend.take_missed("node-a", 30) == MissedMarks(
        users={"amy": "5-0", "bob": "6-0"}, destinations={"/topic/news": "7-1"}
    )
    assert not await backend.take_missed("node-a", 30)
    assert await backend.take_missed("node-b", 30) == users("cid")
    assert not await backend.take_missed("node-c", 30)


@pytest.mark.parametrize(
    ("first", "second", "earliest"),
    [
        ("9-5", "10-0", "9-5"),  # as strings, "10-0" would sort first
        ("10-0", "9-5", "9-5"),
        ("7-10", "7-9", "7-9"),
        ("7-9", "7-10", "7-9"),
        (
            "18446744073709551615-18446744073709551614",
            "18446744073709551615-3",
            "18446744073709551615-3",
        ),
    ],
)
async def test_a_member_marked_again_keeps_its_earliest_id(backend, first, second, earliest):
    await backend.mark_missed("node-a", users("amy", at=first), 30)
    await backend.mark_missed("node-a", users("amy", at=second), 30)
    assert await backend.take_missed("node-a", 30) == users("amy", at=earliest)


async def test_names_are_kept_exactly_whatever_they_contain(backend):
    await backend.mark_missed("node-a", users(*HOSTILE), 30)
    await backend.mark_missed("node-a", topics(*HOSTILE), 30)
    assert await backend.take_missed("node-a", 30) == MissedMarks(
        users=dict.fromkeys(HOSTILE, "5-0"), destinations=dict.fromkeys(HOSTILE, "5-0")
    )


async def test_past_the_cap_the_mark_says_everything_since_the_earliest(backend):
    for start in range(0, MISSED_CAP + 1, 250):
        batch = [f"user-{n}" for n in range(start, min(start + 250, MISSED_CAP + 1))]
        await backend.mark_missed("node-a", users(*batch, at=f"{100 + start}-0"), 30)
    await backend.mark_missed("node-a", users("late", at="99-7"), 30)
    await backend.mark_missed("node-a", users("later", at="2000-0"), 30)
    assert await backend.take_missed("node-a", 30) == MissedMarks(everything=True, since="99-7")
    assert not await backend.take_missed("node-a", 30)


async def test_a_take_whose_reply_was_lost_gets_the_marks_again(backend):
    await backend.mark_missed("node-a", users("amy", at="8-0"), 30)
    assert await backend.take_missed("node-a", 30) == users("amy", at="8-0")
    await backend.mark_missed("node-a", users("amy", at="9-0"), 30)
    await backend.mark_missed("node-a", users("bob", at="3-0"), 30)
    # The caller never saw the first reply: it asks again and gets both, amy's earliest.
    assert await backend.take_missed("node-a", 30, again=True) == MissedMarks(
        users={"amy": "8-0", "bob": "3-0"}
    )
    # Once acted upon, the next take starts afresh.
    assert not await backend.take_missed("node-a", 30)


async def test_marks_expire_with_their_ttl(backend):
    await backend.mark_missed("node-a", users("amy"), 0.05)
    if hasattr(backend, "clock"):
        now = backend.clock()
        backend.clock = lambda: now + 1
    else:
        await asyncio.sleep(0.2)  # Redis expires a key exactly at its PX, checked on access
    assert not await backend.take_missed("node-a", 30)


@pytest.mark.parametrize("ttl", [0, -1])
async def test_a_non_positive_ttl_is_refused(backend, ttl):
    with pytest.raises(ValueError, match="ttl must be positive"):
        await backend.mark_missed("node-a", users("amy"), ttl)


async def test_a_heartbeat_and_a_take_of_marks_share_one_round_trip(redis_backend, monkeypatch):
    # As the node calls them: gathered, on the heartbeat's own connection.
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.heartbeat_node("node-a", 30)  # the scripts are loaded
    await redis_backend.take_missed("node-a", 30)
    await redis_backend.mark_missed("node-a", users("amy"), 30)
    shared = count_round_trips(redis_backend, monkeypatch)
    trips = count_round_trips(SimpleNamespace(redis=redis_backend.heartbeat_redis), monkeypatch)

    known, marks = await asyncio.gather(
        redis_backend.heartbeat_node("node-a", 30), redis_backend.take_missed("node-a", 30)
    )

    assert known is True and marks == users("amy")
    assert trips == [3]  # heartbeat script, ZADD, take script
    assert shared == []
