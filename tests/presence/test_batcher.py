"""Auto-pipelining in the Redis connection layer: concurrent calls share pipelines.

The first part runs the Redis presence backend against the real test redis-server and
checks what callers see: same answers as one call at a time, far fewer round trips, replies
and errors routed to the right caller, outages and cancellations that neither hang nor leak
into other calls. The second part drives :class:`~stomp_cluster.redis_connection.Batcher`
alone with a fake ``send``, to pin down its depth, ordering and size rules
deterministically.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import DataError, ResponseError

from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.redis_connection import Batcher, Call
from tests.support.backends import PREFIX, make_redis_backend
from tests.support.counting import count_round_trips, monitor_commands
from tests.support.procs import free_port
from tests.support.records import node, session
from tests.support.waiting import await_until as wait_until

NODES = ["node-a", "node-b", "node-c"]
USERS = [f"u{i}" for i in range(10)]
DESTINATIONS = [f"/topic/d{i}" for i in range(4)]


async def populate(backend: RedisPresence) -> tuple[dict, dict]:
    """Register NODES and sessions with a distinct placement per user and destination.

    User ``u<i>`` has as many sessions on the j-th node as the j-th base-3 digit of *i*, so
    no two users are placed alike (``u0`` has none); each session subscribes to one
    destination. Returns the expected ``user_nodes`` and ``destination_nodes`` answers.
    """
    users: dict[str, dict[str, int]] = {user: {} for user in USERS}
    destinations: dict[str, dict[str, int]] = {dest: {} for dest in DESTINATIONS}
    for node_id in NODES:
        await backend.register_node(node(node_id), 30)
    for i, user in enumerate(USERS):
        for j, node_id in enumerate(NODES):
            for k in range(i // 3**j % 3):
                dest = DESTINATIONS[(i + j + k) % len(DESTINATIONS)]
                sid = f"s-{user}-{node_id}-{k}"
                await backend.add_session(session(sid, node_id, user=user, subs=(("1", dest),)))
                users[user][node_id] = users[user].get(node_id, 0) + 1
                destinations[dest][node_id] = destinations[dest].get(node_id, 0) + 1
    await backend.count_sessions()  # learn the node list: later queries take one trip
    return users, destinations


def hold_pipelines(backend: RedisPresence, monkeypatch: pytest.MonkeyPatch):
    """Make *backend*'s pipelines wait for the returned event before reaching Redis.

    Returns ``(gate, started)``: *started* grows by each pipeline's size when it starts.
    """
    gate = asyncio.Event()
    started: list[int] = []
    original = backend.redis._pipeline

    async def held(commands):
        started.append(len(commands))
        await gate.wait()
        return await original(commands)

    monkeypatch.setattr(backend.redis, "_pipeline", held)
    return gate, started


# -- sharing pipelines -----------------------------------------------------------------


async def test_concurrent_queries_match_sequential_ones_in_far_fewer_round_trips(
    redis_backend, monkeypatch
):
    users, destinations = await populate(redis_backend)
    queries = [
        (redis_backend.user_nodes, USERS[i % len(USERS)])
        if i % 2
        else (redis_backend.destination_nodes, DESTINATIONS[i % len(DESTINATIONS)])
        for i in range(200)
    ]
    trips = count_round_trips(redis_backend, monkeypatch)

    sequential = [await query(arg) for query, arg in queries]
    assert trips == [1 + len(NODES)] * 200  # one at a time: a round trip each
    trips.clear()
    concurrent = await asyncio.gather(*(query(arg) for query, arg in queries))

    assert concurrent == sequential
    assert sequential == [
        (users if query == redis_backend.user_nodes else destinations)[arg]
        for query, arg in queries
    ]
    assert 1 <= len(trips) <= 4
    assert sum(trips) == 200 * (1 + len(NODES))  # every command sent, once


async def test_a_single_call_on_an_idle_backend_goes_out_alone(
    redis_backend, clean_redis, monkeypatch
):
    await populate(redis_backend)
    await asyncio.gather(*(redis_backend.user_nodes(user) for user in USERS))  # a burst first
    trips = count_round_trips(redis_backend, monkeypatch)

    commands = await monitor_commands(
        clean_redis.url, lambda: asyncio.wait_for(redis_backend.user_nodes("u1"), 5)
    )

    assert trips == [1 + len(NODES)]
    assert [c.split()[0].upper() for c in commands] == ["ZRANGE"] + ["SCARD"] * len(NODES)
    trips.clear()
    await asyncio.wait_for(redis_backend.add_session(session("alone", "node-a")), 5)
    assert trips == [1]
    assert (await redis_backend.get_session("alone")).node_id == "node-a"


async def test_each_concurrent_caller_gets_its_own_replies(redis_backend, monkeypatch):
    users, destinations = await populate(redis_backend)
    trips = count_round_trips(redis_backend, monkeypatch)

    # Calls of different sizes and reply shapes, interleaved, so that any shift in how
    # a shared pipeline's replies are cut up shows in someone's answer.
    results = await asyncio.gather(
        *(redis_backend.user_nodes(user) for user in USERS),
        *(redis_backend.destination_nodes(dest) for dest in DESTINATIONS),
        *(
            redis_backend.redis.run([Call(("ECHO", f"{i}:{j}")) for j in range(i % 5 + 1)])
            for i in range(20)
        ),
        redis_backend.get_session("s-u1-node-a-0"),
        redis_backend.nodes(),
        *(redis_backend.user_nodes(user) for user in reversed(USERS)),
    )

    assert len(trips) <= 4  # they did share pipelines
    results = list(results)
    assert [results.pop(0) for _ in USERS] == [users[user] for user in USERS]
    assert [results.pop(0) for _ in DESTINATIONS] == [destinations[d] for d in DESTINATIONS]
    for i in range(20):
        assert results.pop(0) == [f"{i}:{j}" for j in range(i % 5 + 1)]
    found = results.pop(0)
    assert (found.session_id, found.node_id, found.user_key) == ("s-u1-node-a-0", "node-a", "u1")
    assert sorted(n.node_id for n in results.pop(0)) == NODES
    assert results == [users[user] for user in reversed(USERS)]


# -- errors ----------------------------------------------------------------------------


async def test_a_reply_error_raises_only_in_its_caller(redis_backend, raw_redis, monkeypatch):
    users, _ = await populate(redis_backend)
    await raw_redis.set("text", "not a number")
    trips = count_round_trips(redis_backend, monkeypatch)

    results = await asyncio.gather(
        redis_backend.user_nodes("u1"),
        redis_backend.redis.run([Call(("INCR", "counter"))]),
        redis_backend.redis.run([Call(("INCR", "text"))]),
        redis_backend.redis.run([Call(("INCR", "counter")), Call(("ECHO", "after"))]),
        redis_backend.user_nodes("u2"),
        return_exceptions=True,
    )

    assert len(trips) == 1  # all in one pipeline with the failing command
    assert results[0] == users["u1"]
    assert isinstance(results[2], ResponseError)
    assert "not an integer" in str(results[2])
    (first,), (second, after) = results[1], results[3]
    assert ({first, second}, after) == ({1, 2}, "after")  # calls of two tasks: any order
    assert results[4] == users["u2"]
    assert await raw_redis.get("text") == "not a number"
    assert await redis_backend.redis.run([Call(("INCR", "counter"))]) == [3]


async def test_an_unencodable_argument_fails_only_its_caller(redis_backend, raw_redis):
    results = await asyncio.gather(
        redis_backend.redis.run([Call(("SET", "good", "1"))]),
        redis_backend.redis.run([Call(("SET", "bad", None))]),  # type: ignore[arg-type]
        redis_backend.redis.run([Call(("ECHO", "hello"))]),
        return_exceptions=True,
    )

    assert isinstance(results[1], DataError)
    assert "NoneType" in str(results[1])
    assert results[0] == [True]
    assert results[2] == ["hello"]
    assert await raw_redis.get("good") == "1"


def many_calls(backend: RedisPresence) -> list:
    calls = []
    for i in range(20):
        calls += [
            backend.user_nodes(f"u{i}"),
            backend.destination_nodes(f"/d{i}"),
            backend.add_session(session(f"s{i}")),
            backend.acquire_sweep_lock(f"owner{i}", 30),
            backend.redis.run([Call(("ECHO", str(i)))]),
        ]
    return calls


async def test_unreachable_redis_fails_every_concurrent_caller_without_hanging():
    backend = RedisPresence(hosts=[("127.0.0.1", free_port())], prefix=PREFIX, socket_timeout=0.3)

    for _ in range(2):  # a second burst must not find the batcher stuck
        results = await asyncio.wait_for(
            asyncio.gather(*many_calls(backend), return_exceptions=True), 5
        )
        assert len(results) == 100
        assert all(isinstance(result, PresenceUnavailable) for result in results), results
    with pytest.raises(PresenceUnavailable):
        await asyncio.wait_for(backend.user_nodes("u"), 5)
    await backend.close()


async def test_concurrent_callers_recover_when_redis_comes_back(redis_backend, clean_redis):
    await redis_backend.register_node(node("node-a"), 30)
    clean_redis.stop()

    results = await asyncio.wait_for(
        asyncio.gather(*many_calls(redis_backend), return_exceptions=True), 5
    )
    assert all(isinstance(result, PresenceUnavailable) for result in results), results

    clean_redis.start()
    await redis_backend.register_node(node("node-a"), 30)
    results = await asyncio.wait_for(asyncio.gather(*many_calls(redis_backend)), 5)
    assert results[4::5] == [[str(i)] for i in range(20)]
    assert await redis_backend.count_sessions() == 20


async def test_hung_redis_times_out_every_concurrent_caller(clean_redis):
    timeout = 0.3
    backend = make_redis_backend(clean_redis, socket_timeout=timeout)
    await backend.register_node(node("node-a"), 30)
    clean_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        waves = []
        for _ in range(3):  # the third finds two pipelines in flight, and waits in the queue
            waves.append(asyncio.gather(*many_calls(backend), return_exceptions=True))
            await asyncio.sleep(timeout / 3)
        results = await asyncio.wait_for(asyncio.gather(*waves), 5)
        elapsed = time.monotonic() - started
    finally:
        clean_redis.proc.send_signal(signal.SIGCONT)

    for wave in results:
        assert all(isinstance(result, PresenceUnavailable) for result in wave), wave
    # A queued caller waits for a pipeline in flight, then for its own: bounded by a few
    # socket timeouts, not by how many callers there are.
    assert elapsed < 4 * timeout + 0.5
    assert await asyncio.wait_for(backend.heartbeat_node("node-a", 30), 5) is True
    await backend.close()


# -- cancellation ----------------------------------------------------------------------


async def test_cancelled_callers_do_not_break_the_others(redis_backend, monkeypatch):
    users, _ = await populate(redis_backend)
    gate, started = hold_pipelines(redis_backend, monkeypatch)
    size = 1 + len(NODES)  # commands of one user_nodes call

    first = [asyncio.create_task(redis_backend.user_nodes(user)) for user in USERS[:5]]
    await wait_until(lambda: len(started) == 1)
    second = [asyncio.create_task(redis_backend.user_nodes(user)) for user in USERS[5:]]
    await wait_until(lambda: len(started) == 2)
    queued = [asyncio.create_task(redis_backend.user_nodes(user)) for user in USERS]
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [5 * size, 5 * size]  # two shared pipelines out, the rest waiting

    first[0].cancel()  # the caller that started a shared pipeline, now in flight
    second[2].cancel()  # another caller of a pipeline in flight
    queued[4].cancel()  # a caller whose pipeline has not started
    await asyncio.sleep(0)
    gate.set()
    tasks = [*first, *second, *queued]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    cancelled = {0, 7, 14}
    for i, (user, result) in enumerate(zip(USERS + USERS, results, strict=True)):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == users[user], (i, user)
    # Later calls work, and the batcher still runs two pipelines at once.
    assert await asyncio.wait_for(redis_backend.user_nodes("u5"), 5) == users["u5"]
    gate.clear()
    started.clear()
    later = [asyncio.create_task(redis_backend.user_nodes("u6"))]
    await wait_until(lambda: len(started) == 1)
    later.append(asyncio.create_task(redis_backend.user_nodes("u7")))
    await wait_until(lambda: len(started) == 2)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*later), 5) == [users["u6"], users["u7"]]


async def test_a_call_cancelled_while_queued_is_never_sent(redis_backend, raw_redis, monkeypatch):
    gate, started = hold_pipelines(redis_backend, monkeypatch)
    busy = [
        asyncio.ensure_future(redis_backend.redis.run([Call(("ECHO", str(i)))])) for i in range(2)
    ]
    await wait_until(lambda: sum(started) == 2)  # both pipelines in flight
    queued = asyncio.ensure_future(redis_backend.redis.run([Call(("SET", "cancelled", "1"))]))
    kept = asyncio.ensure_future(redis_backend.redis.run([Call(("SET", "kept", "1"))]))
    await asyncio.sleep(0)
    queued.cancel()
    gate.set()

    assert list(await asyncio.gather(*busy)) == [["0"], ["1"]]
    assert await kept == [True]
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await raw_redis.get("kept") == "1"
    assert await raw_redis.get("cancelled") is None


async def test_a_caller_cancelled_by_its_own_timeout_leaves_its_batch_intact(
    redis_backend, monkeypatch
):
    users, _ = await populate(redis_backend)
    gate, started = hold_pipelines(redis_backend, monkeypatch)

    deadline: list[asyncio.Timeout] = []

    async def impatient_caller():
        async with asyncio.timeout(None) as timeout:
            deadline.append(timeout)
            return await redis_backend.user_nodes("u1")

    impatient = asyncio.create_task(impatient_caller())  # first: it starts the pipeline
    others = [asyncio.create_task(redis_backend.user_nodes(user)) for user in USERS]
    await wait_until(lambda: len(started) == 1)
    assert started == [(1 + len(NODES)) * (1 + len(USERS))]  # all in one pipeline
    # Its timeout expires now, while the pipeline is in flight: no race with a clock.
    deadline[0].reschedule(asyncio.get_running_loop().time())
    with pytest.raises(asyncio.TimeoutError):
        await impatient
    gate.set()

    results = await asyncio.wait_for(asyncio.gather(*others), 5)
    assert results == [users[user] for user in USERS]
    assert await asyncio.wait_for(redis_backend.user_nodes("u1"), 5) == users["u1"]


# -- Batcher alone ---------------------------------------------------------------------


class FakeSend:
    """A ``send`` that replies ``("ok", command)`` per command, after a few loop turns.

    It records each pipeline and how many ran at once; ``gate`` holds them while cleared,
    and a pipeline holding a command whose first item is ``"boom"`` fails as a whole.
    """

    def __init__(self, turns: int = 3) -> None:
        self.turns = turns
        self.sends: list[list[Any]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, commands: Sequence[Any]) -> list[Any]:
        self.sends.append(list(commands))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await self.gate.wait()
            for _ in range(self.turns):
                await asyncio.sleep(0)
            if any(command[0] == "boom" for command in commands):
                raise ConnectionError("boom")
            return [("ok", command) for command in commands]
        finally:
            self.inflight -= 1


def call(i: int, size: int) -> list[tuple[int, int]]:
    return [(i, j) for j in range(size)]


async def submit_spread(batcher: Batcher, sizes: Sequence[int]) -> list[list[Any]]:
    """Submit calls of *sizes*, a few per loop turn, as a steady stream of callers would."""
    tasks = []
    for i, size in enumerate(sizes):
        tasks.append(asyncio.create_task(batcher.submit(call(i, size))))
        if i % 3 == 2:
            await asyncio.sleep(0)
    return await asyncio.wait_for(asyncio.gather(*tasks), 5)


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_batcher_keeps_at_most_depth_pipelines_in_flight(depth):
    send = FakeSend()
    batcher = Batcher(send, depth=depth)
    sizes = [1 + i % 4 for i in range(90)]

    results = await submit_spread(batcher, sizes)

    assert results == [[("ok", c) for c in call(i, size)] for i, size in enumerate(sizes)]
    assert send.max_inflight == depth  # reached, never exceeded
    assert len(send.sends) < len(sizes)


async def test_batcher_keeps_each_calls_commands_together_and_in_order():
    send = FakeSend()
    batcher = Batcher(send, depth=2)
    sizes = [(7 * i) % 6 + 1 for i in range(120)]

    results = await submit_spread(batcher, sizes)

    assert results == [[("ok", c) for c in call(i, size)] for i, size in enumerate(sizes)]
    sent = [command for pipeline in send.sends for command in pipeline]
    assert sorted(sent) == sorted(c for i, size in enumerate(sizes) for c in call(i, size))
    assert any(len({i for i, _ in pipeline}) > 1 for pipeline in send.sends)  # shared
    for pipeline in send.sends:
        runs: list[list[tuple[int, int]]] = []
        for command in pipeline:
            if runs and runs[-1][0][0] == command[0]:
                runs[-1].append(command)
            else:
                runs.append([command])
        assert [run[0][0] for run in runs] == sorted({i for i, _ in pipeline})  # FIFO
        for run in runs:
            assert run == call(run[0][0], sizes[run[0][0]])  # whole, contiguous, in order


async def test_batcher_bounds_pipeline_size_by_max_commands():
    send = FakeSend()
    send.gate.clear()
    batcher = Batcher(send, depth=1, max_commands=10)
    sizes = [3, 3, 3, 3, 4, 6, 1, 10, 2, 15, 1]
    tasks = [asyncio.create_task(batcher.submit(call(i, size))) for i, size in enumerate(sizes)]
    await wait_until(lambda: len(send.sends) == 1)
    send.gate.set()

    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)

    assert results == [[("ok", c) for c in call(i, size)] for i, size in enumerate(sizes)]
    oversized = call(9, 15)
    assert oversized in send.sends  # a call larger than the bound goes alone, unsplit
    assert all(len(p) <= 10 for p in send.sends if p != oversized)
    assert len(send.sends) < len(sizes)


async def test_batcher_sends_an_idle_call_at_once_and_alone():
    send = FakeSend()
    batcher = Batcher(send)

    task = asyncio.create_task(batcher.submit(call(0, 2)))
    await asyncio.sleep(0)  # the caller queues its call and starts a pipeline
    await asyncio.sleep(0)  # which goes out on the next loop turn, with no other wait

    assert send.sends == [call(0, 2)]
    assert await task == [("ok", (0, 0)), ("ok", (0, 1))]


async def test_batcher_sends_calls_made_while_busy_together_next():
    send = FakeSend()
    send.gate.clear()
    batcher = Batcher(send, depth=1)
    first = asyncio.create_task(batcher.submit(call(0, 1)))
    await wait_until(lambda: len(send.sends) == 1)
    rest = [asyncio.create_task(batcher.submit(call(i, 2))) for i in range(1, 4)]
    await asyncio.sleep(0)
    send.gate.set()

    await asyncio.wait_for(asyncio.gather(first, *rest), 5)

    assert send.sends == [call(0, 1), call(1, 2) + call(2, 2) + call(3, 2)]


async def test_batcher_fails_only_the_calls_of_a_failed_pipeline():
    send = FakeSend()
    send.gate.clear()
    batcher = Batcher(send, depth=1)
    first = asyncio.create_task(batcher.submit(call(0, 1)))
    await wait_until(lambda: len(send.sends) == 1)
    doomed = [
        asyncio.create_task(batcher.submit(call(1, 2))),
        asyncio.create_task(batcher.submit([("boom", 0)])),
    ]
    await asyncio.sleep(0)
    send.gate.set()

    assert await asyncio.wait_for(first, 5) == [("ok", (0, 0))]
    for task in doomed:
        with pytest.raises(ConnectionError, match="boom"):
            await asyncio.wait_for(task, 5)
    assert await asyncio.wait_for(batcher.submit(call(2, 1)), 5) == [("ok", (2, 0))]
    assert send.sends == [call(0, 1), [*call(1, 2), ("boom", 0)], call(2, 1)]
