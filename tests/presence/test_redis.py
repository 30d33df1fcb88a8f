"""What only the Redis backend has: its key layout, round trips, outages and races."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio import BlockingConnectionPool
from redis.crc import key_slot

from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.presence.redis import RedisPresence
from tests.support.backends import PREFIX, make_redis_backend
from tests.support.counting import command_calls, count_round_trips, monitor_commands
from tests.support.procs import free_port, wait_for_port
from tests.support.records import node, session, sub

HOSTILE = ["a}b{c", "*", "\n", "}{", "x:sessions", "{node-a}", "\r\n:*?[]", "a" * 300]


def digest(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:20]


def node_base(node_id: str) -> str:
    return f"{PREFIX}:n:{{{digest(node_id)}}}:"


# -- key layout ------------------------------------------------------------------------


async def test_key_layout(redis_backend, raw_redis):
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.add_session(session("s1", user="u1", subs=(("7", "/topic/x"),)))
    await redis_backend.acquire_sweep_lock("node-a", 30)
    base = node_base("node-a")

    keys = {key: await raw_redis.type(key) for key in await raw_redis.keys("*")}

    assert keys == {
        f"{PREFIX}:nodes": "zset",
        f"{PREFIX}:sweep-lock": "string",
        f"{base}info": "hash",
        f"{base}alive": "string",
        f"{base}sessions": "zset",
        f"{base}sess:s1": "hash",
        f"{base}u:{digest('u1')}": "set",
        f"{base}d:{digest('/topic/x')}": "zset",
    }
    assert 0 < await raw_redis.pttl(f"{base}alive") <= 30_000
    assert await raw_redis.get(f"{PREFIX}:sweep-lock") == "node-a"
    assert await raw_redis.zrange(f"{base}d:{digest('/topic/x')}", 0, -1) == ["s1\x007"]
    assert await raw_redis.smembers(f"{base}u:{digest('u1')}") == {"s1"}
    assert await raw_redis.zrange(f"{base}sessions", 0, -1, withscores=True) == [
        ("s1", 1700000000.0)
    ]
    stored = await raw_redis.hgetall(f"{base}sess:s1")
    assert stored["s:7"] == f'{digest("/topic/x")}1:["/topic/x", "auto"]'
    assert stored["uh"] == digest("u1")
    assert (await raw_redis.hgetall(f"{base}info"))["channel_name"] == "specific.node-a!"
    # One Lua script per change never crosses slots: all node keys share one slot.
    assert len({key_slot(key.encode()) for key in keys if key.startswith(base)}) == 1


async def test_hostile_values_cannot_inject_keys(redis_backend, raw_redis):
    await redis_backend.register_node(node("node-a"), 30)
    for value in HOSTILE:
        await redis_backend.register_node(node(value), 30)
        await redis_backend.add_session(session(f"s{value}", value, user=value))
        await redis_backend.add_subscription(f"s{value}", value, sub(value, value))
        await redis_backend.add_session(
            session(value, "node-a", user=value, subs=((value, value),))
        )
    shape = re.compile(
        rf"{PREFIX}:(nodes|n:\{{(?P<tag>[0-9a-f]{{20}})\}}:"
        r"(info|alive|sessions|u:[0-9a-f]{20}|d:[0-9a-f]{20}|sess:(?P<sid>.*)))",
        re.DOTALL,
    )
    tags = {digest(value) for value in [*HOSTILE, "node-a"]}
    session_ids = {*HOSTILE, *(f"s{value}" for value in HOSTILE)}

    keys = await raw_redis.keys("*")

    # P:nodes; per node info, alive, sessions; per hostile node one session and its user
    # and destination indexes; on node-a a session, user and destination per value.
    assert len(keys) == 1 + 3 * (len(HOSTILE) + 1) + 3 * len(HOSTILE) + 3 * len(HOSTILE)
    for key in keys:
        match = shape.fullmatch(key)
        assert match, key
        assert match["tag"] is None or match["tag"] in tags
        assert match["sid"] is None or match["sid"] in session_ids
        if match["tag"]:
            assert key_slot(key.encode()) == key_slot(match["tag"].encode())
    for value in HOSTILE:
        assert await redis_backend.user_nodes(value) == {value: 1, "node-a": 1}
        assert await redis_backend.subscriber_count(value) == 2


# -- round trips -----------------------------------------------------------------------


async def test_each_session_change_is_one_command_and_one_round_trip(
    redis_backend, raw_redis, clean_redis, monkeypatch
):
    await redis_backend.register_node(node("node-a"), 30)
    changes = {
        "add_session": lambda: redis_backend.add_session(
            session("s1", user="u", subs=(("1", "/a"), ("2", "/b")))
        ),
        "add_subscription": lambda: redis_backend.add_subscription("s1", "node-a", sub("3", "/c")),
        "remove_subscription": lambda: redis_backend.remove_subscription("s1", "node-a", "1"),
        "remove_session": lambda: redis_backend.remove_session("s1", "node-a"),
    }
    for change in changes.values():  # load the scripts and open a connection
        await change()
    trips = count_round_trips(redis_backend, monkeypatch)

    for name, change in changes.items():
        before = await command_calls(raw_redis)
        commands = await monitor_commands(clean_redis.url, change)
        after = await command_calls(raw_redis)

        assert [c.split()[0].upper() for c in commands] == ["EVALSHA"], name
        assert after["evalsha"] - before["evalsha"] == 1, name
        for other in ("eval", "multi", "exec", "keys", "scan"):
            assert after.get(other, 0) == before.get(other, 0), (name, other)
    assert trips == [1, 1, 1, 1]


async def test_heartbeat_is_one_round_trip(redis_backend, clean_redis, monkeypatch):
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.heartbeat_node("node-a", 30)
    shared = count_round_trips(redis_backend, monkeypatch)
    # The heartbeat has a connection of its own, never queued behind session traffic.
    trips = count_round_trips(SimpleNamespace(redis=redis_backend.heartbeat_redis), monkeypatch)

    commands = await monitor_commands(
        clean_redis.url,
        lambda: redis_backend.heartbeat_node("node-a", 30, session_ids=["s1", "s2"]),
    )

    assert trips == [2]
    assert shared == []
    assert [c.split()[0].upper() for c in commands] == ["EVALSHA", "ZADD"]


async def test_add_sessions_writes_500_sessions_per_round_trip(redis_backend, monkeypatch):
    await redis_backend.register_node(node("node-a"), 30)
    trips = count_round_trips(redis_backend, monkeypatch)

    await redis_backend.add_sessions([session(f"s{i}", subs=(("1", "/t"),)) for i in range(1200)])

    assert trips == [500, 500, 200]
    assert await redis_backend.count_sessions(node="node-a") == 1200
    assert await redis_backend.subscriber_count("/t") == 1200


async def test_cross_node_queries_pipeline_one_command_per_node(
    redis_backend, clean_redis, monkeypatch
):
    for node_id in ("node-a", "node-b", "node-c"):
        await redis_backend.register_node(node(node_id), 30)
        await redis_backend.add_session(session(f"s-{node_id}", node_id, user="u"))
    trips = count_round_trips(redis_backend, monkeypatch)
    queries = [
        lambda: redis_backend.user_nodes("u"),
        lambda: redis_backend.sessions_of("u"),
        lambda: redis_backend.is_online("u"),
        lambda: redis_backend.get_session("s-node-b"),
        lambda: redis_backend.subscribers("/t"),
        lambda: redis_backend.destination_nodes("/t"),
        lambda: redis_backend.count_sessions(),
        lambda: redis_backend.sessions(limit=2),
        lambda: redis_backend.lost_nodes(),
    ]

    await redis_backend.count_sessions()  # learns the node list: two trips, once
    assert trips == [1, 3]
    for query in queries:  # load the scripts
        await query()
    for query in queries:
        trips.clear()
        commands = await monitor_commands(clean_redis.url, query)
        assert trips == [4]
        assert [c.split()[0].upper() for c in commands][0] == "ZRANGE"
        assert len(commands) == 4

    trips.clear()
    await redis_backend.nodes()
    assert trips == [1 + 3 * 4]  # per node: info, alive, session count, counters

    await redis_backend.register_node(node("node-d"), 30)
    trips.clear()
    assert await redis_backend.count_sessions() == 3
    assert trips == [4, 1]  # the new node is asked in a second trip, once
    trips.clear()
    assert await redis_backend.count_sessions() == 3
    assert trips == [5]


async def test_flushed_script_cache_costs_one_extra_round_trip(
    redis_backend, raw_redis, monkeypatch
):
    await redis_backend.register_node(node("node-a"), 30)
    await raw_redis.script_flush()
    trips = count_round_trips(redis_backend, monkeypatch)

    await redis_backend.add_session(session("s1"))
    await redis_backend.add_session(session("s2"))

    assert trips == [1, 1, 1]
    assert await redis_backend.count_sessions() == 2


# -- outages ---------------------------------------------------------------------------


async def test_restarted_redis_forgets_the_node_until_it_registers_again(
    redis_backend, clean_redis
):
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.add_session(session("s1", user="u"))
    assert await redis_backend.heartbeat_node("node-a", 30) is True

    clean_redis.restart()  # no persistence: comes back empty
    # Let the event loop see the old connections close, as it would while a real node
    # sleeps between heartbeats; the pool then replaces them instead of failing once.
    await asyncio.sleep(0.05)

    assert await redis_backend.heartbeat_node("node-a", 30, session_ids=["s1"]) is False
    assert await redis_backend.get_session("s1") is None
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.add_session(session("s1", user="u"))
    assert await redis_backend.heartbeat_node("node-a", 30) is True
    assert await redis_backend.sessions_of("u") == [session("s1", user="u")]


def every_call(backend: RedisPresence):
    record = session("s1")
    return {
        "register_node": lambda: backend.register_node(node(), 30),
        "heartbeat_node": lambda: backend.heartbeat_node("node-a", 30),
        "unregister_node": lambda: backend.unregister_node("node-a"),
        "nodes": backend.nodes,
        "lost_nodes": backend.lost_nodes,
        "reap_node": lambda: backend.reap_node("node-a"),
        "acquire_sweep_lock": lambda: backend.acquire_sweep_lock("me", 30),
        "release_sweep_lock": lambda: backend.release_sweep_lock("me"),
        "add_session": lambda: backend.add_session(record),
        "remove_session": lambda: backend.remove_session("s1", "node-a"),
        "add_subscription": lambda: backend.add_subscription("s1", "node-a", sub("1", "/t")),
        "remove_subscription": lambda: backend.remove_subscription("s1", "node-a", "1"),
        "get_session": lambda: backend.get_session("s1"),
        "is_online": lambda: backend.is_online("u"),
        "sessions_of": lambda: backend.sessions_of("u"),
        "user_nodes": lambda: backend.user_nodes("u"),
        "subscribers": lambda: backend.subscribers("/t"),
        "subscriber_count": lambda: backend.subscriber_count("/t"),
        "destination_nodes": lambda: backend.destination_nodes("/t"),
        "sessions": lambda: backend.sessions(user="u"),
        "count_sessions": backend.count_sessions,
    }


async def test_stopped_redis_raises_presence_unavailable_then_recovers(redis_backend, clean_redis):
    await redis_backend.register_node(node(), 30)
    clean_redis.stop()

    for name, call in every_call(redis_backend).items():
        started = time.monotonic()
        # The CLI strips this prefix to show the cause alone.
        with pytest.raises(PresenceUnavailable, match="^presence backend unreachable: "):
            await call()
        assert time.monotonic() - started < 0.5, name  # refused at once, no retry loop

    clean_redis.start()
    await redis_backend.register_node(node(), 30)
    assert await redis_backend.heartbeat_node("node-a", 30) is True


async def test_hung_redis_times_out_as_presence_unavailable(clean_redis):
    backend = make_redis_backend(clean_redis, socket_timeout=0.3)
    await backend.register_node(node(), 30)
    clean_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(PresenceUnavailable):
            await backend.heartbeat_node("node-a", 30)
        assert 0.25 < time.monotonic() - started < 1.5
    finally:
        clean_redis.proc.send_signal(signal.SIGCONT)
    assert await backend.heartbeat_node("node-a", 30) is True
    await backend.close()


async def test_full_pool_waits_instead_of_failing(clean_redis):
    backend = make_redis_backend(clean_redis, max_connections=2)
    await backend.register_node(node(), 30)

    await asyncio.gather(*(backend.add_session(session(f"s{i}")) for i in range(100)))

    assert await backend.count_sessions() == 100
    client = backend.redis.client()
    assert isinstance(client.connection_pool, BlockingConnectionPool)
    assert client.connection_pool.max_connections == 2
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.0
    await backend.close()


# -- lost nodes, reaping and the sweep lock --------------------------------------------


async def test_lost_node_is_reaped_exactly_once_by_concurrent_reapers(clean_redis, raw_redis):
    owner = make_redis_backend(clean_redis)
    reapers = [make_redis_backend(clean_redis) for _ in range(5)]
    await owner.register_node(node("node-a"), 1)
    await owner.register_node(node("node-b"), 30)
    for i in range(50):
        await owner.add_session(session(f"s{i:02}", "node-a", user="u", subs=(("1", "/t"),)))
    await owner.add_session(session("b", "node-b", user="u"))
    await asyncio.sleep(1.1)

    assert [await reaper.lost_nodes() for reaper in reapers] == [["node-a"]] * 5
    results = await asyncio.gather(*(reaper.reap_node("node-a") for reaper in reapers))

    assert sorted(len(result) for result in results) == [0, 0, 0, 0, 50]
    assert [s.session_id for r in results for s in r] == [f"s{i:02}" for i in range(50)]
    assert await raw_redis.zrange(f"{PREFIX}:nodes", 0, -1) == ["node-b"]
    assert not [key for key in await raw_redis.keys("*") if key.startswith(node_base("node-a"))]
    assert await owner.user_nodes("u") == {"node-b": 1}
    for backend in [owner, *reapers]:
        await backend.close()


async def test_reaper_does_not_unlist_a_node_that_came_back(redis_backend, clean_redis):
    reaper = make_redis_backend(clean_redis)
    await redis_backend.register_node(node("node-a"), 1)
    await redis_backend.add_session(session("s1", "node-a"))
    await asyncio.sleep(1.1)
    original, runs = reaper.redis.run, []

    async def run(calls):
        runs.append(calls)
        if len(runs) == 2:  # after the reap script, before unlisting: the node returns
            await redis_backend.register_node(node("node-a"), 30)
        return await original(calls)

    reaper.redis.run = run
    reaped = await reaper.reap_node("node-a")

    assert [s.session_id for s in reaped] == ["s1"]
    assert len(runs) == 2
    assert [(n.node_id, n.alive) for n in await reaper.nodes()] == [("node-a", True)]
    assert await reaper.lost_nodes() == []
    await reaper.close()


async def test_node_listed_without_record_is_unlisted_by_reaping(redis_backend, raw_redis):
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.unregister_node("node-a")
    assert await redis_backend.heartbeat_node("node-a", 30) is False  # and the node dies

    assert await redis_backend.nodes() == []
    assert await redis_backend.lost_nodes() == ["node-a"]
    assert await redis_backend.reap_node("node-a") == []
    assert await redis_backend.lost_nodes() == []
    assert await raw_redis.keys("*") == []


async def test_sweep_lock_is_exclusive_across_clients(clean_redis, raw_redis):
    nodes = [make_redis_backend(clean_redis) for _ in range(10)]

    # A TTL long enough that the lock cannot expire before it is looked at, even on a
    # busy machine; then its expiry is waited for, not assumed after a fixed sleep.
    won = await asyncio.gather(*(b.acquire_sweep_lock(f"n{i}", 2) for i, b in enumerate(nodes)))

    assert won.count(True) == 1
    winner = f"n{won.index(True)}"
    assert await raw_redis.get(f"{PREFIX}:sweep-lock") == winner
    assert 0 < await raw_redis.pttl(f"{PREFIX}:sweep-lock") <= 2000
    assert not any(
        await asyncio.gather(*(b.acquire_sweep_lock(f"m{i}", 30) for i, b in enumerate(nodes)))
    )
    deadline = time.monotonic() + 10
    while await raw_redis.exists(f"{PREFIX}:sweep-lock"):
        assert time.monotonic() < deadline, "the lock never expired"
        await asyncio.sleep(0.05)
    again = await asyncio.gather(*(b.acquire_sweep_lock(f"m{i}", 30) for i, b in enumerate(nodes)))
    assert again.count(True) == 1
    for backend in nodes:
        await backend.close()


# -- pages -----------------------------------------------------------------------------


async def test_pages_over_1000_sessions_on_3_nodes(redis_backend, raw_redis, monkeypatch):
    node_ids = ["node-a", "node-b", "node-c"]
    for node_id in node_ids:
        await redis_backend.register_node(node(node_id), 30)
    records = []
    for i in range(1000):
        subs = (("1", "/t"), ("2", "/t")) if i % 3 == 0 else ()
        record = session(str(uuid.uuid4()), node_ids[i % 3], at=1000.0 + i // 7, subs=subs)
        records.append(record)
    await asyncio.gather(*(redis_backend.add_session(record) for record in records))
    expected = [r.session_id for r in sorted(records, key=lambda r: (r.connected_at, r.session_id))]
    subscribed = [
        sid for sid in expected if any(r.session_id == sid and r.subscriptions for r in records)
    ]
    await redis_backend.sessions(limit=1)  # learn the node list, load the script
    before = await command_calls(raw_redis)
    trips = count_round_trips(redis_backend, monkeypatch)

    for filters, want in [({}, expected), ({"destination": "/t"}, subscribed)]:
        seen, cursor, pages = [], None, 0
        while True:
            page = await redis_backend.sessions(limit=64, cursor=cursor, **filters)
            seen += [s.session_id for s in page.sessions]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == want
        assert pages == -(-len(want) // 64)

    assert set(trips) == {4}  # one round trip per page: ZRANGE nodes + one script per node
    after = await command_calls(raw_redis)
    assert after.get("keys", 0) == before.get("keys", 0)
    assert after.get("scan", 0) == before.get("scan", 0)
    assert len(await redis_backend.subscribers("/t")) == len(subscribed)
    assert await redis_backend.subscriber_count("/t") == 2 * len(subscribed)
    assert await redis_backend.count_sessions() == 1000


# -- configuration and event loops -----------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b"])
def test_prefix_must_keep_the_hash_tag(prefix):
    with pytest.raises(ImproperlyConfigured, match="prefix"):
        RedisPresence(prefix=prefix)


def test_hosts_must_not_be_empty():
    with pytest.raises(ImproperlyConfigured, match="hosts"):
        RedisPresence(hosts=[])


@pytest.mark.parametrize("form", ["url", "pair", "address", "kwargs"])
async def test_hosts_forms(clean_redis, form):
    host = {
        "url": clean_redis.url,
        "pair": ("127.0.0.1", clean_redis.port),
        "address": {"address": clean_redis.url, "client_name": "presence"},
        "kwargs": {"host": "127.0.0.1", "port": clean_redis.port, "db": 0},
    }[form]
    backend = RedisPresence(hosts=[host], prefix=PREFIX, socket_timeout=0.5, max_connections=3)

    await backend.register_node(node(), 30)

    assert [n.node_id for n in await backend.nodes()] == ["node-a"]
    assert backend.redis.client().connection_pool.max_connections == 3
    await backend.close()


@pytest.fixture
def sentinel_port(clean_redis, tmp_path):
    """A Redis Sentinel watching the test server as master "main"."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {clean_redis.port} 1\n"
    )
    proc = subprocess.Popen(
        [clean_redis.binary, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_sentinel_host(sentinel_port):
    host = {"sentinels": [("127.0.0.1", sentinel_port)], "master_name": "main"}
    backend = RedisPresence(hosts=[host], prefix=PREFIX, socket_timeout=0.5)

    await backend.register_node(node(), 30)

    assert [n.node_id for n in await backend.nodes()] == ["node-a"]
    await backend.close()


def test_one_client_per_event_loop(clean_redis):
    backend = make_redis_backend(clean_redis)
    asyncio.run(backend.register_node(node(), 30))
    clients, errors = [], []

    async def work(i):
        client = backend.redis.client()
        assert backend.redis.client() is client
        clients.append(client)
        for j in range(20):
            await backend.add_session(session(f"t{i}-{j}"))
        await backend.close()

    def thread(i):
        try:
            asyncio.run(work(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len({id(client) for client in clients}) == 4
    assert asyncio.run(backend.count_sessions()) == 80


async def test_subscribers_are_read_page_by_page(redis_backend, monkeypatch):
    await redis_backend.register_node(node("node-a"), 30)
    await redis_backend.add_sessions(
        [session(f"s{i:04}", subs=(("1", "/t"),)) for i in range(2500)]
    )
    await redis_backend.subscribers("/t")  # learns the node list
    trips = count_round_trips(redis_backend, monkeypatch)

    found = await redis_backend.subscribers("/t")

    assert sorted(s.session_id for s in found) == [f"s{i:04}" for i in range(2500)]
    # 1,000 sessions per round trip (the node list and a page), never all in one script.
    assert trips == [2, 2, 2]
