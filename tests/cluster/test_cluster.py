"""The cluster: three real daphne nodes on one real Redis, as a user of the cluster sees it.

A view on one node reaches users, sessions and destinations held by the others; the
registry follows connects, crashes (SIGKILL), clean shutdowns (SIGTERM) and Redis
restarts, and ``stomp_disconnected`` fires exactly once per session.

Where a test must show that something did *not* arrive, it sends a marker after it on
the same path and waits for the marker: whatever was going to arrive first has by then.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.clients import StompPyClient, unique
from tests.support.http import DjangoSession
from tests.support.nodes import cli_json, manage
from tests.support.waiting import wait_until

NODE_TTL = 2.0
HEARTBEAT_INTERVAL = NODE_TTL / 3  # the default: NODE_HEARTBEAT_INTERVAL is NODE_TTL / 3


def read_signals(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def registry_sessions(db_path, redis_url, **filters) -> list[dict]:
    """Sessions as the CLI lists them from the registry (a separate process)."""
    args = [arg for name, value in filters.items() for arg in (f"--{name}", value)]
    return cli_json("sessions", *args, db_path=db_path, redis_url=redis_url)["sessions"]


def last_heartbeats(db_path, redis_url) -> dict[str, float]:
    """Each live registered node's last heartbeat (Unix time), from the CLI.

    A node registers when its first session connects: an idle node is not listed.
    """
    nodes = cli_json("nodes", db_path=db_path, redis_url=redis_url)
    return {n["node_id"]: n["last_heartbeat"] for n in nodes if n["alive"]}


def wait_for_a_sweep_by_each_live_node(db_path, redis_url, after: float) -> None:
    """Return once each live registered node has run a whole sweep that began after *after*.

    A node heartbeats, then sweeps, then sleeps. So the sweep that follows a heartbeat
    later than *after* began after it, and it is over once the node heartbeats again.
    """
    ids = list(last_heartbeats(db_path, redis_url))
    assert ids, "no live node is registered"

    def beaten_since(since: dict[str, float]) -> dict[str, float] | None:
        beats = last_heartbeats(db_path, redis_url)
        return beats if all(beats.get(i, 0) > since[i] for i in ids) else None

    first = wait_until(lambda: beaten_since(dict.fromkeys(ids, after)), what="a heartbeat")
    wait_until(lambda: beaten_since(first), what="another heartbeat of each live node")


@pytest.fixture
def signal_log(tmp_path):
    return tmp_path / "signals.jsonl"


@pytest.fixture
def three_nodes(cluster, signal_log):
    return cluster(3, node_ttl=NODE_TTL, env={"STOMP_SIGNAL_LOG": str(signal_log)})


def connected(node, user, tokens) -> StompPyClient:
    client = StompPyClient(node.ws_url)
    client.connect(user, tokens(user))
    return client


def test_view_on_one_node_reaches_user_sessions_on_two_others(three_nodes, tokens):
    a, b, c = three_nodes
    on_b, on_c = connected(b, "bob", tokens), connected(c, "bob", tokens)
    alice_on_c = connected(c, "alice", tokens)
    for client in (on_b, on_c, alice_on_c):
        client.subscribe("/user/queue/notify")
    session = DjangoSession(a.http_url).login("carol")
    result = session.post_json("/notify/", {"to": "bob", "text": "from a view on node-a"})
    assert result == {"sessions": 2, "nodes": 2}
    for client in (on_b, on_c):
        message = client.wait_for_message()
        assert json.loads(message.body)["text"] == "from a view on node-a"
        assert message.headers["destination"] == "/user/queue/notify"
    # A marker to alice on the same path: bob's message, had it gone to her, is before it.
    session.post_json("/notify/", {"to": "alice", "text": "marker"})
    alice_on_c.wait_for_message()
    bodies = [json.loads(m.body)["text"] for m in alice_on_c.listener.messages]
    assert bodies == ["marker"]  # never another user's queue


def test_topic_send_from_one_node_reaches_subscribers_on_the_others(three_nodes, tokens):
    a, b, c = three_nodes
    topic = f"/topic/{unique()}"
    subscribers = [connected(a, "alice", tokens), connected(c, "carol", tokens)]
    for client in subscribers:
        client.subscribe(topic)
    sender = connected(b, "bob", tokens)
    sender.send(topic, "hello from b", receipt=True)
    for client in subscribers:
        assert client.wait_for_message().body == "hello from b"


def test_send_to_session_from_another_node(three_nodes, tokens, db_path, redis_server):
    a, b, c = three_nodes
    target = connected(c, "alice", tokens)
    other = connected(c, "alice", tokens)
    for client in (target, other):
        client.subscribe("/user/queue/direct")

    def send_to(session: str, body: str) -> str:
        return manage(
            "stomp_send",
            "--session",
            session,
            "--to",
            "/queue/direct",
            body,
            db_path=db_path,
            env={"REDIS_URL": redis_server.url, "STOMP_NODE_ID": "sender"},
        )

    assert "reached 1 session(s) on 1 node(s)" in send_to(target.session, "just you")
    assert target.wait_for_message().body == "just you"
    # A marker to the other session on the same path: "just you" would have come first.
    send_to(other.session, "marker")
    other.wait_for_message()
    assert other.bodies() == ["marker"]


def test_sigkill_of_a_node_removes_its_sessions_within_two_ttls_and_three_heartbeats(
    three_nodes, tokens, db_path, redis_server, signal_log
):
    a, b, c = three_nodes
    victims = [connected(b, user, tokens) for user in ("alice", "bob")]
    victims[0].subscribe("/topic/crash")
    survivor = connected(a, "carol", tokens)
    sessions = {v.session for v in victims}
    assert sessions <= {s["session_id"] for s in registry_sessions(db_path, redis_server.url)}

    def node_lost_events() -> list[dict]:
        return [
            e
            for e in read_signals(signal_log)
            if e["signal"] == "stomp_disconnected" and e["session"] in sessions
        ]

    b.kill()
    killed_at = time.monotonic()
    # The node's key expires at most NODE_TTL after its last heartbeat; a live node's next
    # sweep (one heartbeat interval later) marks it missing, and the first sweep a whole
    # NODE_TTL after that (the grace that protects live nodes after a Redis outage) reaps
    # it: 2 TTLs + 2 intervals at most. We allow one more interval, for a loaded machine.
    # The signal fires right after the reap, and reading its log is cheap, so the time
    # measured is the reap's, not a CLI start-up.
    wait_until(
        lambda: {e["session"] for e in node_lost_events()} == sessions,
        what="node_lost signals for node-b's sessions",
    )
    reaped_in = time.monotonic() - killed_at
    assert reaped_in <= 2 * NODE_TTL + 3 * HEARTBEAT_INTERVAL, f"reaped after {reaped_in:.1f}s"
    listed = {s["session_id"] for s in registry_sessions(db_path, redis_server.url)}
    assert not sessions & listed
    assert survivor.session in listed
    # A duplicate would come from a later sweep: wait until each live node has run one.
    wait_for_a_sweep_by_each_live_node(db_path, redis_server.url, after=time.time())
    lost = node_lost_events()
    assert Counter(e["session"] for e in lost) == dict.fromkeys(sessions, 1)
    assert {e["reason"] for e in lost} == {"node_lost"}
    # Routing forgot node-b too: a topic send from a live node still works.
    survivor.subscribe("/topic/crash")
    connected(c, "bob", tokens).send("/topic/crash", "after the crash", receipt=True)
    assert survivor.wait_for_message().body == "after the crash"


def test_sigterm_of_a_node_removes_its_sessions_at_once(
    three_nodes, tokens, db_path, redis_server, signal_log
):
    a, b, c = three_nodes
    leaving = connected(c, "alice", tokens)
    leaving.subscribe("/topic/bye")
    session = leaving.session
    c.terminate()
    remaining = {s["session_id"] for s in registry_sessions(db_path, redis_server.url)}
    assert session not in remaining
    error = leaving.wait_for_error()
    assert error.headers["message"] == "server shutting down"
    reasons = [
        e["reason"]
        for e in read_signals(signal_log)
        if e["signal"] == "stomp_disconnected" and e["session"] == session
    ]
    assert reasons == ["shutdown"]


def test_redis_restart_nodes_reregister_and_sends_work_again(
    three_nodes, tokens, db_path, redis_server
):
    a, b, c = three_nodes
    bob = connected(b, "bob", tokens)
    bob.subscribe("/user/queue/notify")
    topic = f"/topic/{unique()}"
    carol = connected(c, "carol", tokens)
    carol.subscribe(topic)
    redis_server.restart()  # empty: this Redis keeps nothing on disk
    # The registry forgot every node: messages sent meanwhile could not be routed, so each
    # node is fenced and closes its sessions, telling the clients to resume.
    for client in (bob, carol):
        error = client.wait_for_error(3 * NODE_TTL + 10)
        assert "node fenced" in error.headers["message"]
        assert "x-resume-from" in error.headers["message"]
        client.wait_for_disconnected()
    bob = connected(b, "bob", tokens)
    bob.subscribe("/user/queue/notify")
    carol = connected(c, "carol", tokens)
    carol.subscribe(topic)
    wait_until(
        lambda: (
            {bob.session, carol.session}
            <= {s["session_id"] for s in registry_sessions(db_path, redis_server.url)}
        ),
        3 * NODE_TTL + 10,
        "nodes to register the sessions again",
        interval=0.5,
    )
    view = DjangoSession(a.http_url).login("alice")
    wait_until(
        lambda: view.post_json("/notify/", {"to": "bob", "text": "after restart"})["sessions"] == 1,
        10,
        "send_to_user to reach bob",
        interval=0.5,
    )
    assert json.loads(bob.wait_for_message().body)["text"] == "after restart"
    sender = connected(a, "alice", tokens)
    sender.send(topic, "topic after restart", receipt=True)
    assert carol.wait_for_message().body == "topic after restart"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thousand_sessions_are_listed_and_counted_through_pagination(
    cluster, db_path, redis_server
):
    import websockets

    nodes = cluster(2)
    total = 1000

    async def open_sessions():
        sockets = []
        for i in range(total):
            node = nodes[i % 2]
            ws = await websockets.connect(node.ws_url, subprotocols=["v12.stomp"], max_size=None)
            await ws.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
            sockets.append(ws)
        sessions = set()
        for ws in sockets:
            frame = await asyncio.wait_for(ws.recv(), 30)
            assert frame.startswith("CONNECTED")
            sessions.add(
                next(line[8:] for line in frame.split("\n") if line.startswith("session:"))
            )
        return sockets, sessions

    async def close(sockets):
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    loop = asyncio.new_event_loop()
    try:
        sockets, sessions = loop.run_until_complete(open_sessions())
        assert len(sessions) == total
        listed = registry_sessions(db_path, redis_server.url, limit="100000")
        ids = [s["session_id"] for s in listed]
        assert len(ids) == len(set(ids)) == total
        assert set(ids) == sessions
        per_node = Counter(s["node_id"] for s in listed)
        assert per_node == {nodes[0].node_id: 500, nodes[1].node_id: 500}
        listed_nodes = cli_json("nodes", db_path=db_path, redis_url=redis_server.url)
        counts = {n["node_id"]: n["session_count"] for n in listed_nodes}
        assert counts == {nodes[0].node_id: 500, nodes[1].node_id: 500}
        loop.run_until_complete(close(sockets))
    finally:
        loop.close()


@pytest.mark.parametrize("layer", ["pubsub", "core"])
def test_the_channel_layer_transport_routes_across_nodes(cluster, tokens, layer):
    a, b = cluster(2, env={"STOMP_TRANSPORT": "layer", "STOMP_CHANNEL_LAYER": layer})
    topic = f"/topic/{unique()}"
    subscriber = connected(b, "bob", tokens)
    subscriber.subscribe(topic)
    subscriber.subscribe("/user/queue/notify")
    sender = connected(a, "alice", tokens)
    sender.send(topic, f"over the {layer} layer", receipt=True)
    assert subscriber.wait_for_message().body == f"over the {layer} layer"
    result = (
        DjangoSession(a.http_url)
        .login("carol")
        .post_json("/notify/", {"to": "bob", "text": f"{layer} notify"})
    )
    assert result == {"sessions": 1, "nodes": 1}
    assert json.loads(subscriber.wait_for_message(lambda m: "notify" in m.body).body)["text"] == (
        f"{layer} notify"
    )
