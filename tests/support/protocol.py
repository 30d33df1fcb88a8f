"""Helpers for protocol tests that read like the STOMP spec.

Tests drive a :class:`StompConnection` with literal bytes and check the literal bytes it
answers with. The helpers here are plain functions in a plain module, not a
``conftest.py``, so that tests import them like any other code and a test reads as a
conversation::

    conn = connected(Version.V1_2)
    conn.receive_data(b"SEND\\n\\n\\x00")
    assert_error_and_close(conn, "missing destination header in SEND")
"""

from __future__ import annotations

import contextlib

from stomp_cluster.protocol import (
    SERVER_COMMANDS,
    Frame,
    FrameReader,
    InvalidState,
    Limits,
    ProtocolFailed,
    State,
    StompConnection,
    Version,
)

__all__ = [
    "CONNECT",
    "assert_error_and_close",
    "assert_frames_sent",
    "connect_frame",
    "connected",
    "parse",
]

CONNECT = b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:localhost\n\n\x00"


def connect_frame(version: Version) -> bytes:
    """The CONNECT a client speaking only ``version`` sends (1.0 has no accept-version)."""
    if version is Version.V1_0:
        return b"CONNECT\nhost:localhost\n\n\x00"
    return b"CONNECT\naccept-version:" + version.value.encode() + b"\nhost:localhost\n\n\x00"


def connected(
    version: Version = Version.V1_2, *, limits: Limits | None = None, **kwargs
) -> StompConnection:
    """A connection past CONNECT/CONNECTED, with nothing left to send."""
    conn = StompConnection(limits=limits or Limits(), **kwargs)
    conn.receive_data(connect_frame(version))
    [event] = conn.events_received()
    conn.accept_connect(session="s1")
    conn.data_to_send()
    assert conn.state is State.CONNECTED and conn.version is version
    return conn


def parse(data: bytes, version: Version | None = None) -> Frame:
    """Decode one server frame, as a client of ``version`` would."""
    reader = FrameReader(
        max_frame_size=1 << 30,
        max_body_size=1 << 30,
        max_headers=1000,
        max_header_length=1 << 20,
        commands=SERVER_COMMANDS,
    )
    reader.version = version
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None, data
    assert reader.buffered == 0, "more than one frame"
    return frame


def assert_frames_sent(conn: StompConnection, *frames: bytes) -> None:
    """The connection has exactly these WebSocket messages to send, in order."""
    assert conn.data_to_send() == list(frames)


def assert_error_and_close(
    conn: StompConnection,
    message: str,
    *,
    receipt_id: str | None = None,
    events: list | None = None,
) -> Frame:
    """The peer broke the protocol: exactly one ERROR frame, last, then close.

    Checks the ProtocolFailed event, the ERROR frame's ``message`` and ``receipt-id``
    headers, the closing state, and that anything received afterwards is ignored.

    Returns:
        The ERROR frame, for further checks on its body.
    """
    if events is None:
        events = conn.events_received()
    assert events, "no events"
    assert isinstance(events[-1], ProtocolFailed), events
    assert sum(isinstance(event, ProtocolFailed) for event in events) == 1
    assert events[-1].error.message == message
    data = conn.data_to_send()
    assert data, "nothing sent"
    assert [chunk.startswith(b"ERROR\n") for chunk in data].count(True) == 1, data
    error = parse(data[-1], conn.version)
    assert error.get("message") == message
    assert error.get("receipt-id") == receipt_id
    assert conn.state is State.CLOSING
    # "it MUST then close the connection just after sending the ERROR frame"
    conn.receive_data(b"SEND\ndestination:/queue/a\nreceipt:late\n\n\x00")
    assert conn.events_received() == []
    with contextlib.suppress(InvalidState):  # raised when never connected
        conn.send_receipt("late")
    conn.send_heartbeat()
    assert conn.data_to_send() == []
    return error
