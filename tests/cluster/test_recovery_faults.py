"""No message lost: recovery across a node crash and offline delivery, on real processes.

A fault is injected only once the stream it should interrupt is under way (so many
messages received, so many sends acknowledged), never after a fixed sleep: on a loaded
machine the sender may not even have started by then.
"""

from __future__ import annotations

import socket

import pytest

from tests.support.clients import RawStompClient, StompPyClient
from tests.support.nodes import AsgiNode, cli_json
from tests.support.procs import running_redis
from tests.support.senders import stream
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow]


def bodies(client: StompPyClient) -> list[int]:
    return [int(m.body) for m in client.listener.messages]


@pytest.mark.timeout(180)
def test_sigkill_mid_stream_then_resume_on_another_node_gets_everything_once_in_order(
    cluster, tokens, db_path, redis_server, tmp_path
):
    total = 10_000
    b, c = cluster(2, node_ttl=2, env={"STOMP_HISTORY_MAX_LENGTH": "20000"})
    client = StompPyClient(b.ws_url)
    client.connect("alice", tokens("alice"))
    client.subscribe("/user/queue/stream")
    sender = stream(tmp_path, db_path, redis_server.url, "alice", total, 2000)
    wait_until(lambda: len(client.listener.messages) >= 2000, 60, "2,000 messages on node-b")
    b.kill()
    first = list(client.listener.messages)
    last_id = first[-1].headers["message-id"]
    again = StompPyClient(c.ws_url)
    again.connect("alice", tokens("alice"))
    again.subscribe("/user/queue/stream", headers={"x-resume-from": last_id})
    sender.finish(timeout=120)
    wait_until(lambda: len(first) + len(again.listener.messages) >= total, 60, "the rest on node-c")
    received = [int(m.body) for m in first] + bodies(again)
    assert received == list(range(total))  # all, exactly once, in order
    ids = [m.headers["message-id"] for m in first + list(again.listener.messages)]
    assert len(set(ids)) == total


@pytest.mark.timeout(120)
def test_user_offline_while_500_are_sent_gets_all_in_order_on_connecting(
    cluster, tokens, db_path, redis_server, tmp_path
):
    a, b = cluster(2)
    stream(tmp_path, db_path, redis_server.url, "carol", 500).finish(timeout=90)
    client = StompPyClient(b.ws_url)
    client.connect("carol", tokens("carol"))
    client.subscribe("/user/queue/stream")
    wait_until(lambda: len(client.listener.messages) >= 500, 30, "500 messages")
    assert bodies(client) == list(range(500))


@pytest.mark.timeout(240)
def test_client_that_never_reads_is_disconnected_while_a_fast_one_loses_nothing(
    cluster, tokens, db_path, redis_server, tmp_path
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
    sender = stream(
        tmp_path, db_path, redis_server.url, topic, total, 200, "--topic", "--size", "4096"
    )
    sender.finish(timeout=120)
    wait_until(lambda: len(fast.listener.messages) >= total, 90, f"{total} messages")
    assert [int(m.body) for m in fast.listener.messages] == list(range(total))
    assert "slow consumer" in node.log_tail(200)
    sessions = cli_json("sessions", db_path=db_path, redis_url=redis_server.url)["sessions"]
    assert [s["username"] for s in sessions] == ["bob"]


@pytest.mark.timeout(150)
def test_redis_restart_mid_stream_with_aof_loses_no_acknowledged_send(db_path, tokens, tmp_path):
    # Durability follows Redis's own persistence: this one keeps an append-only file.
    with running_redis(appendonly=True) as redis:
        restart_mid_stream(redis, db_path, tokens, tmp_path)


def restart_mid_stream(redis, db_path, tokens, tmp_path) -> None:
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
        sender = stream(tmp_path, db_path, redis.url, "bob", total, 300, "--report")
        # Under way, with most of it still to come: then the restart is mid-stream.
        wait_until(lambda: len(sender.acknowledged()) >= 100, 60, "100 acknowledged sends")
        before = sender.acknowledged()
        assert sender.proc.poll() is None, "the stream ended before the restart"
        redis.restart()  # SIGTERM: Redis writes its AOF and comes back with it
        sender.finish(timeout=120)
        acknowledged = sender.acknowledged()
        assert len(acknowledged) > total // 2  # most sends went through around the restart
        assert max(acknowledged) > max(before) + 100  # many of them after it
        client = StompPyClient(node.ws_url)
        client.connect("bob", tokens("bob"))
        client.subscribe("/user/queue/stream", headers={"x-resume-from": "0-0"})
        wait_until(lambda: acknowledged <= set(bodies(client)), 30, "every acknowledged send")
        got = bodies(client)
        assert acknowledged <= set(got)
        assert got == sorted(got)  # in order, and each once
        assert len(got) == len(set(got))
    finally:
        node.terminate()
