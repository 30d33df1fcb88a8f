"""``stomp_cluster.urls``' ``metrics/``: what Prometheus reads of a node.

In-process: a :class:`~stomp_cluster.testing.StompCommunicator` session moves the node's
counters, and the view is called on the test's event loop, whose node it sees (as the ASGI
server calls it on the node's). The exposition is read back with ``prometheus_client``'s
own parser, so the tests see what a scraper sees. A real uvicorn node answering
``/stomp/metrics/`` over HTTP is the ``cluster`` test at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import RequestFactory, override_settings
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from stomp_cluster import __version__, connection_token
from stomp_cluster.node import get_node
from stomp_cluster.protocol import Command, Frame, Version, encode_frame
from stomp_cluster.redis_connection import ROUND_TRIP_BUCKETS, RoundTrips
from stomp_cluster.testing import StompCommunicator
from stomp_cluster.views import metrics
from testproject.asgi import application
from tests.support.clients import RawStompClient
from tests.support.nodes import AsgiNode, prepare_database, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(remote_addr: str = "127.0.0.1", **headers: str) -> Samples:
    request = RequestFactory().get("/stomp/metrics/", REMOTE_ADDR=remote_addr, headers=headers)
    response = await metrics(request)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


async def client(headers=None) -> StompCommunicator:
    communicator = StompCommunicator(application, "/ws")
    await communicator.connect_stomp(headers)
    return communicator


def test_testproject_mounts_metrics_under_stomp():
    assert reverse("stomp_cluster:metrics") == "/stomp/metrics/"


async def test_a_session_moves_the_counters_a_user_would_expect():
    c = await client()  # CONNECT in, CONNECTED out
    await c.send_frame("SUBSCRIBE", {"id": "1", "destination": "/topic/m", "receipt": "r"})
    assert (await c.receive_frame()).command is Command.RECEIPT
    before = await scrape()
    assert value(before, "stomp_cluster_connections") == 1
    assert value(before, "stomp_cluster_sessions") == 1
    assert value(before, "stomp_cluster_subscriptions") == 1
    # The receipt header makes no frame of its own: CONNECT and SUBSCRIBE.
    assert value(before, "stomp_cluster_frames_received_total") == 2
    assert value(before, "stomp_cluster_frames_sent_total") == 2  # CONNECTED and RECEIPT
    (info,) = [k for k in before if k[0] == "stomp_cluster_node_info"]
    assert dict(info[1])["node"] == "test-node"

    sends = [Frame(Command.SEND, (("destination", "/topic/m"),), b"hello %d" % i) for i in range(3)]
    for frame in sends:
        await c.send_frame("SEND", frame.headers, frame.body)
    for _ in sends:
        assert (await c.receive_frame()).command is Command.MESSAGE
    after = await scrape()

    def moved(name: str) -> float:
        return value(after, name) - value(before, name)

    assert moved("stomp_cluster_frames_received_total") == 3
    assert moved("stomp_cluster_frames_sent_total") == 3
    assert moved("stomp_cluster_deliveries_total") == 3
    # Each SEND went as one WebSocket message: its bytes are the encoded frame's.
    wire = sum(len(encode_frame(frame, Version.V1_2)) for frame in sends)
    assert moved("stomp_cluster_received_bytes_total") == wire
    assert moved("stomp_cluster_sent_bytes_total") > wire  # MESSAGEs carry more headers

    await c.disconnect()
    gone = await scrape()
    assert value(gone, "stomp_cluster_connections") == 0
    assert value(gone, "stomp_cluster_sessions") == 0
    assert value(gone, "stomp_cluster_subscriptions") == 0
    assert value(gone, "stomp_cluster_connections_opened_total") == 1


async def test_failures_are_counted_by_reason():
    model = get_user_model()
    user = await database_sync_to_async(model.objects.create_user)("mia", password="pw")
    token = await sync_to_async(connection_token)(user)
    c = await client({"login": "mia", "passcode": token})  # starts the node
    refused = StompCommunicator(application, "/ws")
    await refused.connect()
    await refused.send_frame("CONNECT", {"accept-version": "1.2", "login": "mia", "passcode": "x"})
    assert (await refused.receive_frame()).command is Command.ERROR
    samples = await scrape()
    assert value(samples, "stomp_cluster_auth_failures_total", reason="bad_credentials") == 1
    assert (
        value(samples, "stomp_cluster_auth_failures_total", reason="authentication_required") == 0
    )
    for reason in ("slow_consumer", "session_gone", "send_failed"):
        assert value(samples, "stomp_cluster_delivery_failures_total", reason=reason) == 0
    assert value(samples, "stomp_cluster_slow_consumer_closes_total") == 0
    await c.disconnect()
    await refused.disconnect()


async def test_a_process_that_is_not_a_node_reports_zeros_and_no_node_info():
    samples = await scrape()
    assert value(samples, "stomp_cluster_sessions") == 0
    assert value(samples, "stomp_cluster_deliveries_total") == 0
    assert not [k for k in samples if k[0] == "stomp_cluster_node_info"]
    assert all(name.startswith("stomp_cluster_") for name, _ in samples)


async def test_redis_round_trips_fill_the_latency_histogram(clean_redis):
    presence = {
        "NODE_ID": "metrics-node",
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "PRESENCE_OPTIONS": {"hosts": [clean_redis.url]},
    }
    with override_settings(STOMP_CLUSTER=presence):
        node = get_node()
        before = await scrape()
        await node.ensure_started()  # registers: at least one round trip
        try:
            after = await scrape()
        finally:
            await node.stop()
    label = {"connection": "presence backend"}
    count = value(after, "stomp_cluster_redis_round_trip_seconds_count", **label)
    assert count > before.get(
        ("stomp_cluster_redis_round_trip_seconds_count", frozenset(label.items())), 0
    )
    assert (
        value(after, "stomp_cluster_redis_round_trip_seconds_bucket", le="+Inf", **label) == count
    )
    assert value(after, "stomp_cluster_redis_round_trip_seconds_sum", **label) > 0


def test_the_histogram_puts_a_time_equal_to_a_bound_in_that_bound_s_bucket():
    histogram = RoundTrips()
    for seconds in (0.0001, ROUND_TRIP_BUCKETS[0], 0.0007, 60.0):
        histogram.observe(seconds)
    assert histogram.counts[:2] == [2, 1]
    assert histogram.counts[-1] == 1
    assert sum(histogram.counts) == 4


async def test_openmetrics_when_the_scraper_asks_for_it():
    request = RequestFactory().get(
        "/stomp/metrics/", REMOTE_ADDR="::1", headers={"Accept": "application/openmetrics-text"}
    )
    response = await metrics(request)
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


async def test_a_refused_address_gets_403():
    response = await metrics(RequestFactory().get("/stomp/metrics/", REMOTE_ADDR="10.1.2.3"))
    assert response.status_code == 403


@override_settings(STOMP_CLUSTER={"ENDPOINTS_ALLOWED_NETWORKS": ["10.0.0.0/8"]})
async def test_the_health_endpoint_s_networks_apply():
    response = await metrics(RequestFactory().get("/stomp/metrics/", REMOTE_ADDR="10.1.2.3"))
    assert response.status_code == 200
    response = await metrics(RequestFactory().get("/stomp/metrics/", REMOTE_ADDR="127.0.0.1"))
    assert response.status_code == 403


async def test_without_prometheus_client_the_endpoint_answers_501(monkeypatch):
    # A None entry makes the import fail, as if the package were not installed.
    monkeypatch.setitem(sys.modules, "prometheus_client.exposition", None)
    response = await metrics(RequestFactory().get("/stomp/metrics/", REMOTE_ADDR="127.0.0.1"))
    assert response.status_code == 501
    assert b"pip install 'stomp-cluster[metrics]'" in response.content


def test_the_package_never_imports_prometheus_client_when_it_loads():
    code = (
        "import sys, pkgutil, importlib, django; django.setup(); import stomp_cluster; "
        "[importlib.import_module(m.name) for m in "
        "pkgutil.walk_packages(stomp_cluster.__path__, 'stomp_cluster.') "
        "if 'migrations' not in m.name]; "
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.cluster
def test_a_uvicorn_node_serves_its_metrics_over_http(clean_redis, tmp_path):
    db_path = prepare_database(tmp_path / "db.sqlite3")
    node = AsgiNode("metrics-node", db_path=db_path, redis_url=clean_redis.url, server="uvicorn")
    node.spawn()
    try:
        node.wait_ready()
        with RawStompClient(node.ws_url) as c:
            c.connect(login="alice", passcode=token_for("alice", db_path))
            with urllib.request.urlopen(f"{node.http_url}stomp/metrics/", timeout=10) as response:
                assert response.status == 200
                samples = parse(response.read().decode())
    finally:
        node.terminate()
    assert value(samples, "stomp_cluster_node_info", node="metrics-node", version=__version__) == 1
    assert value(samples, "stomp_cluster_connections") == 1
    assert value(samples, "stomp_cluster_sessions") == 1
    assert value(samples, "stomp_cluster_frames_received_total") == 1  # the CONNECT
    assert value(samples, "stomp_cluster_frames_sent_total") == 1  # the CONNECTED
    label = {"connection": "presence backend"}
    assert value(samples, "stomp_cluster_redis_round_trip_seconds_count", **label) > 0


@override_settings(STOMP_CLUSTER={"NODE_ID": "beat-node", "NODE_HEARTBEAT_INTERVAL": 0.05})
async def test_the_heartbeat_publishes_the_delivery_counters_only():
    node = get_node()
    await node.ensure_started()
    try:
        node.stats.update(delivered=4, frames_in=9, bytes_in=300, auth_failed_credentials=1)
        for _ in range(100):
            (record,) = await node.presence.nodes()
            if record.stats:
                break
            await asyncio.sleep(0.02)
    finally:
        await node.stop()
    # What the CLI and the admin show: the traffic counters stay with metrics/.
    assert dict(record.stats) == {"delivered": 4}
