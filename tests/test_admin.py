"""The admin's "Live connections" and "Nodes" pages, in process.

The memory presence backend is filled with fake sessions through its own API; pages are
read with Django's test client. One test runs a page view against a real redis-server
holding 10,000 sessions, to count what a page view costs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import override_settings
from django.urls import reverse

from stomp_cluster.backends import get_presence
from stomp_cluster.models import Connection, Node
from tests.support.fake_cluster import (
    ALICE,
    BOB,
    SEEN_AGO,
    fill,
    fill_chat,
    node_record,
    session_record,
)
from tests.support.procs import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

CONNECTIONS = reverse("admin:stomp_cluster_connection_changelist")
CONNECTIONS_LIVE = reverse("admin:stomp_cluster_connection_live")
DISCONNECT = reverse("admin:stomp_cluster_connection_disconnect")
NODES = reverse("admin:stomp_cluster_node_changelist")
NODES_LIVE = reverse("admin:stomp_cluster_node_live")

GUEST = "9e575000000000000000000000000003"


@pytest.fixture
def registry():
    """node-a holds alice (in the chat) and a guest; node-b holds bob."""
    fill_chat()
    fill([], [session_record(GUEST, "node-a", at=3000.0)])
    return get_presence()


# -- users -----------------------------------------------------------------------------


def make_user(username, *, staff=True, perms=()):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="stomp_cluster", codename=codename)
        )
    return user


@pytest.fixture
def viewer(client):
    """A staff user who may view connections and nodes, but not disconnect."""
    client.force_login(make_user("viewer", perms=["view_connection", "view_node"]))
    return client


@pytest.fixture
def operator(client):
    """A staff user who may view and disconnect connections."""
    user = make_user("operator", perms=["view_connection", "disconnect_connection"])
    client.force_login(user)
    client.user = user
    return client


def rows(response):
    """Session ids of the page's rows, in order."""
    html = response.content.decode()
    body = html.split("<tbody data-live-rows>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<tr data-key="([^"]+)"', body)


# -- the index and the placeholders ----------------------------------------------------


def test_placeholder_models_give_permissions_and_no_table():
    assert Connection._meta.managed is False and Node._meta.managed is False
    codenames = set(
        Permission.objects.filter(content_type__app_label="stomp_cluster").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_connection", "disconnect_connection", "view_node"}
    from django.db import connection

    assert not {"stomp_cluster_connection", "stomp_cluster_node"} & set(
        connection.introspection.table_names()
    )


def test_admin_index_lists_both_pages_under_the_app(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "STOMP cluster" in html
    assert f'href="{CONNECTIONS}"' in html and "Live connections" in html
    assert f'href="{NODES}"' in html and "Nodes" in html


def test_change_and_history_urls_need_no_table(admin_client, registry):
    change = reverse("admin:stomp_cluster_connection_change", args=[BOB])
    response = admin_client.get(change)
    assert response.status_code == 302 and response["Location"] == f"{CONNECTIONS}?q={BOB}"
    history = reverse("admin:stomp_cluster_connection_history", args=[BOB])
    assert admin_client.get(history).status_code == 200
    node_change = reverse("admin:stomp_cluster_node_change", args=["node-b"])
    assert admin_client.get(node_change)["Location"] == f"{CONNECTIONS}?node=node-b"
    assert admin_client.get(reverse("admin:stomp_cluster_connection_add")).status_code == 403


# -- permissions -----------------------------------------------------------------------


@pytest.mark.parametrize("url", [CONNECTIONS, CONNECTIONS_LIVE, NODES, NODES_LIVE])
def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(client, registry, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(make_user("carol", staff=False, perms=["view_connection", "view_node"]))
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [CONNECTIONS, CONNECTIONS_LIVE, NODES, NODES_LIVE])
def test_staff_without_the_view_permission_is_refused(client, registry, url):
    client.force_login(make_user("staff"))
    response = client.get(url)
    assert response.status_code == 403
    assert b"alice" not in response.content and b"node-a" not in response.content


def test_disconnect_needs_the_disconnect_permission(viewer, registry):
    page = viewer.get(CONNECTIONS)
    assert page.status_code == 200 and b"Disconnect" not in page.content
    response = viewer.post(DISCONNECT, {"only": BOB, "confirm": "yes", "reason": "bye"})
    assert response.status_code == 403
    assert not LogEntry.objects.exists()
    assert async_to_sync(registry.get_session)(BOB) is not None


# -- the connections page --------------------------------------------------------------


def test_page_shows_each_session_from_the_registry(viewer, registry):
    response = viewer.get(CONNECTIONS)
    assert response.status_code == 200
    assert rows(response) == [ALICE, BOB, GUEST]  # by connected_at
    html = response.content.decode()
    for text in [
        "bob",
        "node-b",
        "10.0.0.7",
        "TestBrowser/1.0",
        "1.2",
        "2 subscriptions",
        "<code>/user/queue/n</code>",
        "1970-01-01 00:33:20",  # connected_at 2000.0, in UTC
        SEEN_AGO,
        "anonymous",
        "1–3 of 3 sessions",
    ]:
        assert text in html, text
    assert 'id="site-name"' in html  # on the admin's base template
    assert "stomp_cluster/live.js" in html


def test_filters_by_node_and_destination(viewer, registry):
    assert rows(viewer.get(CONNECTIONS, {"node": "node-a"})) == [ALICE, GUEST]
    response = viewer.get(CONNECTIONS, {"destination": "/user/queue/n"})
    assert rows(response) == [BOB]
    assert "1 subscription to /user/queue/n" in response.content.decode()
    assert rows(viewer.get(CONNECTIONS, {"destination": "/topic/chat", "node": "node-a"})) == [
        ALICE
    ]


def test_search_by_username_or_session_id(viewer, registry):
    assert rows(viewer.get(CONNECTIONS, {"q": "bob"})) == [BOB]
    assert rows(viewer.get(CONNECTIONS, {"q": GUEST})) == [GUEST]
    assert rows(viewer.get(CONNECTIONS, {"q": GUEST, "node": "node-b"})) == []
    assert rows(viewer.get(CONNECTIONS, {"q": "nobody"})) == []


def test_pages_follow_the_cursor_without_repeats(viewer):
    ids = [f"{i:032x}" for i in range(250)]
    nodes = ("node-a", "node-b")
    fill(
        nodes,
        [session_record(sid, nodes[i % 2], f"u{i}", at=10.0 + i // 3) for i, sid in enumerate(ids)],
    )
    seen, url, pages = [], CONNECTIONS, 0
    while url:
        response = viewer.get(url if url.startswith("/") else CONNECTIONS + url)
        page = rows(response)
        assert len(page) <= 100
        seen += page
        pages += 1
        match = re.search(r'<a href="([^"]+)" rel="next">', response.content.decode())
        url = match and match.group(1).replace("&amp;", "&")
    assert seen == ids and pages == 3
    assert "201–250 of 250 sessions" in response.content.decode()
    assert "page 3" in response.content.decode()


def test_a_bad_cursor_shows_the_first_page(viewer, registry):
    assert rows(viewer.get(CONNECTIONS, {"cursor": "not-a-cursor", "page": "7"})) == [
        ALICE,
        BOB,
        GUEST,
    ]


@pytest.mark.parametrize(
    "score",
    ["nan", "NaN", "inf", "-inf", "1e999", "x"],
)
def test_a_crafted_cursor_shows_the_first_page_never_an_error(viewer, registry, score):
    cursor = base64.urlsafe_b64encode(json.dumps([score, "s"]).encode()).decode()
    for path in (CONNECTIONS, CONNECTIONS_LIVE):
        assert viewer.get(path, {"cursor": cursor, "page": "2"}).status_code == 200
    assert rows(viewer.get(CONNECTIONS, {"cursor": cursor})) == [ALICE, BOB, GUEST]
    nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    assert viewer.get(CONNECTIONS, {"cursor": nested}).status_code == 200


def test_live_endpoint_answers_the_same_query_as_json(viewer, registry):
    data = viewer.get(CONNECTIONS_LIVE, {"node": "node-b"}).json()
    assert [row["session_id"] for row in data["rows"]] == [BOB]
    bob = data["rows"][0]
    assert bob["user"] == "bob" and bob["node_id"] == "node-b"
    assert bob["subscriptions"] == [
        {"id": "0", "destination": "/topic/chat", "ack": "auto"},
        {"id": "1", "destination": "/user/queue/n", "ack": "auto"},
    ]
    assert data["summary"]["result"] == "1–1 of 1 session"
    assert data["error"] is None
    async_to_sync(registry.remove_session)(BOB, "node-b")
    assert viewer.get(CONNECTIONS_LIVE, {"node": "node-b"}).json()["rows"] == []


# -- disconnecting ---------------------------------------------------------------------


def received_kick(channel):
    layer = get_channel_layer()
    return async_to_sync(layer.receive)(channel)


def test_disconnect_asks_for_confirmation_first(operator, registry):
    response = operator.post(DISCONNECT, {"session": [ALICE, BOB], "filters": "node=node-a"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Close 2 sessions?" in html and "Yes, disconnect" in html
    assert 'value="disconnected by an administrator"' in html
    assert not LogEntry.objects.exists()
    assert async_to_sync(registry.get_session)(BOB) is not None


def test_disconnect_kicks_the_session_on_its_node_and_logs_it(operator, registry):
    response = operator.post(
        DISCONNECT,
        {
            "only": BOB,
            "session": [ALICE],
            "confirm": "yes",
            "reason": "  spamming\nthe chat ",
            "filters": "node=node-b",
        },
        follow=True,
    )
    assert response.redirect_chain == [(f"{CONNECTIONS}?node=node-b", 302)]
    assert "Disconnected 1 session: bob on node-b." in response.content.decode()
    # node-b's channel got the kick that its consumer turns into an ERROR frame.
    assert received_kick("specific.node-b!") == {
        "type": "stomp.kick",
        "session": BOB,
        "message": "spamming the chat",
    }
    entry = LogEntry.objects.get()
    assert entry.user == operator.user
    assert entry.action_flag == DELETION
    assert entry.object_id == BOB
    assert entry.content_type == ContentType.objects.get_for_model(Connection)
    assert entry.get_change_message() == (
        "Disconnected bob on node node-b (10.0.0.7): spamming the chat"
    )


def test_bulk_disconnect_reports_sessions_already_gone(operator, registry):
    gone = "0" * 32
    response = operator.post(
        DISCONNECT, {"session": [ALICE, GUEST, gone], "confirm": "yes"}, follow=True
    )
    html = response.content.decode()
    assert "Disconnected 2 sessions: alice on node-a, anonymous on node-a." in html
    assert f"Already gone: {gone}." in html
    assert sorted(LogEntry.objects.values_list("object_id", flat=True)) == sorted([ALICE, GUEST])
    assert received_kick("specific.node-a!")["session"] == ALICE
    assert received_kick("specific.node-a!")["session"] == GUEST


def test_disconnect_without_a_selection_or_by_get(operator, registry):
    response = operator.post(DISCONNECT, {"bulk": "1"}, follow=True)
    assert "Select at least one session to disconnect." in response.content.decode()
    assert operator.get(DISCONNECT).status_code == 405


# -- nodes -----------------------------------------------------------------------------


def test_nodes_page_shows_status_counts_and_totals(viewer, registry):
    async_to_sync(registry.register_node)(node_record("node-c"), 0.001)
    time.sleep(0.01)  # node-c's heartbeat lapses: lost until a sweeper reaps it
    html = viewer.get(NODES).content.decode()
    assert rows_of_nodes(html) == ["node-a", "node-b", "node-c"]
    assert 'data-status="alive"' in html and 'data-status="lost"' in html
    assert f'href="{CONNECTIONS}?node=node-b"' in html
    for key, value in {"nodes": "3", "alive": "2", "lost": "1", "sessions": "3"}.items():
        assert f'data-summary="{key}">{value}<' in html
    data = viewer.get(NODES_LIVE).json()
    assert [(r["node_id"], r["status"], r["session_count"]) for r in data["rows"]] == [
        ("node-a", "alive", 2),
        ("node-b", "alive", 1),
        ("node-c", "lost", 0),
    ]
    assert data["summary"] == {"nodes": "3", "alive": "2", "lost": "1", "sessions": "3"}


def rows_of_nodes(html):
    body = html.split("<tbody data-live-rows>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<tr data-key="([^"]+)"', body)


# -- an unreachable registry -----------------------------------------------------------


def closed_port_settings():
    return {
        "NODE_ID": "test-node",
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "PRESENCE_OPTIONS": {
            "hosts": [f"redis://127.0.0.1:{free_port()}/0"],
            "socket_timeout": 0.5,
        },
    }


def test_pages_say_so_when_the_registry_is_unreachable(viewer):
    with override_settings(STOMP_CLUSTER=closed_port_settings()):
        page = viewer.get(CONNECTIONS)
        assert page.status_code == 200
        assert "The presence registry is unreachable" in page.content.decode()
        live = viewer.get(CONNECTIONS_LIVE)
        assert live.status_code == 503 and "unreachable" in live.json()["error"]
        assert "unreachable" in viewer.get(NODES).content.decode()
        assert viewer.get(NODES_LIVE).status_code == 503


# -- what a page view costs in Redis ---------------------------------------------------

COST_PREFIX = "admin-cost"
SESSIONS_10K = 10_000


@pytest.fixture(scope="module")
def redis_10k():
    """Our own redis-server holding 10,000 sessions on two nodes (1 in 5 in /topic/chat)."""
    from stomp_cluster.presence.redis import RedisPresence
    from tests.support.procs import RedisServer

    server = RedisServer()
    server.start()

    @async_to_sync
    async def load():
        presence = RedisPresence(hosts=[server.url], prefix=COST_PREFIX, max_connections=20)
        for node_id in ("node-a", "node-b"):
            await presence.register_node(node_record(node_id), 600)
        records = [
            session_record(
                f"{i:032x}",
                ("node-a", "node-b")[i % 2],
                f"user{i}",
                at=1_700_000_000.0 + i,
                subs=(("0", "/topic/chat"),) if i % 5 == 0 else (),
            )
            for i in range(SESSIONS_10K)
        ]
        for start in range(0, len(records), 500):
            await asyncio.gather(*(presence.add_session(r) for r in records[start : start + 500]))
        await presence.close()

    load()
    try:
        yield server
    finally:
        server.close()


def command_counts(url):
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.parametrize(
    "params",
    [{}, {"node": "node-b"}, {"destination": "/topic/chat"}, {"q": "user42"}],
    ids=["all", "node", "destination", "search"],
)
def test_a_page_view_costs_a_few_round_trips_whatever_the_number_of_sessions(
    viewer, redis_10k, monkeypatch, params
):
    settings = {
        "NODE_ID": "test-node",
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "PRESENCE_OPTIONS": {"hosts": [redis_10k.url], "prefix": COST_PREFIX},
    }
    with override_settings(STOMP_CLUSTER=settings):
        viewer.get(CONNECTIONS, params)  # learn the node list, load the scripts
        backend = get_presence()
        trips = []
        original = backend.redis._pipeline

        async def counting(commands):
            trips.append(len(commands))
            return await original(commands)

        monkeypatch.setattr(backend.redis, "_pipeline", counting)
        before = command_counts(redis_10k.url)
        clock = time.perf_counter()
        response = viewer.get(CONNECTIONS, params)
        elapsed = time.perf_counter() - clock
        after = command_counts(redis_10k.url)

    # The view asks at once for the nodes (and totals), the page and, for a search, the
    # text as a session id, or for a destination its subscriber count: the queries share
    # one pipeline, one round trip.
    assert len(trips) == 1, trips
    # What Redis executed, Lua included, is bounded by the page size (100 sessions per
    # node), not by the 10,000 sessions: no scan.
    ran = {
        name: after.get(name, 0) - before.get(name, 0)
        for name in after
        if name not in ("info", "client|setinfo", "client") and after[name] != before.get(name, 0)
    }
    assert sum(ran.values()) < 300, ran
    assert ran.get("hgetall", 0) <= 2 * 101 + 2, ran
    shown = len(rows(response))
    assert shown == (1 if "q" in params else 100)
    print(f"\n{params or 'no filter'}: {elapsed * 1000:.0f} ms, {len(trips)} round trips {trips}")
    print(f"  Redis ran {ran}")
