"""Node-level faults on real daphne nodes, counted over real sockets: no socket left deaf.

After a fault every open client socket must either keep receiving (a message sent after
the fault reaches it) or have been closed by its node with an ERROR telling it to resume.
Each test counts, for the clients it had before the fault: messages delivered, sockets
closed (with the ERROR they got), sockets open but deaf (must be 0) and messages lost
without notice (must be 0).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.clients import StompPyClient, unique
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
