"""STOMP frames: versions, commands, the :class:`Frame` value object and its encoders.

This module turns frames into bytes and defines the header escaping that differs
between STOMP versions (:func:`escape`, :func:`unescape`). Decoding bytes into frames is
the job of :mod:`stomp_cluster.protocol.reader`; deciding which frames to send is the
job of :mod:`stomp_cluster.protocol.connection`, which asks this module for the bytes.

Three encoders, from the general to the hot path:

* :func:`encode_frame` encodes any :class:`Frame`;
* :class:`PreparedMessage` holds a MESSAGE's body and extra headers, encoded once per
  STOMP version for every subscription the message reaches (a node encodes a fanned-out
  message once, whatever the number of its subscribers);
* :class:`MessageEncoder` writes the MESSAGE frames of one connection, keeping each
  subscription's escaped ``destination`` and ``subscription`` lines, so that a MESSAGE
  costs two string joins and the ids.

The last two give the same bytes as :func:`encode_frame` of the whole frame: the tests
check it for every version and any header text.

Escaping by version, as the encoder and the reader apply it:

=========  ====================================  ==========================
Version    Escaped characters                    Frames left unescaped
=========  ====================================  ==========================
1.0        none                                  all
1.1        backslash, line feed, colon           CONNECT, STOMP, CONNECTED
1.2        the same and carriage return          CONNECT, STOMP, CONNECTED
=========  ====================================  ==========================

Where a character cannot be escaped (1.0, the CONNECT family, before negotiation, or a
carriage return in 1.1), :func:`encode_frame` replaces it with a space so that the
frame stays well formed: we prefer a slightly altered header to a corrupt stream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from itertools import chain

from stomp_cluster.protocol.errors import MalformedFrame
from stomp_cluster.typing import Headers

__all__ = [
    "CLIENT_COMMANDS",
    "RESERVED_MESSAGE_HEADERS",
    "SERVER_COMMANDS",
    "SUPPORTED_VERSIONS",
    "Command",
    "Frame",
    "MessageEncoder",
    "PreparedMessage",
    "Version",
    "encode_frame",
    "escape",
    "unescape",
]


class Version(enum.Enum):
    """A STOMP protocol version; the value is the wire string (``"1.2"``)."""

    V1_0 = "1.0"
    V1_1 = "1.1"
    V1_2 = "1.2"

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol naming this version, such as ``"v12.stomp"``."""
        return "v1" + self.value[2] + ".stomp"

    @classmethod
    def from_subprotocol(cls, name: str) -> Version | None:
        """Map a WebSocket subprotocol name to a version.

        Use it on the subprotocols offered in the WebSocket handshake.

        Args:
            name: a subprotocol such as ``"v11.stomp"``.

        Returns:
            The matching version, or ``None`` when ``name`` is not a STOMP subprotocol.
        """
        return _SUBPROTOCOLS.get(name)


_SUBPROTOCOLS = {version.subprotocol: version for version in Version}

#: Every version this package speaks, oldest first.
SUPPORTED_VERSIONS: tuple[Version, ...] = (Version.V1_0, Version.V1_1, Version.V1_2)


class Command(enum.Enum):
    """A STOMP command; the value is its wire name."""

    CONNECT = "CONNECT"
    STOMP = "STOMP"
    SEND = "SEND"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    ACK = "ACK"
    NACK = "NACK"
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ABORT = "ABORT"
    DISCONNECT = "DISCONNECT"
    CONNECTED = "CONNECTED"
    MESSAGE = "MESSAGE"
    RECEIPT = "RECEIPT"
    ERROR = "ERROR"


#: Commands a client may send (the spec's ``client-command``).
CLIENT_COMMANDS: frozenset[Command] = frozenset(
    {
        Command.CONNECT,
        Command.STOMP,
        Command.SEND,
        Command.SUBSCRIBE,
        Command.UNSUBSCRIBE,
        Command.ACK,
        Command.NACK,
        Command.BEGIN,
        Command.COMMIT,
        Command.ABORT,
        Command.DISCONNECT,
    }
)
#: Commands a server may send (the spec's ``server-command``).
SERVER_COMMANDS: frozenset[Command] = frozenset(
    {Command.CONNECTED, Command.MESSAGE, Command.RECEIPT, Command.ERROR}
)

# "The CONNECT and CONNECTED frames do not escape the carriage return, line feed or colon
# octets in order to remain backward compatible with STOMP 1.0." (1.2, Value Encoding)
# The encoder here and the reader both apply it.
_UNESCAPED_COMMANDS = frozenset({Command.CONNECT, Command.STOMP, Command.CONNECTED})

# Header names whose values never reach a log line.
_SECRET_HEADERS = frozenset({"passcode", "login", "authorization"})
_MAX_LOGGED_BODY = 64


@dataclass(frozen=True, slots=True, repr=False)
class Frame:
    """One STOMP frame: a command, headers in wire order, and a body.

    Frames are values: the reader builds them from bytes, :func:`encode_frame` turns
    them back into bytes, and tests compare them with ``==``. Header names and values
    are already unescaped.

    Attributes:
        command: the frame's command.
        headers: ``(name, value)`` pairs in wire order; repeated names are kept.
        body: the body bytes, without the terminating NUL.
    """

    command: Command
    headers: Headers = ()
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the value of header ``name``, or ``default`` when it is absent.

        Args:
            name: the header name, case-sensitive.
            default: what to return when the frame has no such header.

        Returns:
            The value of the first header called ``name``.
        """
        # "If a client or a server receives repeated frame header entries, only the first
        # header entry SHOULD be used as the value of header entry." (1.2, Repeated Header
        # Entries)
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_map(self) -> dict[str, str]:
        """Return the headers as a dict in wire order, the first of a repeated one winning.

        The same rule as :meth:`get`, for callers that want every header at once.
        """
        result: dict[str, str] = {}
        for key, value in self.headers:
            result.setdefault(key, value)
        return result

    def _safe_headers(self) -> list[tuple[str, str]]:
        return [(name, "***" if name in _SECRET_HEADERS else value) for name, value in self.headers]

    def __str__(self) -> str:
        """Describe the frame on one line for logs, hiding credentials and long bodies."""
        parts = [self.command.value]
        parts.extend(f"{name}={value!r}" for name, value in self._safe_headers())
        body = self.body
        if len(body) > _MAX_LOGGED_BODY:
            parts.append(f"body={body[:_MAX_LOGGED_BODY]!r}...[{len(body)} bytes]")
        elif body:
            parts.append(f"body={body!r}")
        return " ".join(parts)

    def __repr__(self) -> str:
        """Show the whole frame, as a dataclass would, except credentials."""
        return (
            f"Frame(command={self.command!s}, headers={tuple(self._safe_headers())!r}, "
            f"body={self.body!r})"
        )


def escape(value: str, version: Version) -> str:
    """Escape a header name or value for ``version``.

    Use it for frames other than CONNECT, STOMP and CONNECTED; :func:`encode_frame`
    calls it for you. Characters that ``version`` cannot escape are left alone, so
    check :func:`encode_frame` if you need a frame that stays valid whatever the input.

    Args:
        value: the raw header name or value.
        version: the negotiated version; 1.0 escapes nothing.

    Returns:
        The escaped text.
    """
    if version is Version.V1_0:
        return value
    # "Conversely when encoding frame headers, the reverse transformation MUST be applied."
    # The backslash goes first so that the escapes we add are not escaped again.
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if ":" in value:
        value = value.replace(":", "\\c")
    if version is Version.V1_2 and "\r" in value:
        value = value.replace("\r", "\\r")
    return value


# Escape sequences defined by each version (1.1 has no \r; 1.2 added it).
_UNESCAPES_1_1 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPES_1_2 = {**_UNESCAPES_1_1, "r": "\r"}


def unescape(value: str, version: Version) -> str:
    """Undo :func:`escape` on a received header name or value.

    Args:
        value: the text as it arrived.
        version: the negotiated version; 1.0 unescapes nothing.

    Returns:
        The unescaped text.

    Raises:
        MalformedFrame: on an escape sequence that ``version`` does not define,
            including a trailing lone backslash.
    """
    if version is Version.V1_0 or "\\" not in value:
        return value
    table = _UNESCAPES_1_2 if version is Version.V1_2 else _UNESCAPES_1_1
    pieces: list[str] = []
    start = 0
    while (index := value.find("\\", start)) != -1:
        pieces.append(value[start:index])
        replacement = table.get(value[index + 1 : index + 2])
        if replacement is None:
            # "Undefined escape sequences such as \t (octet 92 and 116) MUST be treated as
            # a fatal protocol error." (1.2, Value Encoding)
            sequence = value[index : index + 2]
            raise MalformedFrame(
                f"undefined escape sequence {sequence!r} in header",
                f"STOMP {version.value} defines only "
                + ", ".join(repr("\\" + key) for key in table)
                + f"; got {_shorten(value)!r}",
            )
        pieces.append(replacement)
        start = index + 2
    pieces.append(value[start:])
    return "".join(pieces)


def _needs_escaping(text: str) -> bool:
    return "\\" in text or "\n" in text or ":" in text or "\r" in text


def _sanitise_name(name: str) -> str:
    # A name that cannot be escaped must not contain the delimiters of its own line.
    if "\n" in name or "\r" in name or ":" in name:
        return name.replace("\n", " ").replace("\r", " ").replace(":", " ")
    return name


def _sanitise_value(value: str) -> str:
    if "\n" in value or "\r" in value:
        return value.replace("\n", " ").replace("\r", " ")
    return value


def _header_lines(command: Command, headers: Headers, version: Version | None) -> list[str]:
    """``name:value`` lines of *headers*, escaped as *command* in *version* requires."""
    if version is None or version is Version.V1_0 or command in _UNESCAPED_COMMANDS:
        return [f"{_sanitise_name(name)}:{_sanitise_value(value)}" for name, value in headers]
    if not _needs_escaping("".join(chain.from_iterable(headers))):
        # The usual case, checked once for all headers rather than eight times for each.
        return [f"{name}:{value}" for name, value in headers]
    lines = []
    for name, value in headers:
        if version is Version.V1_1:
            # 1.1 defines no escape for a carriage return, and a peer that accepts
            # CRLF line endings would drop one at the end of a value.
            name = name.replace("\r", " ")
            value = value.replace("\r", " ")
        lines.append(f"{escape(name, version)}:{escape(value, version)}")
    return lines


def encode_frame(frame: Frame, version: Version | None) -> bytes:
    """Serialise ``frame`` for the wire.

    The header escaping depends on ``version`` (see the module docstring). A
    ``content-length`` header is appended when the body is not empty and the frame has
    none, so bodies may contain NUL bytes. Lines end with ``\\n``.

    Args:
        frame: the frame to encode.
        version: the negotiated version, or ``None`` before negotiation (no escaping).

    Returns:
        The frame's bytes, ending with NUL: one WebSocket message.

    Raises:
        ValueError: if the frame's own ``content-length`` header does not match its body.
    """
    body = frame.body
    lines = [frame.command.value, *_header_lines(frame.command, frame.headers, version)]
    length = frame.get("content-length")
    if length is None:
        if body:
            # "If the frame body contains NULL octets, the frame MUST include a
            # content-length header." (1.2, Header content-length) We always add it.
            lines.append(f"content-length:{len(body)}")
    elif not (length.isascii() and length.isdigit() and int(length) == len(body)):
        raise ValueError(f"content-length {length!r} does not match a body of {len(body)} bytes")
    lines.append("\n")
    return b"".join(("\n".join(lines).encode(), body, b"\0"))


#: Headers of a MESSAGE that the server sets for each subscription, or from the body.
RESERVED_MESSAGE_HEADERS = frozenset(
    {"destination", "message-id", "subscription", "ack", "content-length"}
)


class PreparedMessage:
    """A MESSAGE's body and extra headers, encoded once for all the subscriptions it reaches.

    A broadcast reaches every subscriber on a node with the same body and headers; only
    ``destination``, ``message-id``, ``subscription`` and ``ack`` differ. Encoding the
    whole frame for each subscriber was the largest cost of a fan-out (a py-spy profile
    of a node under W3, ``docs/performance.md``), so the part after those headers is
    encoded once per STOMP version and reused: :meth:`encode` gives the same bytes as
    :func:`encode_frame` of the full frame.

    Args:
        body: the MESSAGE body.
        headers: extra headers; the reserved ones (:data:`RESERVED_MESSAGE_HEADERS`) are
            dropped, since the server sets them.
    """

    __slots__ = ("_tails", "body", "headers")

    def __init__(self, body: bytes, headers: Headers = ()) -> None:
        self.body = body
        self.headers: Headers = tuple(h for h in headers if h[0] not in RESERVED_MESSAGE_HEADERS)
        self._tails: dict[Version, bytes] = {}

    def tail(self, version: Version) -> bytes:
        """The frame after the per-subscription headers: the rest, the body and NUL."""
        tail = self._tails.get(version)
        if tail is None:
            lines = _header_lines(Command.MESSAGE, self.headers, version)
            if self.body:
                lines.append(f"content-length:{len(self.body)}")
            text = "".join(line + "\n" for line in lines) + "\n"
            tail = self._tails[version] = b"".join((text.encode(), self.body, b"\0"))
        return tail

    def encode(self, head: Headers, version: Version) -> bytes:
        """The MESSAGE frame with *head* (destination, message-id, ...) first."""
        lines = _header_lines(Command.MESSAGE, head, version)
        text = "MESSAGE\n" + "".join(line + "\n" for line in lines)
        return text.encode() + self.tail(version)

    def frame(self, head: Headers) -> Frame:
        """The same message as a :class:`Frame` (for logging and tests)."""
        return Frame(Command.MESSAGE, (*head, *self.headers), self.body)


# How many subscriptions' head lines a MessageEncoder keeps at most.
_MAX_KEPT_HEADS = 256


class MessageEncoder:
    """Encodes the MESSAGE frames of one connection, keeping what repeats.

    Between two MESSAGEs to the same subscription, only ``message-id`` and ``ack``
    change. The escaped ``destination`` and ``subscription`` lines were the largest of
    our own costs in a fan-out profile once :class:`PreparedMessage` had removed the
    rest (``docs/performance.md``, W3), so they are escaped once per subscription and
    kept: a MESSAGE then costs the ids, two string joins and the prepared tail.

    The kept lines are bounded (256 subscriptions; subscriptions come and go, so the
    whole cache is dropped when full) and ids that would need escaping take the general
    path. Either way the bytes are those of :func:`encode_frame` of the whole frame,
    whose headers are ``destination``, ``message-id``, ``subscription``, then ``ack``
    if given, then those of the :class:`PreparedMessage`.

    Args:
        version: the connection's negotiated version.

    Attributes:
        version: the version every frame is encoded for.
    """

    __slots__ = ("_heads", "version")

    def __init__(self, version: Version) -> None:
        self.version = version
        # (destination, subscription id) -> the head before and after the message-id value.
        self._heads: dict[tuple[str, str], tuple[str, str]] = {}

    def encode(
        self,
        prepared: PreparedMessage,
        destination: str,
        subscription_id: str,
        message_id: str,
        ack: str | None = None,
    ) -> bytes:
        """Return the MESSAGE frame for one subscription, ready to write.

        Args:
            prepared: the body and extra headers, shared by every subscription.
            destination: the ``destination`` header.
            subscription_id: the ``subscription`` header.
            message_id: the ``message-id`` header.
            ack: the ``ack`` header (STOMP 1.2, unacknowledged subscriptions only).

        Returns:
            One whole frame: headers, body, NUL.
        """
        if _needs_escaping(message_id) or (ack is not None and _needs_escaping(ack)):
            # Ids we did not make: the general path escapes (or sanitises) them.
            head = _message_head(destination, subscription_id, message_id, ack)
            return prepared.encode(head, self.version)
        parts = self._heads.get((destination, subscription_id))
        if parts is None:
            parts = self._keep(destination, subscription_id)
        text = f"{parts[0]}{message_id}{parts[1]}"
        if ack is not None:
            text += f"ack:{ack}\n"
        return text.encode() + prepared.tail(self.version)

    def _keep(self, destination: str, subscription_id: str) -> tuple[str, str]:
        if len(self._heads) >= _MAX_KEPT_HEADS:
            self._heads.clear()
        dest_line, sub_line = _header_lines(
            Command.MESSAGE,
            (("destination", destination), ("subscription", subscription_id)),
            self.version,
        )
        parts = (f"MESSAGE\n{dest_line}\nmessage-id:", f"\n{sub_line}\n")
        self._heads[destination, subscription_id] = parts
        return parts


def _message_head(
    destination: str, subscription_id: str, message_id: str, ack: str | None = None
) -> Headers:
    """The per-subscription headers of a MESSAGE, in the order :class:`MessageEncoder`
    writes them; ``prepared.frame(_message_head(...))`` is the frame it encodes."""
    # "The MESSAGE frame MUST also contain a message-id header with a unique identifier
    # for that message and a subscription header matching the identifier of the
    # subscription that is receiving the message." (1.2, MESSAGE)
    head = (
        ("destination", destination),
        ("message-id", message_id),
        ("subscription", subscription_id),
    )
    return head if ack is None else (*head, ("ack", ack))


def _shorten(text: str, limit: int = 64) -> str:
    """Cut peer-provided text to ``limit`` characters for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."
