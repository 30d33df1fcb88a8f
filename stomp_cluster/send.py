"""Send STOMP messages from anywhere in Django to whichever node holds the recipients.

Call these from views, tasks, signal receivers or the shell. The async functions are the
real implementation; the sync twins wrap them with ``async_to_sync`` so they work in a
sync view under ASGI or WSGI alike::

    from stomp_cluster import send_to_user

    def notify(request):
        send_to_user("alice", "/queue/notify", {"text": "hello"})

Routing (see :mod:`stomp_cluster.node`): a destination or a user reaches each node that
has a matching subscription once, through a channel-layer group of node channels; a
session is reached through the node channel of the node that holds it, found in the
presence registry.

Each call returns a :class:`Delivery` saying how many sessions and nodes it reached
according to the presence registry at the time of sending. Sending to nobody is not an
error. Bodies may be ``str`` (sent as ``text/plain;charset=utf-8``), ``bytes`` (sent
as-is) or anything JSON-serialisable (sent as ``application/json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder

from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.routing_keys import destination_group, user_group
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
            session) that the message was routed to; ``None`` if the registry could not
            be asked (the message was still sent).
        nodes: how many nodes it was routed to; ``None`` likewise.
    """

    sessions: int | None
    nodes: int | None

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


def _layer() -> Any:
    layer = get_channel_layer(get_settings().CHANNEL_LAYER)
    if layer is None:
        raise DeliveryFailed("no channel layer is configured (see `manage.py check`)")
    return layer


async def _count(call: Any) -> Delivery:
    try:
        by_node: dict[str, int] = await call
    except PresenceUnavailable:
        logger.warning("presence registry unavailable; delivery counts unknown")
        return Delivery(sessions=None, nodes=None)
    return Delivery(sessions=sum(by_node.values()), nodes=len(by_node))


async def _group_send(group: str, message: dict[str, Any]) -> None:
    try:
        await _layer().group_send(group, message)
    except DeliveryFailed:
        raise
    except Exception as exc:
        raise DeliveryFailed(f"channel layer refused the message: {exc}") from exc


async def asend_to_destination(
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Publish to every subscriber of *destination* (e.g. ``/topic/news``), cluster-wide.

    Raises:
        DeliveryFailed: the channel layer refused or could not take the message.
    """
    from stomp_cluster.node import get_presence

    payload, extra = encode_body(body, headers, content_type)
    await _group_send(
        destination_group(destination),
        {"type": "stomp.publish", "destination": destination, "body": payload, "headers": extra},
    )
    return await _count(get_presence().destination_nodes(destination))


async def asend_to_user(
    user: UserRef,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Delivery:
    """Send to every session of *user*, on every node, that subscribes to *destination*.

    As with Spring's ``convertAndSendToUser``, *destination* is given without the user
    prefix (``/queue/notify``) and reaches the user's subscriptions to
    ``/user/queue/notify``; the full ``/user/queue/notify`` form is accepted too.

    Args:
        user: a user object, a primary key (int) or a username (str).

    Raises:
        DeliveryFailed: the channel layer refused or could not take the message.
        LookupError: *user* is a pk that matches no user.
    """
    from stomp_cluster.node import get_presence

    key = await _user_key(user)
    payload, extra = encode_body(body, headers, content_type)
    await _group_send(
        user_group(key),
        {
            "type": "stomp.user",
            "user": key,
            "destination": user_destination(destination),
            "body": payload,
            "headers": extra,
        },
    )
    return await _count(get_presence().user_nodes(key))


async def _node_channel(session_id: str) -> str | None:
    from stomp_cluster.node import get_presence

    presence = get_presence()
    record = await presence.get_session(session_id)
    if record is None:
        return None
    for node in await presence.nodes():
        if node.node_id == record.node_id:
            return node.channel_name
    return None


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
        DeliveryFailed: the channel layer refused the message, or the registry cannot
            be asked where the session is.
    """
    payload, extra = encode_body(body, headers, content_type)
    try:
        channel = await _node_channel(session_id)
    except PresenceUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot locate the session") from exc
    if channel is None:
        return Delivery(sessions=0, nodes=0)
    message = {
        "type": "stomp.session",
        "session": session_id,
        "destination": destination,
        "body": payload,
        "headers": extra,
    }
    try:
        await _layer().send(channel, message)
    except ChannelFull as exc:
        raise DeliveryFailed(f"the node channel of session {session_id} is full") from exc
    except DeliveryFailed:
        raise
    except Exception as exc:
        raise DeliveryFailed(f"channel layer refused the message: {exc}") from exc
    return Delivery(sessions=1, nodes=1)


async def adisconnect_session(session_id: str, message: str = "disconnected by the server") -> bool:
    """Close one session on whichever node holds it, with an ERROR frame saying *message*.

    Returns:
        False when the registry knows no such session.
    """
    try:
        channel = await _node_channel(session_id)
    except PresenceUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot locate the session") from exc
    if channel is None:
        return False
    await _layer().send(channel, {"type": "stomp.kick", "session": session_id, "message": message})
    return True


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
) -> Delivery:
    """Sync twin of :func:`asend_to_user`."""
    result: Delivery = async_to_sync(asend_to_user)(user, destination, body, headers, content_type)
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
