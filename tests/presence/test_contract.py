"""The presence contract, which every backend passes: memory and Redis run the same tests."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from django.core.exceptions import ImproperlyConfigured

from stomp_cluster.exceptions import NodeIdInUse
from stomp_cluster.presence.base import SessionPage, encode_cursor
from stomp_cluster.presence.memory import MemoryPresence
from tests.support.records import node, session, sub
from tests.support.waiting import await_until

HOSTILE = ["a}b{c", "*", "\n", "", "x:sessions", "{node-a}", "é\r\nü", "a" * 300]


@pytest.fixture
async def registered(backend):
    """node-a, node-b and node-c are registered (cross-node queries only see those)."""
    for node_id in ("node-a", "node-b", "node-c"):
        await backend.register_node(node(node_id), 30)
    return backend


async def all_pages(backend, *, cursor=None, **filters) -> list[str]:
    """Walk every page of ``sessions(**filters)`` and return the session ids seen."""
    seen = []
    while True:
        page = await backend.sessions(cursor=cursor, **filters)
        seen += [s.session_id for s in page.sessions]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


# -- nodes -----------------------------------------------------------------------------


async def test_registered_node_is_listed_alive_with_its_session_count(backend):
    await backend.register_node(node("node-b"), 30)
    await backend.register_node(node("node-a"), 30)
    await backend.add_session(session("s1", "node-a"))

    listed = await backend.nodes()

    assert [(n.node_id, n.alive, n.session_count) for n in listed] == [
        ("node-a", True, 1),
        ("node-b", True, 0),
    ]
    assert listed[0].channel_name == "specific.node-a!"
    assert listed[0].started_at == 1000.0
    assert await backend.lost_nodes() == []


async def test_register_node_again_keeps_its_sessions(backend):
    await backend.register_node(node(), 30)
    await backend.add_session(session("s1"))

    await backend.register_node(node(), 30)

    assert await backend.count_sessions(node="node-a") == 1


async def test_register_node_with_new_started_at_drops_previous_incarnation(backend):
    await backend.register_node(node(started_at=1000.0), 30)
    await backend.add_session(session("s1", user="u1", subs=(("1", "/topic/a"),)))

    await backend.register_node(node(started_at=2000.0), 30)

    assert await backend.get_session("s1") is None
    assert not await backend.is_online("u1")
    assert await backend.subscriber_count("/topic/a") == 0
    assert [n.started_at for n in await backend.nodes()] == [2000.0]


async def test_heartbeat_of_unknown_node_returns_false(backend):
    assert await backend.heartbeat_node("nobody", 30) is False
    assert [n.node_id for n in await backend.nodes() if n.channel_name] == []


async def test_heartbeat_touches_live_sessions_of_that_node_only(backend):
    await backend.register_node(node("node-a"), 30)
    await backend.register_node(node("node-b"), 30)
    await backend.add_session(session("a1", "node-a", at=10.0))
    await backend.add_session(session("a2", "node-a", at=11.0))
    await backend.add_session(session("b1", "node-b", at=12.0))

    ok = await backend.heartbeat_node("node-a", 30, session_ids=["a1", "b1", "gone"], now=500.25)

    assert ok is True
    assert (await backend.get_session("a1")).last_seen == 500.25
    assert (await backend.get_session("a2")).last_seen == 11.0
    assert (await backend.get_session("b1")).last_seen == 12.0
    assert await backend.get_session("gone") is None
    assert {n.node_id: n.last_heartbeat for n in await backend.nodes()}["node-a"] == 500.25


async def test_unregister_node_removes_it_and_returns_its_sessions(backend):
    await backend.register_node(node("node-a"), 30)
    await backend.register_node(node("node-b"), 30)
    await backend.add_session(session("a2", "node-a", at=2.0, user="u", subs=(("1", "/t"),)))
    await backend.add_session(session("a1", "node-a", at=1.0))
    await backend.add_session(session("b1", "node-b", user="u", subs=(("1", "/t"),)))

    removed = await backend.unregister_node("node-a")

    assert [s.session_id for s in removed] == ["a1", "a2"]
    assert removed[1].subscriptions == (sub("1", "/t"),)
    assert [n.node_id for n in await backend.nodes()] == ["node-b"]
    assert await backend.user_nodes("u") == {"node-b": 1}
    assert await backend.destination_nodes("/t") == {"node-b": 1}
    assert await backend.heartbeat_node("node-a", 30) is False
    assert await backend.unregister_node("node-a") == []


async def test_lost_node_is_listed_then_reaped_exactly_once(backend, peer):
    await backend.register_node(node("node-a"), 1)
    await backend.register_node(node("node-b"), 30)
    await backend.add_session(session("a1", "node-a", user="u", subs=(("1", "/t"),)))
    await backend.add_session(session("a2", "node-a"))
    await backend.add_session(session("b1", "node-b", user="u"))
    await await_until(backend.lost_nodes, what="node-a to be lost")  # after 1 s

    assert {n.node_id: n.alive for n in await backend.nodes()} == {
        "node-a": False,
        "node-b": True,
    }
    assert await peer.lost_nodes() == ["node-a"]
    first, second = await asyncio.gather(backend.reap_node("node-a"), peer.reap_node("node-a"))

    assert sorted(len(result) for result in (first, second)) == [0, 2]
    assert sorted(s.session_id for s in first + second) == ["a1", "a2"]
    assert await backend.lost_nodes() == []
    assert [n.node_id for n in await backend.nodes()] == ["node-b"]
    assert await backend.user_nodes("u") == {"node-b": 1}
    assert await backend.subscriber_count("/t") == 0
    assert await backend.heartbeat_node("node-a", 30) is False


async def test_a_lapsed_node_is_lost_only_after_the_grace_and_a_heartbeat_clears_it(backend):
    # After a store outage longer than the TTL every node has lapsed at once: the first
    # sweeper back marks them missing and must give them a whole grace to heartbeat.
    await backend.register_node(node("node-a"), 0.2)
    await backend.register_node(node("node-b"), 0.2)
    await asyncio.sleep(0.3)

    assert await backend.lost_nodes(grace=0.6) == []  # marked missing, not lost
    # node-a heartbeats: refreshed, but told that it had lapsed (senders skipped it
    # meanwhile), so that it fences its sessions.
    assert await backend.heartbeat_node("node-a", 30) is False
    assert await backend.heartbeat_node("node-a", 30) is True
    await asyncio.sleep(0.7)

    assert await backend.lost_nodes(grace=0.6) == ["node-b"]
    # The heartbeat cleared node-a's mark: lapsing again starts a new grace.
    assert await backend.heartbeat_node("node-a", 0.2) is True
    await asyncio.sleep(0.3)
    assert await backend.lost_nodes(grace=0.6) == ["node-b"]
    assert await backend.lost_nodes() == ["node-a", "node-b"]  # no grace: every lapsed one


async def test_a_second_owner_of_a_live_node_id_is_refused(backend):
    await backend.register_node(dataclasses.replace(node("node-a"), owner="first"), 0.3)

    with pytest.raises(NodeIdInUse):
        await backend.register_node(dataclasses.replace(node("node-a"), owner="second"), 30)
    assert await backend.heartbeat_node("node-a", 0.3, owner="second") is False
    assert await backend.heartbeat_node("node-a", 0.3, owner="first") is True
    assert (
        await backend.register_node(dataclasses.replace(node("node-a"), owner="first"), 0.3) is None
    )

    # Once the first owner's liveness lapsed (it crashed), a new process takes the id, and
    # the old one, should it wake up, learns from its heartbeat that it was fenced.
    await asyncio.sleep(0.4)
    await backend.register_node(dataclasses.replace(node("node-a"), owner="second"), 30)
    assert await backend.heartbeat_node("node-a", 30, owner="first") is False
    assert await backend.heartbeat_node("node-a", 30, owner="second") is True


async def test_lost_node_that_heartbeats_before_reaping_keeps_its_sessions(backend):
    await backend.register_node(node("node-a"), 1)
    await backend.add_session(session("a1", "node-a"))
    await await_until(backend.lost_nodes, what="node-a to be lost")  # after 1 s
    assert await backend.lost_nodes() == ["node-a"]

    # Refreshed, and told it had lapsed (so the node fences its clients); the registry
    # keeps its sessions, and a reap now finds it alive.
    assert await backend.heartbeat_node("node-a", 30, session_ids=["a1"]) is False

    assert await backend.lost_nodes() == []
    assert await backend.reap_node("node-a") == []
    assert await backend.get_session("a1") is not None


async def test_reaping_a_live_node_does_nothing(backend):
    await backend.register_node(node("node-a"), 30)
    await backend.add_session(session("a1", "node-a"))

    assert await backend.reap_node("node-a") == []
    assert await backend.count_sessions() == 1


async def test_sweep_lock_has_one_owner_until_released(backend, peer):
    assert await backend.acquire_sweep_lock("node-a", 30) is True
    assert await peer.acquire_sweep_lock("node-b", 30) is False
    assert await backend.acquire_sweep_lock("node-a", 30) is True  # the owner renews
    assert await peer.release_sweep_lock("node-b") is False

    assert await backend.release_sweep_lock("node-a") is True

    assert await peer.acquire_sweep_lock("node-b", 30) is True
    assert await backend.acquire_sweep_lock("node-a", 30) is False


async def test_sweep_lock_expires(backend):
    assert await backend.acquire_sweep_lock("node-a", 0.2) is True
    # Expired after 0.2 s, or a little more on a loaded machine.
    await await_until(lambda: backend.acquire_sweep_lock("node-b", 30), what="the lock")


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_non_positive_ttl_is_rejected(backend, ttl):
    with pytest.raises(ValueError):
        await backend.register_node(node(), ttl)
    with pytest.raises(ValueError):
        await backend.acquire_sweep_lock("me", ttl)


# -- sessions --------------------------------------------------------------------------


async def test_session_round_trips_every_field(backend, registered):
    record = dataclasses.replace(
        session("s1", user="42", at=1700000000.123456789, subs=(("sub-1", "/queue/é"),)),
        username="zoë",
        remote_addr="::1",
        user_agent='Mozilla/5.0 "quoted" \\ ',
        version="1.1",
        last_seen=1700000001.5,
        subscriptions=(sub("sub-1", "/queue/é", "client-individual"), sub("0", "/topic/a")),
    )
    anonymous = session("s2")
    await backend.add_session(record)
    await backend.add_session(anonymous)

    assert await backend.get_session("s1") == record
    assert await backend.get_session("s2") == anonymous
    assert await backend.get_session("s3") is None


async def test_add_session_again_replaces_it_and_its_indexes(backend, registered):
    await backend.add_session(session("s1", user="old", subs=(("1", "/old"), ("2", "/both"))))
    replacement = session("s1", user="new", subs=(("2", "/both"), ("3", "/new")))

    await backend.add_session(replacement)

    assert await backend.get_session("s1") == replacement
    assert not await backend.is_online("old")
    assert await backend.is_online("new")
    assert await backend.subscriber_count("/old") == 0
    assert await backend.subscriber_count("/both") == 1
    assert await backend.subscriber_count("/new") == 1
    assert await backend.count_sessions() == 1


async def test_remove_session_returns_it_once_and_clears_indexes(backend, registered):
    record = session("s1", user="u", subs=(("1", "/t"), ("2", "/t")))
    await backend.add_session(record)

    assert await backend.remove_session("s1", "node-b") is None  # not on that node
    assert await backend.remove_session("s1", "node-a") == record
    assert await backend.remove_session("s1", "node-a") is None

    assert await backend.get_session("s1") is None
    assert not await backend.is_online("u")
    assert await backend.subscriber_count("/t") == 0
    assert await backend.count_sessions() == 0
    assert (await backend.sessions()).sessions == ()


async def test_subscriptions_keep_their_order_and_replace_by_id(backend, registered):
    await backend.add_session(session("s1"))

    await backend.add_subscription("s1", "node-a", sub("b", "/one"))
    await backend.add_subscription("s1", "node-a", sub("a", "/two"))
    await backend.add_subscription("s1", "node-a", sub("c", "/three"))
    await backend.add_subscription("s1", "node-a", sub("b", "/four", "client"))

    record = await backend.get_session("s1")
    assert record.subscriptions == (
        sub("a", "/two"),
        sub("c", "/three"),
        sub("b", "/four", "client"),
    )
    assert await backend.subscriber_count("/one") == 0
    assert [s.session_id for s in await backend.subscribers("/four")] == ["s1"]


async def test_subscription_of_unknown_session_is_ignored(backend, registered):
    await backend.add_subscription("ghost", "node-a", sub("1", "/t"))

    assert await backend.subscriber_count("/t") == 0
    assert await backend.get_session("ghost") is None
    assert await backend.subscribers("/t") == []


async def test_remove_subscription_is_idempotent(backend, registered):
    await backend.add_session(session("s1", subs=(("1", "/t"), ("2", "/u"))))

    await backend.remove_subscription("s1", "node-a", "1")
    await backend.remove_subscription("s1", "node-a", "1")
    await backend.remove_subscription("ghost", "node-a", "1")

    assert (await backend.get_session("s1")).subscriptions == (sub("2", "/u"),)
    assert await backend.subscriber_count("/t") == 0
    assert await backend.destination_nodes("/u") == {"node-a": 1}


async def test_session_subscribed_twice_is_one_subscriber_and_two_subscriptions(
    backend, registered
):
    await backend.add_session(session("s1", subs=(("1", "/t"), ("2", "/t"))))
    await backend.add_session(session("s2", "node-b", subs=(("1", "/t"),)))

    subscribers = await backend.subscribers("/t")

    assert [s.session_id for s in subscribers] == ["s1", "s2"]
    assert len(subscribers[0].subscriptions) == 2
    assert await backend.subscriber_count("/t") == 3
    assert await backend.destination_nodes("/t") == {"node-a": 2, "node-b": 1}


# -- queries ---------------------------------------------------------------------------


async def test_user_queries_span_nodes(backend, registered):
    await backend.add_session(session("s3", "node-b", user="u", at=3.0))
    await backend.add_session(session("s1", "node-a", user="u", at=1.0))
    await backend.add_session(session("s2", "node-a", user="u", at=2.0))
    await backend.add_session(session("s4", "node-c", user="other"))
    await backend.add_session(session("s5", "node-c"))

    assert [s.session_id for s in await backend.sessions_of("u")] == ["s1", "s2", "s3"]
    assert await backend.user_nodes("u") == {"node-a": 2, "node-b": 1}
    assert await backend.is_online("u")
    assert not await backend.is_online("nobody")
    assert await backend.sessions_of("nobody") == []
    assert await backend.user_nodes("nobody") == {}
    assert not await backend.is_online("")  # anonymous sessions belong to no user


async def test_subscribers_span_nodes_in_order(backend):
    for i, node_id in enumerate(("node-c", "node-a", "node-b")):
        await backend.register_node(node(node_id), 30)
        await backend.add_session(session(f"s{i}", node_id, at=10.0 - i, subs=(("x", "/t"),)))
    await backend.add_session(session("other", "node-a", subs=(("x", "/u"),)))

    assert [s.session_id for s in await backend.subscribers("/t")] == ["s2", "s1", "s0"]
    assert await backend.destination_nodes("/t") == {"node-a": 1, "node-b": 1, "node-c": 1}
    assert await backend.subscriber_count("/t") == 3
    assert await backend.subscriber_count("/nothing") == 0
    assert await backend.destination_nodes("/nothing") == {}


async def test_count_sessions_per_node_and_in_total(backend):
    await backend.register_node(node("node-a"), 30)
    await backend.register_node(node("node-b"), 30)
    for i in range(3):
        await backend.add_session(session(f"a{i}", "node-a"))
    await backend.add_session(session("b0", "node-b"))

    assert await backend.count_sessions() == 4
    assert await backend.count_sessions(node="node-a") == 3
    assert await backend.count_sessions(node="node-z") == 0


async def test_session_id_with_nul_is_rejected(backend, registered):
    with pytest.raises(ValueError, match="NUL"):
        await backend.add_session(session("a\x00b"))

    # Elsewhere NUL is just a character.
    await backend.add_session(session("s1", user="\x00", subs=(("\x00", "/\x00"),)))
    assert (await backend.get_session("s1")).subscriptions == (sub("\x00", "/\x00"),)
    assert [s.session_id for s in await backend.subscribers("/\x00")] == ["s1"]
    assert await backend.user_nodes("\x00") == {"node-a": 1}
    await backend.remove_subscription("s1", "node-a", "\x00")
    assert await backend.subscriber_count("/\x00") == 0


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_ids_and_destinations_stay_apart(backend, registered, value):
    await backend.register_node(node(value), 30)
    sid = f"s-{value}"
    await backend.add_session(session(sid, value, user=value, subs=((value, value),)))
    await backend.add_session(session("plain", "node-a", user="a", subs=(("1", "/a"),)))

    assert (await backend.get_session(sid)).subscriptions == (sub(value, value),)
    assert [s.session_id for s in await backend.sessions_of(value)] == [sid]
    assert [s.session_id for s in await backend.subscribers(value)] == [sid]
    assert await backend.user_nodes(value) == {value: 1}
    assert await backend.destination_nodes(value) == {value: 1}
    assert [s.session_id for s in await backend.sessions_of("a")] == ["plain"]
    assert await backend.subscriber_count("/a") == 1
    assert await all_pages(backend, node=value) == [sid]
    assert (await backend.remove_session(sid, value)).session_id == sid
    assert await backend.count_sessions() == 1


async def test_sessions_of_unregistered_node_are_seen_once_it_registers(backend):
    await backend.add_session(session("s1", "node-z", user="u", subs=(("1", "/t"),)))

    assert await backend.get_session("s1") is None
    assert await backend.sessions_of("u") == []
    assert await backend.subscribers("/t") == []
    assert await backend.count_sessions() == 0
    assert await all_pages(backend, node="node-z") == ["s1"]  # asked directly
    assert await backend.count_sessions(node="node-z") == 1

    await backend.register_node(node("node-z"), 30)

    assert (await backend.get_session("s1")).node_id == "node-z"
    assert await backend.is_online("u")
    assert await backend.destination_nodes("/t") == {"node-z": 1}
    assert await backend.count_sessions() == 1


# -- pages -----------------------------------------------------------------------------


async def test_pages_are_ordered_by_connection_time_then_id(backend, registered):
    # Ties on connected_at are broken by session id, across nodes.
    specs = [("s05", 5.0), ("s01", 1.0), ("s03", 3.0), ("t03", 3.0), ("a03", 3.0), ("s02", 2.0)]
    for i, (sid, at) in enumerate(specs):
        await backend.add_session(session(sid, ("node-a", "node-b")[i % 2], at=at))

    first = await backend.sessions(limit=4)
    second = await backend.sessions(limit=4, cursor=first.next_cursor)

    assert [s.session_id for s in first.sessions] == ["s01", "s02", "a03", "s03"]
    assert [s.session_id for s in second.sessions] == ["t03", "s05"]
    assert second.next_cursor is None
    assert await all_pages(backend, limit=1) == ["s01", "s02", "a03", "s03", "t03", "s05"]


async def test_ties_are_ordered_by_code_point_whatever_the_locale(backend, registered):
    ids = ["z", "é", "E", "a", "ab", "a\n", "日本", "Z", "é2"]
    for i, sid in enumerate(ids):
        await backend.add_session(session(sid, ("node-a", "node-b")[i % 2], at=7.0))

    assert await all_pages(backend, limit=1) == sorted(ids)
    assert await all_pages(backend, limit=4) == sorted(ids)


async def test_exactly_full_last_page_has_no_cursor(backend, registered):
    for i in range(4):
        await backend.add_session(session(f"s{i}", at=float(i)))

    page = await backend.sessions(limit=4)

    assert len(page.sessions) == 4
    assert page.next_cursor is None
    assert await backend.sessions(limit=4, cursor=encode_cursor((3.0, "s3"))) == SessionPage(
        (), None
    )


async def test_pages_survive_sessions_leaving_and_joining(backend, registered):
    for i in range(6):
        await backend.add_session(session(f"s{i}", at=float(i)))

    first = await backend.sessions(limit=3)
    await backend.remove_session("s2", "node-a")  # the cursor's own session leaves
    await backend.remove_session("s0", "node-a")
    await backend.add_session(session("early", at=0.5))  # joins before the cursor
    await backend.add_session(session("late", at=9.0))
    rest = await all_pages(backend, limit=2, cursor=first.next_cursor)

    assert [s.session_id for s in first.sessions] == ["s0", "s1", "s2"]
    assert rest == ["s3", "s4", "s5", "late"]


async def test_page_filters_combine(backend, registered):
    await backend.add_session(session("a1", "node-a", user="u", at=1.0, subs=(("1", "/t"),)))
    await backend.add_session(session("a2", "node-a", user="v", at=2.0, subs=(("1", "/t"),)))
    await backend.add_session(session("a3", "node-a", user="u", at=3.0))
    await backend.add_session(session("b1", "node-b", user="u", at=4.0, subs=(("1", "/t"),)))
    await backend.add_session(session("b2", "node-b", at=5.0, subs=(("1", "/t"), ("2", "/t"))))

    assert await all_pages(backend, node="node-b", limit=1) == ["b1", "b2"]
    assert await all_pages(backend, user="u", limit=2) == ["a1", "a3", "b1"]
    assert await all_pages(backend, destination="/t", limit=2) == ["a1", "a2", "b1", "b2"]
    assert await all_pages(backend, user="u", destination="/t", limit=1) == ["a1", "b1"]
    assert await all_pages(backend, node="node-a", user="u", destination="/t") == ["a1"]
    assert await all_pages(backend, node="node-b", destination="/t") == ["b1", "b2"]
    assert await all_pages(backend, user="nobody") == []


@pytest.mark.parametrize("cursor", ["not a cursor", "e30", encode_cursor((1.0, "x"))[:-3]])
async def test_bad_cursor_is_rejected(backend, cursor):
    with pytest.raises(ValueError):
        await backend.sessions(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1])
async def test_bad_limit_is_rejected(backend, limit):
    with pytest.raises(ValueError):
        await backend.sessions(limit=limit)


async def test_unknown_option_is_a_configuration_error(backend):
    with pytest.raises(ImproperlyConfigured, match="bogus"):
        type(backend)(bogus=1)


async def test_close_then_use_again(backend, registered):
    await backend.add_session(session("s1"))
    await backend.close()

    assert await backend.count_sessions() == 1


def test_memory_backends_do_not_share_state():
    assert MemoryPresence()._sessions is not MemoryPresence()._sessions
