"""Client presence across real nodes: a stomp.py watcher on node A, members on node B.

The test project lists ``/topic/room.*`` in ``PRESENCE_DESTINATIONS``. Counts, not times:
the watcher waits (with generous deadlines) for the events it must see, and the test
counts the MESSAGEs they came in.
"""

from __future__ import annotations

import json

import pytest

from tests.support.clients import StompPyClient, unique
from tests.support.stompjs import StompJsClient
from tests.support.waiting import wait_until

NODE_TTL = 2.0


def members(frame) -> list[dict]:
    return json.loads(frame.body)["members"]


def presence_messages(watcher: StompPyClient, kind: str) -> list:
    return [m for m in watcher.listener.messages if m.headers.get("x-presence") == kind]


def sessions_in(frames) -> list[str]:
    return [member["session"] for frame in frames for member in members(frame)]


def client_on(node, user: str, tokens) -> StompPyClient:
    client = StompPyClient(node.ws_url)
    client.connect(user, tokens(user))
    return client


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_watcher_sees_joins_and_leaves_of_sessions_on_another_node(cluster, tokens):
    node_a, node_b = cluster(2)
    room = f"/topic/room.{unique()}"
    watcher = client_on(node_a, "alice", tokens)
    early = client_on(node_b, "carol", tokens)
    early.subscribe(room)
    watcher.subscribe("/presence" + room)  # waits for the receipt: the snapshot came first
    (snapshot,) = presence_messages(watcher, "snapshot")
    assert snapshot.headers["x-presence-page"] == "1/1"
    assert members(snapshot) == [{"user": "carol", "session": early.session}]

    bob = client_on(node_b, "bob", tokens)
    first = bob.subscribe(room)
    bob.subscribe(room)  # a second subscription: no second join
    wait_until(lambda: presence_messages(watcher, "join"), 10, "bob's join")
    bob.unsubscribe(first)
    early.disconnect()
    wait_until(lambda: presence_messages(watcher, "leave"), 10, "carol's leave")
    bob.disconnect()
    wait_until(lambda: len(presence_messages(watcher, "leave")) == 2, 10, "bob's leave")

    joins, leaves = presence_messages(watcher, "join"), presence_messages(watcher, "leave")
    assert [members(f) for f in joins] == [[{"user": "bob", "session": bob.session}]]
    assert sessions_in(leaves) == [early.session, bob.session]
    assert {f.headers["destination"] for f in joins + leaves} == {"/presence" + room}
    watcher.disconnect()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_nodes_sessions_leave_in_one_message_per_room(cluster, tokens):
    node_a, node_b = cluster(2, node_ttl=NODE_TTL)
    rooms = [f"/topic/room.{unique()}" for _ in range(2)]
    watcher = client_on(node_a, "alice", tokens)
    for room in rooms:
        watcher.subscribe("/presence" + room)
    doomed = [client_on(node_b, user, tokens) for user in ("bob", "carol") * 3]
    for client in doomed:
        for room in rooms:
            client.subscribe(room)
    sessions = sorted(client.session for client in doomed)
    wait_until(
        lambda: len(presence_messages(watcher, "join")) == len(doomed) * len(rooms),
        20,
        "every join",
    )

    node_b.kill()  # SIGKILL: no disconnect runs; node A's sweeper reaps node B
    wait_until(
        lambda: sorted(sessions_in(presence_messages(watcher, "leave"))) == sorted(sessions * 2),
        12 * NODE_TTL,
        "a leave for every session of the killed node, in each room",
    )
    leaves = presence_messages(watcher, "leave")
    # One MESSAGE per room for the whole batch, not one per session.
    by_room = {frame.headers["destination"]: frame for frame in leaves}
    assert len(leaves) == len(by_room) == len(rooms)
    for room in rooms:
        assert sorted(sessions_in([by_room["/presence" + room]])) == sessions
    for client in doomed:
        client.close()
    watcher.disconnect()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stompjs_member_that_drops_its_socket_leaves(cluster, tokens):
    node_a, node_b = cluster(2)
    room = f"/topic/room.{unique()}"
    watcher = client_on(node_a, "alice", tokens)
    watcher.subscribe("/presence" + room)
    browser = StompJsClient()
    try:
        connected = browser.connect(node_b.ws_url, login="bob", passcode=tokens("bob"))
        assert connected is not None
        session = connected["headers"]["session"]
        browser.subscribe(room, receipt=unique("r"))
        wait_until(lambda: presence_messages(watcher, "join"), 10, "bob's join")
        browser.force_close()  # no DISCONNECT: the socket just goes
        wait_until(lambda: presence_messages(watcher, "leave"), 10, "bob's leave")
    finally:
        browser.close()
    joins, leaves = presence_messages(watcher, "join"), presence_messages(watcher, "leave")
    assert [members(f) for f in joins] == [[{"user": "bob", "session": session}]]
    assert [members(f) for f in leaves] == [[{"user": "bob", "session": session}]]
    watcher.disconnect()
