"""``stomp_cluster.urls``' ``health/``: what a load balancer or a Kubernetes probe reads.

In-process: the view is called as the ASGI handler calls an async view, on the event loop
of the test, whose node it sees. The Redis cases use our own redis-server, which they
stop. A real uvicorn node answering ``/stomp/health/`` is in ``tests/cluster``.
"""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory, override_settings
from django.urls import reverse

from stomp_cluster.conf import validate_settings
from stomp_cluster.node import get_node
from stomp_cluster.views import client_allowed, health

pytestmark = pytest.mark.timeout(60)

IN_MEMORY = {"NODE_ID": "health-node"}


def get(remote_addr: str = "127.0.0.1", method: str = "get"):
    return getattr(RequestFactory(), method)("/stomp/health/", REMOTE_ADDR=remote_addr)


async def answer(request) -> tuple[int, dict]:
    response = await health(request)
    return response.status_code, json.loads(response.content)


def on_redis(url: str) -> override_settings:
    return override_settings(
        STOMP_CLUSTER={
            "NODE_ID": "health-node",
            "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
            "PRESENCE_OPTIONS": {"hosts": [url]},
        }
    )


def test_testproject_mounts_health_under_stomp():
    assert reverse("stomp_cluster:health") == "/stomp/health/"


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_a_process_that_is_not_a_node_is_healthy_with_node_null():
    assert await answer(get()) == (200, {"status": "ok", "node": None})


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_a_registered_node_is_healthy_and_names_itself():
    node = get_node()
    await node.ensure_started()
    try:
        assert await answer(get()) == (200, {"status": "ok", "node": "health-node", "sessions": 0})
    finally:
        await node.stop()


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_a_node_the_registry_forgot_is_unavailable():
    node = get_node()
    await node.ensure_started()
    try:
        await node.presence.unregister_node(node.node_id)
        assert await answer(get()) == (
            503,
            {"status": "unavailable", "node": "health-node", "reason": "node not registered"},
        )
    finally:
        await node.stop()


async def test_a_node_is_healthy_then_unavailable_when_its_redis_stops(clean_redis):
    with on_redis(clean_redis.url):
        node = get_node()
        await node.ensure_started()
        try:
            status, body = await answer(get())
            assert (status, body["node"]) == (200, "health-node")
            clean_redis.stop()
            assert await answer(get()) == (
                503,
                {
                    "status": "unavailable",
                    "node": "health-node",
                    "reason": "presence registry unreachable",
                },
            )
        finally:
            await node.stop()  # the registry is down: stop() gives up on it quietly


async def test_a_process_that_is_not_a_node_is_unavailable_without_its_redis(clean_redis):
    with on_redis(clean_redis.url):
        assert await answer(get()) == (200, {"status": "ok", "node": None})
        clean_redis.stop()
        assert await answer(get()) == (
            503,
            {"status": "unavailable", "node": None, "reason": "presence registry unreachable"},
        )


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_allowed_by_default(address):
    assert client_allowed(get(address))


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.7", "2001:db8::1", "", "unix"])
def test_other_addresses_are_refused_by_default(address):
    assert not client_allowed(get(address))


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_a_refused_address_gets_403_and_learns_nothing():
    assert await answer(get("10.1.2.3")) == (403, {"status": "forbidden"})


@override_settings(STOMP_CLUSTER={**IN_MEMORY, "ENDPOINTS_ALLOWED_NETWORKS": ["10.0.0.0/8"]})
async def test_allowed_networks_replace_the_default():
    assert (await answer(get("10.1.2.3")))[0] == 200
    assert (await answer(get("127.0.0.1")))[0] == 403


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_only_get_and_head_are_answered():
    assert (await health(get(method="head"))).status_code == 200
    assert (await health(get(method="post"))).status_code == 405


@override_settings(STOMP_CLUSTER=IN_MEMORY)
async def test_the_answer_is_never_cached():
    response = await health(get())
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("value", [["10.0.0.1/8"], ["not-an-address"], "127.0.0.1", [8]])
def test_a_wrong_network_is_refused_by_the_checks(value):
    ((message, hint, check_id),) = validate_settings({"ENDPOINTS_ALLOWED_NETWORKS": value})
    assert check_id == "stomp_cluster.E003"
    assert hint.startswith("Set it to a list of IP networks")
