"""``manage.py stomp_cluster``: nodes, sessions, disconnect and sweep, tables and JSON.

The memory presence backend is filled through its API; one test points a Redis backend at a
closed port to check the exit status when Redis is unreachable.
"""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from stomp_cluster import signals
from stomp_cluster.backends import get_presence
from stomp_cluster.management.commands.stomp_cluster import Command, format_table
from tests.support.fake_cluster import (
    ALICE,
    BOB,
    HEARTBEAT_AGO,
    SEEN_AGO,
    fill,
    fill_chat,
    session_record,
)
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry():
    fill_chat()
    return get_presence()


def run(*args):
    out = StringIO()
    call_command("stomp_cluster", *args, stdout=out)
    return out.getvalue()


def test_tables_are_aligned_with_numbers_on_the_right():
    assert format_table(["NAME", "N"], [["a", 5], ["longer", 12]]).splitlines() == [
        "NAME     N",
        "a        5",
        "longer  12",
    ]


def test_nodes_prints_status_counts_and_totals(registry):
    lines = run("nodes").splitlines()
    assert lines[0].split() == [
        "NODE",
        "STATUS",
        "SESSIONS",
        "LAST",
        "HEARTBEAT",
        "STARTED",
        "(UTC)",
        "COUNTERS",
    ]
    assert lines[1].split()[:3] == ["node-a", "alive", "1"]
    # The heartbeat's age, with plain spaces for the terminal.
    assert "  " + HEARTBEAT_AGO.replace("\xa0", " ") + "  " in lines[1]
    assert lines[2].split()[:3] == ["node-b", "alive", "1"]
    # Columns line up: every row has its status where the header has STATUS.
    column = lines[0].index("STATUS")
    assert lines[1][column:].startswith("alive") and lines[2][column:].startswith("alive")
    assert lines[-1] == "2 nodes (2 alive, 0 lost), 2 sessions"


def test_nodes_show_the_counters_of_their_last_heartbeat(registry):
    async_to_sync(registry.heartbeat_node)("node-a", 30, stats={"delivered": 7, "slow_consumer": 1})
    lines = run("nodes").splitlines()
    assert lines[1].split()[-2:] == ["delivered=7", "slow_consumer=1"]
    [node_a, node_b] = json.loads(run("nodes", "--json"))
    assert node_a["stats"] == {"delivered": 7, "slow_consumer": 1}
    assert node_b["stats"] == {}


def test_nodes_as_json(registry):
    nodes = json.loads(run("nodes", "--json"))
    assert [(n["node_id"], n["alive"], n["session_count"]) for n in nodes] == [
        ("node-a", True, 1),
        ("node-b", True, 1),
    ]
    assert json.loads(run("--json", "nodes")) == nodes  # before or after the action


def test_sessions_lists_oldest_first_with_filters(registry):
    lines = run("sessions").splitlines()
    assert lines[0].split()[:4] == ["SESSION", "USER", "NODE", "ADDRESS"]
    assert [line.split()[1] for line in lines[1:3]] == ["alice", "bob"]
    assert "1970-01-01 00:16:40" in lines[1]  # connected_at 1000.0
    assert lines[1].endswith(SEEN_AGO.replace("\xa0", " "))
    assert lines[-1] == "2 sessions"
    assert run("sessions", "--node", "node-b").splitlines()[1].split()[:3] == [BOB, "bob", "node-b"]
    assert run("sessions", "--user", "alice").splitlines()[1].startswith(ALICE)
    data = json.loads(run("sessions", "--destination", "/user/queue/n", "--json"))
    assert [s["session_id"] for s in data["sessions"]] == [BOB]
    assert data["sessions"][0]["subscriptions"][1] == {
        "id": "1",
        "destination": "/user/queue/n",
        "ack": "auto",
    }
    assert run("sessions", "--user", "nobody") == "No session matches.\n"


def test_sessions_limit_says_when_more_match(registry):
    out = run("sessions", "--limit", "1")
    assert ALICE in out and BOB not in out
    assert out.endswith("1 session\n(more sessions match: raise --limit)\n")
    with pytest.raises(CommandError, match="--limit must be at least 1"):
        run("sessions", "--limit", "0")


def test_disconnect_sends_the_kick_to_the_node_holding_the_session(registry):
    out = run("disconnect", BOB, "--reason", "maintenance")
    assert out == f"disconnected  {BOB}\n"
    message = async_to_sync(get_channel_layer().receive)("specific.node-b!")
    assert message == {"type": "stomp.kick", "session": BOB, "message": "maintenance"}


def test_disconnect_of_an_unknown_session_fails(registry):
    out = StringIO()
    with pytest.raises(CommandError, match="No such session: nope"):
        call_command("stomp_cluster", "disconnect", ALICE, "nope", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "disconnected": [ALICE],
        "not_found": ["nope"],
        "reason": "disconnected by an administrator",
    }


def test_sweep_reaps_lost_nodes_once_and_fires_the_signal(registry):
    fill(["node-x"], [session_record("dead0001", "node-x", "carol", at=5.0)], ttl=0.001)
    time.sleep(0.01)
    fired = []

    async def receiver(*, session_id, reason, **kwargs):
        fired.append((session_id, reason))

    signals.stomp_disconnected.connect(receiver, dispatch_uid="test_cli.receiver")
    try:
        assert run("sweep") == "Reaped 1 session of lost node: node-x\n"
    finally:
        signals.stomp_disconnected.disconnect(dispatch_uid="test_cli.receiver")
    assert fired == [("dead0001", "node_lost")]
    assert [n.node_id for n in async_to_sync(registry.nodes)()] == ["node-a", "node-b"]
    assert run("sweep") == "No lost node: nothing to reap.\n"
    # The command gave the lock back: a node can take it at once.
    assert async_to_sync(registry.acquire_sweep_lock)("node-a", 10)


def test_sweep_leaves_it_to_a_node_that_holds_the_lock(registry):
    async_to_sync(registry.acquire_sweep_lock)("node-a", 10)
    data = json.loads(run("sweep", "--json"))
    assert data == {"swept": False, "lost_nodes": [], "sessions": []}
    assert run("sweep").startswith("The sweep lock is taken: a node is sweeping, or one stopped")


def test_unreachable_redis_exits_non_zero_with_a_clear_message(capsys):
    port = free_port()  # nothing listens there
    settings = {
        "NODE_ID": "test-node",
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "PRESENCE_OPTIONS": {"hosts": [f"redis://127.0.0.1:{port}/0"], "socket_timeout": 0.5},
    }
    with override_settings(STOMP_CLUSTER=settings):
        for action in (["nodes"], ["sessions", "--json"], ["disconnect", BOB], ["sweep"]):
            with pytest.raises(SystemExit) as exit_info:
                Command().run_from_argv(["manage.py", "stomp_cluster", *action])
            assert exit_info.value.code == 1, action
            err = capsys.readouterr().err
            assert "The presence registry is unreachable" in err, action
            assert f"127.0.0.1:{port}" in err, action
            assert "Check that Redis is running" in err, action
