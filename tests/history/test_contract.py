"""The history contract, which every backend passes: memory and Redis run the same tests.

The id helpers of ``history.base`` are tested first, since the contract is stated with them.
"""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from stomp_cluster.history.base import (
    BEGINNING,
    HistoryEntry,
    HistoryPage,
    compare_ids,
    is_valid_id,
    parse_id,
    previous_id,
)
from stomp_cluster.history.memory import MemoryHistory
from tests.support.backends import stream_key
from tests.support.waiting import await_until

HOSTILE = ["}{", "*", "\n", "a}b{c", "é\r\nü", "", "{u}", "a" * 300]
MALFORMED = ["", "5", "5-", "-5", "a-1", "1-a", "1-2-3", " 1-2", "1-2\n", "١-٢", "+1-2",
             "18446744073709551616-0", "0-18446744073709551616", "1.5-0"]  # fmt: skip
MAX = 2**64 - 1

A, B = "/user/queue/a", "/user/queue/b"


async def views(make_history, history, count, **options):
    """*count* handles on *history*'s data: separate clients for Redis, itself for memory."""
    if isinstance(history, MemoryHistory):
        return [history] * count
    return [await make_history(**options) for _ in range(count)]


def ids(page: HistoryPage) -> list[str]:
    return [entry.id for entry in page.entries]


# -- ids -------------------------------------------------------------------------------


def test_ids_compare_numerically_not_as_strings():
    assert compare_ids("9-0", "10-0") == -1
    assert compare_ids("10-0", "9-0") == 1
    assert compare_ids("5-10", "5-9") == 1
    assert compare_ids("5-2", "5-2") == 0
    assert compare_ids("05-2", "5-2") == 0
    assert compare_ids(f"{MAX}-{MAX}", "0-0") == 1


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_ids_are_rejected(value):
    assert not is_valid_id(value)
    with pytest.raises(ValueError):
        parse_id(value)
    with pytest.raises(ValueError):
        compare_ids(value, "1-0")
    with pytest.raises(ValueError):
        compare_ids("1-0", value)


def test_previous_id_is_the_greatest_smaller_id():
    assert previous_id("5-3") == "5-2"
    assert previous_id("5-0") == f"4-{MAX}"
    assert previous_id(f"0-{MAX}") == f"0-{MAX - 1}"
    assert is_valid_id(previous_id("1-0"))
    with pytest.raises(ValueError):
        previous_id("0-0")
    with pytest.raises(ValueError):
        previous_id("nope")


# -- appending -------------------------------------------------------------------------


async def test_ids_strictly_increase_per_user(history):
    sent = [await history.append("u1", A, b"%d" % i, ()) for i in range(100)]
    sent += await asyncio.gather(*(history.append("u1", A, b"x", ()) for _ in range(100)))
    other = await history.append("u2", A, b"", ())

    assert all(is_valid_id(i) for i in [*sent, other])
    assert len(set(sent)) == 200
    # gather() may run them in any order, but no two share an id and all are later.
    assert all(compare_ids(a, b) < 0 for a, b in pairwise(sent[:100]))
    assert all(compare_ids(sent[99], later) < 0 for later in sent[100:])
    assert ids(await history.read("u1", BEGINNING)) == sorted(sent, key=parse_id)
    assert ids(await history.read("u2", BEGINNING)) == [other]
    now_ms = time.time() * 1000
    assert abs(parse_id(other)[0] - now_ms) < 5000  # wall-clock milliseconds


async def test_ids_keep_increasing_when_the_clock_is_behind_the_history(history):
    ahead_ms = int(time.time() * 1000) + 3_600_000
    if isinstance(history, MemoryHistory):
        history.clock = lambda: ahead_ms / 1000
        first = await history.append("u", A, b"from the future", ())
        history.clock = time.time
    else:  # a clock that went back: the stream holds an id an hour ahead of the server
        raw = history.redis.client()  # the backend's own: one Redis or a Redis Cluster
        fields: dict[Any, Any] = {"d": A, "b": "", "h": "[]"}
        added: Any = await raw.xadd(stream_key("u"), fields, id=f"{ahead_ms}-5")
        first = added.decode()

    second = await history.append("u", A, b"now", ())
    third = await history.append("u", A, b"now", ())

    assert compare_ids(first, second) < 0 < compare_ids(third, second)
    assert parse_id(second)[0] == parse_id(third)[0] == ahead_ms


# -- reading ---------------------------------------------------------------------------


async def test_read_after_an_id_returns_exactly_the_later_entries_in_order(history):
    expected = []
    for i in range(10):
        body = bytes([i, 0, 255]) + "é".encode() + b"\r\n\x00"
        headers = (("content-type", "text/plain"), ("x-n", str(i)), ("x-n", "é:\n\\"))
        entry_id = await history.append("u", A if i % 2 else B, body, headers)
        expected.append(HistoryEntry(entry_id, A if i % 2 else B, body, headers))
    await history.append("someone-else", A, b"not yours", ())

    page = await history.read("u", expected[3].id)

    assert page == HistoryPage(tuple(expected[4:]), complete=True)
    assert await history.read("u", BEGINNING) == HistoryPage(tuple(expected), complete=True)
    assert await history.read("u", expected[-1].id) == HistoryPage((), complete=True)
    assert await history.read("u", f"{MAX}-{MAX}") == HistoryPage((), complete=True)


async def test_read_between_two_ids_of_the_history_starts_after_the_given_one(history):
    sent = [await history.append("u", A, b"", ()) for _ in range(3)]

    assert ids(await history.read("u", previous_id(sent[1]))) == sent[1:]
    assert ids(await history.read("u", previous_id(sent[0]))) == sent


async def test_read_filters_by_destination(history):
    sent = [(await history.append("u", d, b"", ()), d) for d in [A, B, A, A, B, "/user/q/c"]]

    assert ids(await history.read("u", sent[0][0], destination=A)) == [sent[2][0], sent[3][0]]
    assert ids(await history.read("u", BEGINNING, destination=B)) == [sent[1][0], sent[4][0]]
    assert ids(await history.read("u", BEGINNING, destination="/user/queue")) == []
    assert ids(await history.read("u", BEGINNING, destination="*")) == []


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_user_keys_and_destinations_are_kept_apart(history, value):
    mine = await history.append(value, value, b"hostile", (), pending=True)
    theirs = await history.append(value + "x", value, b"other user", (), pending=True)
    await history.append(value, value + "x", b"other destination", ())

    page = await history.read(value, BEGINNING, destination=value)

    assert page == HistoryPage((HistoryEntry(mine, value, b"hostile", ()),), complete=True)
    assert await history.take_pending(value, value) == mine
    assert await history.take_pending(value + "x", value) == theirs
    assert await history.take_pending(value, value + "x") is None


async def test_limit_pages_through_the_history(history):
    sent = [await history.append("u", A if i % 3 else B, b"", ()) for i in range(250)]

    seen: list[str] = []
    after = BEGINNING
    while page := (await history.read("u", after, limit=100)).entries:
        assert len(page) == (100 if len(seen) < 200 else 50)
        seen += [entry.id for entry in page]
        after = page[-1].id
    assert seen == sent

    only_b = [i for n, i in enumerate(sent) if n % 3 == 0]
    seen, after = [], BEGINNING
    while page := (await history.read("u", after, destination=B, limit=30)).entries:
        seen += [entry.id for entry in page]
        after = page[-1].id
    assert seen == only_b


@pytest.mark.parametrize("value", MALFORMED)
async def test_malformed_after_raises_value_error(history, value):
    await history.append("u", A, b"", ())
    with pytest.raises(ValueError):
        await history.read("u", value)


@pytest.mark.parametrize("limit", [0, -1])
async def test_limit_must_be_positive(history, limit):
    with pytest.raises(ValueError, match="limit"):
        await history.read("u", BEGINNING, limit=limit)


async def test_unknown_user_has_an_empty_history_complete_only_from_the_beginning(history):
    assert await history.read("nobody", BEGINNING) == HistoryPage((), complete=True)
    # An id can only come from a history that existed: it was lost, so say so.
    assert await history.read("nobody", "1700000000000-0") == HistoryPage((), complete=False)
    assert await history.last_id("nobody") is None
    assert await history.take_pending("nobody", A) is None


async def test_last_id_is_the_newest_id(history):
    first = await history.append("u", A, b"", ())
    assert await history.last_id("u") == first
    second = await history.append("u", B, b"", ())
    assert await history.last_id("u") == second


# -- bounds ----------------------------------------------------------------------------


async def test_trimming_by_count_makes_older_resume_points_incomplete(make_history):
    history = await make_history(max_length=5)
    sent = [await history.append("u", A, b"%d" % i, ()) for i in range(8)]  # 0-2 trimmed

    assert ids(await history.read("u", BEGINNING)) == sent[3:]
    assert (await history.read("u", BEGINNING)).complete is False
    for old in sent[:2]:  # something after it was trimmed
        assert await history.read("u", old) == await history.read("u", BEGINNING)
    # The newest trimmed message was the last one the client saw: nothing is missing.
    assert (await history.read("u", sent[2])).complete is True
    assert ids(await history.read("u", sent[2])) == sent[3:]
    assert (await history.read("u", sent[5])).complete is True
    assert ids(await history.read("u", sent[5])) == sent[6:]
    assert await history.last_id("u") == sent[-1]


async def test_trimming_by_age_makes_older_resume_points_incomplete(make_history):
    # Sleeps only ever overshoot: "old" is surely older than max_age at the last append
    # (2.2 s > 2 s), and the 0.9 s left on the other side is what a loaded machine may
    # lose between two appends before "kept" would age out too.
    history = await make_history(max_age=2.0)
    old = [await history.append("u", A, b"old", ()) for _ in range(2)]
    await asyncio.sleep(1.1)
    kept = [await history.append("u", A, b"kept", ())]  # keeps the history alive
    await asyncio.sleep(1.1)
    kept.append(await history.append("u", A, b"new", ()))  # trims both old ones

    assert await history.read("u", old[0]) == HistoryPage(
        (await history.read("u", old[1])).entries, complete=False
    )
    assert ids(await history.read("u", old[1])) == kept
    assert (await history.read("u", old[1])).complete is True
    assert (await history.read("u", BEGINNING)).complete is False
    assert (await history.read("u", kept[0])).complete is True


async def test_expired_history_is_dropped_and_its_ids_read_as_incomplete(make_history):
    history = await make_history(max_age=0.2)
    lost = await history.append("u", A, b"", (), pending=True)

    async def expired() -> bool:
        return await history.last_id("u") is None

    await await_until(expired, what="the history to expire")  # after 0.2 s, or a little more

    assert await history.last_id("u") is None
    assert await history.take_pending("u", A) is None
    assert await history.read("u", lost) == HistoryPage((), complete=False)
    assert await history.read("u", BEGINNING) == HistoryPage((), complete=True)

    fresh = await history.append("u", A, b"", ())

    assert await history.read("u", lost) == HistoryPage(
        (await history.read("u", BEGINNING)).entries, complete=False
    )
    assert ids(await history.read("u", lost)) == [fresh]
    assert (await history.read("u", previous_id(fresh))).complete is True
    assert (await history.read("u", BEGINNING)).complete is True


@pytest.mark.parametrize(
    "options",
    [{"max_length": 0}, {"max_length": 1.5}, {"max_age": 0}, {"max_age": -1},
     {"max_age": float("inf")}, {"max_age": "1"}, {"max_lenght": 5}],
)  # fmt: skip
async def test_bad_options_are_refused(make_history, options):
    with pytest.raises(ImproperlyConfigured):
        await make_history(**options)


# -- pending ---------------------------------------------------------------------------


async def test_pending_records_the_first_id_once_per_destination(history):
    await history.append("u", A, b"live", ())
    assert await history.take_pending("u", A) is None
    first_a = await history.append("u", A, b"1", (), pending=True)
    await history.append("u", A, b"2", (), pending=True)
    first_b = await history.append("u", B, b"3", (), pending=True)

    assert await history.take_pending("u", A) == first_a
    assert await history.take_pending("u", A) is None
    assert await history.take_pending("other-user", B) is None
    assert await history.take_pending("u", B) == first_b

    again = await history.append("u", A, b"4", (), pending=True)
    assert await history.take_pending("u", A) == again


async def test_taking_pending_then_reading_from_it_gets_the_waiting_messages(history):
    await history.append("u", A, b"seen", ())
    waiting = [await history.append("u", A, b"%d" % i, (), pending=True) for i in range(3)]
    await history.append("u", B, b"elsewhere", (), pending=True)

    first = await history.take_pending("u", A)
    page = await history.read("u", previous_id(first), destination=A)

    assert page.complete is True
    assert ids(page) == waiting
    assert [entry.body for entry in page.entries] == [b"0", b"1", b"2"]


async def test_pending_message_trimmed_meanwhile_reads_as_incomplete(make_history):
    history = await make_history(max_length=3)
    pending = await history.append("u", A, b"", (), pending=True)
    for _ in range(4):
        await history.append("u", B, b"", ())

    first = await history.take_pending("u", A)

    assert first == pending
    assert await history.read("u", previous_id(first), destination=A) == HistoryPage(
        (), complete=False
    )


async def test_concurrent_takers_get_the_pending_id_exactly_once(make_history, history):
    pending = await history.append("u", A, b"", (), pending=True)
    takers = await views(make_history, history, 8)

    got = await asyncio.gather(*(taker.take_pending("u", A) for taker in takers))

    assert sorted(got, key=str) == [pending] + [None] * 7


async def test_concurrent_pending_appends_record_the_first_id(make_history, history):
    senders = await views(make_history, history, 8)

    sent = await asyncio.gather(
        *(s.append("u", A, b"%d" % i, (), pending=True) for i, s in enumerate(senders))
    )

    assert await history.take_pending("u", A) == min(sent, key=parse_id)


async def test_ack_cursor_only_moves_forward_per_destination(history):
    assert await history.acked("ada", "/user/queue/a") is None
    first = await history.append("ada", "/user/queue/a", b"1", ())
    second = await history.append("ada", "/user/queue/a", b"2", ())
    await history.set_acked("ada", "/user/queue/a", second)
    await history.set_acked("ada", "/user/queue/a", first)  # late, out of order: ignored
    assert await history.acked("ada", "/user/queue/a") == second
    assert await history.acked("ada", "/user/queue/b") is None
    assert await history.acked("bob", "/user/queue/a") is None
    with pytest.raises(ValueError):
        await history.set_acked("ada", "/user/queue/a", "not-an-id")


async def test_ack_cursor_needs_a_history(history):
    await history.set_acked("ghost", "/user/queue/a", "5-0")
    assert await history.acked("ghost", "/user/queue/a") is None
