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
according to the presence registry at the time of sending, and apart from that whether the
message was kept in a history (its id) for clients that resume, and how many nodes holding
recipients it missed. Sending to nobody is not an error. What is said is what happened:

* a message kept in a history is not reported as failed because a live node's inbox was
  full, or the transport to it failed: it is recoverable (``x-resume-from``), and a caller
  that retried would store a duplicate under a new id. But that node's sockets stay open
  and would never resume, so the sender leaves the node a *missed mark* in the presence
  registry (:meth:`PresenceBackend.mark_missed
  <stomp_cluster.presence.base.PresenceBackend.mark_missed>`: the user key, or the topic):
  at its next heartbeat the node closes the sessions concerned with an ERROR telling them
  to reconnect and resume (:data:`stomp_cluster.node.MISSED_MESSAGE`). The Delivery counts
  the node in ``missed_nodes`` and a warning is logged. If the mark cannot be written
  (registry unavailable), nobody would tell those clients: the send raises
  :class:`DeliveryFailed`, and a caller retries with its ``idempotency_key``;
* a node known to be dead (its heartbeat lapsed, not reaped yet) gets no push: nobody
  reads its inbox. It counts in ``missed_nodes``; a user message whose holders are all dead
  is pending, delivered on the user's next subscription;
* :class:`DeliveryFailed` is raised only for a message truly lost: not stored anywhere and
  not handed to a node that holds recipients (a full inbox, a transport failure), or not
  sent at all (registry or history unavailable), or stored but missed by a live node that
  cannot be told (above). Nothing is dropped silently;
* a caller that retries after ``DeliveryFailed`` or a timeout passes the first attempt's
  ``idempotency_key``: within ``IDEMPOTENCY_TTL`` the retry sends nothing and returns the
  first call's Delivery (:mod:`stomp_cluster.idempotency`).

With the in-memory presence backend (``MemoryPresence``, the default) the registry is
the process's own. A send from a process that runs no node — ``manage.py shell``,
``stomp_send``, a WSGI server — finds nobody there, whoever is connected to the server
processes, so it warns (a ``UserWarning``: "nothing outside this process can receive
this message") rather than quietly return ``Delivery(sessions=0, nodes=0)``. Set
``STOMP_CLUSTER['REDIS']`` to share the registry between processes.

Bodies may be ``str`` (sent as ``text/plain;charset=utf-8``), ``bytes`` (sent as-is) or
anything JSON-serialisable (sent as ``application/json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from django.core.serializers.json import DjangoJSONEncoder

from stomp_cluster import destinations, idempotency
from stomp_cluster.backends import get_history, get_presence, get_transport
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import BackendUnavailable, DeliveryFailed
from stomp_cluster.messages import (
    DEFAULT_KICK_MESSAGE,
    Kick,
    NodeMessage,
    Publish,
    ToSession,
    ToUser,
)
from stomp_cluster.node import current_node
from stomp_cluster.presence.base import MissedMarks, PresenceBackend
from stomp_cluster.presence.memory import MemoryPresence
from stomp_cluster.protocol import RESERVED_MESSAGE_HEADERS
from stomp_cluster.typing import Headers
from stomp_cluster.users import UserRef, auser_key

__all__ = [
    "SENDER_HEADER",
    "SERVER_HEADERS",
    "Delivery",
    "adisconnect_session",
    "asend_to_destination",
    "asend_to_session",
    "asend_to_user",
    "disconnect_session",
    "encode_body",
    "send_to_destination",
    "send_to_session",
    "send_to_user",
]

logger = logging.getLogger(__name__)

#: MESSAGE header naming the user who sent a message from a STOMP client: the consumer
#: sets it from the login (absent for an anonymous sender) and drops a client's own.
SENDER_HEADER = "x-sender"

#: Headers the recovery path sets on a MESSAGE (``x-recovered``, ``redelivered``, ``x-gap``,
#: ``x-rewind``, see :mod:`stomp_cluster.recovery`): a recipient trusts them, so a
#: sender's never travel.
SERVER_HEADERS = frozenset({"x-recovered", "redelivered", "x-gap", "x-rewind"})

#: Headers of a sender's that never travel on: those a MESSAGE reserves for the server,
#: and the SEND frame's own ``receipt`` and ``transaction``.
_NOT_FORWARDED = RESERVED_MESSAGE_HEADERS | SERVER_HEADERS | {"receipt", "transaction"}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a send reached, according to the presence registry when it was sent.

    Live sessions reached and messages kept for recovery are told apart: a send that
    reached no live session may still be ``stored``, and its clients recover it.

    Attributes:
        sessions: subscriptions (for a destination) or sessions (for a user or a
            session) on live nodes the message was handed to.
        nodes: how many nodes it was handed to.
        stored: whether the message was kept in a history (user destinations, and
            ``HISTORY_TOPICS``): a client that resumes with ``x-resume-from`` recovers
            it, and a user with no live session gets it on the next subscription.
        message_id: its history id (the MESSAGE ``message-id``), or None when not stored.
        missed_nodes: nodes that hold recipients but did not get it: dead (heartbeat
            lapsed), gone meanwhile, or, for a stored message, a full inbox or a failed
            transport. Their clients recover a stored message when they resume: a dead
            node closes its sessions when it comes back (fenced), and a live one was left
            a missed mark, on which it closes the sessions concerned at its next
            heartbeat, telling them to resume.
    """

    sessions: int
    nodes: int
    stored: bool = False
    message_id: str | None = None
    missed_nodes: int = 0

    def __bool__(self) -> bool:
        return bool(self.sessions)


def encode_body(
    body: Any, headers: Mapping[str, str] | None, content_type: str | None
) -> tuple[bytes, Headers]:
    """Turn a body and headers into wire bytes and a header tuple.

    Headers the server owns on a MESSAGE (``destination``, ``message-id``, ...,
    :data:`SERVER_HEADERS`) are dropped, as are ``receipt`` and ``transaction``.

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
    extra = [(str(k), str(v)) for k, v in (headers or {}).items() if k not in _NOT_FORWARDED]
    if content_type and not any(k == "content-type" for k, _ in extra):
        extra.append(("content-type", content_type))
    return payload, tuple(extra)


#: Seconds a sender trusts its copy of the node table (node id -> node channel).
NODE_TABLE_TTL = 2.0

#: Seconds a sender trusts its copy of the table for a node it says is dead: a node that
#: heartbeats again (after a Redis stall, say) gets pushes again within this time.
DEAD_NODE_RECHECK = 0.5

#: Node id -> its channel, or None for a node whose heartbeat lapsed (not reaped yet).
NodeTable = dict[str, str | None]

# Per presence backend: when the table was read, and the table.
_node_tables: weakref.WeakKeyDictionary[PresenceBackend, tuple[float, NodeTable]] = (
    weakref.WeakKeyDictionary()
)


async def _node_channels(presence: PresenceBackend, *, refresh: bool = False) -> NodeTable:
    # Node channels change only when a node starts, so senders cache the table briefly
    # and refresh it when a node they must reach is missing from it. A node whose
    # heartbeat lapsed (listed with alive=False until reaped) has no channel here: it
    # gets no push, since nobody reads its inbox.
    cached = _node_tables.get(presence)
    if cached is not None and not refresh and time.monotonic() - cached[0] < NODE_TABLE_TTL:
        return cached[1]
    table: NodeTable = {
        node.node_id: node.channel_name if node.alive else None for node in await presence.nodes()
    }
    _node_tables[presence] = (time.monotonic(), table)
    return table


async def _live_channels(by_node: dict[str, int]) -> NodeTable:
    """The node table, read again when a node of *by_node* is unknown to the cached one,
    or said dead by a copy older than :data:`DEAD_NODE_RECHECK`."""
    if not by_node:
        return {}
    presence = get_presence()
    channels = await _node_channels(presence)
    local = current_node()
    targets = [n for n in by_node if local is None or n != local.node_id]
    if any(n not in channels for n in targets) or (
        any(channels.get(n, "") is None for n in targets)
        and time.monotonic() - _node_tables[presence][0] >= DEAD_NODE_RECHECK
    ):
        channels = await _node_channels(presence, refresh=True)
    return channels


async def _route(
    by_node: dict[str, int],
    message: NodeMessage,
    channels: NodeTable | None = None,
    *,
    message_id: str | None = None,
) -> Delivery:
    """Put *message* on the channel of each live node in *by_node*; count what it reached.

    *channels* is the live node table when the caller read it already; *message_id* the
    history id of a stored message (then a node missed is not a failure).

    Raises:
        DeliveryFailed: the message is not stored, and a node inbox was full or the
            transport failed, after the message was handed to every other node.
    """
    if not by_node:
        return Delivery(sessions=0, nodes=0, stored=message_id is not None, message_id=message_id)
    if channels is None:
        channels = await _live_channels(by_node)
    local = current_node()
    transport = None
    wire: dict[str, Any] | None = None
    gone: set[str] = set()
    sends = []
    targets = []
    for node_id in by_node:
        if local is not None and node_id == local.node_id:
            # This process holds the recipients: skip the transport.
            local.deliver(message)
            continue
        channel = channels.get(node_id)
        if channel is None:
            gone.add(node_id)  # dead (heartbeat lapsed), or left between the two reads
            continue
        transport = transport or get_transport()
        wire = wire or message.to_wire()
        sends.append(transport.send(channel, wire))
        targets.append(node_id)
    results = await asyncio.gather(*sends, return_exceptions=True)
    failures = {
        node_id: result
        for node_id, result in zip(targets, results, strict=True)
        if isinstance(result, BaseException)
    }
    match message:
        case ToUser():
            marks = MissedMarks(users={message.user: message_id or ""})
        case Publish():
            marks = MissedMarks(destinations={message.destination: message_id or ""})
        case _:
            marks = MissedMarks(everything=True)  # never stored: no mark is written
    return await _outcome(
        getattr(message, "destination", None),
        by_node,
        failures,
        gone,
        message_id=message_id,
        marks=marks,
    )


async def _outcome(
    destination: str | None,
    by_node: dict[str, int],
    failures: dict[str, BaseException],
    gone: set[str] | frozenset[str] = frozenset(),
    *,
    message_id: str | None = None,
    marks: MissedMarks,
) -> Delivery:
    """What a routed message reached, or DeliveryFailed naming the first node it missed.

    *failures* maps the nodes the transport refused to its exception; *gone* are nodes
    skipped because they are dead or left the cluster meanwhile (not failures, not
    reached). A message with a *message_id* is stored: failures are missed nodes, not an
    error, since its clients recover it from the history, once each failed node has been
    left *marks* (what its sessions missed) telling it to close them.

    Raises:
        DeliveryFailed: a node was missed and the message is not stored, or a failed
            node's mark cannot be written.
    """
    reached = {n: c for n, c in by_node.items() if n not in failures and n not in gone}
    delivery = Delivery(
        sessions=sum(reached.values()),
        nodes=len(reached),
        stored=message_id is not None,
        message_id=message_id,
        missed_nodes=len(failures) + len(gone),
    )
    if not failures:
        return delivery
    node_id, exc = next(iter(failures.items()))
    reason = (
        "its channel is full" if isinstance(exc, ChannelFull) else f"the transport failed: {exc!r}"
    )
    if message_id is not None:
        logger.warning(
            "message %s to %r not pushed to %d node(s) (first %s: %s); "
            "kept in the history, and the node(s) told to close the sessions concerned",
            message_id,
            destination,
            len(failures),
            node_id,
            reason,
        )
        await _mark_missed(failures, marks, message_id, sum(reached.values()))
        return delivery
    logger.warning(
        "message to %r not delivered to %d node(s): %s", destination, len(failures), reason
    )
    raise DeliveryFailed(
        f"not delivered to node {node_id}: {reason}", reached=sum(reached.values())
    ) from exc


async def _mark_missed(
    failures: dict[str, BaseException], marks: MissedMarks, message_id: str, reached: int
) -> None:
    """Leave each node of *failures* a missed mark, or raise DeliveryFailed."""
    presence = get_presence()
    # Three TTLs: a live node takes its marks within one; one that stops heartbeating is
    # fenced when it comes back, which closes every session anyway.
    ttl = get_settings().NODE_TTL * 3
    results = await asyncio.gather(
        *(presence.mark_missed(node_id, marks, ttl) for node_id in failures),
        return_exceptions=True,
    )
    for node_id, result in zip(failures, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, BackendUnavailable):
                raise result
            raise DeliveryFailed(
                f"message {message_id} was stored but not pushed to node {node_id}, and the "
                "presence registry is unavailable to tell that node's sessions: retry with "
                "the same idempotency_key",
                reached=reached,
            ) from result


#: The warning of a send that nothing outside this process can receive.
_IN_PROCESS_WARNING = (
    "stomp_cluster sends with the in-memory presence backend and no node runs in this "
    "process: nothing outside this process can receive this message. Set "
    "STOMP_CLUSTER['REDIS'] so that sends reach the nodes of a cluster."
)


def _warn_if_in_process(presence: PresenceBackend) -> None:
    # A shell, a management command or a WSGI process keeps its own in-memory registry,
    # empty of the clients of the server processes: say so rather than report a quiet
    # Delivery(sessions=0, nodes=0). Inside a node the registry is the node's own.
    # disconnect_session does not warn: an unknown session already answers False.
    if isinstance(presence, MemoryPresence) and current_node() is None:
        warnings.warn(_IN_PROCESS_WARNING, UserWarning, stacklevel=3)


async def _lookup(call: Any) -> dict[str, int]:
    try:
        result: dict[str, int] = await call
    except BackendUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot route the message") from exc
    return result


async def asend_to_destination(
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Delivery:
    """Publish to every subscriber of *destination* (e.g. ``/topic/news``), cluster-wide.

    Args:
        idempotency_key: pass the same key when you retry a send that failed or timed
            out: within ``IDEMPOTENCY_TTL`` of the first call with it (to the same
            destination), nothing is sent again and the first call's Delivery is
            returned (see :mod:`stomp_cluster.idempotency`).

    Raises:
        DeliveryFailed: the registry or (for a ``HISTORY_TOPICS`` destination) the
            history was unavailable; or, for a destination without a history, a node
            inbox was full or the transport failed.
        ValueError: *destination* is a ``/user/`` one: use :func:`asend_to_user`; or
            *idempotency_key* is empty or too long.
    """
    if destinations.is_user(destination):
        raise ValueError(f"{destination} is a user destination: use send_to_user()")
    if idempotency_key is not None:
        return await idempotency.once(
            idempotency_key,
            ("destination", destination),
            lambda: asend_to_destination(destination, body, headers, content_type),
            Delivery,
        )
    payload, extra = encode_body(body, headers, content_type)
    presence = get_presence()
    _warn_if_in_process(presence)
    by_node = await _lookup(presence.destination_nodes(destination))
    message = Publish(destination, payload, extra)
    key = destinations.topic_history_key(destination)
    message_id = None
    if key is not None:
        message_id = await _append(key, destination, payload, extra, pending=False)
        message = replace(message, id=message_id)
    return await _route(by_node, message, message_id=message_id)


async def asend_to_user(
    user: UserRef,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    live_only: bool = False,
    idempotency_key: str | None = None,
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
        idempotency_key: pass the same key when you retry a send that failed or timed
            out: within ``IDEMPOTENCY_TTL`` of the first call with it (to the same user
            and destination), nothing is sent again and the first call's Delivery, with
            its ``message_id``, is returned (see :mod:`stomp_cluster.idempotency`).

    Returns:
        What happened: live sessions reached, and apart from them whether the message
        is stored (then a full inbox or a dead node is a missed node, not a failure).

    Raises:
        DeliveryFailed: the registry, the history or Redis was unavailable (then it is
            not known to be sent); or, with *live_only* or no history, a node inbox was
            full or the transport failed.
        LookupError: *user* is a pk that matches no user.
        ValueError: *idempotency_key* is empty or too long.
    """
    key = await auser_key(user)
    if idempotency_key is not None:
        return await idempotency.once(
            idempotency_key,
            ("user", key, destinations.user_destination(destination)),
            lambda: asend_to_user(
                key, destination, body, headers, content_type, live_only=live_only
            ),
            Delivery,
        )
    payload, extra = encode_body(body, headers, content_type)
    full = destinations.user_destination(destination)
    message = ToUser(key, full, payload, extra)
    presence, history = get_presence(), (None if live_only else get_history())
    _warn_if_in_process(presence)
    local = current_node()
    try:
        # One round trip when the transport shares one Redis with presence and history.
        sent = await get_transport().send_to_user(
            presence, history, key, message.to_wire(), local_node=local.node_id if local else ""
        )
    except BackendUnavailable as exc:
        raise DeliveryFailed("Redis unavailable: the message was not sent") from exc
    if sent is not None:
        message = replace(message, id=sent.message_id)
        if local is not None and local.node_id in sent.nodes:
            local.deliver(message)
        failures: dict[str, BaseException] = {
            node_id: ChannelFull(f"the inbox of node {node_id} is full")
            for node_id in sorted(sent.full)
        }
        return await _outcome(
            full,
            sent.nodes,
            failures,
            sent.dead,
            message_id=sent.message_id,
            marks=MissedMarks(users={key: sent.message_id or ""}),
        )
    by_node = await _lookup(presence.user_nodes(key))
    channels = await _live_channels(by_node)
    message_id = None
    if history is not None:
        # History first: a client that reconnects after this point recovers the
        # message from its id even if routing below misses its new node. Pending (for
        # the next subscription) when no live node holds the user.
        live = [n for n in by_node if channels.get(n) or (local is not None and n == local.node_id)]
        message_id = await _append(key, full, payload, extra, pending=not live)
        message = replace(message, id=message_id)
    return await _route(by_node, message, channels, message_id=message_id)


async def _append(
    key: str, destination: str, payload: bytes, extra: Headers, *, pending: bool
) -> str:
    history = get_history()
    assert history is not None
    try:
        return await history.append(key, destination, payload, extra, pending=pending)
    except BackendUnavailable as exc:
        raise DeliveryFailed("message history unavailable: the message was not sent") from exc


async def _session_node(session_id: str) -> dict[str, int]:
    try:
        record = await get_presence().get_session(session_id)
    except BackendUnavailable as exc:
        raise DeliveryFailed("presence registry unavailable: cannot locate the session") from exc
    return {} if record is None else {record.node_id: 1}


async def asend_to_session(
    session_id: str,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Delivery:
    """Send to one session (the CONNECTED ``session`` header), on whichever node.

    It reaches the session's subscriptions to *destination*, or to its ``/user/`` form
    when it has none to *destination* itself.

    Args:
        idempotency_key: as for :func:`asend_to_user`, for this session and destination.

    Raises:
        DeliveryFailed: the node inbox was full or the transport failed, or the registry
            cannot be asked where the session is.
        ValueError: *idempotency_key* is empty or too long.
    """
    if idempotency_key is not None:
        return await idempotency.once(
            idempotency_key,
            ("session", session_id, destination),
            lambda: asend_to_session(session_id, destination, body, headers, content_type),
            Delivery,
        )
    payload, extra = encode_body(body, headers, content_type)
    message = ToSession(session_id, destination, payload, extra)
    _warn_if_in_process(get_presence())
    return await _route(await _session_node(session_id), message)


async def adisconnect_session(session_id: str, message: str = DEFAULT_KICK_MESSAGE) -> bool:
    """Close one session on whichever node holds it, with an ERROR frame saying *message*.

    Returns:
        False when the registry knows no such session.

    Raises:
        DeliveryFailed: the registry or the transport is unavailable.
    """
    delivery = await _route(await _session_node(session_id), Kick(session_id, message))
    return bool(delivery.nodes)


def send_to_destination(
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Delivery:
    """Sync twin of :func:`asend_to_destination`."""
    result: Delivery = async_to_sync(asend_to_destination)(
        destination, body, headers, content_type, idempotency_key=idempotency_key
    )
    return result


def send_to_user(
    user: UserRef,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    live_only: bool = False,
    idempotency_key: str | None = None,
) -> Delivery:
    """Sync twin of :func:`asend_to_user`."""
    result: Delivery = async_to_sync(asend_to_user)(
        user,
        destination,
        body,
        headers,
        content_type,
        live_only=live_only,
        idempotency_key=idempotency_key,
    )
    return result


def send_to_session(
    session_id: str,
    destination: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Delivery:
    """Sync twin of :func:`asend_to_session`."""
    result: Delivery = async_to_sync(asend_to_session)(
        session_id, destination, body, headers, content_type, idempotency_key=idempotency_key
    )
    return result


def disconnect_session(session_id: str, message: str = DEFAULT_KICK_MESSAGE) -> bool:
    """Sync twin of :func:`adisconnect_session`."""
    result: bool = async_to_sync(adisconnect_session)(session_id, message)
    return result
