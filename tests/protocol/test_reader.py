"""The incremental frame reader: framing, limits, escapes and malformed input."""

from __future__ import annotations

import pytest

from stomp_cluster.protocol import (
    CLIENT_COMMANDS,
    Command,
    Frame,
    FrameReader,
    FrameTooLarge,
    LimitExceeded,
    MalformedFrame,
    Version,
)


def make_reader(**limits) -> FrameReader:
    options = {
        "max_frame_size": 4096,
        "max_body_size": 1024,
        "max_headers": 10,
        "max_header_length": 100,
    }
    options.update(limits)
    return FrameReader(**options)


def read_all(data: bytes, *, version: Version | None = None, **limits) -> list[Frame]:
    reader = make_reader(**limits)
    reader.version = version
    reader.feed(data)
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    return frames


def read_error(data: bytes, error=MalformedFrame, **limits):
    reader = make_reader(**limits)
    reader.feed(data)
    with pytest.raises(error) as info:
        while reader.next_frame() is not None:
            pass
    return info.value


# Framing.


def test_reads_the_spec_example():
    data = b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\x00"
    assert read_all(data) == [
        Frame(
            Command.SEND,
            (("destination", "/queue/a"), ("content-type", "text/plain")),
            b"hello queue a\n",
        )
    ]


def test_lines_may_end_with_crlf():
    # "an end-of-line (EOL), which consists of an OPTIONAL carriage return (octet 13)
    # followed by a REQUIRED line feed (octet 10)"
    data = b"SEND\r\ndestination:/queue/a\r\n\r\nbody\x00"
    assert read_all(data) == [Frame(Command.SEND, (("destination", "/queue/a"),), b"body")]


def test_crlf_frame_arriving_byte_by_byte():
    reader = make_reader()
    data = b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\x00"
    for byte in data[:-1]:
        reader.feed(bytes([byte]))
        assert reader.next_frame() is None
    reader.feed(b"\x00")
    assert reader.next_frame() == Frame(
        Command.SEND, (("destination", "/queue/a"), ("x", "y")), b"body"
    )


def test_heart_beat_eols_between_frames_are_skipped():
    # "The NULL octet can be optionally followed by multiple EOLs."
    data = b"\n\r\nDISCONNECT\n\n\x00\n\n\r\n\nDISCONNECT\n\n\x00\r\n"
    assert read_all(data) == [Frame(Command.DISCONNECT)] * 2


def test_a_lone_carriage_return_waits_for_its_line_feed():
    reader = make_reader()
    reader.feed(b"\r")
    assert reader.next_frame() is None
    reader.feed(b"\nDISCONNECT\n\n\x00")
    assert reader.next_frame() == Frame(Command.DISCONNECT)


def test_a_carriage_return_without_line_feed_is_not_an_eol():
    assert "unknown command" in read_error(b"\rSEND\n\n\x00").message


def test_several_frames_in_one_chunk():
    data = b"BEGIN\ntransaction:t\n\n\x00COMMIT\ntransaction:t\n\n\x00"
    assert [f.command for f in read_all(data)] == [Command.BEGIN, Command.COMMIT]


def test_incomplete_frame_waits_for_more_bytes():
    reader = make_reader()
    data = b"SEND\ndestination:/queue/a\ncontent-length:3\n\nabc\x00"
    for byte in data[:-1]:
        reader.feed(bytes([byte]))
        assert reader.next_frame() is None
    reader.feed(data[-1:])
    assert reader.next_frame() == Frame(
        Command.SEND, (("destination", "/queue/a"), ("content-length", "3")), b"abc"
    )
    assert reader.buffered == 0


def test_buffered_counts_unparsed_bytes():
    reader = make_reader()
    reader.feed(b"SEND\ndest")
    assert reader.buffered == 9
    assert reader.next_frame() is None
    assert reader.buffered == 4  # the command line is parsed


def test_repeated_headers_are_all_kept_in_order():
    frame = read_all(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00", commands=frozenset(Command))[0]
    assert frame.headers == (("foo", "World"), ("foo", "Hello"))
    assert frame.get("foo") == "World"


def test_header_values_are_not_trimmed():
    # "clients and servers MUST never trim or pad headers with spaces"
    frame = read_all(b"SEND\ndestination: /queue/a \n\n\x00")[0]
    assert frame.get("destination") == " /queue/a "


def test_colons_after_the_first_belong_to_the_value():
    frame = read_all(b"SEND\ndestination:/queue/a:b\n\n\x00")[0]
    assert frame.get("destination") == "/queue/a:b"


def test_empty_header_value_is_allowed():
    assert read_all(b"SEND\nx-empty:\n\n\x00")[0].headers == (("x-empty", ""),)


# Bodies and content-length.


def test_body_runs_to_the_first_nul_without_content_length():
    assert read_all(b"SEND\n\nab\x00SEND\n\ncd\x00") == [
        Frame(Command.SEND, (), b"ab"),
        Frame(Command.SEND, (), b"cd"),
    ]


def test_content_length_body_may_contain_nul():
    # "If a content-length header is included, this number of octets MUST be read,
    # regardless of whether or not there are NULL octets in the body."
    frame = read_all(b"SEND\ncontent-length:5\n\na\x00b\x00c\x00")[0]
    assert frame.body == b"a\x00b\x00c"


def test_first_content_length_wins():
    frame = read_all(b"SEND\ncontent-length:2\ncontent-length:9\n\nab\x00")[0]
    assert frame.body == b"ab"


def test_content_length_may_have_leading_zeros():
    assert read_all(b"SEND\ncontent-length:0003\n\nabc\x00")[0].body == b"abc"
    assert read_all(b"SEND\ncontent-length:0\n\n\x00")[0].body == b""


@pytest.mark.parametrize(
    "value", [b"abc", b"-1", b" 3", b"3 ", b"", b"1.0", b"+3", "\u0663".encode()]
)
def test_bad_content_length_is_malformed(value):
    error = read_error(b"SEND\ncontent-length:" + value + b"\n\nabc\x00")
    assert error.message == "invalid content-length header"


def test_content_length_body_must_be_followed_by_nul():
    # "The frame still needs to be terminated with a NULL octet."
    error = read_error(b"SEND\ncontent-length:2\n\nabc\x00")
    assert error.message == "frame body not followed by NUL"
    assert "b'c'" in error.detail


# Malformed input.


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"FOO\n\n\x00", "unknown command 'FOO'"),
        (b"send\n\n\x00", "unknown command 'send'"),  # "case sensitive"
        (b"MESSAGE\n\n\x00", "unknown command 'MESSAGE'"),  # a server command
        (b"\xff\xfe\n\n\x00", "invalid UTF-8 in command"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unknown command"),
        (b"SEND\ndestination\n\n\x00", "header line without colon"),
        (b"SEND\n:value\n\n\x00", "empty header name"),
        (b"SEND\ndestination:\xc3\x28\n\n\x00", "invalid UTF-8 in header"),
        (b"SEND\n\xff:x\n\n\x00", "invalid UTF-8 in header"),
    ],
)
def test_malformed_frames(data, message):
    assert read_error(data).message == message


def test_unknown_command_is_refused_before_its_line_ends():
    reader = make_reader()
    reader.feed(b"X" * 13)  # longer than "UNSUBSCRIBE\r\n"
    with pytest.raises(MalformedFrame, match="unknown command"):
        reader.next_frame()


def test_accepted_commands_are_configurable():
    frames = read_all(b"MESSAGE\n\n\x00", commands=frozenset({Command.MESSAGE}))
    assert frames == [Frame(Command.MESSAGE)]
    assert read_error(b"SEND\n\n\x00", commands=frozenset({Command.MESSAGE})).message == (
        "unknown command 'SEND'"
    )


def test_error_carries_the_receipt_seen_so_far():
    error = read_error(b"SEND\nreceipt:r-7\nno colon here\n\n\x00")
    assert error.receipt_id == "r-7"


def test_error_before_any_receipt_header_has_no_receipt_id():
    assert read_error(b"SEND\nbad\nreceipt:r-7\n\n\x00").receipt_id is None


def test_errors_are_sticky():
    reader = make_reader()
    reader.feed(b"FOO\n\n\x00")
    with pytest.raises(MalformedFrame) as first:
        reader.next_frame()
    reader.feed(b"SEND\n\n\x00")
    with pytest.raises(MalformedFrame) as second:
        reader.next_frame()
    assert second.value is first.value


# Escapes.

ESCAPED = b"SEND\nna\\cme:a\\nb\\\\c\\cd\n\n\x00"


@pytest.mark.parametrize("version", [Version.V1_1, Version.V1_2])
def test_headers_are_unescaped_from_1_1(version):
    frame = read_all(ESCAPED, version=version)[0]
    assert frame.headers == (("na:me", "a\nb\\c:d"),)


@pytest.mark.parametrize("version", [None, Version.V1_0])
def test_headers_are_raw_before_negotiation_and_in_1_0(version):
    frame = read_all(ESCAPED, version=version)[0]
    assert frame.headers == (("na\\cme", "a\\nb\\\\c\\cd"),)


def test_carriage_return_escape_is_1_2_only():
    assert read_all(b"SEND\nx:a\\rb\n\n\x00", version=Version.V1_2)[0].get("x") == "a\rb"
    reader = make_reader()
    reader.version = Version.V1_1
    reader.feed(b"SEND\nx:a\\rb\n\n\x00")
    with pytest.raises(MalformedFrame, match="undefined escape"):
        reader.next_frame()


@pytest.mark.parametrize("command", [b"CONNECT", b"STOMP"])
def test_connect_is_never_unescaped(command):
    frame = read_all(command + b"\nlogin:a\\cb\\t\n\n\x00", version=Version.V1_2)[0]
    assert frame.get("login") == "a\\cb\\t"


def test_connected_is_never_unescaped():
    data = b"CONNECTED\nserver:a\\cb\n\n\x00"
    frame = read_all(data, version=Version.V1_2, commands=frozenset(Command))[0]
    assert frame.get("server") == "a\\cb"


# Limits: "servers MAY place maximum limits on: the number of frame headers allowed in
# a single frame; the maximum length of header lines; the maximum size of a frame body"


def headers(count: int) -> bytes:
    return b"".join(b"h%d:v\n" % i for i in range(count))


def test_max_headers_is_allowed():
    assert len(read_all(b"SEND\n" + headers(10) + b"\n\x00")[0].headers) == 10


def test_too_many_headers():
    error = read_error(b"SEND\n" + headers(11) + b"\n\x00", LimitExceeded)
    assert error.message == "too many headers: limit is 10"
    assert (error.limit_name, error.limit) == ("headers", 10)


def test_longest_header_line_is_allowed():
    line = b"x:" + b"v" * 98
    assert read_all(b"SEND\n" + line + b"\r\n\n\x00")[0].get("x") == "v" * 98


def test_too_long_header_line():
    line = b"x:" + b"v" * 99
    error = read_error(b"SEND\n" + line + b"\n\n\x00", LimitExceeded)
    assert error.message == "header line longer than 100 bytes"


def test_too_long_header_line_is_refused_before_it_ends():
    reader = make_reader()
    reader.feed(b"SEND\nx:" + b"v" * 99)
    assert reader.next_frame() is None  # 101 bytes: could still end with CR LF
    reader.feed(b"v")
    with pytest.raises(LimitExceeded, match="header line longer than 100 bytes"):
        reader.next_frame()


def test_largest_body_is_allowed():
    assert len(read_all(b"SEND\n\n" + b"b" * 1024 + b"\x00")[0].body) == 1024
    data = b"SEND\ncontent-length:1024\n\n" + b"b" * 1024 + b"\x00"
    assert len(read_all(data)[0].body) == 1024


def test_announced_body_too_large_is_refused_before_reading_it():
    reader = make_reader()
    reader.feed(b"SEND\ncontent-length:1025\nreceipt:r\n\n")
    with pytest.raises(FrameTooLarge) as info:
        reader.next_frame()
    assert info.value.message == "body of 1025 bytes exceeds limit of 1024"
    assert (info.value.size, info.value.limit) == (1025, 1024)
    assert info.value.receipt_id == "r"


def test_huge_content_length_is_too_large():
    data = b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n\x00"
    error = read_error(data, FrameTooLarge, max_header_length=8192, max_frame_size=1 << 20)
    assert error.message.startswith("body of ")


def test_frame_of_max_size_is_allowed():
    # 6 bytes of head ("SEND\n\n") + body + NUL.
    data = b"SEND\n\n" + b"b" * 93 + b"\x00"
    assert len(read_all(data, max_frame_size=100)[0].body) == 93


def test_announced_frame_too_large():
    data = b"SEND\ncontent-length:94\n\n"
    error = read_error(data, FrameTooLarge, max_frame_size=100)
    assert error.message == f"frame of {len(data) + 95} bytes exceeds limit of 100"


@pytest.mark.parametrize(
    ("limits", "body", "message"),
    [
        # The body limit is passed before the body's NUL arrives.
        ({}, 1024, "body of at least 1025 bytes exceeds limit of 1024"),
        # 6 bytes of head ("SEND\n\n") + 93 of body fill the frame but for its NUL.
        ({"max_frame_size": 100}, 93, "frame of at least 101 bytes exceeds limit of 100"),
    ],
    ids=["body", "frame"],
)
def test_streamed_frame_is_refused_at_the_first_byte_over_the_limit(limits, body, message):
    reader = make_reader(**limits)
    reader.feed(b"SEND\n\n" + b"b" * body)
    assert reader.next_frame() is None
    reader.feed(b"b")
    with pytest.raises(FrameTooLarge) as info:
        reader.next_frame()
    assert info.value.message == message


def test_headers_too_large_for_the_frame():
    reader = make_reader(max_frame_size=100)
    reader.feed(b"SEND\n" + b"h:v\n" * 10 + b"x:" + b"v" * 60)
    with pytest.raises(FrameTooLarge, match="frame of at least 101 bytes"):
        reader.next_frame()


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_a_head_longer_than_the_frame_limit_is_too_large_however_it_arrives(chunk):
    # The bad line lies past the frame's limit: the limit is what the reader hits first.
    data = b"SEND\na:" + b"x" * 60 + b"\nbad line\n\n\x00"
    reader = make_reader(max_frame_size=50)
    with pytest.raises(FrameTooLarge, match="frame of at least 51 bytes"):
        for start in range(0, len(data), chunk):
            reader.feed(data[start : start + chunk])
            reader.next_frame()


def test_a_body_limit_larger_than_the_frame_limit_yields_frame_errors():
    reader = make_reader(max_frame_size=100, max_body_size=1000)
    reader.feed(b"SEND\n\n" + b"b" * 200)
    with pytest.raises(FrameTooLarge, match="^frame of at least 101 bytes"):
        reader.next_frame()


def test_heart_beats_do_not_count_towards_the_frame_size():
    data = b"\n" * 1000 + b"SEND\n\n" + b"b" * 93 + b"\x00"
    assert len(read_all(data, max_frame_size=100)) == 1


def test_large_frame_in_small_chunks():
    body = bytes(range(256)) * 4096  # 1 MiB, with NULs
    data = b"SEND\ndestination:/queue/a\ncontent-length:%d\n\n" % len(body) + body + b"\x00"
    reader = FrameReader(
        max_frame_size=1_114_112,
        max_body_size=1_048_576,
        max_headers=100,
        max_header_length=8192,
        commands=CLIENT_COMMANDS,
    )
    for start in range(0, len(data), 1000):
        reader.feed(data[start : start + 1000])
        frame = reader.next_frame()
    assert frame is not None and frame.body == body


def test_large_body_without_content_length_in_small_chunks():
    body = b"x" * 1_048_576
    reader = FrameReader(
        max_frame_size=1_114_112, max_body_size=1_048_576, max_headers=100, max_header_length=8192
    )
    data = b"SEND\n\n" + body + b"\x00"
    for start in range(0, len(data), 1000):
        reader.feed(data[start : start + 1000])
        frame = reader.next_frame()
    assert frame is not None and frame.body == body
