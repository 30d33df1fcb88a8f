"""Every backend on a real Redis Cluster (3 primaries, 3 replicas), as users see it.

The presence, history and transport contract suites run on the cluster too (their
fixtures are parametrised with it); this module adds what only a cluster has:

* the ``REDIS`` setting's cluster forms, and the checks that say what cannot work;
* a slot migrated under a running backend: the client follows MOVED, nothing is lost;
* two real daphne nodes on the cluster (``REDIS_CLUSTER_NODES``): a stomp.py client on
  node B receives what alice sends via node A, to a topic and to his user queue;
* a primary killed mid-stream: its replica is promoted, every socket either receives
  what is sent after the failover or was closed (open but deaf is zero), and a client
  that resumes with ``x-resume-from`` misses nothing without being told.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from stomp_cluster import asend_to_user, backends
from stomp_cluster.checks import check_channel_layer
from stomp_cluster.conf import validate_settings
from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.history.redis import RedisHistory
from stomp_cluster.presence.base import NodeRecord, SessionRecord, SubscriptionRecord
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.redis_connection import cluster_nodes
from stomp_cluster.send import Delivery
from stomp_cluster.transport import RedisTransport
from tests.support.backends import cluster_url, make_cluster_backend, make_cluster_history
from tests.support.clients import StompPyClient, unique
from tests.support.cluster import ClusterFactory, live_nodes
from tests.support.counting import count_round_trips
from tests.support.faults import gap_announced, numbers
from tests.support.nodes import AsgiNode, server_env
from tests.support.records import node as node_record
from tests.support.records import session
from tests.support.redis_cluster import RedisCluster
from tests.support.senders import send_in_turn
from tests.support.waiting import await_until, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BEFORE_FIRST = "0-0"


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "nodes"),
    [
        ("redis+cluster://h1:7000,h2:7001/", [("h1", 7000), ("h2", 7001)]),
        ("rediss+cluster://user:pw@h1:7000", [("h1", 7000)]),
        ({"startup_nodes": ["h1:7000", ("h2", 7001)]}, [("h1", 7000), ("h2", 7001)]),
        ("redis://h1:6379/0", None),
        (("h1", 6379), None),
        ({"sentinels": [("s", 26379)], "master_name": "m"}, None),
    ],
)
def test_a_cluster_is_a_url_or_a_startup_nodes_dict(host, nodes):
    assert cluster_nodes(host) == nodes


@pytest.mark.parametrize(
    ("redis", "words"),
    [
        ("redis+cluster://h1:7000/2", "only database 0"),
        ("redis+cluster:///", "at least one startup node"),
        ("redis+cluster://h1/", "'host:port'"),
        ({"startup_nodes": "h1:7000"}, "must be a list"),
        ({"startup_nodes": ["h1:7000"], "db": 3}, "only database 0"),
    ],
)
def test_a_cluster_named_wrongly_is_refused_with_the_fix(redis, words):
    problems = validate_settings({"REDIS": redis})
    assert [p[2] for p in problems] == ["stomp_cluster.E011"], problems
    assert words in problems[0][0]
    with pytest.raises(ImproperlyConfigured, match="'hosts'"):
        RedisPresence(hosts=[redis])


def test_the_channel_layer_transport_on_a_cluster_is_warned_about():
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    stomp = {
        "REDIS": "redis+cluster://127.0.0.1:7000/",
        "TRANSPORT_BACKEND": "stomp_cluster.transport.ChannelLayerTransport",
    }
    with override_settings(STOMP_CLUSTER=stomp, CHANNEL_LAYERS=layers):
        ids = [m.id for m in check_channel_layer()]
    assert "stomp_cluster.W006" in ids
    with override_settings(STOMP_CLUSTER={"REDIS": stomp["REDIS"]}, CHANNEL_LAYERS=layers):
        assert "stomp_cluster.W006" not in [m.id for m in check_channel_layer()]
    # And `manage.py check` runs it.
    with override_settings(STOMP_CLUSTER=stomp, CHANNEL_LAYERS=layers):
        call_command("check", fail_level="ERROR")


def test_every_backend_takes_the_cluster_from_one_setting():
    with override_settings(STOMP_CLUSTER={"REDIS": "redis+cluster://127.0.0.1:7000/"}):
        backends.reset()
        presence, history, transport = (
            backends.get_presence(),
            backends.get_history(),
            backends.get_transport(),
        )
        backends.reset()
    assert isinstance(presence, RedisPresence)
    assert isinstance(transport, RedisTransport)
    for backend in (presence, transport) + ((history,) if history else ()):
        assert backend.redis.cluster == [("127.0.0.1", 7000)]


# -- sends on a cluster: two round trips ------------------------------------------------

USER_QUEUE = "/user/queue/n"


def on_cluster(rc: RedisCluster, node_id: str = "sender") -> override_settings:
    return override_settings(
        STOMP_CLUSTER={
            "NODE_ID": node_id,
            "REDIS": cluster_url(rc),
            "PRESENCE_OPTIONS": {"socket_timeout": 1.0},
        }
    )


async def hold_user(sessions: dict[str, int], user: str = "ursula") -> None:
    """Nodes with *user*'s sessions subscribed to /user/queue/n, as far nodes write them."""
    presence, transport = backends.get_presence(), backends.get_transport()
    assert isinstance(transport, RedisTransport)
    now = time.time()
    for node_id, count in sessions.items():
        inbox = transport.address(node_id)
        await presence.register_node(NodeRecord(node_id, inbox, now, now, 0, True), 30)
        for n in range(count):
            sid = f"{node_id}-{user}-{n}"
            await presence.add_session(
                SessionRecord(sid, node_id, inbox, user, user, "", "", "1.2", now, now)
            )
            subscription = SubscriptionRecord("0", USER_QUEUE, "auto")
            await presence.add_subscription(sid, node_id, subscription)


async def test_a_user_send_on_a_cluster_takes_two_round_trips_whatever_the_sockets(
    clean_redis_cluster, monkeypatch
):
    with on_cluster(clean_redis_cluster):
        await hold_user({"far-0": 2, "far-1": 3, "far-2": 1})
        transport, history = backends.get_transport(), backends.get_history()
        assert isinstance(transport, RedisTransport) and history is not None
        await asend_to_user("ursula", "/queue/n", "warm-up")  # slot map, scripts loaded
        for node_id in ("far-0", "far-1", "far-2"):
            await transport.receive(transport.address(node_id))
        trips = count_round_trips(transport, monkeypatch)
        lookups = count_round_trips(backends.get_presence(), monkeypatch)

        delivery = await asend_to_user("ursula", "/queue/n", "hi")

        assert delivery == Delivery(6, 3, stored=True, message_id=delivery.message_id)
        assert len(trips) == 2 and lookups == []
        [entry] = (await history.read("ursula", BEFORE_FIRST)).entries[1:]
        assert (entry.id, entry.body) == (delivery.message_id, b"hi")
        for node_id in ("far-0", "far-1", "far-2"):
            [got] = await transport.receive(transport.address(node_id))
            assert (got["body"], got["id"]) == (b"hi", delivery.message_id)
        assert await history.take_pending("ursula", USER_QUEUE) is None


async def test_a_user_send_on_a_cluster_to_an_offline_user_waits_in_the_history(
    clean_redis_cluster,
):
    with on_cluster(clean_redis_cluster):
        history = backends.get_history()
        assert history is not None
        delivery = await asend_to_user("olga", "/queue/n", "later")
        assert delivery.sessions == 0 and delivery.stored
        assert await history.take_pending("olga", USER_QUEUE) == delivery.message_id


async def test_a_user_send_on_a_cluster_skips_a_lapsed_node_and_waits_for_the_user(
    clean_redis_cluster,
):
    with on_cluster(clean_redis_cluster):
        await hold_user({"gone": 1})
        presence, transport = backends.get_presence(), backends.get_transport()
        history = backends.get_history()
        assert isinstance(presence, RedisPresence) and isinstance(transport, RedisTransport)
        assert history is not None
        # Its heartbeat lapsed (not reaped yet): nobody reads its inbox.
        await presence.redis.client().delete(presence.node_key("gone", "alive"))

        delivery = await asend_to_user("ursula", "/queue/n", "later")

        assert (delivery.sessions, delivery.missed_nodes, delivery.stored) == (0, 1, True)
        assert await transport.redis.client().llen(transport.address("gone")) == 0
        assert await history.take_pending("ursula", USER_QUEUE) == delivery.message_id


# -- slots moving and primaries failing under a backend ---------------------------------


def _migrate_slot_of(rc: RedisCluster, key: str) -> tuple[int, int]:
    """Move *key*'s slot (and its keys) to another primary; return (from, to) ports."""
    source = rc.node_of(key)
    target = next(node for node in rc.primaries() if node.port != source.port)
    with source.client() as src, target.client() as dst:
        slot = int(src.execute_command("CLUSTER", "KEYSLOT", key))
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for client in (dst, src):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    for node in rc.primaries():
        if node.port not in (source.port, target.port):
            with node.client() as other:
                other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    rc.wait_ok()
    return source.port, target.port


async def test_a_slot_migrated_under_a_running_backend_is_followed(clean_redis_cluster):
    rc = clean_redis_cluster
    presence = make_cluster_backend(rc)
    history = make_cluster_history(rc)
    try:
        await presence.register_node(node_record("n1"), ttl=60)
        await presence.add_session(session("s1", node_id="n1", user="alice"))
        first = await history.append("alice", "/queue/a", b"one", ())
        # The clients now hold a slot map; then the slots of n1's keys and of alice's
        # history move to other primaries behind their backs.
        node_key = presence._base("n1") + "info"
        moved = [
            _migrate_slot_of(rc, node_key),
            _migrate_slot_of(rc, history.keys("alice")[0]),
        ]
        assert all(a != b for a, b in moved)
        # Stale map: the first command of each slot gets MOVED and is sent again.
        assert [s.session_id for s in await presence.sessions_of("alice")] == ["s1"]
        await presence.add_session(session("s2", node_id="n1", user="alice"))
        second = await history.append("alice", "/queue/a", b"two", ())
        page = await history.read("alice", first)
        assert [e.id for e in page.entries] == [second]
        assert await presence.count_sessions(node="n1") == 2
    finally:
        await presence.close()
        await history.close()


async def test_primaries_that_forgot_the_scripts_still_run_every_call(clean_redis_cluster):
    # A promoted replica has no scripts cached (scripts replicate as their effects): the
    # EVALSHA fails with NOSCRIPT without running, and the call is sent again as EVAL.
    rc = clean_redis_cluster
    presence, history = make_cluster_backend(rc), make_cluster_history(rc)
    try:
        await presence.register_node(node_record("n1"), ttl=60)
        await history.append("alice", "/queue/a", b"one", ())
        for primary in rc.primaries():
            with primary.client() as client:
                client.script_flush()
        await presence.add_session(session("s1", node_id="n1", user="alice"))
        second = await history.append("alice", "/queue/a", b"two", ())
        assert [s.session_id for s in await presence.sessions_of("alice")] == ["s1"]
        assert (await history.read("alice", BEFORE_FIRST)).entries[-1].id == second
    finally:
        await presence.close()
        await history.close()


# -- real nodes on the cluster ---------------------------------------------------------


@pytest.fixture
def cluster_nodes_env(clean_redis_cluster: RedisCluster) -> dict[str, str]:
    return {"REDIS_CLUSTER_NODES": ",".join(clean_redis_cluster.startup_nodes)}


@pytest.fixture
def client(tokens: Callable[[str], str]) -> Iterator[Callable[..., StompPyClient]]:
    opened: list[StompPyClient] = []

    def make(node: AsgiNode, user: str = "alice") -> StompPyClient:
        c = StompPyClient(node.ws_url, heartbeats=(0, 0))
        opened.append(c)
        c.connect(user, tokens(user))
        return c

    yield make
    for c in opened:
        with contextlib.suppress(Exception):
            if not c.listener.disconnected:
                c.disconnect()


def test_a_client_on_node_b_receives_what_alice_sends_via_node_a(
    cluster: ClusterFactory, cluster_nodes_env, client
):
    node_a, node_b = cluster(2, env=cluster_nodes_env)
    bob = client(node_b, "bob")
    topic, queue = f"/topic/{unique('rc')}", f"/queue/{unique('rc')}"
    bob.subscribe(topic, receipt="t")
    bob.subscribe(f"/user{queue}", receipt="q")
    alice = client(node_a, "alice")
    alice.send(topic, "to everyone", receipt=True)
    alice.send(f"/user/bob{queue}", "to bob", receipt=True)
    got = bob.wait_for_messages(2)
    assert sorted(m.body for m in got) == ["to bob", "to everyone"]
    to_bob = next(m for m in got if m.body == "to bob")
    assert to_bob.headers["message-id"]  # recorded in bob's history on the cluster


USERS = ("alice", "bob")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("slot_of", ["user", "node"])
def test_a_primary_killed_mid_stream_leaves_no_deaf_socket_and_no_silent_loss(
    slot_of: str, redis_cluster: RedisCluster, db_path: Path, tokens, tmp_path: Path
):
    rc = redis_cluster
    rc.wait_ok()
    rc.flush()
    env = {
        "REDIS_CLUSTER_NODES": ",".join(rc.startup_nodes),
        "STOMP_HISTORY_MAX_LENGTH": "20000",
    }
    queue = f"/queue/{unique('failover')}"
    nodes = [
        AsgiNode(node_id, db_path=db_path, node_ttl=10.0, env=env, log_dir=tmp_path / "logs")
        for node_id in ("node-rc-a", "node-rc-b")
    ]
    try:
        for node in nodes:
            live_nodes.append(node)
            node.spawn()
        for node in nodes:
            node.wait_ready()
        clients: dict[tuple[str, str], StompPyClient] = {}
        for node in nodes:
            for user in USERS:
                c = StompPyClient(node.ws_url, heartbeats=(0, 0))
                c.connect(user, tokens(user))
                c.subscribe(f"/user{queue}", receipt="s")
                clients[node.node_id, user] = c

        total = 1500
        sender_env = server_env(db_path=db_path, node_id="sender", extra=env)
        sender = send_in_turn(
            tmp_path / "sender",
            sender_env,
            first=0,
            count=total,
            rate=150.0,
            users=USERS,
            queue=queue,
        )
        wait_until(lambda: len(sender.acknowledged()) >= 200, 60, "200 acknowledged sends")
        assert sender.running(), "the stream ended before the failover"
        killed_after = max(sender.acknowledged())
        # The primary that holds alice's history (her user slot), or node-rc-b's keys and
        # inbox (its node slot): that slot's traffic must move to the promoted replica.
        if slot_of == "user":
            key = make_cluster_history(rc).keys("alice")[0]
        else:
            key = RedisTransport(hosts=[cluster_url(rc)]).address("node-rc-b")
        victim = rc.kill_primary_of(key)
        sender.finish(timeout=120)
        acknowledged, failed = sender.acknowledged(), sender.failed()
        report = (
            f"killed {victim.port} after #{killed_after}; acknowledged {len(acknowledged)}, "
            f"raised {len(failed)} {sorted({e.split(':')[0] for e in failed.values()})}"
        )
        # Every send returned or raised: none vanished; most after the failover succeeded.
        assert acknowledged | set(failed) == set(range(total)), report
        assert max(acknowledged) > killed_after + 300, report

        # Sent after the failover: every socket still open must receive these.
        probe = send_in_turn(
            tmp_path / "sender",
            sender_env,
            first=total,
            count=20,
            rate=50.0,
            users=USERS,
            queue=queue,
        )
        probe.finish(timeout=60)
        assert probe.failed() == {}, probe.failed()
        probes = {u: {n for n in probe.acknowledged() if USERS[n % 2] == u} for u in USERS}

        def heard_or_closed(key: tuple[str, str]) -> bool:
            listener = clients[key].listener
            return bool(listener.disconnected) or probes[key[1]] <= set(numbers(listener.messages))

        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(map(heard_or_closed, clients)), 20, "the probes")
        deaf = [key for key in clients if not heard_or_closed(key)]
        assert deaf == [], report

        # Each client resumes from the last message it saw, on the other node.
        everything = acknowledged | probe.acknowledged()
        other = {nodes[0].node_id: nodes[1], nodes[1].node_id: nodes[0]}
        silent: dict[tuple[str, str], list[int]] = {}
        for key, c in clients.items():
            node_id, user = key
            seen = list(c.listener.messages)
            resumed = StompPyClient(other[node_id].ws_url, heartbeats=(0, 0))
            resumed.connect(user, tokens(user))
            cursor = seen[-1].headers["message-id"] if seen else "0-0"
            resumed.subscribe(f"/user{queue}", headers={"x-resume-from": cursor})
            last = max(n for n in everything if USERS[n % 2] == user)
            listener = resumed.listener
            # Caught up: the last message, live or resumed (a socket that heard it live
            # resumes with nothing more to get).
            with contextlib.suppress(AssertionError):
                wait_until(
                    lambda: last in numbers(seen) + numbers(listener.messages),  # noqa: B023
                    30,
                    f"{user} caught up",
                )
            got = numbers(seen) + numbers(resumed.listener.messages)
            assert len(got) == len(set(got)) and got == sorted(got), (key, report)
            missing = sorted({n for n in everything if USERS[n % 2] == user} - set(got))
            if missing and not (gap_announced(resumed) or gap_announced(c)):
                silent[key] = missing
            resumed.disconnect()
        assert silent == {}, report
        print(report)
    finally:
        for node in nodes:
            node.terminate()
            if node in live_nodes:
                live_nodes.remove(node)
        # The killed primary stays down; bring a fresh node back for later tests.
        rc.restore()


async def test_a_dead_primary_is_an_outage_of_the_backend_not_a_crash(redis_cluster):
    rc = redis_cluster
    rc.wait_ok()
    presence = make_cluster_backend(rc, socket_timeout=0.5)
    try:
        await presence.register_node(node_record("n9"), ttl=60)
        await presence.add_session(session("s1", node_id="n9", user="zoe"))
        key = presence._base("n9") + "info"
        victim = rc.node_of(key)
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait(10)
        # Until the replica takes over, calls on that slot fail as an outage, by name.
        with pytest.raises(PresenceUnavailable, match="presence backend unreachable"):
            await presence.add_session(session("s2", node_id="n9", user="zoe"))

        # Then the same backend object works again, on the promoted replica.
        async def works() -> bool:
            try:
                await presence.add_session(session("s2", node_id="n9", user="zoe"))
            except PresenceUnavailable:
                return False
            return True

        await await_until(works, 30, "the promoted replica to serve the slot")
        page = await presence.sessions(node="n9", limit=10)
        names = {s.session_id for s in page.sessions}
        assert names == {"s1", "s2"}
    finally:
        await presence.close()
        rc.restore()


def test_cluster_url_names_every_startup_node(redis_cluster):
    url = cluster_url(redis_cluster)
    assert cluster_nodes(url) == [("127.0.0.1", n.port) for n in redis_cluster.nodes]
    assert RedisHistory(hosts=[url]).redis.cluster == cluster_nodes(url)
