"""Properties of the codec and the state machine, checked with Hypothesis.

* ``decode(encode(frame)) == frame`` for every command and version;
* any chunking of a byte stream decodes to the same frames;
* arbitrary bytes never raise anything but a ProtocolError, and never hang.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stomp_cluster.protocol import (
    CLIENT_COMMANDS,
    SERVER_COMMANDS,
    Command,
    Frame,
    FrameReader,
    ProtocolError,
    ProtocolFailed,
    State,
    Version,
    encode_frame,
)
from tests.support.protocol import connected

PROPERTY = settings(max_examples=200, deadline=None)
VERSIONS = [None, Version.V1_0, Version.V1_1, Version.V1_2]
ALL_COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS
UNESCAPED = {Command.CONNECT, Command.STOMP, Command.CONNECTED}


def reader(version: Version | None = None, **limits) -> FrameReader:
    options = {
        "max_frame_size": 1 << 20,
        "max_body_size": 1 << 20,
        "max_headers": 1000,
        "max_header_length": 1 << 16,
        "commands": ALL_COMMANDS,
    }
    options.update(limits)
    result = FrameReader(**options)
    result.version = version
    return result


def can_escape(command: Command, version: Version | None) -> bool:
    return version in (Version.V1_1, Version.V1_2) and command not in UNESCAPED


def _headers(name_forbidden: str, value_forbidden: str) -> st.SearchStrategy:
    def text(forbidden: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
        alphabet = st.characters(codec="utf-8", exclude_characters=forbidden)
        return st.text(alphabet, min_size=min_size, max_size=max_size)

    names = text(name_forbidden, 1, 8).filter(lambda name: name != "content-length")
    return st.lists(st.tuples(names, text(value_forbidden, 0, 12)), max_size=6).map(tuple)


# Header strategies by what the encoding can carry: 1.2 escapes everything, 1.1 cannot
# escape a carriage return (the encoder replaces it), and unescaped frames cannot carry
# line delimiters at all, nor a colon in a name. No version carries a NUL in a header:
# the reader refuses it.
HEADERS_1_2 = _headers("\0", "\0")
HEADERS_1_1 = _headers("\r\0", "\r\0")
HEADERS_RAW = _headers("\r\n:\0", "\r\n\0")
COMMANDS = st.sampled_from(sorted(ALL_COMMANDS, key=lambda command: command.value))
BODIES = st.binary(max_size=64)


@st.composite
def frames(draw, version: Version | None) -> Frame:
    """A frame that survives encoding unchanged in ``version``, content-length aside."""
    command = draw(COMMANDS)
    if not can_escape(command, version):
        headers = draw(HEADERS_RAW)
    elif version is Version.V1_1:
        headers = draw(HEADERS_1_1)
    else:
        headers = draw(HEADERS_1_2)
    return Frame(command, headers, draw(BODIES))


def expected(frame: Frame) -> Frame:
    """What decoding the encoded frame gives: the encoder adds content-length."""
    if not frame.body:
        return frame
    headers = (*frame.headers, ("content-length", str(len(frame.body))))
    return Frame(frame.command, headers, frame.body)


def decode_all(chunks: list[bytes], version: Version | None) -> list[Frame]:
    decoder = reader(version)
    result = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            result.append(frame)
    return result


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[start:end] for start, end in zip(points, points[1:], strict=False)]


@PROPERTY
@given(st.data(), st.sampled_from(VERSIONS))
def test_encode_then_decode_gives_the_frame_back(data, version):
    frame = data.draw(frames(version))
    assert decode_all([encode_frame(frame, version)], version) == [expected(frame)]


@PROPERTY
@given(
    st.data(),
    st.sampled_from(VERSIONS),
    st.lists(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0), max_size=40),
)
def test_any_chunking_decodes_to_the_same_frames(data, version, eols, points):
    sent = data.draw(st.lists(frames(version), min_size=1, max_size=5))
    stream = b"".join(
        eols[i % len(eols)] + encode_frame(frame, version) for i, frame in enumerate(sent)
    )
    assert decode_all(cut(stream, points), version) == [expected(frame) for frame in sent]


# Bytes that look like STOMP, so that random input reaches past the command line.
PIECES = st.sampled_from(
    [
        b"SEND\n",
        b"CONNECT\n",
        b"MESSAGE\n",
        b"ACK\r\n",
        b"destination:/q/a\n",
        b"content-length:3\n",
        b"content-length:x\n",
        b"receipt:r\n",
        b"a:b\\c\\n\\r\\t\\\n",
        b"no colon\n",
        b"\n",
        b"\r\n",
        b"\r",
        b"\x00",
        b":",
        b"\\",
        b"\xff\xfe",
        b"abc",
        b"x" * 40,
    ]
)
ARBITRARY = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=40).map(b"".join))


def run(chunks: list[bytes], version: Version | None) -> tuple[list[Frame], type | None]:
    """Decode with small limits; return the frames and the error type, if any."""
    decoder = reader(
        version, max_frame_size=120, max_body_size=50, max_headers=4, max_header_length=30
    )
    result: list[Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        # Each frame consumes at least one byte: a bound that proves we never loop.
        for _ in range(len(chunk) + 1):
            try:
                frame = decoder.next_frame()
            except ProtocolError as error:
                return result, type(error)
            if frame is None:
                break
            result.append(frame)
        else:  # pragma: no cover - would be a hang
            pytest.fail("next_frame() kept returning frames without input")
    return result, None


@PROPERTY
@given(ARBITRARY, st.sampled_from(VERSIONS), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_raise_only_protocol_errors_whatever_the_chunking(data, version, points):
    whole = run([data], version)
    chunked = run(cut(data, points), version)
    # Same frames, then the same kind of error (or none), however the bytes arrive.
    assert chunked == whole


@PROPERTY
@given(ARBITRARY, st.sampled_from([Version.V1_0, Version.V1_1, Version.V1_2]))
def test_connection_survives_arbitrary_bytes(data, version):
    conn = connected(version)
    conn.receive_data(b"SUBSCRIBE\nid:0\ndestination:/q/a\nack:client\n\n\x00")
    conn.send_message("0", b"x")
    for chunk in cut(data, [7, 31, 64]):
        conn.receive_data(chunk)
        events = conn.events_received()
        failed = [event for event in events if isinstance(event, ProtocolFailed)]
        assert len(failed) <= 1
        if failed:
            assert events[-1] is failed[0]
            assert conn.state is State.CLOSING
    sent = conn.data_to_send()
    assert sum(chunk.startswith(b"ERROR\n") for chunk in sent) <= 1
