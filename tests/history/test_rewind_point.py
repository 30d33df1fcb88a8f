"""``rewind_point``, the start of the newest N entries: the same contract for every backend.

It serves ``x-rewind`` and ``stomp_cluster.queries.history``; the base class's default
(written on ``read`` alone, for third-party backends) is held to the same tests.
"""

from __future__ import annotations

import pytest

from stomp_cluster.history.base import BEGINNING, HistoryBackend, previous_id
from stomp_cluster.history.memory import MemoryHistory

A, B = "/user/queue/a", "/user/queue/b"


class ReadOnlyRewind(MemoryHistory):
    """A backend that keeps the base class's rewind_point, as a third-party one would."""

    rewind_point = HistoryBackend.rewind_point


@pytest.fixture(params=["backend", "default"])
async def rewinder(request, make_history):
    """Each shipped backend, then (for memory only) the base-class default."""
    if request.param == "default":
        if "memory" not in request.node.callspec.id:
            pytest.skip("the default is tested once, over the memory backend")
        return ReadOnlyRewind()
    return await make_history()


async def newest(history, count, **kwargs):
    after = await history.rewind_point("u", count, **kwargs)
    page = await history.read("u", after, destination=kwargs.get("destination"))
    return [entry.body for entry in page.entries]


async def test_rewind_point_reads_the_newest_entries_oldest_first(rewinder):
    for i in range(10):
        await rewinder.append("u", A, b"m%d" % i, ())

    assert await newest(rewinder, 3) == [b"m7", b"m8", b"m9"]
    assert await newest(rewinder, 10) == [b"m%d" % i for i in range(10)]
    assert await newest(rewinder, 500) == [b"m%d" % i for i in range(10)]


async def test_rewind_point_of_zero_or_an_empty_history_reads_nothing_old(rewinder):
    assert await rewinder.rewind_point("u", 5) == BEGINNING
    last = ""
    for _ in range(3):
        last = await rewinder.append("u", A, b"x", ())
    assert await rewinder.rewind_point("u", 0) == last
    assert await newest(rewinder, 0) == []


async def test_rewind_point_counts_only_the_destination_asked(rewinder):
    for i in range(300):  # past one batch of the backward walk
        await rewinder.append("u", A if i % 3 else B, b"%d" % i, ())

    assert await newest(rewinder, 2, destination=B) == [b"294", b"297"]
    assert await newest(rewinder, 2, destination=A) == [b"298", b"299"]
    assert await newest(rewinder, 5, destination="/user/queue/none") == []


async def test_rewind_point_stops_before_the_byte_budget(rewinder):
    sent = [await rewinder.append("u", A, b"x" * size, ()) for size in (10, 30, 20, 20)]

    assert await rewinder.rewind_point("u", 4, max_bytes=40) == previous_id(sent[2])
    assert await rewinder.rewind_point("u", 4, max_bytes=70) == previous_id(sent[1])
    # The newest alone is over the budget: nothing is taken.
    assert await rewinder.rewind_point("u", 4, max_bytes=19) == sent[3]
    assert await newest(rewinder, 4, max_bytes=19) == []


async def test_rewind_point_refuses_a_negative_count(rewinder):
    with pytest.raises(ValueError, match="count"):
        await rewinder.rewind_point("u", -1)
