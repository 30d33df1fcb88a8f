"""Node-level faults on real daphne nodes, counted over real sockets: no socket left deaf.

After a fault every open client socket must either keep receiving (a message sent after
the fault reaches it) or have been closed by its node with an ERROR telling it to resume.
Each test counts, for the clients it had before the fault: messages delivered, sockets
closed (with the ERROR they got), sockets open but deaf (must be 0) and messages lost
without notice (must be 0); see :mod:`tests.support.faults`. The faults: Redis stalled
(SIGSTOP) for three TTLs; a node frozen (SIGSTOP) for three TTLs, as a node whose event
loop is blocked; Redis SIGKILLed and started again empty on the same port; a second
process started with a live node's id. In the last
two a sender process streams numbered messages to alice throughout, and each closed
client resumes on a live node from the last message it saw. The counts and the
convergence times are printed (``-s``), never asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from tests.support.clients import Closed, RawStompClient, StompPyClient, unique
from tests.support.faults import FaultClient, log_count, take_census
from tests.support.nodes import AsgiNode, cli_json, server_env
from tests.support.senders import send_in_turn, stream
from tests.support.waiting import wait_until

NODE_TTL = 2.0
CLIENTS_PER_NODE = 5
AFTER = 5  # messages sent after the fault


def connected(node, user, tokens) -> StompPyClient:
    client = StompPyClient(node.ws_url)
    client.connect(user, tokens(user))
    return client


def send_after_the_fault(node, tokens, topic: str) -> StompPyClient:
    """Connect a sender once the cluster serves again, and send AFTER messages with receipts."""

    def try_send() -> StompPyClient | None:
        sender = StompPyClient(node.ws_url)
        try:
            sender.connect("alice", tokens("alice"))
            sender.send(topic, "probe", receipt=True)
        except Exception:
            sender.close()
            return None
        return sender

    sender = wait_until(try_send, 6 * NODE_TTL, "a send to succeed after the fault", interval=0.5)
    for i in range(AFTER):
        sender.send(topic, f"after-{i}", receipt=True)
    return sender


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_redis_stall_of_three_ttls_leaves_no_socket_deaf(cluster, redis_server, tokens):
    nodes = cluster(3, node_ttl=NODE_TTL)
    topic = f"/topic/{unique()}"
    clients = [
        connected(node, user, tokens)
        for node in nodes
        for user in ("bob", "carol") * (CLIENTS_PER_NODE // 2) + ("bob",) * (CLIENTS_PER_NODE % 2)
    ]
    for client in clients:
        client.subscribe(topic)
    assert redis_server.proc is not None
    pid = redis_server.proc.pid

    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3 * NODE_TTL)
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(2 * NODE_TTL)  # let every node heartbeat, resync and sweep
    sender = send_after_the_fault(nodes[0], tokens, topic)

    wanted = {f"after-{i}" for i in range(AFTER)}
    deadline = time.monotonic() + 10
    delivered = closed = deaf = lost = 0
    for client in clients:
        while time.monotonic() < deadline:
            if client.listener.errors or client.listener.disconnected:
                break
            if wanted <= set(client.bodies(topic)):
                break
            time.sleep(0.05)
        got = wanted & set(client.bodies(topic))
        delivered += len(got)
        if client.listener.errors or client.listener.disconnected:
            closed += 1
            message = (
                client.listener.errors[0].headers.get("message", "")
                if client.listener.errors
                else ""
            )
            assert "x-resume-from" in message or not client.listener.errors, message
        elif got != wanted:
            deaf += not got
            lost += len(wanted - got)
    print(
        f"stall of 3 TTLs, {len(clients)} clients: delivered={delivered} closed={closed} "
        f"deaf={deaf} lost_without_notice={lost}"
    )
    assert deaf == 0
    assert lost == 0
    sender.close()
    for client in clients:
        client.close()


# -- a frozen node, and a Redis restarted empty, with a user stream running throughout ------

STREAM = 500  # numbered messages to alice, at RATE per second, across the fault
RATE = 40.0
PROBES = 10  # numbered messages to alice once the cluster converged
TOPIC_PROBES = {str(n) for n in range(5)}
HISTORY = {"STOMP_HISTORY_MAX_LENGTH": "20000"}


def alice_clients(nodes, tokens, queue: str, topic: str, per_node: int) -> list[FaultClient]:
    """*per_node* sockets of alice on each node, each subscribed to the queue and the topic."""
    clients = []
    for node in nodes:
        for _ in range(per_node):
            client = StompPyClient(node.ws_url, heartbeats=(0, 0))
            client.connect("alice", tokens("alice"))
            client.subscribe(f"/user{queue}")
            client.subscribe(topic)
            clients.append(FaultClient(client, node.node_id, f"/user{queue}", topic))
    return clients


def alice_stream(tmp_path, db_path, redis_url, queue, *, first: int, count: int, rate: float):
    env = server_env(db_path=db_path, redis_url=redis_url, node_id="sender", extra=HISTORY)
    return send_in_turn(
        tmp_path / "senders", env, first=first, count=count, rate=rate, users=["alice"], queue=queue
    )


def resumer(node, tokens, queue: str):
    """``resume(client, cursor)`` for :func:`take_census`: alice again, on *node*."""

    def resume(_client: FaultClient, cursor: str) -> StompPyClient:
        again = StompPyClient(node.ws_url, heartbeats=(0, 0))
        again.connect("alice", tokens("alice"))
        again.subscribe(f"/user{queue}", headers={"x-resume-from": cursor})
        return again

    return resume


def registered_alive(db_path, redis_url) -> set[str]:
    try:
        found = cli_json("nodes", db_path=db_path, redis_url=redis_url)
    except Exception:
        return set()
    return {n["node_id"] for n in found if n.get("alive", True)}


def reaps_of(nodes, node_id: str) -> int:
    """How many times any node's sweeper reaped *node_id* (from the nodes' logs)."""
    return sum(log_count(node.log_tail(5000), f"node {node_id} lost: reaped") for node in nodes)


def probe_and_count(
    nodes, clients, sender, tokens, tmp_path, db_path, redis_url, queue, topic, resume_node
):
    """Send the probes once the cluster serves again, then take the census."""
    probe = alice_stream(tmp_path, db_path, redis_url, queue, first=STREAM, count=PROBES, rate=20)
    probe.finish(timeout=60)
    assert probe.failed() == {}, probe.failed()
    topic_probe = stream(tmp_path, db_path, redis_url, topic, len(TOPIC_PROBES), 0, "--topic")
    topic_probe.finish(timeout=60)
    return take_census(
        clients,
        expected=sender.acknowledged() | probe.acknowledged(),
        probes=probe.acknowledged(),
        topic_probes=TOPIC_PROBES,
        resume=resumer(resume_node, tokens, queue),
        raised=len(sender.failed()),
    )


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_node_frozen_for_three_ttls_is_fenced_and_its_clients_resume_without_loss(
    cluster, redis_server, db_path, tokens, tmp_path
):
    # SIGSTOP freezes the whole process: from the cluster's view, exactly a node whose
    # event loop is blocked (a busy handler, a long GC pause, a stuck syscall).
    a, b = cluster(2, node_ttl=NODE_TTL, env=HISTORY)
    queue, topic = f"/queue/{unique('frozen')}", f"/topic/{unique('frozen')}"
    clients = alice_clients([a, b], tokens, queue, topic, per_node=3)
    on_b = [c for c in clients if c.node_id == b.node_id]
    sender = alice_stream(
        tmp_path, db_path, redis_server.url, queue, first=0, count=STREAM, rate=RATE
    )
    wait_until(lambda: len(sender.acknowledged()) >= 80, 60, "80 acknowledged sends")
    assert b.pid is not None

    os.kill(b.pid, signal.SIGSTOP)
    try:
        time.sleep(3 * NODE_TTL)
    finally:
        os.kill(b.pid, signal.SIGCONT)
    thawed = time.monotonic()
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(c.closed for c in on_b), 30, "node-b to close its sessions")
    closed_in = time.monotonic() - thawed
    wait_until(
        lambda: registered_alive(db_path, redis_server.url) >= {a.node_id, b.node_id},
        60,
        "both nodes registered and alive",
        interval=0.5,
    )
    converged_in = time.monotonic() - thawed
    sender.finish(timeout=120)

    census = probe_and_count(
        [a, b], clients, sender, tokens, tmp_path, db_path, redis_server.url, queue, topic, a
    )
    print(
        census.line(f"node frozen {3 * NODE_TTL:g}s (TTL {NODE_TTL:g}s)")
        + f"; node-b reaped {reaps_of([a, b], b.node_id)}x; its sessions closed "
        f"{closed_in:.1f}s and both nodes registered {converged_in:.1f}s after SIGCONT"
    )
    assert census.deaf == 0, census.line("deaf")
    assert census.lost_silently == 0, census.line("lost")
    assert census.duplicated == [] and census.disordered == [], census.line("order")
    # Those closed were told to resume (and did, above); node-a's kept receiving.
    assert all("x-resume-from" in m for m in census.close_messages), census.close_messages
    assert not any(c.closed for c in clients if c.node_id == a.node_id), census.line("a")
    for c in clients:
        with contextlib.suppress(Exception):
            c.client.close()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_killed_and_restarted_empty_mid_stream_leaves_nothing_deaf_or_unannounced(
    cluster, redis_server, db_path, tokens, tmp_path
):
    nodes = cluster(3, node_ttl=NODE_TTL, env=HISTORY)
    queue, topic = f"/queue/{unique('empty')}", f"/topic/{unique('empty')}"
    clients = alice_clients(nodes, tokens, queue, topic, per_node=2)
    url = redis_server.url
    sender = alice_stream(tmp_path, db_path, url, queue, first=0, count=STREAM, rate=RATE)
    wait_until(lambda: len(sender.acknowledged()) >= 80, 60, "80 acknowledged sends")

    redis_server.kill()
    killed = time.monotonic()
    time.sleep(NODE_TTL)
    redis_server.start()  # same port, no persistence: empty
    wait_until(
        lambda: registered_alive(db_path, url) >= {n.node_id for n in nodes},
        60,
        "every node registered again",
        interval=0.5,
    )
    converged_in = time.monotonic() - killed
    sender.finish(timeout=120)
    assert sender.failed(), "no send failed: the outage missed the stream"

    census = probe_and_count(
        nodes, clients, sender, tokens, tmp_path, db_path, url, queue, topic, nodes[0]
    )
    print(
        census.line(f"Redis killed, restarted empty after {NODE_TTL:g}s")
        + f"; every node registered again {converged_in:.1f}s after the kill"
    )
    assert census.deaf == 0, census.line("deaf")
    assert census.lost_silently == 0, census.line("lost")
    assert census.duplicated == [] and census.disordered == [], census.line("order")
    assert all("x-resume-from" in m for m in census.close_messages), census.close_messages
    # Every send was acknowledged or raised to its caller: none vanished in between.
    assert sender.acknowledged() | set(sender.failed()) == set(range(STREAM))
    for c in clients:
        with contextlib.suppress(Exception):
            c.client.close()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_second_process_with_a_live_node_id_is_refused_and_the_first_loses_nothing(
    cluster, redis_server, db_path, tokens, tmp_path
):
    [a] = cluster(1, node_ttl=NODE_TTL, env=HISTORY)
    queue, topic = f"/queue/{unique('twin')}", f"/topic/{unique('twin')}"
    clients = alice_clients([a], tokens, queue, topic, per_node=2)
    twin = AsgiNode(
        a.node_id,
        db_path=db_path,
        redis_url=redis_server.url,
        node_ttl=NODE_TTL,
        env=HISTORY,
        log_dir=tmp_path / "twin",
    )
    twin.start()
    try:
        # Its first WebSocket makes it try to register: refused, and it says so.
        probe = RawStompClient(twin.ws_url, timeout=15)
        frame = probe.recv_frame()
        assert frame.command == "ERROR"
        assert frame.headers["message"].startswith("node id in use"), frame.headers
        with pytest.raises(Closed):
            probe.recv_frame()
        assert "refuses to serve" in twin.log_tail(200)

        # The live node kept its registration, its inbox and its sessions.
        sender = alice_stream(
            tmp_path, db_path, redis_server.url, queue, first=0, count=50, rate=50
        )
        sender.finish(timeout=60)
        census = probe_and_count(
            [a], clients, sender, tokens, tmp_path, db_path, redis_server.url, queue, topic, a
        )
        print(census.line("a second process with node-a's id"))
        assert census.closed == 0 and census.deaf == 0, census.line("closed")
        assert census.lost_silently == 0 and census.lost_announced == 0, census.line("lost")
        assert census.delivered == len(clients) * (50 + PROBES), census.line("delivered")
    finally:
        twin.terminate()
        for c in clients:
            with contextlib.suppress(Exception):
                c.client.close()
