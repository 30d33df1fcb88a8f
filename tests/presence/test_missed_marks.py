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


def users(*keys: str) -> MissedMarks:
    return MissedMarks(users=frozenset(keys))


def topics(*destinations: str) -> MissedMarks:
    return MissedMarks(destinations=frozenset(destinations))


async def test_marks_add_up_per_node_and_a_take_clears_them(backend):
    await backend.mark_missed("node-a", users("amy"), 30)
    await backend.mark_missed("node-a", topics("/topic/news"), 30)
    await backend.mark_missed("node-a", users("amy", "bob"), 30)
    await backend.mark_missed("node-b", users("cid"), 30)

    assert await backend.take_missed("node-a", 30) == MissedMarks(
        users=frozenset({"amy", "bob"}), destinations=frozenset({"/topic/news"})
    )
    assert not await backend.take_missed("node-a", 30)
    assert await backend.take_missed("node-b", 30) == users("cid")
    assert not await backend.take_missed("node-c", 30)


async def test_names_are_kept_exactly_whatever_they_contain(backend):
    await backend.mark_missed("node-a", users(*HOSTILE), 30)
    await backend.mark_missed("node-a", topics(*HOSTILE), 30)
    assert await backend.take_missed("node-a", 30) == MissedMarks(
        users=frozenset(HOSTILE), destinations=frozenset(HOSTILE)
    )


async def test_past_the_cap_the_mark_says_everything_and_stays_so(backend):
    for start in range(0, MISSED_CAP + 1, 250):
        batch = [f"user-{n}" for n in range(start, min(start + 250, MISSED_CAP + 1))]
        await backend.mark_missed("node-a", users(*batch), 30)
    await backend.mark_missed("node-a", users("late"), 30)
    assert await backend.take_missed("node-a", 30) == MissedMarks(everything=True)
    assert not await backend.take_missed("node-a", 30)


async def test_a_take_whose_reply_was_lost_gets_the_marks_again(backend):
    await backend.mark_missed("node-a", users("amy"), 30)
    assert await backend.take_missed("node-a", 30) == users("amy")
    await backend.mark_missed("node-a", users("bob"), 30)
    # The caller never saw the first reply: it asks again and gets both.
    assert await backend.take_missed("node-a", 30, again=True) == users("amy", "bob")
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
