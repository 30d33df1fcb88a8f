"""SIGTERM under each server: the sessions end, the node leaves the registry at once.

A real daphne or uvicorn node (uvicorn with ``--lifespan on``, which runs
:class:`stomp_cluster.lifespan.LifespanApp`) holds one raw-WebSocket client, then is
SIGTERMed. ``NODE_TTL`` is long here, so a node that did not unregister itself would
still be listed when we look.

Under either server the client gets the ERROR frame ``server shutting down`` before the
socket closes: daphne runs the node's Twisted shutdown trigger first, and under uvicorn
``LifespanApp`` puts the goodbye in front of uvicorn's own SIGTERM handler (which would
otherwise close the WebSocket itself with code 1012, before the application hears of it).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.support.clients import RawStompClient
from tests.support.nodes import manage

# Long enough that only a clean unregistration explains a node missing from the registry.
NODE_TTL = 60.0


def registry_nodes(db_path, redis_url) -> list[str]:
    """Node ids as ``manage.py stomp_cluster nodes`` lists them (a separate process)."""
    out = manage(
        "stomp_cluster",
        "nodes",
        "--json",
        db_path=db_path,
        env={"REDIS_URL": redis_url, "STOMP_NODE_ID": "cli"},
    )
    data = json.loads(out)
    nodes = data["nodes"] if isinstance(data, dict) else data
    return [n["node_id"] for n in nodes]


def disconnect_reasons(signal_log, session: str) -> list[str]:
    if not signal_log.exists():
        return []
    events = [json.loads(line) for line in signal_log.read_text().splitlines() if line.strip()]
    return [
        e["reason"]
        for e in events
        if e["signal"] == "stomp_disconnected" and e["session"] == session
    ]


def get_health(node) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{node.http_url}stomp/health/", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_sigterm_ends_the_sessions_and_the_node_leaves_the_registry_at_once(
    server, cluster, tokens, db_path, redis_server, tmp_path
):
    signal_log = tmp_path / "signals.jsonl"
    (node,) = cluster(
        1, server=server, node_ttl=NODE_TTL, env={"STOMP_SIGNAL_LOG": str(signal_log)}
    )
    client = RawStompClient(node.ws_url)
    session = client.connect(login="alice", passcode=tokens("alice")).headers["session"]
    client.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/bye", "receipt": "r1"})
    assert client.recv_frame().command == "RECEIPT"
    assert node.node_id in registry_nodes(db_path, redis_server.url)

    assert node.terminate() is not None
    frames, code = client.read_until_closed(timeout=15)

    # Both servers let the node say goodbye before the socket closes: daphne through a
    # Twisted shutdown trigger, uvicorn through LifespanApp's wrap of its SIGTERM handler.
    assert [(f.command, f.headers.get("message")) for f in frames] == [
        ("ERROR", "server shutting down")
    ]
    if server == "uvicorn":
        assert code == 1000  # closed by the node, not by uvicorn's own 1012
        assert "Application shutdown complete." in node.log_tail(), node.log_tail()
    assert node.node_id not in registry_nodes(db_path, redis_server.url)
    assert disconnect_reasons(signal_log, session) == ["shutdown"]


def test_uvicorn_node_answers_health_and_starts_with_lifespan_on(cluster, tokens):
    (node,) = cluster(1, server="uvicorn", node_ttl=NODE_TTL)
    # No WebSocket yet: this process serves HTTP but has not joined the cluster.
    assert get_health(node) == (200, {"status": "ok", "node": None})
    with RawStompClient(node.ws_url) as client:
        client.connect(login="alice", passcode=tokens("alice"))
        assert get_health(node) == (200, {"status": "ok", "node": node.node_id, "sessions": 1})


def sweep(db_path, redis_url) -> dict:
    out = manage(
        "stomp_cluster",
        "sweep",
        "--json",
        db_path=db_path,
        env={"REDIS_URL": redis_url, "STOMP_NODE_ID": "cli"},
    )
    return json.loads(out)


@pytest.mark.slow
def test_a_stopped_node_gives_the_sweep_lock_back(cluster, tokens, db_path, redis_server):
    # The lock lives NODE_TTL seconds: 15 here, so only a release explains a free lock
    # right after the stop. The node takes it at its first heartbeat (NODE_TTL / 3).
    (node,) = cluster(1, server="uvicorn", node_ttl=15.0)
    with RawStompClient(node.ws_url) as client:
        client.connect(login="alice", passcode=tokens("alice"))  # starts the node
        deadline = time.monotonic() + 15
        while sweep(db_path, redis_server.url)["swept"]:
            assert time.monotonic() < deadline, "the node never took the sweep lock"
            time.sleep(0.5)
        node.terminate()
    assert sweep(db_path, redis_server.url)["swept"] is True
