"""Real STOMP clients for cluster tests, over WebSocket.

- :class:`StompPyClient` wraps a stomp.py 9 connection (1.0, 1.1 or 1.2) with a
  :class:`RecordingListener` so tests can wait for messages, receipts and errors.
- :class:`RawStompClient` is a bare WebSocket (websocket-client) that sends whatever
  bytes or text a test gives it and parses what comes back with :func:`parse_frames`,
  for malformed-input tests.

stomp.py's ``WSStompConnection`` speaks 1.2 only and does not offer the
``Sec-WebSocket-Protocol`` header on its own; we pass it explicitly, and build 1.0 and
1.1 connections from stomp.py's ``WSTransport`` and protocol classes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import stomp
import stomp.utils
import websocket
from stomp.adapter.ws import WSStompConnection, WSTransport
from stomp.connect import BaseConnection
from stomp.protocol import Protocol10, Protocol11

__all__ = [
    "SUBPROTOCOLS",
    "VERSIONS",
    "Closed",
    "Frame",
    "FrameParser",
    "RawStompClient",
    "RecordingListener",
    "StompPyClient",
    "connect_stomppy",
    "encode_frame",
    "escape_header",
    "parse_frames",
    "received_before_marker",
    "unescape_header",
    "unique",
]

VERSIONS = ("1.0", "1.1", "1.2")
SUBPROTOCOLS = {"1.0": "v10.stomp", "1.1": "v11.stomp", "1.2": "v12.stomp"}

_ids = itertools.count(1)


def unique(prefix: str = "t") -> str:
    """A short name unique within this test run, for destinations and ids."""
    return f"{prefix}-{time.monotonic_ns() % 10**9:x}-{next(_ids)}"


# -- frames ---------------------------------------------------------------------------------

_ESCAPES_11 = {"\\": "\\\\", "\n": "\\n", ":": "\\c"}
_ESCAPES_12 = {**_ESCAPES_11, "\r": "\\r"}


def escape_header(value: str, version: str = "1.2") -> str:
    """Escape a header name or value as STOMP *version* requires (1.0 escapes nothing)."""
    if version == "1.0":
        return value
    table = _ESCAPES_12 if version == "1.2" else _ESCAPES_11
    return "".join(table.get(ch, ch) for ch in value)


def unescape_header(value: str, version: str = "1.2") -> str:
    """Undo :func:`escape_header`; raises ValueError on an undefined escape sequence."""
    if version == "1.0":
        return value
    table = {v: k for k, v in (_ESCAPES_12 if version == "1.2" else _ESCAPES_11).items()}
    out = []
    i = 0
    while i < len(value):
        if value[i] == "\\":
            seq = value[i : i + 2]
            if seq not in table:
                raise ValueError(f"undefined escape {seq!r} in {value!r}")
            out.append(table[seq])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@dataclass
class Frame:
    """A STOMP frame as received: repeated headers are kept in ``header_list``, and
    ``headers`` holds the first value of each (STOMP 1.2 §"Repeated Header Entries")."""

    command: str
    header_list: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, value in self.header_list:
            result.setdefault(name, value)
        return result

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 80 else self.body[:77] + b"..."
        return f"Frame({self.command!r}, {self.header_list!r}, {body!r})"


def encode_frame(
    command: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | str = b"",
    *,
    version: str = "1.2",
    content_length: bool | None = None,
) -> bytes:
    """Serialise a frame, escaping headers for *version*.

    ``content_length`` adds the header when true; by default it is added when the body is
    not empty and no ``content-length`` header was given.
    """
    if isinstance(body, str):
        body = body.encode()
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if content_length is None:
        content_length = bool(body) and not any(k == "content-length" for k, _ in items)
    if content_length:
        items.append(("content-length", str(len(body))))
    escape = command not in ("CONNECT", "CONNECTED")
    lines = [command]
    for name, value in items:
        if escape:
            name, value = escape_header(name, version), escape_header(value, version)
        lines.append(f"{name}:{value}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


class FrameParser:
    """Incremental parser of server-to-client frames: feed bytes, get frames.

    Heart-beat EOLs between frames are counted in ``heartbeats``. ``version`` controls
    header unescaping and is set from CONNECTED automatically. Frames may span several
    ``feed()`` calls and one call may hold several frames.
    """

    def __init__(self, version: str = "1.2") -> None:
        self.version = version
        self.buffer = b""
        self.heartbeats = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        buf = self.buffer
        # Skip heart-beats: EOLs between frames.
        while buf[:1] == b"\n" or buf[:2] == b"\r\n":
            self.heartbeats += 1
            buf = buf[1:] if buf[:1] == b"\n" else buf[2:]
        self.buffer = buf
        end = buf.find(b"\n\n")
        end_crlf = buf.find(b"\r\n\r\n")
        if end_crlf != -1 and (end == -1 or end_crlf < end):
            head, body_start = buf[:end_crlf], end_crlf + 4
        elif end != -1:
            head, body_start = buf[:end], end + 2
        else:
            return None
        lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
        command = lines[0]
        raw_headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"header line without colon: {line!r}")
            raw_headers.append((name, value))
        length = next((v for k, v in raw_headers if k == "content-length"), None)
        if length is not None:
            stop = body_start + int(length)
            if len(buf) < stop + 1:
                return None
            if buf[stop : stop + 1] != b"\x00":
                raise ValueError(f"no NUL after content-length {length}: {buf[:200]!r}")
        else:
            stop = buf.find(b"\x00", body_start)
            if stop == -1:
                return None
        body = buf[body_start:stop]
        self.buffer = buf[stop + 1 :]
        version = self.version
        if command == "CONNECTED":
            self.version = dict(raw_headers).get("version", "1.0")
            version = "1.0"  # CONNECTED headers are never escaped
        header_list = [
            (unescape_header(k, version), unescape_header(v, version)) for k, v in raw_headers
        ]
        return Frame(command, header_list, body)


def parse_frames(data: bytes, version: str = "1.2") -> list[Frame]:
    """Parse complete frames from *data*; raises ValueError if bytes are left over."""
    parser = FrameParser(version)
    frames = parser.feed(data)
    if parser.buffer.strip(b"\r\n"):
        raise ValueError(f"incomplete frame: {parser.buffer[:200]!r}")
    return frames


# -- raw WebSocket client -------------------------------------------------------------------


class Closed(Exception):
    """The server closed the WebSocket (``code`` is None if it dropped TCP without a close)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"WebSocket closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class RawStompClient:
    """A bare WebSocket to a STOMP endpoint: send any bytes, read raw frames back.

    Args:
        ws_url: ``ws://host:port/ws``.
        subprotocols: offered in ``Sec-WebSocket-Protocol``; ``()`` offers none.
        timeout: default seconds for reads.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        subprotocols: Iterable[str] = ("v10.stomp", "v11.stomp", "v12.stomp"),
        timeout: float = 10.0,
        sockopt: Iterable[tuple[int, int, int]] = (),
    ) -> None:
        self.ws_url = ws_url
        self.timeout = timeout
        self.ws = websocket.create_connection(
            ws_url, subprotocols=list(subprotocols) or None, timeout=timeout, sockopt=tuple(sockopt)
        )
        self.subprotocol: str | None = self.ws.subprotocol
        self.parser = FrameParser()
        self.frames: list[Frame] = []  # every frame received, in order
        self._pending: list[Frame] = []  # received but not yet returned by recv_frame()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = False
        self.messages_received = 0

    # sending

    def send_text(self, data: str | bytes) -> None:
        """Send one text WebSocket message (bytes must be valid UTF-8)."""
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        self.ws.send(data, websocket.ABNF.OPCODE_TEXT)

    def send_bytes(self, data: bytes | str) -> None:
        """Send one binary WebSocket message."""
        if isinstance(data, str):
            data = data.encode()
        self.ws.send(data, websocket.ABNF.OPCODE_BINARY)

    def send_data(self, data: bytes | str, *, binary: bool = False) -> None:
        if binary:
            self.send_bytes(data)
        else:
            self.send_text(data)

    def send_frame(
        self,
        command: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | str = b"",
        *,
        binary: bool = False,
        content_length: bool | None = None,
    ) -> None:
        """Send one well-formed frame, headers escaped for the negotiated version."""
        data = encode_frame(
            command, headers, body, version=self.parser.version, content_length=content_length
        )
        self.send_data(data, binary=binary)

    def connect(
        self,
        *,
        login: str | None = None,
        passcode: str | None = None,
        accept_version: str = "1.0,1.1,1.2",
        heart_beat: str = "0,0",
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Frame:
        """Send CONNECT and return CONNECTED; raises AssertionError if ERROR comes back."""
        hdrs = {
            "accept-version": accept_version,
            "host": host or urlsplit(self.ws_url).hostname or "",
        }
        if heart_beat:
            hdrs["heart-beat"] = heart_beat
        if login is not None:
            hdrs["login"] = login
        if passcode is not None:
            hdrs["passcode"] = passcode
        hdrs.update(headers or {})
        self.send_frame("CONNECT", hdrs)
        frame = self.recv_frame(timeout)
        if frame.command != "CONNECTED":
            raise AssertionError(f"expected CONNECTED, got {frame!r}")
        return frame

    # receiving

    def _recv_message(self, timeout: float) -> bytes:
        if self.closed:
            raise Closed(self.close_code, self.close_reason)
        self.ws.settimeout(timeout)
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError) as exc:
            self.closed = True
            raise Closed(self.close_code, str(exc)) from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            if len(data) >= 2:
                self.close_code = int.from_bytes(data[:2], "big")
                self.close_reason = data[2:].decode("utf-8", "replace")
            else:
                self.close_code = 1005
            raise Closed(self.close_code, self.close_reason)
        self.messages_received += 1
        return data if isinstance(data, bytes) else data.encode()

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """Return the next frame, skipping heart-beats.

        Raises:
            Closed: the server closed the connection first.
            websocket.WebSocketTimeoutException: nothing came in time.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise websocket.WebSocketTimeoutException(f"no frame within {timeout}s")
            new = self.parser.feed(self._recv_message(remaining))
            self.frames.extend(new)
            self._pending.extend(new)
        return self._pending.pop(0)

    def wait_for_heartbeats(self, count: int, timeout: float) -> int:
        """Read until *count* heart-beat EOLs have arrived in total; return the count."""
        deadline = time.monotonic() + timeout
        while self.parser.heartbeats < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.parser.heartbeats} heart-beats in {timeout}s, expected {count}"
                )
            try:
                new = self.parser.feed(self._recv_message(remaining))
            except websocket.WebSocketTimeoutException:
                continue
            self.frames.extend(new)
            self._pending.extend(new)
        return self.parser.heartbeats

    def read_until_closed(self, timeout: float | None = None) -> tuple[list[Frame], int | None]:
        """Read every frame until the server closes; return them and the close code.

        Raises:
            AssertionError: the connection was still open after *timeout* seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        frames: list[Frame] = list(self._pending)
        self._pending.clear()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"still open after {timeout}s; received {frames!r}")
            try:
                data = self._recv_message(remaining)
            except websocket.WebSocketTimeoutException:
                continue
            except Closed:
                if self.parser.buffer.strip(b"\r\n"):
                    frames.append(Frame("<PARTIAL>", [], self.parser.buffer))
                return frames, self.close_code
            new = self.parser.feed(data)
            self.frames.extend(new)
            frames.extend(new)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        self.closed = True

    def __enter__(self) -> RawStompClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- stomp.py -------------------------------------------------------------------------------


class RecordingListener(stomp.ConnectionListener):
    """Records every frame stomp.py hands us and lets tests wait for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.connected: list[stomp.utils.Frame] = []
        self.messages: list[stomp.utils.Frame] = []
        self.receipts: list[stomp.utils.Frame] = []
        self.errors: list[stomp.utils.Frame] = []
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.disconnected = 0

    def _add(self, attr: str, frame: Any) -> None:
        with self.cond:
            getattr(self, attr).append(frame)
            self.cond.notify_all()

    def on_connected(self, frame: stomp.utils.Frame) -> None:
        self._add("connected", frame)

    def on_message(self, frame: stomp.utils.Frame) -> None:
        self._add("messages", frame)

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        self._add("receipts", frame)

    def on_error(self, frame: stomp.utils.Frame) -> None:
        self._add("errors", frame)

    def on_heartbeat(self) -> None:
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()

    def on_heartbeat_timeout(self) -> None:
        with self.cond:
            self.heartbeat_timeouts += 1
            self.cond.notify_all()

    def on_disconnected(self) -> None:
        with self.cond:
            self.disconnected += 1
            self.cond.notify_all()

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``check()`` returns something truthy and return it."""
        with self.cond:
            result = self.cond.wait_for(check, timeout)
        if not result:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; "
                f"messages={len(self.messages)} receipts={[r.headers for r in self.receipts]} "
                f"errors={[(e.headers, e.body) for e in self.errors]} "
                f"disconnected={self.disconnected}"
            )
        return result


class _WSConnection(BaseConnection):
    """What the 1.0 and 1.1 connections add to stomp.py's protocol classes: start the
    WebSocket transport on CONNECT, and stop it after a DISCONNECT that asked a receipt."""

    _protocol: Any  # Protocol10 or Protocol11: the class whose frames we send

    def connect(self, *args: Any, **kwargs: Any) -> None:
        self.transport.start()
        self._protocol.connect(self, *args, **kwargs)

    def disconnect(self, receipt: str | None = None, headers: Any = None, **kw: Any) -> None:
        self._protocol.disconnect(self, receipt, headers, **kw)
        if receipt is not None:
            self.transport.stop()


class WSStompConnection10(_WSConnection, Protocol10):
    """stomp.py's 1.0 protocol over its WebSocket transport (stomp.py ships 1.2 only)."""

    _protocol = Protocol10

    def __init__(self, host_and_ports: list[tuple[str, int]], **transport_kwargs: Any) -> None:
        auto_content_length = transport_kwargs.pop("auto_content_length", True)
        transport_kwargs.pop("heartbeats", None)  # 1.0 has no heart-beats
        transport_kwargs.pop("heart_beat_receive_scale", None)
        transport = WSTransport(host_and_ports, **transport_kwargs)
        BaseConnection.__init__(self, transport)
        Protocol10.__init__(self, transport, auto_content_length)


class WSStompConnection11(_WSConnection, Protocol11):
    """stomp.py's 1.1 protocol over its WebSocket transport."""

    _protocol = Protocol11

    def __init__(self, host_and_ports: list[tuple[str, int]], **transport_kwargs: Any) -> None:
        auto_content_length = transport_kwargs.pop("auto_content_length", True)
        heartbeats = transport_kwargs.pop("heartbeats", (0, 0))
        scale = transport_kwargs.pop("heart_beat_receive_scale", 1.5)
        transport = WSTransport(host_and_ports, **transport_kwargs)
        BaseConnection.__init__(self, transport)
        Protocol11.__init__(
            self, transport, heartbeats, auto_content_length, heart_beat_receive_scale=scale
        )


def connect_stomppy(
    ws_url: str,
    version: str = "1.2",
    *,
    heartbeats: tuple[int, int] = (0, 0),
    heart_beat_receive_scale: float = 1.5,
    binary_mode: bool = False,
    auto_decode: bool = True,
    subprotocols: Iterable[str] | None = None,
) -> Any:
    """Build (not connect) a stomp.py connection of *version* to *ws_url*.

    It offers ``Sec-WebSocket-Protocol: vXY.stomp`` for the version unless
    *subprotocols* says otherwise, and does not retry a failed WebSocket handshake.
    """
    parts = urlsplit(ws_url)
    assert parts.hostname is not None and parts.port is not None, ws_url
    offered = [SUBPROTOCOLS[version]] if subprotocols is None else list(subprotocols)
    kwargs: dict[str, Any] = {
        "ws_path": parts.path or "/",
        "header": {"Sec-WebSocket-Protocol": ", ".join(offered)} if offered else None,
        "binary_mode": binary_mode,
        "reconnect_attempts_max": 1,
        # No socket timeout: websocket-client would raise on an idle read and stomp.py would
        # take that for a closed connection.
        "timeout": None,
        "auto_decode": auto_decode,
        "heartbeats": heartbeats,
        "heart_beat_receive_scale": heart_beat_receive_scale,
    }
    hosts = [(parts.hostname, parts.port)]
    if version == "1.2":
        return WSStompConnection(hosts, **kwargs)
    cls = WSStompConnection11 if version == "1.1" else WSStompConnection10
    return cls(hosts, **kwargs)


class StompPyClient:
    """A stomp.py client of one STOMP *version*, recording what it receives.

    The methods wrap stomp.py's, fill in ids, and can wait for the receipt they asked for.

    Example::

        client = StompPyClient(node.ws_url, "1.1")
        client.connect("alice", token_for("alice", db_path))
        client.subscribe("/topic/news", id="1", receipt=True)
        client.send("/topic/news", "hello")
        assert client.wait_for_message().body == "hello"
        client.disconnect()
    """

    def __init__(self, ws_url: str, version: str = "1.2", **kwargs: Any) -> None:
        assert version in VERSIONS, version
        self.version = version
        self.ws_url = ws_url
        self.conn = connect_stomppy(ws_url, version, **kwargs)
        self.listener = RecordingListener()
        self.conn.set_listener("recorder", self.listener)
        self.connected_frame: stomp.utils.Frame | None = None

    # -- commands ---------------------------------------------------------------------------

    def connect(
        self,
        login: str | None = None,
        passcode: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> stomp.utils.Frame:
        """Connect and wait for CONNECTED (AssertionError with the ERROR if refused)."""
        self.conn.connect(login, passcode, wait=False, headers=dict(headers or {}))
        listener = self.listener
        listener.wait(
            lambda: listener.connected or listener.errors or listener.disconnected,
            timeout,
            "CONNECTED",
        )
        if not listener.connected:
            raise AssertionError(
                f"connect refused: errors={[(e.headers, e.body) for e in listener.errors]} "
                f"disconnected={listener.disconnected}"
            )
        self.connected_frame = listener.connected[0]
        return self.connected_frame

    @property
    def session(self) -> str:
        assert self.connected_frame is not None
        return str(self.connected_frame.headers["session"])

    def _receipt(self, receipt: bool | str) -> str | None:
        if receipt is True:
            return unique("r")
        return receipt or None

    def subscribe(
        self,
        destination: str,
        id: str | None = None,
        *,
        ack: str = "auto",
        headers: Mapping[str, str] | None = None,
        receipt: bool | str = True,
        timeout: float = 10.0,
    ) -> str:
        """Subscribe; by default wait for the receipt, so later sends are seen. Returns the id."""
        sub_id = id or unique("sub")
        hdrs = dict(headers or {})
        rid = self._receipt(receipt)
        if rid:
            hdrs["receipt"] = rid
        if self.version == "1.0":
            self.conn.subscribe(destination, id=sub_id, ack=ack, headers=hdrs)
        else:
            self.conn.subscribe(destination, sub_id, ack=ack, headers=hdrs)
        if rid:
            self.wait_for_receipt(rid, timeout)
        return sub_id

    def unsubscribe(
        self,
        id: str,
        *,
        destination: str | None = None,
        headers: Mapping[str, str] | None = None,
        receipt: bool | str = True,
        timeout: float = 10.0,
    ) -> None:
        hdrs = dict(headers or {})
        rid = self._receipt(receipt)
        if rid:
            hdrs["receipt"] = rid
        if self.version == "1.0":
            self.conn.unsubscribe(destination=destination, id=id, headers=hdrs)
        else:
            self.conn.unsubscribe(id, headers=hdrs)
        if rid:
            self.wait_for_receipt(rid, timeout)

    def send(
        self,
        destination: str,
        body: str | bytes = "",
        *,
        headers: Mapping[str, str] | None = None,
        receipt: bool | str = False,
        transaction: str | None = None,
        content_type: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        hdrs = dict(headers or {})
        rid = self._receipt(receipt)
        if rid:
            hdrs["receipt"] = rid
        if transaction:
            hdrs["transaction"] = transaction
        self.conn.send(destination, body, content_type=content_type, headers=hdrs)
        if rid:
            self.wait_for_receipt(rid, timeout)

    def _ack_args(self, message: stomp.utils.Frame) -> tuple[str, ...]:
        if self.version == "1.2":
            return (message.headers["ack"],)
        if self.version == "1.1":
            return (message.headers["message-id"], message.headers["subscription"])
        return (message.headers["message-id"],)

    def ack(
        self,
        message: stomp.utils.Frame,
        *,
        transaction: str | None = None,
        receipt: bool | str = False,
        timeout: float = 10.0,
    ) -> None:
        """ACK *message* with the header its version asks for (1.2: ``id`` = ``ack``)."""
        rid = self._receipt(receipt)
        self.conn.ack(*self._ack_args(message), transaction=transaction, receipt=rid)
        if rid:
            self.wait_for_receipt(rid, timeout)

    def nack(
        self,
        message: stomp.utils.Frame,
        *,
        transaction: str | None = None,
        receipt: bool | str = False,
        timeout: float = 10.0,
    ) -> None:
        assert self.version != "1.0", "NACK is new in STOMP 1.1"
        rid = self._receipt(receipt)
        self.conn.nack(*self._ack_args(message), transaction=transaction, receipt=rid)
        if rid:
            self.wait_for_receipt(rid, timeout)

    def begin(self, transaction: str | None = None) -> str:
        return str(self.conn.begin(transaction or unique("tx")))

    def commit(self, transaction: str, *, receipt: bool | str = False) -> None:
        rid = self._receipt(receipt)
        self.conn.commit(transaction, headers={"receipt": rid} if rid else None)
        if rid:
            self.wait_for_receipt(rid)

    def abort(self, transaction: str, *, receipt: bool | str = False) -> None:
        rid = self._receipt(receipt)
        self.conn.abort(transaction, headers={"receipt": rid} if rid else None)
        if rid:
            self.wait_for_receipt(rid)

    def disconnect(self, *, timeout: float = 10.0) -> stomp.utils.Frame:
        """Send DISCONNECT with a receipt, wait for the RECEIPT, then close the socket.

        We write the frame ourselves: stomp.py's ``disconnect()`` blocks without a timeout
        until the receipt comes.
        """
        rid = unique("bye")
        self.conn.send_frame("DISCONNECT", {"receipt": rid})
        try:
            return self.wait_for_receipt(rid, timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the socket without DISCONNECT; stomp.py's threads then end."""
        with contextlib.suppress(Exception):
            self.conn.transport.disconnect_socket()

    def send_raw(self, data: bytes | str) -> None:
        """Write bytes on the WebSocket as they are (a message of stomp.py's opcode)."""
        if isinstance(data, str):
            data = data.encode()
        self.conn.transport.send(data)

    # -- waiting ---------------------------------------------------------------------------

    def wait_for_message(
        self,
        predicate: Callable[[stomp.utils.Frame], bool] | None = None,
        timeout: float = 10.0,
    ) -> stomp.utils.Frame:
        """Return the first message received so far (or later) that matches *predicate*."""
        listener = self.listener

        def check() -> stomp.utils.Frame | None:
            return next((m for m in listener.messages if predicate is None or predicate(m)), None)

        return listener.wait(check, timeout, "a message")

    def wait_for_messages(
        self,
        count: int,
        predicate: Callable[[stomp.utils.Frame], bool] | None = None,
        timeout: float = 30.0,
    ) -> list[stomp.utils.Frame]:
        """Wait until *count* messages matching *predicate* have arrived; return them."""
        listener = self.listener

        def matching() -> list[stomp.utils.Frame]:
            return [m for m in listener.messages if predicate is None or predicate(m)]

        listener.wait(lambda: len(matching()) >= count, timeout, f"{count} messages")
        return matching()

    def wait_for_receipt(self, receipt_id: str, timeout: float = 10.0) -> stomp.utils.Frame:
        listener = self.listener
        return listener.wait(
            lambda: next(
                (r for r in listener.receipts if r.headers.get("receipt-id") == receipt_id), None
            ),
            timeout,
            f"RECEIPT {receipt_id}",
        )

    def wait_for_error(self, timeout: float = 10.0) -> stomp.utils.Frame:
        listener = self.listener
        return listener.wait(
            lambda: listener.errors[0] if listener.errors else None, timeout, "ERROR"
        )

    def wait_for_disconnected(self, timeout: float = 30.0) -> None:
        listener = self.listener
        listener.wait(lambda: listener.disconnected > 0, timeout, "the socket to close")

    def wait_for_heartbeats(self, count: int, timeout: float = 30.0) -> int:
        listener = self.listener
        listener.wait(lambda: listener.heartbeats >= count, timeout, f"{count} heart-beats")
        return listener.heartbeats

    def bodies(self, destination: str | None = None) -> list[str | bytes]:
        with self.listener.cond:
            return [
                m.body
                for m in self.listener.messages
                if destination is None or m.headers.get("destination") == destination
            ]

    def __enter__(self) -> StompPyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def received_before_marker(
    sender: StompPyClient, destination: str, receiver: StompPyClient
) -> list[str | bytes]:
    """Every body *receiver* got before a marker that *sender* sends to *destination* now.

    How a test shows that something did *not* arrive, without sleeping: whatever was going
    to arrive on this path has arrived once the marker, sent after it, has.
    """
    marker = unique("marker")
    sender.send(destination, marker)
    receiver.wait_for_message(lambda m: m.body == marker)
    bodies = receiver.bodies()
    return bodies[: bodies.index(marker)]
