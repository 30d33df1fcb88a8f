"""The ASGI lifespan app and the node's clean stop, in-process.

What a client of a real uvicorn or daphne node sees on SIGTERM is checked in
``tests/cluster/test_shutdown.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from stomp_cluster.lifespan import LifespanApp
from stomp_cluster.node import current_node, get_node
from stomp_cluster.presence.base import SessionRecord

pytestmark = pytest.mark.timeout(60)

SETTINGS = {"NODE_ID": "lifespan-node"}


class FakeSession:
    """A local session that records the node's shutdown."""

    session_id = "s1"

    def __init__(self) -> None:
        self.closed = False

    async def shutdown(self) -> None:
        self.closed = True

    def session_record(self) -> SessionRecord:
        return SessionRecord(session_id=self.session_id, node_id="lifespan-node")


async def run_lifespan(app, *, before_shutdown=None) -> list[dict]:
    """Drive *app* through startup and shutdown as uvicorn does; return what it sent."""
    incoming: asyncio.Queue[dict] = asyncio.Queue()
    sent: list[dict] = []
    answered = asyncio.Event()

    async def send(message):
        sent.append(message)
        answered.set()

    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, incoming.get, send)
    )
    await incoming.put({"type": "lifespan.startup"})
    await asyncio.wait_for(answered.wait(), 10)
    if before_shutdown is not None:
        await before_shutdown()
    await incoming.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 10)
    return sent


@override_settings(STOMP_CLUSTER=SETTINGS)
async def test_without_a_node_startup_and_shutdown_complete():
    sent = await run_lifespan(LifespanApp())
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert current_node() is None  # startup does not start a node


@override_settings(STOMP_CLUSTER=SETTINGS)
async def test_shutdown_closes_the_sessions_and_the_node_leaves_the_registry():
    node = get_node()
    session = FakeSession()

    async def start_node():
        await node.ensure_started()
        node.add_session(session)
        assert [n.node_id for n in await node.presence.nodes()] == ["lifespan-node"]

    sent = await run_lifespan(LifespanApp(), before_shutdown=start_node)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert session.closed
    assert await node.presence.nodes() == []
    assert current_node() is None


@override_settings(STOMP_CLUSTER=SETTINGS)
async def test_a_failed_shutdown_is_reported_to_the_server(monkeypatch, caplog):
    node = get_node()

    async def broken():
        raise RuntimeError("registry on fire")

    async def start_node():
        await node.ensure_started()
        monkeypatch.setattr(node, "shutdown", broken)

    sent = await run_lifespan(LifespanApp(), before_shutdown=start_node)
    assert sent[-1] == {"type": "lifespan.shutdown.failed", "message": "registry on fire"}
    assert "shutdown failed" in caplog.text
    monkeypatch.undo()
    await node.stop()


async def test_another_scope_is_a_mounting_mistake():
    with pytest.raises(ValueError, match="'http'"):
        await LifespanApp()({"type": "http"}, None, None)


async def test_the_testproject_router_serves_the_lifespan_scope():
    from testproject.asgi import application

    sent = await run_lifespan(application)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


@override_settings(STOMP_CLUSTER=SETTINGS)
async def test_stop_releases_the_sweep_lock_for_the_next_sweeper():
    node = get_node()
    await node.ensure_started()
    await node.sweep()  # takes the lock, as every heartbeat does
    assert not await node.presence.acquire_sweep_lock("other-node", 60)
    await node.stop()
    assert await node.presence.acquire_sweep_lock("other-node", 60)
