"""Node liveness under faults, in-process: real redis-server, nodes with scaled TTLs.

Each test builds :class:`~stomp_cluster.node.Node` objects on one event loop, points them at
the test redis-server (one presence client each, as separate processes would have) and gives
them fake sessions that record how they were closed. What is proven here:

* a Redis stall of three TTLs reaps no live node, and no live session is closed;
* a node the registry forgot (reaped behind its back) closes its sessions with the ERROR that
  tells the client to reconnect and resume, and registers again;
* a second node with a live node's id (another owner token, as another process has) refuses
  to start, logs why at ERROR, and its WebSockets get an ERROR frame saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.test import override_settings

from stomp_cluster.exceptions import NodeIdInUse
from stomp_cluster.node import FENCED_MESSAGE, Node, get_node
from stomp_cluster.presence.base import SessionRecord
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.protocol import Command
from stomp_cluster.redis_connection import digest
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.backends import make_redis_backend
from tests.support.procs import RedisServer, running_redis
from tests.support.records import session
from tests.support.waiting import await_until

pytestmark = [pytest.mark.timeout(60)]

TTL = 0.6
SCALED = override_settings(
    STOMP_CLUSTER={
        "NODE_ID": "test-node",
        "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
        "NODE_TTL": TTL,
        "NODE_HEARTBEAT_INTERVAL": TTL / 3,
    }
)


class FakeSession:
    """A local session that only records how the node closed it."""

    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        self.kicked: list[str] = []

    @property
    def session_id(self) -> str:
        return self.record.session_id

    def kick(self, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.kicked.append(message)

    def session_record(self) -> SessionRecord:
        return self.record


async def start_node(node_id: str, presence: RedisPresence, owner: str | None = None) -> Node:
    node = Node()
    node.node_id, node.presence = node_id, presence
    if owner is not None:
        node.owner = owner
    await node.ensure_started()
    return node


async def add_session(node: Node, session_id: str) -> FakeSession:
    fake = FakeSession(session(session_id, node.node_id))
    node.sessions[session_id] = fake  # type: ignore[assignment]
    await node.presence.add_session(fake.record)
    return fake


def hold_heartbeats(presence: RedisPresence) -> asyncio.Event:
    """Make *presence*'s heartbeats wait while the returned event is clear.

    Nodes heartbeat at random phases; holding one node's heartbeat makes the order in
    which nodes come back after a fault certain.
    """
    heartbeat = presence.heartbeat_node
    released = asyncio.Event()
    released.set()

    async def held_heartbeat(*args: Any, **kwargs: Any) -> bool:
        await released.wait()
        return await heartbeat(*args, **kwargs)

    presence.heartbeat_node = held_heartbeat  # type: ignore[method-assign]
    return released


@pytest.fixture
async def presences(clean_redis: RedisServer) -> AsyncIterator[list[RedisPresence]]:
    """Three presence clients on the test server: two nodes and an onlooker."""
    clients = [make_redis_backend(clean_redis) for _ in range(3)]
    yield clients
    for client in clients:
        await client.close()


async def stop_all(*nodes: Node) -> None:
    for node in nodes:
        node.sessions.clear()
        await node.stop()


@SCALED
async def test_a_redis_stall_of_three_ttls_reaps_no_live_node(clean_redis, presences):
    a_presence, b_presence, onlooker = presences
    released = hold_heartbeats(b_presence)
    a = await start_node("node-a", a_presence)
    b = await start_node("node-b", b_presence)
    a1, b1 = await add_session(a, "a1"), await add_session(b, "b1")
    assert clean_redis.proc is not None
    pid = clean_redis.proc.pid

    released.clear()  # node-b will be second back
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(3 * TTL)
    finally:
        os.kill(pid, signal.SIGCONT)
    # Without the grace, node-a reaps node-b here.
    await asyncio.sleep(TTL / 2)
    released.set()
    await asyncio.sleep(3 * TTL)

    try:
        # No node was reaped: both are listed and alive. Their liveness lapsed, though, so
        # senders skipped them meanwhile: each fenced its session (ERROR, then resume).
        assert a1.kicked == [FENCED_MESSAGE] and b1.kicked == [FENCED_MESSAGE]
        nodes = {n.node_id: (n.alive, n.session_count) for n in await onlooker.nodes()}
        assert nodes == {"node-a": (True, 0), "node-b": (True, 0)}
        assert await onlooker.lost_nodes() == []
    finally:
        released.set()
        await stop_all(a, b)


@SCALED
async def test_the_first_node_back_after_an_outage_reaps_no_live_node():
    # A Redis that keeps its data (AOF) is down for three TTLs: when it is back, every
    # liveness key has expired. node-b's heartbeat is held until half a TTL after the
    # restart (nodes heartbeat at random phases), so node-a is surely the first to sweep;
    # without a grace it reaps node-b, which then has to fence its clients.
    with running_redis(appendonly=True) as server:
        clients = [make_redis_backend(server) for _ in range(3)]
        a_presence, b_presence, onlooker = clients
        released = hold_heartbeats(b_presence)
        a = await start_node("node-a", a_presence)
        b = await start_node("node-b", b_presence)
        a1, b1 = await add_session(a, "a1"), await add_session(b, "b1")
        try:
            released.clear()
            server.stop()
            await asyncio.sleep(3 * TTL)
            server.start()
            await asyncio.sleep(TTL / 2)  # node-a heartbeats, resyncs and sweeps
            released.set()
            await asyncio.sleep(3 * TTL)

            # Neither node was reaped; both lapsed, so each fenced its session.
            assert a1.kicked == [FENCED_MESSAGE] and b1.kicked == [FENCED_MESSAGE]
            nodes = {n.node_id: (n.alive, n.session_count) for n in await onlooker.nodes()}
            assert nodes == {"node-a": (True, 0), "node-b": (True, 0)}
        finally:
            released.set()
            await stop_all(a, b)
            for client in clients:
                await client.close()


@SCALED
async def test_a_dead_node_is_still_reaped_after_the_grace(clean_redis, presences):
    a_presence, b_presence, onlooker = presences
    a = await start_node("node-a", a_presence)
    b = await start_node("node-b", b_presence)
    await add_session(b, "b1")
    for task in b._tasks:  # node-b stops heartbeating, as a SIGKILLed process would
        task.cancel()

    try:
        deadline = asyncio.get_running_loop().time() + 6 * TTL
        while await onlooker.get_session("b1") is not None:
            assert asyncio.get_running_loop().time() < deadline, "node-b was never reaped"
            await asyncio.sleep(0.05)
        assert [n.node_id for n in await onlooker.nodes()] == ["node-a"]
    finally:
        b._tasks = []
        await stop_all(a, b)


@SCALED
async def test_a_node_the_registry_forgot_closes_its_sessions_and_registers_again(
    clean_redis, presences
):
    a_presence, _, onlooker = presences
    a = await start_node("node-a", a_presence)
    a1, a2 = await add_session(a, "a1"), await add_session(a, "a2")

    await onlooker.unregister_node("node-a")  # as a sweeper reaping it would
    try:
        for _ in range(100):
            if a1.kicked and a2.kicked:
                break
            await asyncio.sleep(0.05)
        assert a1.kicked == [FENCED_MESSAGE] and a2.kicked == [FENCED_MESSAGE]
        assert "reconnect and resume with x-resume-from" in FENCED_MESSAGE
        await asyncio.sleep(TTL)  # its resync follows the kicks
        # Registered again, without the sessions it closed.
        nodes = [(n.node_id, n.alive, n.session_count) for n in await onlooker.nodes()]
        assert nodes == [("node-a", True, 0)]
    finally:
        await stop_all(a)


@SCALED
async def test_a_lapse_seen_while_a_resync_runs_still_fences_the_node(
    clean_redis, presences, raw_redis
):
    # The heartbeat that sees the lapse refreshes the liveness: the next one says "known"
    # again. If that one answer were dropped because a resync or sweep was still running,
    # the node would keep sockets open that senders skipped meanwhile: open but deaf.
    a_presence, _, _ = presences
    a = await start_node("node-a", a_presence)
    a1 = await add_session(a, "a1")
    acquire = a_presence.acquire_sweep_lock
    held = asyncio.Event()

    async def held_acquire(*args: Any, **kwargs: Any) -> bool:
        await held.wait()
        return await acquire(*args, **kwargs)

    a_presence.acquire_sweep_lock = held_acquire  # type: ignore[method-assign]
    try:
        await await_until(
            lambda: a._maintenance is not None and not a._maintenance.done(),
            10,
            "a sweep in progress",
        )
        # The liveness lapses behind the node's back (as its TTL passing would).
        await raw_redis.delete(f"test:n:{{{digest('node-a')}}}:alive")
        await asyncio.sleep(3 * TTL)  # several heartbeats, the sweep still held
        held.set()
        await await_until(lambda: a1.kicked, 10, "node-a to fence its session")
        assert a1.kicked == [FENCED_MESSAGE]
    finally:
        held.set()
        await stop_all(a)


@SCALED
async def test_a_second_process_with_a_live_node_id_refuses_to_start(
    clean_redis, presences, caplog
):
    a_presence, b_presence, onlooker = presences
    a = await start_node("node-a", a_presence)
    a1 = await add_session(a, "a1")

    twin = Node()
    twin.node_id, twin.presence, twin.owner = "node-a", b_presence, "another-process"
    with caplog.at_level(logging.ERROR, logger="stomp_cluster.node"):
        with pytest.raises(NodeIdInUse):
            await twin.ensure_started()
    try:
        assert "node-a refuses to serve" in caplog.text
        assert twin.refused is not None
        with pytest.raises(NodeIdInUse):  # and keeps refusing
            await twin.ensure_started()
        # The live node lost nothing: its record, its session, its heartbeat.
        await asyncio.sleep(2 * TTL)
        assert a1.kicked == []
        nodes = [(n.node_id, n.alive, n.session_count) for n in await onlooker.nodes()]
        assert nodes == [("node-a", True, 1)]
    finally:
        await twin.stop()
        await stop_all(a)


async def test_a_refusing_node_answers_websockets_with_an_error_frame():
    get_node().refused = "node id 'test-node' is held by another live process"
    communicator = StompCommunicator(application, "/ws")
    connected, _ = await communicator.connect()
    assert connected  # accepted only to say why
    frame = await communicator.receive_frame()
    assert frame.command is Command.ERROR
    assert (frame.get("message") or "").startswith("node id in use: ")
    assert await communicator.receive_close() == 1011


@pytest.mark.slow
@SCALED
async def test_20000_sessions_resync_well_under_a_default_ttl_while_the_node_beats(
    clean_redis, presences
):
    a_presence, _, onlooker = presences
    a = await start_node("node-a", a_presence)
    for i in range(20_000):
        record = session(
            f"s{i:05}", "node-a", user=f"u{i % 500}", subs=(("1", f"/topic/{i % 50}"),)
        )
        a.sessions[record.session_id] = FakeSession(record)  # type: ignore[assignment]
    beats: list[float] = []
    heartbeat = a_presence.heartbeat_node

    async def counted_heartbeat(*args: Any, **kwargs: Any) -> bool:
        beats.append(time.perf_counter())
        return await heartbeat(*args, **kwargs)

    a_presence.heartbeat_node = counted_heartbeat  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        await a.resync()
        took = time.perf_counter() - started
        # The figure in the docs (1.6 to 5 s measured on a 2-core machine, against the
        # default NODE_TTL of 10 s) is measured here, not asserted: speed is not a test.
        print(f"resync of 20,000 sessions: {took:.2f} s")
        assert await onlooker.count_sessions(node="node-a") == 20_000
        assert await onlooker.subscriber_count("/topic/7") == 400
        # The heartbeat kept beating meanwhile, rather than waiting for the whole resync
        # (relative to how long it took, so that a loaded machine does not matter).
        gaps = [
            b - a for a, b in zip([started, *beats], [*beats, time.perf_counter()], strict=True)
        ]
        if took > 4 * TTL:
            assert max(gaps) < took / 2, (took, gaps)
    finally:
        await stop_all(a)
