"""Send STOMP messages from anywhere in Django to whichever node holds the recipients.

Call these from views, tasks, signal receivers or the shell. The async functions are the
real implementation; the sync twins wrap them with ``async_to_sync`` so they work in a
sync view under ASGI or WSGI alike::

    from stomp_cluster import send_to_user

    def notify(request):
        send_to_user("alice", "/queue/notify", {"text": "hello"})

Routing (see :mod:`stomp_cluster.node`): each call asks the presence registry, in one
round trip, which nodes hold the recipients, then puts one message on each such node's
channel, whatever the number of sockets there. A node that holds no recipient gets
nothing.

Each call returns a :class:`Delivery` saying how many sessions and nodes it reached
according to the presence registry at the time of sending. Sending to nobody is not an
error. A full node inbox raises :class:`DeliveryFailed`: nothing is dropped silently.

Bodies may be ``str`` (sent as ``text/plain;charset=utf-8``), ``bytes`` (sent as-is) or
anything JSON-serialisable (sent as ``application/json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder

from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.transport import RedisTransport
from stomp_cluster.typing import Headers

__all__ = [
    "Delivery",
    "adisconnect_session",
    "asend_to_destination",
    "asend_to_session",
    "asend_to_user",
    "disconnect_session",
    "send_to_destination",
    "send_to_session",
    "send_to_user",
]

logger = logging.getLogger(__name__)

#: Headers a sender may not set: the server owns them on a MESSAGE frame.
RESERVED_HEADERS = frozenset(
    {"destination", "message-id", "subscription", "ack", "content-length", "receipt", "transaction"}
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a send reached, according to the presence registry when it was sent.

    Attributes:
        sessions: subscriptions (for a destination) or sessions (for a user or a
            session) that the message was routed to.
        nodes: how many nodes it was routed to.
    """

    sessions: int
    nodes: int

    def __bool__(self) -> bool:
        return bool(self.sessions)


UserRef = AbstractBaseUser | int | str


def encode_body(
    body: Any, headers: Mapping[str, str] | None, content_type: str | None
) -> tuple[bytes, Headers]:
    """Turn a body and headers into wire bytes and a header tuple.

    Raises:
        TypeError: *body* is not str, bytes or JSON-serialisable.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        payload = bytes(body)
    elif isinstance(body, str):
        payload = body.encode("utf-8")
        content_type = content_type or "text/plain;charset=utf-8"
    else:
        payload = json.dumps(body, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
        content_type = content_type or "application/json"
    extra = [(str(k), str(v)) for k, v in (headers or {}).items() if k not in RESERVED_HEADERS]
    if content_type and not any(k == "content-type" for k, _ in extra):
        extra.append(("content-type", content_type))
    return payload, tuple(extra)


def user_destination(destination: str) -> str:
    """Return the ``/user/...`` form that a client subscribes to for *destination*."""
    prefix = get_settings().USER_PREFIX
    if destination.startswith(prefix):
        return destination
    return prefix + destination.lstrip("/")


async def _user_key(user: UserRef) -> str:
    # We key users by username, as Spring keys them by principal name: a view usually
    # has the name at hand, and no database query is needed to route.
    if isinstance(user, AbstractBaseUser):
        return user.get_username()
    if isinstance(user, str):
        return user
    if isinstance(user, int) and not isinstance(user, bool):
        from django.contrib.auth import get_user_model

        model = get_user_model()

        def lookup() -> str | None:
            found = model._default_manager.filter(pk=user).first()
            return found.get_username() if found is not None else None

        name: str | None = await database_sync_to_async(lookup)()
        if name is None:
            raise LookupError(f"no user with pk {user!r}")
        return name
    raise TypeError(f"user must be a user object, a pk or a username, not {type(user).__name__}")


#: Seconds a sender trusts its copy of the node table (node id -> node channel).
NODE_TABLE_TTL = 2.0

_node_table: dict[str, tuple[float, dict[str, str]]] = {}


async def _node_channels(presence: Any, *, refresh: bool = False) -> dict[str, str]:
    # Node channels change only when a node starts, so senders cache the table briefly
    # and refresh it when a node they must reach is missing from it.
    key = str(id(presence))
    cached = _node_table.get(key)
    if cached is not None and not refresh and time.monotonic() - cached[0] < NODE_TABLE_TTL:
        return cached[1]
    table = {node.node_id: node.channel_name for node in await presence.nodes()}
    _node_table[key] = (time.monotonic(), table)
    return table


async def _route(by_node: dict[str, int], message: dict[str, Any]) -> Delivery:
    """Put *message* on the channel of each node in *by_node*; count what it reached.

    Raises:
        DeliveryFailed: a node inbox was full or the transport failed, after the message
            was handed to every other node.
    """
    from stomp_cluster.node import current_node, get_presence, get_transport

    if not by_node:
        return Delivery(sessions=0, nodes=0)
    presence = get_presence()
    channels = await _node_channels(presence)
    if any(node_id not in channels for node_id in by_node):
        channels = await _node_channels(presence, refresh=True)
    local = current_node()
    transport = None
    gone: set[str] = set()
    sends = []
    targets = []
    for node_id in by_node:
        if local is not None and node_id == local.node_id:
            # This process holds the recipients: skip the transport.
            local.dispatch(message)
            continue
        channel = channels.get(node_id)
        if channel is None:
            gone.add(node_id)  # the node left between the two registry reads
            continue
        transport = transport or get_transport()
        sends.append(transport.send(channel, message))
        targets.append(node_id)
    results = await asyncio.gather(*sends, return_exceptions=True)
    failures = {
        node_id: result
        for node_id, result in zip(targets, results, strict=True)
        if isinstance(result, BaseException)
    }
    return _outcome(message.get("destination"), by_node, failures, gone)


def _outcome(
    destination: Any,
    by_node: dict[str, int],
    failures: dict[str, BaseException],
    gone: set[str] | frozenset[str] = frozenset(),
) -> Delivery:
    """What a routed message reached, or DeliveryFailed naming the first node it missed.

    *failures* maps the nodes the transport refused to its exception; *gone* are nodes
    skipped because they left the cluster meanwhile (not failures, not reached).
    """
    reached = {n: c for n, c in by_node.items() if n not in failures and n not in gone}
    if not failures:
        return Delivery(sessions=sum(reached.values()), nodes=len(reached))
    node_id, exc = next(iter(failures.items()))
    reason = (
        "its channel is full" if isinstance(exc, ChannelFull) else f"the transport failed: {exc!r}"
    )
    logger.warning(
        "message to %s not delivered to %d node(s): %s", destination, len(failures), reason
    )
    raise DeliveryFailed(
        f"not delivered to node {node_id}: {reason}", reached=sum(reached.values())
    ) from exc


async def _lookup(call: Any) -> dict[str, int]:
    try:
        result: dict[str, int] = await call
    except PresenceUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot route the message") from exc
    return result


async def asend_to_destination(
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Publish to every subscriber of *destination* (e.g. ``/topic/news``), cluster-wide.

    Raises:
        DeliveryFailed: a node inbox was full, or the transport, the registry or
            (for a ``HISTORY_TOPICS`` destination) the history was unavailable.
        ValueError: *destination* is a ``/user/`` one: use :func:`asend_to_user`.
    """
    from stomp_cluster.node import get_presence

    if destination.startswith(get_settings().USER_PREFIX):
        raise ValueError(f"{destination} is a user destination: use send_to_user()")
    payload, extra = encode_body(body, headers, content_type)
    by_node = await _lookup(get_presence().destination_nodes(destination))
    message: dict[str, Any] = {
        "type": "stomp.publish",
        "destination": destination,
        "body": payload,
        "headers": extra,
    }
    key = topic_history_key(destination)
    if key is not None:
        message["id"] = await _append(key, destination, payload, extra, pending=False)
    return await _route(by_node, message)


async def asend_to_user(
    user: UserRef,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    live_only: bool = False,
) -> Delivery:
    """Send to every session of *user*, on every node, that subscribes to *destination*.

    As with Spring's ``convertAndSendToUser``, *destination* is given without the user
    prefix (``/queue/notify``) and reaches the user's subscriptions to
    ``/user/queue/notify``; the full ``/user/queue/notify`` form is accepted too.

    The message is appended to the user's history first (unless *live_only* or
    ``HISTORY_BACKEND`` is None): its history id is the MESSAGE ``message-id``, a client
    that reconnects with ``x-resume-from`` recovers it, and if the user has no live
    session it is delivered on the user's next subscription to *destination*.

    Args:
        user: a user object, a primary key (int) or a username (str).
        live_only: deliver to live sessions only; keep no history of it.

    Raises:
        DeliveryFailed: a node inbox was full, or the transport, the registry or the
            history was unavailable.
        LookupError: *user* is a pk that matches no user.
    """
    from stomp_cluster.node import get_history, get_presence, get_transport

    key = await _user_key(user)
    payload, extra = encode_body(body, headers, content_type)
    full = user_destination(destination)
    message: dict[str, Any] = {
        "type": "stomp.user",
        "user": key,
        "destination": full,
        "body": payload,
        "headers": extra,
    }
    presence, history, transport = get_presence(), get_history(), get_transport()
    if live_only:
        history = None
    if isinstance(transport, RedisTransport) and transport.shares_redis_with(presence, history):
        return await _send_to_user_in_one_trip(transport, presence, history, key, message)
    by_node = await _lookup(presence.user_nodes(key))
    if history is not None:
        # History first: a client that reconnects after this point recovers the
        # message from its id even if routing below misses its new node.
        message["id"] = await _append(key, full, payload, extra, pending=not by_node)
    return await _route(by_node, message)


async def _send_to_user_in_one_trip(
    transport: RedisTransport,
    presence: Any,
    history: Any,
    key: str,
    message: dict[str, Any],
) -> Delivery:
    """:func:`asend_to_user` when presence, history and transport share one Redis."""
    from stomp_cluster.node import current_node

    local = current_node()
    try:
        sent = await transport.send_to_user(
            presence, history, key, message, local_node=local.node_id if local else ""
        )
    except PresenceUnavailable as exc:
        raise DeliveryFailed("Redis unavailable: the message was not sent") from exc
    if sent.message_id is not None:
        message["id"] = sent.message_id
    if local is not None and local.node_id in sent.nodes:
        local.dispatch(message)
    failures: dict[str, BaseException] = {
        node_id: ChannelFull(f"the inbox of node {node_id} is full")
        for node_id in sorted(sent.full)
    }
    return _outcome(message["destination"], sent.nodes, failures)


def topic_history_key(destination: str) -> str | None:
    """The history key of a broker destination listed in ``HISTORY_TOPICS``, else None.

    Topic histories share the user histories' store under keys no username can take
    (Django usernames cannot contain NUL).
    """
    import fnmatch

    settings = get_settings()
    patterns = settings.HISTORY_TOPICS
    if (
        settings.HISTORY_BACKEND is not None
        and patterns
        and any(fnmatch.fnmatchcase(destination, p) for p in patterns)
    ):
        return "\x00topic\x00" + destination
    return None


async def _append(
    key: str, destination: str, payload: bytes, extra: Headers, *, pending: bool
) -> str:
    from stomp_cluster.node import get_history

    history = get_history()
    assert history is not None
    try:
        return await history.append(key, destination, payload, extra, pending=pending)
    except PresenceUnavailable as exc:
        raise DeliveryFailed("message history unavailable: the message was not sent") from exc


async def _session_node(session_id: str) -> dict[str, int]:
    from stomp_cluster.node import get_presence

    try:
        record = await get_presence().get_session(session_id)
    except PresenceUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot locate the session") from exc
    return {} if record is None else {record.node_id: 1}


async def asend_to_session(
    session_id: str,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Send to one session (the CONNECTED ``session`` header), on whichever node.

    It reaches the session's subscriptions to *destination*, or to its ``/user/`` form
    when it has none to *destination* itself.

    Raises:
        DeliveryFailed: the node inbox was full or the transport failed, or the registry
            cannot be asked where the session is.
    """
    payload, extra = encode_body(body, headers, content_type)
    message = {
        "type": "stomp.session",
        "session": session_id,
        "destination": destination,
        "body": payload,
        "headers": extra,
    }
    return await _route(await _session_node(session_id), message)


async def adisconnect_session(session_id: str, message: str = "disconnected by the server") -> bool:
    """Close one session on whichever node holds it, with an ERROR frame saying *message*.

    Returns:
        False when the registry knows no such session.

    Raises:
        DeliveryFailed: the registry or the transport is unavailable.
    """
    kick = {"type": "stomp.kick", "session": session_id, "message": message}
    delivery = await _route(await _session_node(session_id), kick)
    return bool(delivery.nodes)


def send_to_destination(
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Sync twin of :func:`asend_to_destination`."""
    result: Delivery = async_to_sync(asend_to_destination)(destination, body, headers, content_type)
    return result


def send_to_user(
    user: UserRef,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    live_only: bool = False,
) -> Delivery:
    """Sync twin of :func:`asend_to_user`."""
    result: Delivery = async_to_sync(asend_to_user)(
        user, destination, body, headers, content_type, live_only=live_only
    )
    return result


def send_to_session(
    session_id: str,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Sync twin of :func:`asend_to_session`."""
    result: Delivery = async_to_sync(asend_to_session)(
        session_id, destination, body, headers, content_type
    )
    return result


def disconnect_session(session_id: str, message: str = "disconnected by the server") -> bool:
    """Sync twin of :func:`adisconnect_session`."""
    result: bool = async_to_sync(adisconnect_session)(session_id, message)
    return result
