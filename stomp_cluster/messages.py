"""The messages nodes send each other, typed.

A send helper (:mod:`stomp_cluster.send`) puts one of these on the inbox of each node
that holds recipients; that node's :meth:`~stomp_cluster.node.Node.deliver` fans it out
to its local sessions. On the wire (the transport) each is a plain dict with a ``type``
key, so that any channel layer can carry it: :meth:`to_wire` builds that dict and
:func:`from_wire` reads it back.

====================  ===================================================================
``type`` on the wire  meaning
====================  ===================================================================
``stomp.publish``     :class:`Publish`: to every local subscriber of a broker destination
``stomp.user``        :class:`ToUser`: to the local sessions of one user
``stomp.session``     :class:`ToSession`: to one session
``stomp.kick``        :class:`Kick`: close one session with an ERROR frame
====================  ===================================================================

``id`` is the message's history id when it has one: the MESSAGE ``message-id``, which also
orders it against recovered messages (:mod:`stomp_cluster.recovery`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from stomp_cluster.typing import Headers

__all__ = [
    "DEFAULT_KICK_MESSAGE",
    "Kick",
    "NodeMessage",
    "Publish",
    "ToSession",
    "ToUser",
    "from_wire",
]

#: The ERROR frame's message when a session is closed by the server without a reason.
DEFAULT_KICK_MESSAGE = "disconnected by the server"


@dataclass(frozen=True, slots=True)
class Publish:
    """To every local subscription of *destination* (``/topic/...``, ``/queue/...``)."""

    TYPE: ClassVar[str] = "stomp.publish"
    destination: str
    body: bytes
    headers: Headers
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The dict a transport carries."""
        wire: dict[str, Any] = {"type": self.TYPE, "destination": self.destination}
        return _with_payload(wire, self.body, self.headers, self.id)


@dataclass(frozen=True, slots=True)
class ToUser:
    """To the local subscriptions of *user*'s sessions to *destination* (``/user/...``)."""

    TYPE: ClassVar[str] = "stomp.user"
    user: str
    destination: str
    body: bytes
    headers: Headers
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The dict a transport carries."""
        wire: dict[str, Any] = {
            "type": self.TYPE,
            "user": self.user,
            "destination": self.destination,
        }
        return _with_payload(wire, self.body, self.headers, self.id)


@dataclass(frozen=True, slots=True)
class ToSession:
    """To one session, on its subscriptions to *destination* or to its ``/user/`` form."""

    TYPE: ClassVar[str] = "stomp.session"
    session: str
    destination: str
    body: bytes
    headers: Headers

    def to_wire(self) -> dict[str, Any]:
        """The dict a transport carries."""
        wire: dict[str, Any] = {
            "type": self.TYPE,
            "session": self.session,
            "destination": self.destination,
        }
        return _with_payload(wire, self.body, self.headers, None)


@dataclass(frozen=True, slots=True)
class Kick:
    """Close one session with an ERROR frame saying *message* (admin, CLI)."""

    TYPE: ClassVar[str] = "stomp.kick"
    session: str
    message: str = DEFAULT_KICK_MESSAGE

    def to_wire(self) -> dict[str, Any]:
        """The dict a transport carries."""
        return {"type": self.TYPE, "session": self.session, "message": self.message}


NodeMessage = Publish | ToUser | ToSession | Kick


def from_wire(wire: Mapping[str, Any]) -> NodeMessage:
    """Read a message a transport carried.

    Header pairs may arrive as lists (msgpack, JSON): they become tuples of strings.

    Raises:
        ValueError: an unknown ``type``.
        KeyError: a field of that type is missing.
    """
    kind = wire.get("type")
    if kind == Kick.TYPE:
        return Kick(session=wire["session"], message=wire.get("message", DEFAULT_KICK_MESSAGE))
    destination = wire.get("destination", "")
    body: bytes = wire.get("body", b"")
    headers = tuple((str(k), str(v)) for k, v in wire.get("headers", ()))
    if kind == Publish.TYPE:
        return Publish(destination, body, headers, wire.get("id"))
    if kind == ToUser.TYPE:
        return ToUser(wire["user"], destination, body, headers, wire.get("id"))
    if kind == ToSession.TYPE:
        return ToSession(wire["session"], destination, body, headers)
    raise ValueError(f"unknown node message type {kind!r}")


def _with_payload(
    wire: dict[str, Any], body: bytes, headers: Headers, message_id: str | None
) -> dict[str, Any]:
    wire["body"] = body
    wire["headers"] = headers
    if message_id is not None:
        wire["id"] = message_id
    return wire
