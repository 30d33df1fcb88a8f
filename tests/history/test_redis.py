"""What only the Redis history has: its key layout, round trips, trimming records, outages."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from redis.crc import key_slot

from stomp_cluster.exceptions import HistoryUnavailable, PresenceUnavailable
from stomp_cluster.history.base import BEGINNING, HistoryEntry, HistoryPage, previous_id
from stomp_cluster.history.redis import RedisHistory
from tests.support.backends import PREFIX, digest, make_redis_history, stream_key
from tests.support.counting import command_calls, count_round_trips, monitor_commands

HOSTILE = ["}{", "*", "\n", "a}b{c", "{u}", "x:pending", "\r\n:*?[]", "a" * 300]
A = "/user/queue/a"


async def test_key_layout(redis_history, raw_redis):
    entry_id = await redis_history.append(
        "u1", A, b"body", (("content-type", "text/plain"),), pending=True
    )
    stream = stream_key("u1")

    keys = {key: await raw_redis.type(key) for key in await raw_redis.keys("*")}

    assert keys == {stream: "stream", f"{stream}:pending": "hash"}
    assert key_slot(stream.encode()) == key_slot(f"{stream}:pending".encode())
    assert await raw_redis.xrange(stream) == [
        (entry_id, {"d": A, "b": "body", "h": '[["content-type","text/plain"]]'})
    ]
    assert await raw_redis.hgetall(f"{stream}:pending") == {digest(A): entry_id}
    for key in keys:  # both expire max_age after the last append
        assert 86_000_000 < await raw_redis.pttl(key) <= 86_400_000


async def test_hostile_values_cannot_inject_keys(redis_history, raw_redis):
    for value in HOSTILE:
        await redis_history.append(value, value, value.encode(), ((value, value),), pending=True)
    shape = re.compile(rf"{PREFIX}:h:\{{(?P<tag>[0-9a-f]{{20}})\}}(:pending)?")

    keys = await raw_redis.keys("*")

    assert len(keys) == 2 * len(HOSTILE)
    for key in keys:
        match = shape.fullmatch(key)
        assert match, key
        assert match["tag"] in {digest(value) for value in HOSTILE}
        assert key_slot(key.encode()) == key_slot(match["tag"].encode())
    for value in HOSTILE:
        (entry,) = (await redis_history.read(value, BEGINNING, destination=value)).entries
        assert entry.body == value.encode()
        assert entry.headers == ((value, value),)
        assert await redis_history.take_pending(value, value) == entry.id


async def test_each_call_is_one_script_and_one_round_trip(
    redis_history, raw_redis, clean_redis, monkeypatch
):
    calls = {
        "append": lambda: redis_history.append("u", A, b"x", (("h", "v"),)),
        "append pending": lambda: redis_history.append("u", A, b"x", (), pending=True),
        "read": lambda: redis_history.read("u", BEGINNING),
        "read filtered": lambda: redis_history.read("u", BEGINNING, destination=A, limit=1),
        "take_pending": lambda: redis_history.take_pending("u", A),
        "last_id": lambda: redis_history.last_id("u"),
    }
    for call in calls.values():  # load the scripts and open a connection
        await call()
    trips = count_round_trips(redis_history, monkeypatch)

    for name, call in calls.items():
        before = await command_calls(raw_redis)
        commands = await monitor_commands(clean_redis.url, call)
        after = await command_calls(raw_redis)

        assert [c.split()[0].upper() for c in commands] == ["EVALSHA"], name
        assert after["evalsha"] - before["evalsha"] == 1, name
        for other in ("eval", "multi", "exec", "keys", "scan"):
            assert after.get(other, 0) == before.get(other, 0), (name, other)
        if name.startswith("append"):
            assert after["xadd"] - before["xadd"] == 1, name
    assert trips == [1] * len(calls)


async def test_flushed_script_cache_costs_one_extra_round_trip(
    redis_history, raw_redis, monkeypatch
):
    await redis_history.append("u", A, b"", ())
    await raw_redis.script_flush()
    trips = count_round_trips(redis_history, monkeypatch)

    await redis_history.append("u", A, b"", ())
    await redis_history.append("u", A, b"", ())

    assert trips == [1, 1, 1]
    assert len((await redis_history.read("u", BEGINNING)).entries) == 3


async def test_trimming_is_exact_and_records_the_newest_trimmed_id(
    clean_redis, raw_redis, monkeypatch
):
    history = make_redis_history(clean_redis, max_length=5)
    sent = [await history.append("u", A, b"", ()) for _ in range(5)]
    trips = count_round_trips(history, monkeypatch)
    sent += [await history.append("u", A, b"", ()) for _ in range(3)]  # each trims one

    assert trips == [1, 1, 1]

    info = await raw_redis.xinfo_stream(stream_key("u"))

    assert info["length"] == 5
    assert info["entries-added"] == 8
    # Redis 7.0 leaves max-deleted-entry-id alone when trimming; the script records it.
    assert info["max-deleted-entry-id"] == sent[2]
    await history.close()


async def test_new_stream_records_the_id_before_its_first_entry(redis_history, raw_redis):
    first = await redis_history.append("u", A, b"", ())

    info = await raw_redis.xinfo_stream(stream_key("u"))

    assert info["max-deleted-entry-id"] == previous_id(first)
    assert info["entries-added"] == 1


async def test_binary_bodies_survive_a_host_that_asks_for_decoded_replies(clean_redis):
    host = {"address": clean_redis.url, "decode_responses": True}
    history = RedisHistory(hosts=[host], prefix=PREFIX, socket_timeout=1.0)
    body = bytes(range(256))

    entry_id = await history.append("u", "/user/queue/é", body, (("é", "\x00"),))

    assert await history.read("u", BEGINNING) == HistoryPage(
        (HistoryEntry(entry_id, "/user/queue/é", body, (("é", "\x00"),)),), complete=True
    )
    await history.close()


async def test_ten_thousand_entries_read_at_once_or_in_pages(clean_redis):
    history = make_redis_history(clean_redis, max_length=10_000)
    body = b"x" * 200
    await history.append("u", "/user/queue/rare", body, (("n", "0"),))  # loads the script
    calls = [  # appends through the real script, pipelined: 10,000 trips would take seconds
        history._append_call(
            "u", A if i % 10 else "/user/queue/rare", body, (("n", str(i)),), False
        )
        for i in range(1, 10_000)
    ]
    await history.redis.run(calls)

    started = time.monotonic()
    page = await history.read("u", BEGINNING)
    elapsed = time.monotonic() - started

    assert len(page.entries) == 10_000 and page.complete
    # A smoke guard against accidental quadratic work, not a benchmark: measured ~0.1 s.
    assert elapsed < 3.0
    seen: list[HistoryEntry] = []
    after = BEGINNING
    while entries := (await history.read("u", after, limit=1_000)).entries:
        seen += entries
        after = entries[-1].id
    assert seen == list(page.entries)
    rare = await history.read("u", BEGINNING, destination="/user/queue/rare", limit=10_000)
    assert len(rare.entries) == 1_000
    assert [e.id for e in rare.entries] == [
        e.id for e in page.entries if e.destination == "/user/queue/rare"
    ]
    await history.close()


def every_call(history: RedisHistory):
    return {
        "append": lambda: history.append("u", A, b"", ()),
        "read": lambda: history.read("u", BEGINNING),
        "take_pending": lambda: history.take_pending("u", A),
        "last_id": lambda: history.last_id("u"),
    }


async def test_stopped_redis_raises_history_unavailable_then_recovers(redis_history, clean_redis):
    await redis_history.append("u", A, b"", ())
    clean_redis.stop()

    for name, call in every_call(redis_history).items():
        started = time.monotonic()
        with pytest.raises(HistoryUnavailable, match="^message history unreachable: ") as info:
            await call()
        # Its own exception: a history outage is not a presence outage (which would make
        # a node register all its sessions again).
        assert not isinstance(info.value, PresenceUnavailable), name
        assert time.monotonic() - started < 0.5, name  # refused at once, no retry loop

    clean_redis.start()
    entry_id = await redis_history.append("u", A, b"", ())
    assert await redis_history.last_id("u") == entry_id


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b"])
def test_prefix_must_keep_the_hash_tag(prefix):
    with pytest.raises(ImproperlyConfigured, match="prefix"):
        RedisHistory(prefix=prefix)


def test_hosts_must_not_be_empty():
    with pytest.raises(ImproperlyConfigured, match="hosts"):
        RedisHistory(hosts=[])


@pytest.mark.parametrize("form", ["url", "pair", "kwargs"])
async def test_hosts_forms(clean_redis, form):
    host = {
        "url": clean_redis.url,
        "pair": ("127.0.0.1", clean_redis.port),
        "kwargs": {"host": "127.0.0.1", "port": clean_redis.port, "db": 0},
    }[form]
    history = RedisHistory(hosts=[host], prefix=PREFIX, socket_timeout=0.5, max_connections=3)

    entry_id = await history.append("u", A, b"", ())

    assert await history.last_id("u") == entry_id
    assert history.redis.client().connection_pool.max_connections == 3
    await history.close()


def test_one_client_per_event_loop(clean_redis):
    history = make_redis_history(clean_redis)

    async def work():
        client = history.redis.client()
        assert history.redis.client() is client
        entry_id = await history.append("u", A, b"", ())
        await history.close()
        return client, entry_id

    first_client, first = asyncio.run(work())
    second_client, second = asyncio.run(work())

    async def read_after_first():
        try:
            return await history.read("u", first)
        finally:
            await history.close()

    assert first_client is not second_client
    assert [entry.id for entry in asyncio.run(read_after_first()).entries] == [second]
