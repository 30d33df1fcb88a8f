"""A busy node that missed a stored message closes its sessions with the resume ERROR.

Two daphne nodes on one Redis; alice's session is on node B. A sender next to the cluster
(this test process, with no node, its inbox capacity set to 2) sends her messages while B
is frozen (SIGSTOP: a busy node that stops reading its inbox, for far less than its
heartbeat TTL). B's inbox fills, a send finds it full: the message is stored, and the
sender leaves B a missed mark. Once B runs again, alice's open socket gets what reached B
and then the ERROR telling her to resume, never silence; resuming on node A from the
ERROR's ``x-resume-from`` (just before the first message B missed) and skipping the
message-ids she has gives her the rest: every message, each once.
"""

from __future__ import annotations

import os
import signal

import pytest
from django.test import override_settings

from stomp_cluster import backends, send_to_user
from stomp_cluster.history.base import parse_id, previous_id
from stomp_cluster.node import MISSED_MESSAGE
from tests.support.clients import RawStompClient

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]

DESTINATION = "/user/queue/missed"
SENT_FROZEN = 4  # past capacity 2, even if B's pending pop takes the first one


def subscribed(url: str, passcode: str, **headers: str) -> tuple[RawStompClient, list]:
    """alice on *url*, subscribed; and the messages replayed before the RECEIPT."""
    client = RawStompClient(url, timeout=30)
    client.connect(login="alice", passcode=passcode)
    client.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": DESTINATION, "receipt": "r", **headers}
    )
    replayed = []
    while (frame := client.recv_frame()).command != "RECEIPT":
        replayed.append(frame)
    return client, replayed


def test_a_frozen_nodes_sessions_are_told_to_resume_and_recover_every_message_once(
    cluster, tokens, redis_server
):
    a, b = cluster(2)
    passcode = tokens("alice")
    client, _ = subscribed(b.ws_url, passcode)
    again = None
    sender = override_settings(
        STOMP_CLUSTER={
            "NODE_ID": "sender",
            "REDIS": redis_server.url,
            "TRANSPORT_OPTIONS": {"hosts": [redis_server.url], "capacity": 2},
        }
    )
    try:
        with sender:
            backends.reset()
            assert send_to_user("alice", "/queue/missed", "m0").sessions == 1
            m0 = client.recv_frame()
            assert m0.body == b"m0"
            assert b.pid is not None
            os.kill(b.pid, signal.SIGSTOP)
            try:
                sent = [send_to_user("alice", "/queue/missed", f"m{n}") for n in range(1, 5)]
            finally:
                os.kill(b.pid, signal.SIGCONT)
            backends.reset()
        assert all(d.stored for d in sent)
        assert any(d.missed_nodes for d in sent)  # B's inbox was found full

        frames, _ = client.read_until_closed(timeout=60)
        *messages, error = frames
        assert (error.command, error.headers.get("message")) == ("ERROR", MISSED_MESSAGE)
        assert all(f.command == "MESSAGE" for f in messages), frames
        seen = [m0, *messages]
        # The ERROR says where to resume: just before the first message B missed.
        first_missed = next(d for d in sent if d.missed_nodes)
        assert error.headers.get("x-resume-from") == previous_id(first_missed.message_id)

        again, resumed = subscribed(
            a.ws_url, passcode, **{"x-resume-from": error.headers["x-resume-from"]}
        )
        # The client skips the message-ids it already has; then it has each message once.
        have = {f.headers["message-id"] for f in seen}
        got = seen + [f for f in resumed if f.headers["message-id"] not in have]
        ids = [f.headers["message-id"] for f in got]
        assert len(set(ids)) == len(ids)
        assert sorted(ids, key=parse_id)[1:] == [d.message_id for d in sent]
        by_id = {f.headers["message-id"]: f.body for f in got}
        assert [by_id[i] for i in sorted(ids, key=parse_id)] == [
            f"m{n}".encode() for n in range(SENT_FROZEN + 1)
        ]
    finally:
        client.close()
        if again is not None:
            again.close()
