"""The HTTP publish API in process: Django's AsyncClient against the view, STOMP clients on
the in-process node. Every refusal is checked as the caller sees it (status, JSON body,
headers); the real-server path is in ``tests/cluster/test_publish_http.py``."""

from __future__ import annotations

import base64
import hmac
import json
import logging

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import AsyncClient, override_settings

from stomp_cluster import publish as publish_module
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.communicator import login_headers
from tests.support.procs import free_port
from tests.support.records import remote_node

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:stomp_cluster sends with the in-memory"),
]

KEY = "k3y-for-tests-0123456789abcdef"
OTHER = "another-key-0123456789abcdef"
URL = "/stomp/publish/"
ON = {
    **settings.STOMP_CLUSTER,
    "PUBLISH_API_KEYS": [OTHER, KEY],
    "HISTORY_TOPICS": ["/topic/kept"],
}


@pytest.fixture(autouse=True)
def _api_on():
    with override_settings(STOMP_CLUSTER=ON):
        yield


async def post(payload, *, key=KEY, raw=None, **headers):
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(payload)
    return await AsyncClient().post(
        URL, data=data, content_type="application/json", headers=headers
    )


async def subscriber(destination, headers=None):
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp(headers)
    await client.send_frame("SUBSCRIBE", {"id": "s", "destination": destination, "receipt": "r"})
    assert (await client.receive_frame()).command is Command.RECEIPT
    return client


# -- sending -------------------------------------------------------------------------


async def test_publish_to_a_destination_reaches_its_subscriber_and_answers_the_delivery():
    client = await subscriber("/topic/news")
    response = await post(
        {"destination": "/topic/news", "body": "héllo", "headers": {"x-kind": "greeting"}}
    )
    assert response.status_code == 200
    assert response.json() == {
        "message_id": None,
        "stored": False,
        "sessions": 1,
        "nodes": 1,
        "missed_nodes": 0,
    }
    frame = await client.receive_frame()
    assert frame.body == "héllo".encode()
    assert frame.get("x-kind") == "greeting"
    assert frame.get("content-type") == "text/plain;charset=utf-8"
    await client.disconnect()


async def test_publish_to_a_user_is_stored_and_delivered_to_that_user_only():
    client = await subscriber("/user/queue/notify", await login_headers("ursula"))
    response = await post({"user": "ursula", "destination": "/queue/notify", "body": {"n": 1}})
    assert response.status_code == 200
    delivery = response.json()
    assert delivery["stored"] is True and delivery["sessions"] == 1
    frame = await client.receive_frame()
    assert frame.body == b'{"n":1}'
    assert frame.get("content-type") == "application/json"
    assert frame.get("message-id") == delivery["message_id"]
    await client.disconnect()


async def test_a_retried_publish_with_an_idempotency_key_is_delivered_once():
    client = await subscriber("/user/queue/notify", await login_headers("rita"))
    message = {
        "user": "rita",
        "destination": "/queue/notify",
        "body": "invoice paid",
        "idempotency_key": "invoice-42",
    }
    first = await post(message)
    retry = await post(message)
    other = await post({**message, "idempotency_key": "invoice-43"})
    assert first.status_code == retry.status_code == other.status_code == 200
    assert retry.json() == first.json()
    assert other.json()["message_id"] != first.json()["message_id"]
    ids = [(await client.receive_frame()).get("message-id") for _ in range(2)]
    assert ids == [first.json()["message_id"], other.json()["message_id"]]
    # Nothing more: a marker sent after them is the next frame.
    end = await post({"user": "rita", "destination": "/queue/notify", "body": "end"})
    assert end.status_code == 200
    assert (await client.receive_frame()).body == b"end"
    await client.disconnect()


async def test_publish_to_a_session_with_a_binary_body():
    client = StompCommunicator(application, "/ws")
    connected = await client.connect_stomp(None)
    await client.send_frame("SUBSCRIBE", {"id": "s", "destination": "/user/queue/direct"})
    payload = bytes(range(256))
    response = await post(
        {
            "session": connected.get("session"),
            "destination": "/queue/direct",
            "body_base64": base64.b64encode(payload).decode(),
            "headers": {"content-type": "application/octet-stream"},
        }
    )
    assert response.status_code == 200
    assert response.json()["sessions"] == 1
    frame = await client.receive_frame()
    assert frame.body == payload
    assert frame.get("content-type") == "application/octet-stream"
    await client.disconnect()


async def test_a_batch_answers_one_result_per_message_in_order():
    client = await subscriber("/topic/kept")
    response = await post(
        {
            "messages": [
                {"destination": "/topic/kept", "body": "one"},
                {"user": 999_999, "destination": "/queue/x", "body": "nobody has this pk"},
                {"destination": "/topic/kept", "body": "two"},
            ]
        }
    )
    assert response.status_code == 200
    first, missing, second = response.json()["results"]
    assert first["ok"] is True and first["delivery"]["stored"] is True
    assert missing == {
        "ok": False,
        "status": 400,
        "error": "no user with pk 999999",
        "field": "user",
    }
    assert second["ok"] is True
    bodies = [(await client.receive_frame()).body for _ in range(2)]
    assert bodies == [b"one", b"two"]
    await client.disconnect()


# -- refusals ------------------------------------------------------------------------


async def test_the_api_is_off_without_keys():
    with override_settings(STOMP_CLUSTER={**ON, "PUBLISH_API_KEYS": []}):
        response = await post({"destination": "/topic/x", "body": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "the publish API is off: set PUBLISH_API_KEYS"}


async def test_only_post_is_allowed():
    response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {KEY}", KEY],
)
async def test_a_request_without_a_bearer_key_is_401(authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await post({"destination": "/topic/x", "body": "x"}, key=None, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="stomp_cluster"'
    assert response.json() == {"error": "an API key is required: Authorization: Bearer <key>"}


@pytest.mark.parametrize("key", [KEY[:-1], KEY + "x", KEY.upper(), "é" * 20])
async def test_a_wrong_key_is_401_and_says_invalid_token(key):
    response = await post({"destination": "/topic/x", "body": "x"}, key=key)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="stomp_cluster", error="invalid_token"'
    assert response.json() == {"error": "invalid API key"}


async def test_the_scheme_is_case_insensitive():
    response = await AsyncClient().post(
        URL,
        data=json.dumps({"destination": "/topic/x", "body": "x"}),
        content_type="application/json",
        headers={"Authorization": f"bearer {OTHER}"},
    )
    assert response.status_code == 200


async def test_every_key_is_compared_in_constant_time_even_after_a_match(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def recording(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(publish_module.hmac, "compare_digest", recording)
    keys = [KEY, OTHER, "third-key-0123456789abcdef"]
    with override_settings(STOMP_CLUSTER={**ON, "PUBLISH_API_KEYS": keys}):
        assert (await post({"destination": "/topic/x", "body": "x"})).status_code == 200
        assert compared == [k.encode() for k in keys]  # the first matched; all were compared
        compared.clear()
        assert (await post({"destination": "/topic/x", "body": "x"}, key="nope")).status_code == 401
        assert compared == [k.encode() for k in keys]


async def test_keys_never_appear_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    await post({"destination": "/topic/x", "body": "x"})
    await post({"destination": "/topic/x", "body": "x"}, key=KEY + "typo")
    await post({"destination": "/topic/x", "body": "x"}, key=None, Authorization=KEY)
    await post({"nope": 1})
    assert any("publish API refused" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert KEY not in text and OTHER not in text and KEY[:16] not in text


async def test_a_body_over_the_limit_is_413():
    with override_settings(STOMP_CLUSTER={**ON, "PUBLISH_MAX_REQUEST_SIZE": 1024}):
        response = await post({"destination": "/topic/x", "body": "x" * 2000})
        assert response.status_code == 413
        assert response.json() == {"error": "the request body is over 1024 bytes"}
        assert (await post({"destination": "/topic/x", "body": "x" * 900})).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field", "error"),
    [
        ([1, 2], None, "must be a JSON object"),
        ({"body": "x"}, "destination", "required"),
        (
            {"destination": "/topic/x", "body": "x", "priority": 9},
            "priority",
            "unknown field; known: body, body_base64, destination, headers, idempotency_key, "
            "session, user",
        ),
        (
            {"destination": "/topic/x", "body": "x", "idempotency_key": "k" * 257},
            "idempotency_key",
            "idempotency_key of 257 bytes: it must have 1 to 256 bytes",
        ),
        (
            {"destination": "/topic/x", "body": "x", "idempotency_key": 7},
            "idempotency_key",
            "must be a string",
        ),
        ({"destination": "/topic/x"}, "body", "give exactly one of body and body_base64"),
        (
            {"destination": "/topic/x", "body": "x", "body_base64": "eA=="},
            "body",
            "give exactly one of body and body_base64",
        ),
        (
            {"destination": "/topic/x", "body_base64": "not base64!"},
            "body_base64",
            "must be a string of standard base64",
        ),
        ({"destination": 5, "body": "x"}, "destination", None),
        ({"destination": "/app/chat", "body": "x"}, "destination", None),
        ({"destination": "/elsewhere", "body": "x"}, "destination", None),
        (
            {"destination": "/user/queue/x", "body": "x"},
            "destination",
            'a /user/ destination needs "user"',
        ),
        (
            {"destination": "/app/x", "user": "u", "body": "x"},
            "destination",
            "must be a queue such as /queue/notify",
        ),
        (
            {"destination": "/queue/x", "user": "u", "session": "s", "body": "x"},
            "session",
            "give at most one of user and session",
        ),
        ({"destination": "/queue/x", "user": True, "body": "x"}, "user", None),
        ({"destination": "/queue/x", "user": 2**64, "body": "x"}, "user", None),
        ({"destination": "/queue/x", "user": -1, "body": "x"}, "user", None),
        ({"destination": "/topic/x", "body": "x", "headers": ["a"]}, "headers", None),
        (
            {"destination": "/topic/x", "body": "x", "headers": {"message-id": "1-0"}},
            "headers.message-id",
            "set by the server: remove it",
        ),
        (
            {"destination": "/topic/x", "body": "x", "headers": {"X-Sender": "admin"}},
            "headers.X-Sender",
            "set by the server: remove it",
        ),
        (
            {"destination": "/topic/x", "body": "x", "headers": {"x-recovered": "true"}},
            "headers.x-recovered",
            "set by the server: remove it",
        ),
        (
            {"destination": "/topic/x", "body": "x", "headers": {"a:b": "1"}},
            "headers",
            None,
        ),
        (
            {"destination": "/topic/x", "body": "x", "headers": {"x-a": "1\n2"}},
            "headers.x-a",
            "must not contain control characters",
        ),
        ({"destination": "/topic/x", "body": "x", "headers": {"x-a": 1}}, "headers.x-a", None),
        ({"messages": []}, "messages", "must be a list of 1 to 100 messages"),
        ({"messages": [{}] * 101}, "messages", "must be a list of 1 to 100 messages"),
        ({"messages": [], "body": "x"}, None, 'a batch is {"messages": [...]} with no other field'),
        (
            {"messages": [{"destination": "/topic/x", "body": "x"}, {"destination": "/topic/x"}]},
            "messages[1].body",
            "give exactly one of body and body_base64",
        ),
    ],
)
async def test_a_wrong_field_is_400_naming_it(payload, field, error):
    client = await subscriber("/topic/x")
    response = await post(payload)
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    if error is not None:
        assert body["error"] == error
    # Nothing was sent, not even the valid messages of a batch.
    await client.send_frame("DISCONNECT", {"receipt": "bye"})
    assert (await client.receive_frame()).command is Command.RECEIPT


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000])
async def test_a_body_that_is_not_json_is_400(raw):
    response = await post(None, raw=raw)
    assert response.status_code == 400
    assert response.json() == {"error": "the request body is not JSON", "field": None}


async def test_a_backend_outage_is_503_with_retry_after():
    dead = {"hosts": [f"redis://127.0.0.1:{free_port()}/0"], "socket_timeout": 0.5}
    down = {
        **ON,
        "PRESENCE_BACKEND": "stomp_cluster.presence.redis.RedisPresence",
        "PRESENCE_OPTIONS": dead,
    }
    with override_settings(STOMP_CLUSTER=down):
        response = await post({"destination": "/topic/x", "body": "x"})
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "unavailable" in response.json()["error"]


SMALL_LAYER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1}}
}


@override_settings(CHANNEL_LAYERS=SMALL_LAYER)
async def test_a_message_a_full_node_missed_and_kept_nowhere_is_502_with_reached():
    await remote_node("slow", "specific.slow!s")
    await remote_node("fast", "specific.fast!f")
    await get_channel_layer().send("specific.slow!s", {"type": "stomp.publish"})  # now full
    response = await post({"destination": "/topic/x", "body": "x"})
    assert response.status_code == 502
    assert response.json() == {
        "error": "not delivered to node slow: its channel is full",
        "reached": 1,
    }


@pytest.mark.parametrize("keys", ["one-key-as-a-bare-string-0123", ["short-secret"], [KEY, 5]])
def test_a_refused_key_setting_is_never_printed(keys):
    from stomp_cluster.conf import validate_settings

    [(message, hint, check_id)] = validate_settings({"PUBLISH_API_KEYS": keys})
    assert check_id == "stomp_cluster.E003"
    assert message == "STOMP_CLUSTER['PUBLISH_API_KEYS'] is not accepted (a secret: not shown)."
    assert "secret strings of at least 16" in hint
    for secret in ("one-key-as-a-bare-string", "short-secret", KEY):
        assert secret not in message + hint


def test_the_keys_stay_out_of_the_settings_repr():
    from stomp_cluster.conf import get_settings

    assert get_settings().PUBLISH_API_KEYS == (OTHER, KEY)
    assert KEY not in repr(get_settings()) and OTHER not in repr(get_settings())
