"""Redis failover, for real: a Sentinel promotes the replica while messages stream.

Two daphne nodes reach Redis through three sentinels (:mod:`tests.support.sentinel`,
settings in :mod:`tests.support.sentinel_settings`). alice and bob each have one socket on
each node, subscribed to their user queue; a sender process of its own sends numbered
messages to them in turn, printing for each send whether it returned or raised. Once the
stream is under way the primary is SIGKILLed. Then we count, over the real sockets:

* the nodes follow the promoted replica and register themselves (and their sessions)
  there again;
* a send either returned or raised to the sender: nothing vanishes in between;
* every socket either was closed by the server or receives what is sent after the
  failover: open but deaf is zero;
* a client that resumes with ``x-resume-from`` from the last message it saw ends with
  every message the sender was told succeeded, exactly once and in order, apart from
  gaps it was told about (``x-recovered: false``): lost without notice is zero. Sends
  acknowledged by the old primary and not yet replicated can be lost in an asynchronous
  failover (docs/topics/delivery.rst, "Redis failover"); they are measured and printed.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import StompPyClient
from tests.support.cluster import live_nodes
from tests.support.faults import gap_announced, numbers
from tests.support.nodes import AsgiNode, manage, server_env
from tests.support.senders import SenderProcess, send_in_turn
from tests.support.sentinel import MASTER_NAME, SentinelSetup, running_sentinels
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SETTINGS = "tests.support.sentinel_settings"
QUEUE = "/queue/failover"
USERS = ("alice", "bob")


def sentinel_env(setup: SentinelSetup) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "STOMP_SENTINELS": setup.sentinels_env,
        "STOMP_SENTINEL_MASTER": MASTER_NAME,
        "STOMP_HISTORY_MAX_LENGTH": "20000",
    }


def start_sender(
    tmp_path: Path, db_path: Path, setup: SentinelSetup, first: int, count: int, rate: float
) -> SenderProcess:
    """A sender process of its own: message n goes to USERS[n % 2] on QUEUE."""
    env = server_env(db_path=db_path, node_id="sender", extra=sentinel_env(setup))
    return send_in_turn(
        tmp_path / "sender", env, first=first, count=count, rate=rate, users=USERS, queue=QUEUE
    )


def registry(setup: SentinelSetup, db_path: Path, action: str) -> Any:
    """``manage.py stomp_cluster <action> --json`` through the sentinels."""
    env = {**sentinel_env(setup), "STOMP_NODE_ID": "cli"}
    return json.loads(manage("stomp_cluster", action, "--json", db_path=db_path, env=env))


def registered(setup: SentinelSetup, db_path: Path) -> tuple[set[str], set[str]]:
    """The node ids and session ids the registry lists now (empty when unreachable)."""
    try:
        nodes = {n["node_id"] for n in registry(setup, db_path, "nodes")}
        sessions = {s["session_id"] for s in registry(setup, db_path, "sessions")["sessions"]}
    except Exception:
        return set(), set()
    return nodes, sessions


@dataclass
class Outcome:
    """What one failover run counted over the real sockets."""

    killed_after: int  # the last send acknowledged before the SIGKILL
    promoted_in: float  # seconds from the SIGKILL until every sentinel named the replica
    converged_in: float  # seconds from the SIGKILL until both nodes were registered again
    acknowledged: set[int]  # sends that returned to the sender
    failed: dict[int, str]  # sends that raised, with the exception
    delivered: int = 0  # messages received, live and resumed, over all sockets
    closed: int = 0  # sockets the server closed
    deaf: list[tuple[str, str]] = field(default_factory=list)  # open, but missed the probes
    duplicated: list[tuple[str, str]] = field(default_factory=list)
    disordered: list[tuple[str, str]] = field(default_factory=list)
    lost_announced: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    lost_silently: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    node_events: list[str] = field(default_factory=list)  # reaps and re-registrations
    # Acknowledged, yet not in the promoted replica's history: written on the old primary
    # and not replicated before it died (asynchronous replication).
    not_replicated: list[int] = field(default_factory=list)
    # Raised to the sender, yet in the history (and so recovered by resuming clients).
    raised_but_stored: list[int] = field(default_factory=list)

    def report(self) -> str:
        return (
            f"primary killed after send #{self.killed_after}; replica promoted in "
            f"{self.promoted_in:.1f}s; nodes registered again {self.converged_in:.1f}s after "
            f"the kill; sends acknowledged {len(self.acknowledged)}, raised "
            f"{len(self.failed)} ({sorted({e.split(':')[0] for e in self.failed.values()})}); "
            f"delivered {self.delivered}; sockets closed {self.closed}, open but deaf "
            f"{self.deaf}; duplicated {self.duplicated}, out of order {self.disordered}; lost "
            f"with notice { {k: len(v) for k, v in self.lost_announced.items()} }, lost "
            f"without notice { {k: v[:20] for k, v in self.lost_silently.items()} }; node "
            f"events {self.node_events}; acknowledged but not in the history after the "
            f"failover {self.not_replicated}; raised but stored {len(self.raised_but_stored)}"
        )


NODE_EVENTS = ("re-registering", "reaped", "fenced")


def failover_mid_stream(
    node_ttl: float, tokens: Any, db_path: Path, tmp_path: Path, *, total: int = 3000
) -> Outcome:
    """Run the scenario of the module doc on a fresh Sentinel deployment and two nodes."""
    with running_sentinels() as setup:
        nodes = [
            AsgiNode(
                node_id,
                db_path=db_path,
                node_ttl=node_ttl,
                env=sentinel_env(setup),
                log_dir=tmp_path / "logs",
            )
            for node_id in ("node-sentinel-a", "node-sentinel-b")
        ]
        try:
            for node in nodes:
                live_nodes.append(node)
                node.spawn()
            for node in nodes:
                node.wait_ready()
            outcome = _failover(setup, nodes, tokens, db_path, tmp_path, total)
            outcome.node_events = [
                line
                for node in nodes
                for line in node.log_tail(400).splitlines()
                if any(word in line for word in NODE_EVENTS) and not line[:4].isdigit()
            ]
            return outcome
        finally:
            for node in nodes:
                node.terminate()
                if node in live_nodes:
                    live_nodes.remove(node)


def _failover(
    setup: SentinelSetup,
    nodes: list[AsgiNode],
    tokens: Any,
    db_path: Path,
    tmp_path: Path,
    total: int,
) -> Outcome:
    clients: dict[tuple[str, str], StompPyClient] = {}
    for node in nodes:
        for user in USERS:
            client = StompPyClient(node.ws_url, heartbeats=(0, 0))
            client.connect(user, tokens(user))
            client.subscribe(f"/user{QUEUE}")
            clients[node.node_id, user] = client
    node_ids = {node.node_id for node in nodes}
    wait_until(lambda: registered(setup, db_path)[0] >= node_ids, 30, "both nodes registered")

    sender = start_sender(tmp_path, db_path, setup, 0, total, 150.0)
    # Under way, with most of it still to come: then the failover is mid-stream.
    wait_until(lambda: len(sender.acknowledged()) >= 300, 60, "300 acknowledged sends")
    assert sender.proc.poll() is None, "the stream ended before the failover"
    killed_after = max(sender.acknowledged())
    setup.kill_primary()
    killed_at = time.monotonic()
    promoted_in = setup.wait_promoted(timeout=30)

    def converged() -> bool:
        found, sessions = registered(setup, db_path)
        open_sessions = {c.session for c in clients.values() if not c.listener.disconnected}
        return found >= node_ids and sessions >= open_sessions

    wait_until(converged, 30, "both nodes and their open sessions registered on the new primary")
    converged_in = time.monotonic() - killed_at
    sender.finish(timeout=120)
    outcome = Outcome(
        killed_after=killed_after,
        promoted_in=promoted_in,
        converged_in=converged_in,
        acknowledged=sender.acknowledged(),
        failed=sender.failed(),
    )

    # Sent once the cluster converged: every socket still open must receive these.
    probe = start_sender(tmp_path, db_path, setup, total, 20, 50.0)
    probe.finish(timeout=60)
    assert probe.failed() == {}, probe.failed()
    probes = {user: {n for n in probe.acknowledged() if USERS[n % 2] == user} for user in USERS}

    def heard_or_closed(key: tuple[str, str]) -> bool:
        listener = clients[key].listener
        return bool(listener.disconnected) or probes[key[1]] <= set(numbers(listener.messages))

    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(map(heard_or_closed, clients)), 20, "the probes")
    outcome.closed = sum(1 for c in clients.values() if c.listener.disconnected)
    outcome.deaf = [key for key in clients if not heard_or_closed(key)]

    # Each client resumes from the last message it saw, on the other node.
    everything = outcome.acknowledged | probe.acknowledged()
    other = {nodes[0].node_id: nodes[1], nodes[1].node_id: nodes[0]}
    for key, client in clients.items():
        node_id, user = key
        seen = list(client.listener.messages)
        resumed = StompPyClient(other[node_id].ws_url, heartbeats=(0, 0))
        resumed.connect(user, tokens(user))
        cursor = seen[-1].headers["message-id"] if seen else "0-0"
        resumed.subscribe(f"/user{QUEUE}", headers={"x-resume-from": cursor})
        last = max(n for n in everything if USERS[n % 2] == user)
        listener = resumed.listener
        with contextlib.suppress(AssertionError):
            wait_until(lambda: last in numbers(listener.messages), 30, f"{user} caught up")  # noqa: B023
        got = numbers(seen) + numbers(resumed.listener.messages)
        outcome.delivered += len(got)
        if len(got) != len(set(got)):
            outcome.duplicated.append(key)
        if got != sorted(got):
            outcome.disordered.append(key)
        missing = sorted({n for n in everything if USERS[n % 2] == user} - set(got))
        if missing:
            told = gap_announced(resumed) or gap_announced(client)
            (outcome.lost_announced if told else outcome.lost_silently)[key] = missing
        resumed.disconnect()
    for client in clients.values():
        if not client.listener.disconnected:
            client.disconnect()

    # The whole history of each user, as the promoted replica has it.
    for user in USERS:
        reader = StompPyClient(nodes[0].ws_url, heartbeats=(0, 0))
        reader.connect(user, tokens(user))
        reader.subscribe(f"/user{QUEUE}", headers={"x-resume-from": "0-0"})
        wanted = {n for n in everything if USERS[n % 2] == user}
        listener = reader.listener
        with contextlib.suppress(AssertionError):
            wait_until(lambda: max(wanted) in numbers(listener.messages), 30, "the history")  # noqa: B023
        history = set(numbers(reader.listener.messages))
        outcome.not_replicated += sorted(wanted - history)
        outcome.raised_but_stored += sorted(history & set(outcome.failed))
        reader.disconnect()
    outcome.not_replicated.sort()
    return outcome


def check_failover(outcome: Outcome, total: int = 3000) -> None:
    """What must hold across any failover (apart from the silent-loss count)."""
    report = outcome.report()
    print(report)
    # Every send returned or raised to its caller: none vanished in between.
    assert outcome.acknowledged | set(outcome.failed) == set(range(total)), report
    # The nodes followed the new primary: most sends after the failover succeeded.
    assert max(outcome.acknowledged) > outcome.killed_after + 300, report
    assert outcome.deaf == [], report
    assert outcome.duplicated == [] and outcome.disordered == [], report


@pytest.mark.timeout(240)
def test_failover_shorter_than_node_ttl_nodes_follow_and_no_socket_is_deaf(
    tokens: Any, db_path: Path, tmp_path: Path
) -> None:
    # The default NODE_TTL (10 s) outlasts a Sentinel failover (about 2-3 s here, with
    # down-after-milliseconds 1000): no node should be reaped while Redis is away.
    outcome = failover_mid_stream(10.0, tokens, db_path, tmp_path)
    check_failover(outcome)
    assert outcome.lost_silently == {}, outcome.report()


@pytest.mark.timeout(240)
def test_failover_longer_than_node_ttl_loses_nothing_without_notice(
    tokens: Any, db_path: Path, tmp_path: Path
) -> None:
    outcome = failover_mid_stream(1.0, tokens, db_path, tmp_path)
    check_failover(outcome)
    assert outcome.lost_silently == {}, outcome.report()
