"""Sends to the users of a SIGKILLed node keep succeeding, and nothing is lost or doubled.

Three daphne nodes; 200 sessions of one user on node B; a sender process next to node A
streams ``send_to_user`` to that user; B is SIGKILLed mid-stream and its inbox is found
full (filled to the transport's capacity, as a dead node's inbox ends up). Every send
still returns: the message is stored, B is counted as missed (its inbox is full until its
heartbeat lapses, then it is dead and gets no push), and no ``DeliveryFailed`` makes a
caller retry into a duplicate. Each of the 200 clients then resumes on node C with
``x-resume-from`` its last message-id and ends with every message exactly once, in order.
"""

from __future__ import annotations

import contextlib

import pytest
import redis

from tests.support.clients import Closed, RawStompClient
from tests.support.senders import stream
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SESSIONS = 200
TOTAL = 300
DESTINATION = "/user/queue/stream"


def inbox_of(client: redis.Redis, node_id: str) -> bytes:
    """The inbox address of *node_id*, as the node registered it (its channel name)."""
    for key in client.scan_iter(match="*:n:{*}:info"):
        info = client.hgetall(key)
        if info.get(b"node_id") == node_id.encode():
            return info[b"channel_name"]
    raise AssertionError(f"node {node_id} is not registered")


def bodies(frames) -> list[int]:
    return [int(f.body) for f in frames if f.command == "MESSAGE"]


@pytest.mark.timeout(300)
def test_a_dead_nodes_full_inbox_fails_no_send_and_resumers_get_everything_once(
    clean_redis, cluster, tokens, db_path, tmp_path
):
    _a, b, c = cluster(3, node_ttl=2, env={"STOMP_HISTORY_MAX_LENGTH": "20000"})
    passcode = tokens("alice")
    clients = []
    try:
        for n in range(SESSIONS):
            client = RawStompClient(b.ws_url, timeout=30)
            client.connect(login="alice", passcode=passcode)
            client.send_frame("SUBSCRIBE", {"id": "s", "destination": DESTINATION, "receipt": "r"})
            assert client.recv_frame().command == "RECEIPT", n
            clients.append(client)
        raw = redis.Redis.from_url(clean_redis.url)
        inbox = inbox_of(raw, b.node_id)

        sender = stream(tmp_path, db_path, clean_redis.url, "alice", TOTAL, 100, "--report")
        wait_until(lambda: len(sender.acknowledged()) >= TOTAL // 3, 60, "a third sent")
        b.kill()
        # What the dead node's inbox becomes when sends keep coming: full.
        with raw.pipeline(transaction=False) as pipe:
            for _ in range(10):
                pipe.rpush(inbox, *([b"\x90"] * 1000))
            pipe.execute()

        output = sender.finish(timeout=120)
        assert f"sent {TOTAL} messages (0 not routed live)" in output
        assert sender.acknowledged() == set(range(TOTAL))

        resumed = []
        for client in clients:
            with contextlib.suppress(Closed):  # read what B wrote before it died
                client.read_until_closed(timeout=30)
            got = [f for f in client.frames if f.command == "MESSAGE"]
            again = RawStompClient(c.ws_url, timeout=30)
            again.connect(login="alice", passcode=passcode)
            resume = got[-1].headers["message-id"] if got else "0-0"
            again.send_frame(
                "SUBSCRIBE", {"id": "s", "destination": DESTINATION, "x-resume-from": resume}
            )
            resumed.append((got, again))

        for got, again in resumed:
            rest = []
            while len(got) + len(rest) < TOTAL:
                frame = again.recv_frame(timeout=60)
                assert frame.command == "MESSAGE", frame
                assert frame.headers.get("x-recovered") != "false", frame
                rest.append(frame)
            assert bodies(got + rest) == list(range(TOTAL))  # all, once, in order
            ids = [f.headers["message-id"] for f in got + rest]
            assert len(set(ids)) == TOTAL
            again.close()
    finally:
        for client in clients:
            client.close()
