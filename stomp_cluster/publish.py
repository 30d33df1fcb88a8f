r"""The HTTP publish API: send STOMP messages from any service that speaks HTTP.

Mounted with the other endpoints of :mod:`stomp_cluster.urls`, at ``publish/``
(``/stomp/publish/`` with the usual ``path("stomp/", include("stomp_cluster.urls"))``). A
backend written in Go, Node or anything else POSTs JSON there and the message goes to
its recipients through :func:`~stomp_cluster.send.asend_to_destination`,
:func:`~stomp_cluster.send.asend_to_user` or
:func:`~stomp_cluster.send.asend_to_session`, exactly as a send from Django code would::

    curl -X POST https://example.com/stomp/publish/ \
         -H "Authorization: Bearer $STOMP_PUBLISH_KEY" \
         -H "Content-Type: application/json" \
         -d '{"destination": "/topic/chat", "body": "hello"}'

Access
------

The API is off until ``PUBLISH_API_KEYS`` lists at least one key: until then it answers
404. A request carries a key as ``Authorization: Bearer <key>``. The key is compared with
*every* configured key by :func:`hmac.compare_digest`, whether or not an earlier one
matched, so the time taken says nothing about which key nearly matched. Keys are never
logged, never echoed, and never shown by a system check. Unlike ``health/`` and
``metrics/``, the API is not limited to ``ENDPOINTS_ALLOWED_NETWORKS``: the key is the
credential, and callers usually sit on other hosts. Serve it over HTTPS.

Requests
--------

One message is a JSON object:

``destination`` (required)
    Where the message goes: a broker destination (``/topic/chat``, ``/queue/jobs``). With
    ``user``, the user's queue as :func:`~stomp_cluster.send.send_to_user` takes it
    (``/queue/notify`` or ``/user/queue/notify``).
``user`` or ``session`` (at most one)
    Only this user's sessions (a username, or an integer primary key), or only this
    session (the CONNECTED frame's ``session`` header).
``body`` or ``body_base64`` (exactly one)
    ``body`` as a JSON string is sent as UTF-8 text (``text/plain;charset=utf-8``), any
    other JSON value as JSON (``application/json``); ``body_base64`` is standard base64
    of binary content, sent as those bytes.
``headers`` (optional)
    An object of extra MESSAGE headers, string to string; a ``content-type`` here wins.
    Names are printable ASCII without ``:`` or spaces, at most :data:`MAX_HEADER_NAME`
    characters; values have no control characters and at most :data:`MAX_HEADER_VALUE`;
    at most :data:`MAX_HEADERS` of them. Headers the server owns
    (:data:`SERVER_OWNED_HEADERS`: ``message-id``, ``subscription``, ``ack``,
    ``x-sender``...) are refused, not stripped: a caller who sets one is told.

``idempotency_key`` (optional)
    A string of 1 to 256 bytes naming this send, as the send helpers'
    ``idempotency_key``: a request retried with the same key (for the same recipient and
    destination) within ``IDEMPOTENCY_TTL`` sends nothing and answers the first send's
    delivery, with the same ``message_id``. Use it when a retry follows a timeout or a
    5xx, so that a message that did go out is not sent twice under a new id.

Any other field is refused. A batch is ``{"messages": [...]}`` with 1 to
``PUBLISH_MAX_BATCH`` such objects. A batch is checked whole before anything is sent (one
malformed message: 400, nothing sent), then sent in order, one message after the other.

Answers
-------

Every answer is JSON. A sent message answers 200 with its
:class:`~stomp_cluster.send.Delivery`: ``{"message_id": "1764237600000-0" or null,
"stored": bool, "sessions": int, "nodes": int, "missed_nodes": int}``. A batch answers
200 with ``{"results": [...]}``, one entry per message in order: ``{"ok": true,
"delivery": {...}}`` or ``{"ok": false, "status": 503, "error": "..."}``.

=====  ==============================================================================
401    no key, or a wrong one; with ``WWW-Authenticate: Bearer realm="stomp_cluster"``
400    not JSON, or a field is wrong: ``{"error": "...", "field": "messages[2].headers"}``
404    the API is off (``PUBLISH_API_KEYS`` is empty)
405    not a POST (``Allow: POST``)
413    the request body is over ``PUBLISH_MAX_REQUEST_SIZE``
502    the message reached no node, or not all of them (a full inbox, a failed transport),
       and is kept in no history; ``"reached"`` counts the sessions it reached
503    a backend (presence registry, history, transport) is down; nothing was sent.
       With ``Retry-After``.
=====  ==============================================================================

A retry after a 502 may deliver the message twice to the sessions it reached; after a
503 it was not sent at all.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from stomp_cluster import destinations
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import BackendUnavailable, DeliveryFailed
from stomp_cluster.idempotency import check_key
from stomp_cluster.protocol import RESERVED_MESSAGE_HEADERS
from stomp_cluster.send import (
    SENDER_HEADER,
    SERVER_HEADERS,
    Delivery,
    asend_to_destination,
    asend_to_session,
    asend_to_user,
)

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_NAME",
    "MAX_HEADER_VALUE",
    "SERVER_OWNED_HEADERS",
    "publish",
]

logger = logging.getLogger(__name__)

#: Extra headers one message may carry.
MAX_HEADERS = 64
#: Characters in a header name.
MAX_HEADER_NAME = 256
#: Characters in a header value.
MAX_HEADER_VALUE = 4096
#: Characters in a destination or a session id.
_MAX_NAME = 1024

#: Headers a caller may not set: those a MESSAGE reserves for the server, those recovery
#: sets, the sender's identity, and the SEND-only ``receipt`` and ``transaction``.
SERVER_OWNED_HEADERS = (
    RESERVED_MESSAGE_HEADERS | SERVER_HEADERS | {SENDER_HEADER, "user-id", "receipt", "transaction"}
)

_FIELDS = frozenset(
    {"destination", "user", "session", "body", "body_base64", "headers", "idempotency_key"}
)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ':' and space
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REALM = 'Bearer realm="stomp_cluster"'


class _Invalid(Exception):
    """A request field is wrong: answered 400 naming it."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class _Message:
    destination: str
    user: str | int | None
    session: str | None
    body: Any
    headers: dict[str, str]
    idempotency_key: str | None = None


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Whether *given* is one of *keys*, compared with each in constant time.

    Every key is compared, even after a match: stopping early would tell a timing
    attacker how many keys come before the one that matched.
    """
    presented = given.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key.encode())
    return found


def _unauthorized(request: HttpRequest, message: str, challenge: str) -> JsonResponse:
    # The address only: the header may hold a real key with a typo, and is never logged.
    logger.info(
        "publish API refused a request from %s: %s", request.META.get("REMOTE_ADDR"), message
    )
    response = _error(401, message)
    response["WWW-Authenticate"] = challenge
    return response


def _text(data: dict[str, Any], name: str, where: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _Invalid(where + name, "required")
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or _CONTROL.search(value):
        raise _Invalid(
            where + name, f"must be a non-empty string of at most {_MAX_NAME} characters"
        )
    return value


def _headers(value: Any, where: str) -> dict[str, str]:
    field = where + "headers"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(field, "must be an object of header names to string values")
    if len(value) > MAX_HEADERS:
        raise _Invalid(field, f"at most {MAX_HEADERS} headers, got {len(value)}")
    for name, header in value.items():
        if len(name) > MAX_HEADER_NAME or not _HEADER_NAME.fullmatch(name):
            raise _Invalid(
                field,
                f"header name {name[:64]!r} must be 1 to {MAX_HEADER_NAME} printable ASCII "
                "characters, without ':' or spaces",
            )
        if name.lower() in SERVER_OWNED_HEADERS:
            raise _Invalid(f"{field}.{name}", "set by the server: remove it")
        if not isinstance(header, str) or len(header) > MAX_HEADER_VALUE:
            raise _Invalid(
                f"{field}.{name}", f"must be a string of at most {MAX_HEADER_VALUE} characters"
            )
        if _CONTROL.search(header):
            raise _Invalid(f"{field}.{name}", "must not contain control characters")
    return dict(value)


def _message(data: Any, where: str = "") -> _Message:
    """Check one message object; *where* prefixes field names (``messages[2].``)."""
    if not isinstance(data, dict):
        raise _Invalid(where.rstrip(".") or None, "must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise _Invalid(where + unknown[0], f"unknown field; known: {', '.join(sorted(_FIELDS))}")
    destination = _text(data, "destination", where, required=True)
    assert destination is not None
    user = data.get("user")
    session = _text(data, "session", where)
    if user is not None and session is not None:
        raise _Invalid(where + "session", "give at most one of user and session")
    if user is not None:
        if (
            isinstance(user, bool)
            or not isinstance(user, str | int)
            or user == ""
            or (isinstance(user, int) and not 0 < user < 2**63)  # a database's pk range
        ):
            raise _Invalid(where + "user", "must be a username (string) or a primary key (integer)")
        destination = destinations.user_destination(destination)
        if destinations.kind(destination) is not destinations.Kind.USER:
            raise _Invalid(where + "destination", "must be a queue such as /queue/notify")
    elif session is not None:
        if destinations.kind(destination) not in (destinations.Kind.BROKER, destinations.Kind.USER):
            raise _Invalid(where + "destination", "must be a broker or /user/ destination")
    elif destinations.is_user(destination):
        raise _Invalid(where + "destination", 'a /user/ destination needs "user"')
    elif destinations.kind(destination) is not destinations.Kind.BROKER:
        raise _Invalid(where + "destination", "must be a broker destination such as /topic/news")
    if ("body" in data) == ("body_base64" in data):
        raise _Invalid(where + "body", "give exactly one of body and body_base64")
    body: Any = data.get("body")
    if "body_base64" in data:
        encoded = data["body_base64"]
        try:
            if not isinstance(encoded, str):
                raise ValueError
            body = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise _Invalid(where + "body_base64", "must be a string of standard base64") from None
    key = data.get("idempotency_key")
    if key is not None:
        try:
            if not isinstance(key, str):
                raise ValueError("must be a string")
            check_key(key)
        except ValueError as exc:
            raise _Invalid(where + "idempotency_key", str(exc)) from None
    headers = _headers(data.get("headers"), where)
    return _Message(destination, user, session, body, headers, key)


def _messages(payload: Any) -> tuple[list[_Message], bool]:
    """The messages of a request body, and whether it is a batch."""
    if isinstance(payload, dict) and "messages" in payload:
        if set(payload) != {"messages"}:
            raise _Invalid(None, 'a batch is {"messages": [...]} with no other field')
        batch = payload["messages"]
        limit = get_settings().PUBLISH_MAX_BATCH
        if not isinstance(batch, list) or not 1 <= len(batch) <= limit:
            raise _Invalid("messages", f"must be a list of 1 to {limit} messages")
        return [_message(m, f"messages[{i}].") for i, m in enumerate(batch)], True
    return [_message(payload)], False


async def _send(message: _Message) -> Delivery:
    key = message.idempotency_key
    if message.user is not None:
        return await asend_to_user(
            message.user, message.destination, message.body, message.headers, idempotency_key=key
        )
    if message.session is not None:
        return await asend_to_session(
            message.session, message.destination, message.body, message.headers, idempotency_key=key
        )
    return await asend_to_destination(
        message.destination, message.body, message.headers, idempotency_key=key
    )


def _delivery(delivery: Delivery) -> dict[str, Any]:
    return {
        "message_id": delivery.message_id,
        "stored": delivery.stored,
        "sessions": delivery.sessions,
        "nodes": delivery.nodes,
        "missed_nodes": delivery.missed_nodes,
    }


async def _outcome(message: _Message) -> tuple[int, dict[str, Any]]:
    """Send one message: ``(status, JSON)``, 200 with its Delivery or an error."""
    try:
        delivery = await _send(message)
    except DeliveryFailed as exc:
        if isinstance(exc.__cause__, BackendUnavailable):
            return 503, {"error": str(exc)}
        return 502, {"error": str(exc), "reached": exc.reached}
    except BackendUnavailable as exc:
        return 503, {"error": str(exc)}
    except LookupError as exc:  # a primary key that matches no user
        return 400, {"error": str(exc), "field": "user"}
    return 200, _delivery(delivery)


def _answer(status: int, body: dict[str, Any]) -> JsonResponse:
    response = JsonResponse(body, status=status)
    if status == 503:
        response["Retry-After"] = "1"
    return response


@csrf_exempt
@never_cache
async def publish(request: HttpRequest) -> HttpResponse:
    """Send the message (or batch) of a POSTed JSON body; see the module's documentation.

    Answers 200 with the :class:`~stomp_cluster.send.Delivery` as JSON, or an error
    status with ``{"error": ...}``.
    """
    settings = get_settings()
    keys = settings.PUBLISH_API_KEYS
    if not keys:
        return _error(404, "the publish API is off: set PUBLISH_API_KEYS")
    if request.method != "POST":
        response = _error(405, "use POST")
        response["Allow"] = "POST"
        return response
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized(request, "an API key is required: Authorization: Bearer <key>", _REALM)
    if not _key_matches(token.strip(), keys):
        return _unauthorized(request, "invalid API key", _REALM + ', error="invalid_token"')
    limit = settings.PUBLISH_MAX_REQUEST_SIZE
    too_big = _error(413, f"the request body is over {limit} bytes")
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            return too_big
        raw = request.body
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE
        return too_big
    except ValueError:
        return _error(400, "bad Content-Length", field=None)
    if len(raw) > limit:
        return too_big
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _error(400, "the request body is not JSON", field=None)
    try:
        messages, batch = _messages(payload)
    except _Invalid as exc:
        return _error(400, exc.message, field=exc.field)
    if not batch:
        return _answer(*await _outcome(messages[0]))
    results = []
    for message in messages:
        status, body = await _outcome(message)
        if status == 200:
            results.append({"ok": True, "delivery": body})
        else:
            results.append({"ok": False, "status": status, **body})
    return JsonResponse({"results": results})
