"""x-rewind and the HTTP publish API on a real 2-node cluster (daphne and uvicorn).

The test project keeps a history of ``/topic/chat`` (``HISTORY_TOPICS``) and takes the
publish API's key from ``STOMP_PUBLISH_KEY``. The chat's history is shared by every test
that writes to it, so each test sends more messages of its own (with a unique prefix)
before it rewinds than it rewinds.
"""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from tests.support.clients import unique
from tests.support.cluster import ClusterFactory
from tests.support.http import post_with_key
from tests.support.nodes import AsgiNode
from tests.support.stompjs import StompJsClient

KEY = "cluster-test-publish-key-0123456789"
CHAT = "/topic/chat"

pytestmark = pytest.mark.timeout(120)


def start(cluster: ClusterFactory) -> list[AsgiNode]:
    """node-a under daphne and node-b under uvicorn, with the publish API on."""
    return cluster(servers=["daphne", "uvicorn"], env={"STOMP_PUBLISH_KEY": KEY})


def test_rewind_with_stomppy_then_live_without_gap_or_duplicate(cluster, stomppy):
    node_a, node_b = start(cluster)
    tag = unique("rw")
    sender = stomppy(node_b, "bob")
    sent = [f"{tag} old {n}" for n in range(30)] + [f"{tag} live {n}" for n in range(100)]
    for body in sent[:29]:
        sender.send(CHAT, body)
    sender.send(CHAT, sent[29], receipt=True)  # all 30 stored before anyone rewinds

    def keep_sending() -> None:
        for body in sent[30:]:
            sender.send(CHAT, body)

    receiver = stomppy(node_a, "alice")
    live = threading.Thread(target=keep_sending)
    live.start()  # messages arrive while the subscription reads the history
    receiver.subscribe(CHAT, "chat", headers={"x-rewind": "20"}, receipt=False)
    live.join()
    sender.send(CHAT, f"{tag} end", receipt=True)
    receiver.wait_for_message(lambda m: m.body == f"{tag} end", timeout=30)

    got = [m for m in receiver.listener.messages if m.body.startswith(tag)][:-1]
    bodies = [m.body for m in got]
    start_at = sent.index(bodies[0])
    assert bodies == sent[start_at:], "a gap or a duplicate between rewind and live"
    assert start_at >= 10  # no more than the 20 newest when it subscribed
    flags = [m.headers.get("x-rewind") for m in got]
    rewound = flags.count("true")
    assert rewound >= 20
    assert flags == ["true"] * rewound + [None] * (len(flags) - rewound)
    ids = [m.headers["message-id"] for m in got]
    assert len(set(ids)) == len(ids)
    sender.close()
    receiver.close()


def test_rewind_with_stompjs_and_a_bad_count(cluster, tokens, stomppy):
    node_a, node_b = start(cluster)
    tag = unique("js")
    sender = stomppy(node_b, "bob")
    for n in range(5):
        sender.send(CHAT, f"{tag} {n}", receipt=n == 4)
    with StompJsClient() as js:
        js.connect(node_a.ws_url, login="alice", passcode=tokens("alice"))
        js.subscribe(CHAT, "chat", {"x-rewind": "3"}, receipt="r-chat")
        rewound = js.wait_for_messages(3)
        assert [e["body"] for e in rewound] == [f"{tag} 2", f"{tag} 3", f"{tag} 4"]
        assert [e["headers"].get("x-rewind") for e in rewound] == ["true"] * 3
        sender.send(CHAT, f"{tag} live")
        live = js.wait_for_message(lambda e: e["body"] == f"{tag} live")
        assert "x-rewind" not in live["headers"]
        js.subscribe(CHAT, "bad", {"x-rewind": "-1"})
        error = js.wait_for("error")
        assert error["headers"]["message"] == (
            "x-rewind must be a whole number of messages, such as 10"
        )
    sender.close()


def test_publish_over_http_reaches_subscribers_on_another_node(cluster, stomppy):
    node_a, node_b = start(cluster)
    tag = unique("http")
    chat = stomppy(node_a, "alice")
    chat.subscribe(CHAT, "chat")
    queue = f"/queue/{tag}"
    bob = stomppy(node_a, "bob")
    bob.subscribe(f"/user{queue}", "mine")
    url = f"{node_b.http_url.rstrip('/')}/stomp/publish/"

    # curl, as the how-to shows it.
    out = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", url,
            "-H", f"Authorization: Bearer {KEY}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"destination": CHAT, "body": f"{tag} from curl"}),
        ],
        capture_output=True, check=True, timeout=30, text=True,
    )  # fmt: skip
    delivery = json.loads(out.stdout)
    assert delivery["stored"] is True and delivery["sessions"] >= 1
    message = chat.wait_for_message(lambda m: m.body == f"{tag} from curl")
    assert message.headers["message-id"] == delivery["message_id"]

    status, _, answer = post_with_key(
        url,
        {
            "messages": [
                {"user": "bob", "destination": queue, "body": "for bob", "headers": {"x-a": "1"}},
                {"destination": CHAT, "body_base64": "AAEC"},
            ]
        },
        KEY,
    )
    assert status == 200
    for_bob, binary = answer["results"]
    assert for_bob["ok"] and for_bob["delivery"]["sessions"] == 1
    assert for_bob["delivery"]["nodes"] == 1 and for_bob["delivery"]["missed_nodes"] == 0
    assert binary["ok"]
    got = bob.wait_for_message(lambda m: m.headers.get("destination") == f"/user{queue}")
    assert (got.body, got.headers["x-a"]) == ("for bob", "1")

    status, headers, answer = post_with_key(url, {"destination": CHAT, "body": "x"}, KEY + "x")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="stomp_cluster", error="invalid_token"'
    status, _, answer = post_with_key(url, {"destination": CHAT}, KEY)
    assert (status, answer["field"]) == (400, "body")
    status, headers, _ = post_with_key(url, None, KEY, method="GET")
    assert (status, headers["allow"]) == (405, "POST")
    chat.close()
    bob.close()
