"""No message lost: recovery across a node crash and offline delivery, on real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.support.clients import RawStompClient, StompPyClient
from tests.support.nodes import REPO_ROOT, manage, server_env

pytestmark = [pytest.mark.slow]


def stream(
    db_path, redis_url, user: str, count: int, rate: float = 0, *extra: str
) -> subprocess.Popen[str]:
    """Start a sender process (a Django management command on its own, no node)."""
    env = server_env(
        db_path=db_path,
        redis_url=redis_url,
        node_id="sender",
        extra={"STOMP_HISTORY_MAX_LENGTH": "20000"},
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "stream_to_user",
            user,
            str(count),
            "--rate",
            str(rate),
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def bodies(client: StompPyClient) -> list[int]:
    return [int(m.body) for m in client.listener.messages]


@pytest.mark.timeout(180)
def test_sigkill_mid_stream_then_resume_on_another_node_gets_everything_once_in_order(
    cluster, tokens, db_path, redis_server
):
    total = 10_000
    b, c = cluster(2, node_ttl=2, env={"STOMP_HISTORY_MAX_LENGTH": "20000"})
    client = StompPyClient(b.ws_url)
    client.connect("alice", tokens("alice"))
    client.subscribe("/user/queue/stream")
    sender = stream(db_path, redis_server.url, "alice", total, rate=2000)
    deadline = time.monotonic() + 60
    while len(client.listener.messages) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(client.listener.messages) >= 2000, "stream did not start"
    b.kill()
    first = list(client.listener.messages)
    last_id = first[-1].headers["message-id"]
    again = StompPyClient(c.ws_url)
    again.connect("alice", tokens("alice"))
    again.subscribe("/user/queue/stream", headers={"x-resume-from": last_id})
    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-2000:]
    deadline = time.monotonic() + 60
    while len(first) + len(again.listener.messages) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    received = [int(m.body) for m in first] + bodies(again)
    assert received == list(range(total))  # all, exactly once, in order
    ids = [m.headers["message-id"] for m in first + list(again.listener.messages)]
    assert len(set(ids)) == total


@pytest.mark.timeout(120)
def test_user_offline_while_500_are_sent_gets_all_in_order_on_connecting(
    cluster, tokens, db_path, redis_server
):
    a, b = cluster(2)
    sender = stream(db_path, redis_server.url, "carol", 500)
    out, err = sender.communicate(timeout=90)
    assert sender.returncode == 0, err[-2000:]
    client = StompPyClient(b.ws_url)
    client.connect("carol", tokens("carol"))
    client.subscribe("/user/queue/stream")
    deadline = time.monotonic() + 30
    while len(client.listener.messages) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bodies(client) == list(range(500))


@pytest.mark.timeout(240)
def test_client_that_never_reads_is_disconnected_while_a_fast_one_loses_nothing(
    cluster, tokens, db_path, redis_server
):
    # uvicorn's WebSocket send waits for the socket to drain, so a client that does not
    # read makes our outbound queue grow until MAX_OUTBOX.
    [node] = cluster(1, server="uvicorn", env={"STOMP_MAX_OUTBOX": "1000"})
    topic = "/topic/firehose"
    # A small receive buffer, so the kernel holds little of what it does not read.
    slow = RawStompClient(node.ws_url, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
    slow.connect(login="alice", passcode=tokens("alice"))
    slow.send_frame("SUBSCRIBE", {"id": "1", "destination": topic, "receipt": "r"})
    assert slow.recv_frame().command == "RECEIPT"
    # From here on the slow client never reads.
    fast = StompPyClient(node.ws_url)
    fast.connect("bob", tokens("bob"))
    fast.subscribe(topic)
    total = 3000
    # 200 messages/s of 4 KiB: a reading client keeps up even on a busy machine (it may
    # lag five seconds before it counts as slow), while the one that does not read fills
    # the kernel's buffers (about 4 MiB), then 1,000 frames of ours, in about 10 s.
    sender = stream(db_path, redis_server.url, topic, total, 200, "--topic", "--size", "4096")
    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-2000:]
    deadline = time.monotonic() + 90  # generous: CI machines are busy
    while len(fast.listener.messages) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [int(m.body) for m in fast.listener.messages] == list(range(total))
    assert "slow consumer" in node.log_tail(200)
    sessions = manage(
        "stomp_cluster",
        "sessions",
        "--json",
        db_path=db_path,
        env={"REDIS_URL": redis_server.url, "STOMP_NODE_ID": "cli"},
    )
    assert [s["username"] for s in json.loads(sessions)["sessions"]] == ["bob"]


@pytest.mark.timeout(150)
def test_redis_restart_mid_stream_with_aof_loses_no_acknowledged_send(db_path, tokens, tmp_path):
    from tests.support.nodes import AsgiNode
    from tests.support.procs import RedisServer

    redis = RedisServer(appendonly=True)  # durability follows Redis's own persistence
    redis.start()
    node = AsgiNode(
        "node-aof",
        db_path=db_path,
        redis_url=redis.url,
        node_ttl=2,
        env={"STOMP_HISTORY_MAX_LENGTH": "20000"},
        log_dir=tmp_path,
    )
    try:
        node.start()
        total = 1500
        sender = stream(db_path, redis.url, "bob", total, 300, "--report")
        time.sleep(2.0)
        redis.restart()  # SIGTERM: Redis writes its AOF and comes back with it
        out, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err[-2000:]
        acknowledged = {
            int(line.split()[1]) for line in out.splitlines() if line.startswith("acknowledged")
        }
        assert len(acknowledged) > total // 2  # most sends went through around the restart
        client = StompPyClient(node.ws_url)
        client.connect("bob", tokens("bob"))
        client.subscribe("/user/queue/stream", headers={"x-resume-from": "0-0"})
        deadline = time.monotonic() + 30
        while not acknowledged <= set(bodies(client)) and time.monotonic() < deadline:
            time.sleep(0.1)
        got = bodies(client)
        assert acknowledged <= set(got)
        assert got == sorted(got)  # in order, and each once
        assert len(got) == len(set(got))
    finally:
        node.terminate()
        redis.close()
