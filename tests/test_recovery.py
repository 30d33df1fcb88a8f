"""Recovery of missed messages: offline delivery, x-resume-from, trimmed histories."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster.backends import get_history
from stomp_cluster.exceptions import HistoryUnavailable
from stomp_cluster.messages import ToUser
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import login_headers

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
    # Messages are sent before the client connects: outside a node, in memory.
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]


async def connect(headers):
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp(headers)
    return client


async def subscribe(client, destination, sub_id="s", ack="auto", **headers):
    frame = {"id": sub_id, "destination": destination, "receipt": "r", "ack": ack, **headers}
    await client.send_frame("SUBSCRIBE", frame)
    messages = []
    while True:
        frame = await client.receive_frame()
        if frame.command is Command.RECEIPT:
            return frame, messages
        messages.append(frame)


async def test_messages_sent_while_offline_arrive_in_order_on_next_subscription():
    headers = await login_headers("olive")
    ids = []
    for n in range(5):
        delivery = await asend_to_user("olive", "/queue/inbox", f"m{n}")
        assert delivery.sessions == 0
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/inbox")
    assert [m.body for m in messages] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    ids = [m.get("message-id") for m in messages]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    await client.disconnect()
    # Delivered once: a later subscription does not get them again.
    again = await connect(headers)
    _, messages = await subscribe(again, "/user/queue/inbox")
    assert messages == []
    await again.disconnect()


async def test_live_only_messages_are_not_kept():
    headers = await login_headers("lara")
    await asend_to_user("lara", "/queue/inbox", "kept")
    await asend_to_user("lara", "/queue/inbox", "gone", live_only=True)
    client = await connect(headers)
    _, messages = await subscribe(client, "/user/queue/inbox", **{"x-resume-from": "0-0"})
    assert [m.body for m in messages] == [b"kept"]
    await client.disconnect()


async def test_resume_from_last_seen_id_gets_the_rest_then_live():
    headers = await login_headers("rita")
    client = await connect(headers)
    await subscribe(client, "/user/queue/feed")
    for n in range(3):
        await asend_to_user("rita", "/queue/feed", f"a{n}")
    seen = [await client.receive_frame() for _ in range(3)]
    await client.disconnect()
    for n in range(3):
        await asend_to_user("rita", "/queue/feed", f"b{n}")
    back = await connect(headers)
    receipt, messages = await subscribe(
        back, "/user/queue/feed", **{"x-resume-from": seen[1].get("message-id")}
    )
    assert receipt.get("x-recovered") == "true"
    assert [m.body for m in messages] == [b"a2", b"b0", b"b1", b"b2"]
    await asend_to_user("rita", "/queue/feed", "live")
    assert (await back.receive_frame()).body == b"live"
    await back.disconnect()


async def test_resume_header_on_connect_applies_to_every_user_subscription():
    headers = await login_headers("cora")
    await asend_to_user("cora", "/queue/one", "1")
    await asend_to_user("cora", "/queue/two", "2")
    client = await connect({**headers, "x-resume-from": "0-0"})
    _, one = await subscribe(client, "/user/queue/one")
    assert [m.body for m in one] == [b"1"]
    await client.send_frame(
        "SUBSCRIBE", {"id": "t", "destination": "/user/queue/two", "receipt": "r2"}
    )
    assert (await client.receive_frame()).body == b"2"
    await client.disconnect()


@override_settings(
    STOMP_CLUSTER={"HISTORY_MAX_LENGTH": 3, "PASSWORD_LOGIN": True, "NODE_ID": "test-node"}
)
async def test_trimmed_history_tells_the_client_to_reload():
    headers = await login_headers("tess")
    client = await connect(headers)
    await subscribe(client, "/user/queue/t")
    await asend_to_user("tess", "/queue/t", "first")
    first = await client.receive_frame()
    await client.disconnect()
    for n in range(10):
        await asend_to_user("tess", "/queue/t", f"x{n}")
    back = await connect(headers)
    receipt, messages = await subscribe(
        back, "/user/queue/t", **{"x-resume-from": first.get("message-id")}
    )
    assert receipt.get("x-recovered") == "false"
    assert messages and messages[0].get("x-recovered") == "false"
    assert messages[-1].body == b"x9"
    assert len(messages) < 10
    await back.disconnect()


async def test_invalid_resume_id_is_an_error():
    client = await connect(await login_headers("ivan"))
    await client.send_frame(
        "SUBSCRIBE", {"id": "s", "destination": "/user/queue/x", "x-resume-from": "yesterday"}
    )
    frame = await client.receive_frame()
    assert frame.command is Command.ERROR
    assert frame.get("message") == "x-resume-from must be a message-id such as 1700000000000-0"


@override_settings(
    STOMP_CLUSTER={
        "HISTORY_TOPICS": ["/topic/news.*"],
        "PASSWORD_LOGIN": True,
        "NODE_ID": "test-node",
    }
)
async def test_listed_topics_have_a_history_too():
    for n in range(3):
        await asend_to_destination("/topic/news.sport", f"n{n}")
    await asend_to_destination("/topic/chat", "not kept")
    client = await connect(None)
    _, messages = await subscribe(client, "/topic/news.sport", **{"x-resume-from": "0-0"})
    assert [m.body for m in messages] == [b"n0", b"n1", b"n2"]
    _, chat = await subscribe(client, "/topic/chat", "c", **{"x-resume-from": "0-0"})
    assert chat == []
    await client.disconnect()


@override_settings(
    STOMP_CLUSTER={"HISTORY_BACKEND": None, "PASSWORD_LOGIN": True, "NODE_ID": "test-node"}
)
async def test_without_history_user_messages_are_live_only():
    headers = await login_headers("hugo")
    await asend_to_user("hugo", "/queue/x", "while offline")
    client = await connect(headers)
    _, messages = await subscribe(client, "/user/queue/x")
    assert messages == []
    await client.disconnect()


async def test_nack_on_a_user_destination_redelivers_at_once():
    headers = await login_headers("nina")
    client = await connect(headers)
    await subscribe(client, "/user/queue/jobs", ack="client-individual")
    await asend_to_user("nina", "/queue/jobs", "job")
    first = await client.receive_frame()
    assert first.get("redelivered") is None
    await client.send_frame("NACK", {"id": first.get("ack")})
    again = await client.receive_frame()
    assert again.body == b"job"
    assert again.get("message-id") == first.get("message-id")
    assert again.get("redelivered") == "true"
    await client.send_frame("ACK", {"id": again.get("ack"), "receipt": "acked"})
    assert (await client.receive_frame()).command is Command.RECEIPT
    await client.disconnect()


async def test_a_cumulative_nack_redelivers_from_the_history_across_pages():
    headers = await login_headers("nadia")
    for n in range(150):  # more than one page (RECOVERY_PAGE)
        await asend_to_user("nadia", "/queue/jobs", f"job{n}")
    await asend_to_user("nadia", "/queue/other", "not this one")
    client = await connect(headers)
    _, messages = await subscribe(client, "/user/queue/jobs", ack="client")
    assert len(messages) == 150
    await client.send_frame("NACK", {"id": messages[-1].get("ack")})
    again = [await client.receive_frame() for _ in range(150)]
    assert [m.body for m in again] == [m.body for m in messages]
    assert {m.get("redelivered") for m in again} == {"true"}
    assert await client.receive_nothing()
    await client.disconnect()


async def test_unacknowledged_messages_come_again_after_reconnect_acknowledged_never():
    headers = await login_headers("abel")
    client = await connect(headers)
    await subscribe(client, "/user/queue/work", ack="client")
    for n in range(3):
        await asend_to_user("abel", "/queue/work", f"w{n}")
    frames = [await client.receive_frame() for _ in range(3)]
    await client.send_frame("ACK", {"id": frames[0].get("ack"), "receipt": "a"})
    assert (await client.receive_frame()).command is Command.RECEIPT
    await client.disconnect()  # w1 and w2 were delivered but never acknowledged

    back = await connect(headers)
    _, again = await subscribe(back, "/user/queue/work", ack="client")
    assert [m.body for m in again] == [b"w1", b"w2"]
    from stomp_cluster.node import get_node

    assert get_node().stats["redelivered"] == 2
    assert {m.get("redelivered") for m in again} == {"true"}
    await back.send_frame("ACK", {"id": again[-1].get("ack"), "receipt": "b"})
    assert (await back.receive_frame()).command is Command.RECEIPT
    await back.disconnect()

    last = await connect(headers)
    _, none = await subscribe(last, "/user/queue/work", ack="client")
    assert none == []
    await last.disconnect()


async def test_live_messages_from_concurrent_senders_are_not_taken_for_duplicates():
    from stomp_cluster.node import get_node

    headers = await login_headers("zoe")
    await asend_to_user("zoe", "/queue/z", "old")
    client = await connect(headers)
    _, recovered = await subscribe(client, "/user/queue/z", **{"x-resume-from": "0-0"})
    watermark = recovered[-1].get("message-id")
    ms = int(watermark.split("-")[0])
    node = get_node()
    # Two senders appended ids ms+2 and ms+1; the later-appended one arrives first.
    for n in (2, 1):
        node.deliver(ToUser("zoe", "/user/queue/z", f"sender {n}".encode(), (), f"{ms + n}-0"))
    # A live copy of a recovered message is a duplicate, though, and is dropped.
    node.deliver(ToUser("zoe", "/user/queue/z", b"old", (), watermark))
    # A marker after it, on the same path: the duplicate, had it been let through, is
    # before the marker.
    node.deliver(ToUser("zoe", "/user/queue/z", b"marker", (), f"{ms + 3}-0"))
    frames = [await client.receive_frame() for _ in range(3)]
    assert [f.body for f in frames] == [b"sender 2", b"sender 1", b"marker"]
    await client.disconnect()


@override_settings(
    STOMP_CLUSTER={"HISTORY_MAX_LENGTH": 5000, "PASSWORD_LOGIN": True, "NODE_ID": "test-node"}
)
async def test_recovery_pages_through_a_history_longer_than_one_read():
    count = 2500  # more than two reads of RECOVERY_PAGE
    headers = await login_headers("paula")
    for n in range(count):
        await asend_to_user("paula", "/queue/p", str(n))
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/p", **{"x-resume-from": "0-0"})
    assert [int(m.body) for m in messages] == list(range(count))
    assert receipt.get("x-recovered") == "true"
    await client.disconnect()


# -- Every gap announced ------------------------------------------------------------------
# When the history cannot give a subscription everything since its cursor or since the user
# went offline, the RECEIPT says x-recovered:false (with or without x-resume-from), the first
# MESSAGE says it too, and when no MESSAGE follows and no receipt was asked for, a gap
# MESSAGE (empty body, x-recovered:false, x-gap:true) says it. Memory and Redis histories.


@pytest.fixture(params=["memory", "redis"])
def gap_history(request: pytest.FixtureRequest) -> Iterator[str]:
    """A history that keeps 3 messages per user, in memory or in a test Redis."""
    config: dict[str, Any] = {"HISTORY_MAX_LENGTH": 3, "PASSWORD_LOGIN": True, "NODE_ID": "n"}
    if request.param == "redis":
        url = request.getfixturevalue("clean_redis").url
        config |= {
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
            "HISTORY_OPTIONS": {"hosts": [url]},
        }
    with override_settings(STOMP_CLUSTER=config):
        yield request.param


async def test_trimmed_offline_messages_of_one_destination_are_announced_on_the_receipt(
    gap_history,
):
    headers = await login_headers("gale")
    await asend_to_user("gale", "/queue/t", "lost")  # pending for /queue/t
    for n in range(5):  # more than HISTORY_MAX_LENGTH others: "lost" is trimmed
        await asend_to_user("gale", "/queue/other", f"o{n}")
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/t")
    assert messages == []
    assert receipt.get("x-recovered") == "false"
    await client.disconnect()


async def test_without_a_receipt_a_gap_message_tells_the_client(gap_history):
    headers = await login_headers("gwen")
    await asend_to_user("gwen", "/queue/t", "lost")
    for n in range(5):
        await asend_to_user("gwen", "/queue/other", f"o{n}")
    client = await connect(headers)
    await client.send_frame("SUBSCRIBE", {"id": "s", "destination": "/user/queue/t"})
    gap = await client.receive_frame()
    assert gap.command is Command.MESSAGE
    assert (gap.body, gap.get("x-recovered"), gap.get("x-gap")) == (b"", "false", "true")
    assert gap.get("subscription") == "s"
    # Live messages follow as usual.
    await asend_to_user("gwen", "/queue/t", "live")
    assert (await client.receive_frame()).body == b"live"
    await client.disconnect()
    # Resuming from the gap's id is valid and complete: only what came after it.
    await asend_to_user("gwen", "/queue/t", "after")
    back = await connect(headers)
    receipt, messages = await subscribe(
        back, "/user/queue/t", **{"x-resume-from": gap.get("message-id")}
    )
    assert [m.body for m in messages] == [b"live", b"after"]
    assert receipt.get("x-recovered") == "true"
    await back.disconnect()


async def test_trimmed_offline_messages_with_survivors_mark_receipt_and_first_message(gap_history):
    headers = await login_headers("gus")
    for n in range(10):
        await asend_to_user("gus", "/queue/t", f"x{n}")
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/t")
    assert receipt.get("x-recovered") == "false"
    assert [m.body for m in messages] == [b"x7", b"x8", b"x9"]
    assert [m.get("x-recovered") for m in messages] == ["false", None, None]
    assert all(m.get("x-gap") is None for m in messages)
    await client.disconnect()


async def test_a_complete_offline_delivery_announces_nothing(gap_history):
    headers = await login_headers("gil")
    await asend_to_user("gil", "/queue/t", "kept")
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/t")
    assert [m.body for m in messages] == [b"kept"]
    assert receipt.get("x-recovered") is None
    assert messages[0].get("x-recovered") is None
    await client.disconnect()


async def test_a_resume_whose_gap_holds_nothing_left_gets_a_gap_message(gap_history):
    headers = await login_headers("gray")
    client = await connect(headers)
    await subscribe(client, "/user/queue/t")
    await asend_to_user("gray", "/queue/t", "seen")
    seen = await client.receive_frame()
    await client.disconnect()
    await asend_to_user("gray", "/queue/t", "lost")
    for n in range(5):
        await asend_to_user("gray", "/queue/other", f"o{n}")
    back = await connect(headers)
    await back.send_frame(
        "SUBSCRIBE",
        {"id": "s", "destination": "/user/queue/t", "x-resume-from": seen.get("message-id")},
    )
    gap = await back.receive_frame()
    assert (gap.body, gap.get("x-recovered"), gap.get("x-gap")) == (b"", "false", "true")
    await back.disconnect()


async def test_an_unreadable_history_is_announced_as_a_possible_gap(monkeypatch):
    headers = await login_headers("gabe")
    await asend_to_user("gabe", "/queue/t", "unknown")
    history = get_history()
    assert history is not None

    async def down(*args, **kwargs):
        raise HistoryUnavailable("message history unreachable: test")

    monkeypatch.setattr(history, "take_pending", down)
    client = await connect(headers)
    receipt, messages = await subscribe(client, "/user/queue/t")
    assert messages == [] and receipt.get("x-recovered") == "false"
    await client.send_frame("SUBSCRIBE", {"id": "s2", "destination": "/user/queue/u"})
    gap = await client.receive_frame()
    assert (gap.get("subscription"), gap.get("x-gap")) == ("s2", "true")
    await client.disconnect()
