"""``history()`` / ``ahistory()``: a destination's stored messages, read from Python."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.test import override_settings

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster.backends import get_history
from stomp_cluster.queries import HISTORY_LIMIT, StoredMessage, ahistory, history
from tests.support.procs import RedisServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]

TOPICS = {**settings.STOMP_CLUSTER, "HISTORY_TOPICS": ["/topic/room.*"]}


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    """The in-memory history, then RedisHistory on the test redis-server."""
    extra = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("clean_redis")
        extra = {
            "HISTORY_BACKEND": "stomp_cluster.history.redis.RedisHistory",
            "HISTORY_OPTIONS": {"hosts": [server.url], "prefix": "test"},
        }
    with override_settings(STOMP_CLUSTER={**TOPICS, **extra}):
        yield request.param


async def test_history_returns_the_newest_messages_oldest_first(backend):
    sent = [
        (await asend_to_destination("/topic/room.1", f"m{n}", {"x-n": str(n)})).message_id
        for n in range(5)
    ]
    await asend_to_destination("/topic/room.2", "elsewhere")

    found = await ahistory("/topic/room.1", limit=3)

    assert [m.message_id for m in found] == sent[2:]
    first = found[0]
    assert isinstance(first, StoredMessage)
    assert (first.destination, first.body) == ("/topic/room.1", b"m2")
    assert first.headers == (("x-n", "2"), ("content-type", "text/plain;charset=utf-8"))
    age = datetime.datetime.now(tz=datetime.UTC) - first.timestamp
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)
    assert [m.body for m in await ahistory("/topic/room.1")] == [b"m%d" % n for n in range(5)]


async def test_history_since_an_id_pages_forward(backend):
    sent = [(await asend_to_destination("/topic/room.1", f"m{n}")).message_id for n in range(7)]

    page = await ahistory("/topic/room.1", since=sent[1], limit=3)
    assert [m.message_id for m in page] == sent[2:5]
    page = await ahistory("/topic/room.1", since=page[-1].message_id, limit=3)
    assert [m.message_id for m in page] == sent[5:]
    assert await ahistory("/topic/room.1", since=sent[-1]) == []


async def test_history_of_a_user_destination_needs_the_user(backend):
    await asend_to_user("alice", "/queue/inbox", "for alice")
    await asend_to_user("bob", "/queue/inbox", "for bob")
    await asend_to_user("alice", "/queue/other", "not this queue")

    mine = await ahistory("/queue/inbox", user="alice")
    assert [(m.destination, m.body) for m in mine] == [("/user/queue/inbox", b"for alice")]
    assert [m.body for m in await ahistory("/user/queue/inbox", user="bob")] == [b"for bob"]
    with pytest.raises(ValueError, match="pass user="):
        await ahistory("/user/queue/inbox")


async def test_history_of_a_destination_without_one_is_a_clear_error(backend):
    with pytest.raises(ValueError, match="/topic/chat keeps no history: list it in HISTORY_TOPICS"):
        await ahistory("/topic/chat")


@pytest.mark.parametrize("limit", [0, -1, HISTORY_LIMIT + 1, 2.5, True])
async def test_history_refuses_a_limit_out_of_range(limit):
    with override_settings(STOMP_CLUSTER=TOPICS):
        with pytest.raises(ValueError, match="limit must be a whole number"):
            await ahistory("/topic/room.1", limit=limit)


async def test_history_refuses_a_malformed_since():
    with override_settings(STOMP_CLUSTER=TOPICS):
        with pytest.raises(ValueError, match="invalid history id"):
            await ahistory("/topic/room.1", since="yesterday")


@override_settings(STOMP_CLUSTER={**TOPICS, "HISTORY_BACKEND": None})
async def test_history_without_a_backend_is_a_clear_error():
    assert get_history() is None
    with pytest.raises(ValueError, match="keeps no history"):
        await ahistory("/topic/room.1")
    with pytest.raises(ValueError, match="keeps no history"):
        await ahistory("/queue/inbox", user="alice")


def test_sync_history_is_the_same_read():
    with override_settings(STOMP_CLUSTER=TOPICS):
        from asgiref.sync import async_to_sync

        async_to_sync(asend_to_destination)("/topic/room.9", "hello")
        [message] = history("/topic/room.9")
        assert message.body == b"hello"
