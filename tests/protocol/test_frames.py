"""Frames, versions, commands, header escaping and the encoder."""

from __future__ import annotations

import pytest

from stomp_cluster.protocol import (
    CLIENT_COMMANDS,
    SERVER_COMMANDS,
    SUPPORTED_VERSIONS,
    Command,
    Frame,
    FrameReader,
    MalformedFrame,
    Version,
    encode_frame,
    escape,
    unescape,
)

V10, V11, V12 = Version.V1_0, Version.V1_1, Version.V1_2


# Versions and commands.


@pytest.mark.parametrize(
    ("version", "subprotocol"), [(V10, "v10.stomp"), (V11, "v11.stomp"), (V12, "v12.stomp")]
)
def test_version_maps_to_and_from_its_websocket_subprotocol(version, subprotocol):
    assert version.subprotocol == subprotocol
    assert Version.from_subprotocol(subprotocol) is version


def test_unknown_subprotocol_is_no_version():
    assert Version.from_subprotocol("v13.stomp") is None
    assert Version.from_subprotocol("mqtt") is None


def test_supported_versions_are_ascending():
    assert SUPPORTED_VERSIONS == (V10, V11, V12)


def test_commands_are_client_or_server_commands():
    assert CLIENT_COMMANDS.isdisjoint(SERVER_COMMANDS)
    assert CLIENT_COMMANDS | SERVER_COMMANDS == set(Command)
    assert {c.value for c in SERVER_COMMANDS} == {"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}
    assert all(command.value == command.name for command in Command)


# Frame.


def test_get_returns_the_first_of_repeated_headers():
    # "The value of the foo header is just World." (1.2, Repeated Header Entries)
    frame = Frame(Command.MESSAGE, (("foo", "World"), ("foo", "Hello")))
    assert frame.get("foo") == "World"
    assert frame.headers == (("foo", "World"), ("foo", "Hello"))


def test_header_map_keeps_wire_order_and_the_first_of_repeated_headers():
    frame = Frame(Command.SEND, (("b", "1"), ("a", "2"), ("b", "3")))
    assert list(frame.header_map().items()) == [("b", "1"), ("a", "2")]


def test_get_returns_default_when_absent():
    frame = Frame(Command.SEND)
    assert frame.get("destination") is None
    assert frame.get("destination", "/queue/a") == "/queue/a"


def test_frames_are_values():
    assert Frame(Command.SEND, (("a", "1"),), b"x") == Frame(Command.SEND, (("a", "1"),), b"x")
    with pytest.raises(AttributeError):
        Frame(Command.SEND).body = b"y"  # type: ignore[misc]


def test_str_never_shows_credentials():
    frame = Frame(
        Command.CONNECT,
        (("login", "alice"), ("passcode", "s3cret"), ("host", "example.com")),
    )
    text = str(frame)
    assert "s3cret" not in text and "alice" not in text
    assert text == "CONNECT login='***' passcode='***' host='example.com'"
    assert "s3cret" not in repr(frame) and "alice" not in repr(frame)


def test_str_shortens_long_bodies():
    frame = Frame(Command.SEND, (("destination", "/queue/a"),), b"x" * 65)
    assert str(frame) == "SEND destination='/queue/a' body=" + repr(b"x" * 64) + "...[65 bytes]"


def test_str_shows_short_bodies_whole():
    assert str(Frame(Command.SEND, (), b"x" * 64)) == "SEND body=" + repr(b"x" * 64)
    assert str(Frame(Command.DISCONNECT)) == "DISCONNECT"


def test_repr_shows_the_whole_frame():
    frame = Frame(Command.SEND, (("destination", "/queue/a"),), b"x" * 100)
    assert repr(frame) == (
        f"Frame(command=Command.SEND, headers=(('destination', '/queue/a'),), body={b'x' * 100!r})"
    )


# Escaping.


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a:b", "a\\cb"),
        ("line\nfeed", "line\\nfeed"),
        ("back\\slash", "back\\\\slash"),
        ("\\n", "\\\\n"),  # a literal backslash-n is not a line feed
    ],
)
@pytest.mark.parametrize("version", [V11, V12])
def test_escape_colon_line_feed_and_backslash_from_1_1(version, raw, escaped):
    assert escape(raw, version) == escaped
    assert unescape(escaped, version) == raw


def test_escape_carriage_return_only_in_1_2():
    # 1.2: "\r (octet 92 and 114) translates to carriage return (octet 13)"
    assert escape("a\rb", V12) == "a\\rb"
    assert unescape("a\\rb", V12) == "a\rb"
    # 1.1 defines no escape for it.
    assert escape("a\rb", V11) == "a\rb"


def test_1_0_escapes_nothing():
    assert escape("a:b\\c\nd", V10) == "a:b\\c\nd"
    assert unescape("a\\cb\\t", V10) == "a\\cb\\t"


@pytest.mark.parametrize(
    ("version", "value"),
    [
        (V12, "tab\\there"),  # "Undefined escape sequences such as \t ..."
        (V11, "cr\\rhere"),  # 1.1: "Undefined escape sequences such as \r ..."
        (V12, "trailing\\"),
        (V11, "\\x"),
    ],
)
def test_undefined_escape_is_a_fatal_protocol_error(version, value):
    with pytest.raises(MalformedFrame, match="undefined escape sequence"):
        unescape(value, version)


# Encoding.


def test_encode_frame_with_headers_and_body():
    frame = Frame(Command.MESSAGE, (("destination", "/queue/a"), ("message-id", "007")), b"hi")
    assert encode_frame(frame, V12) == (
        b"MESSAGE\ndestination:/queue/a\nmessage-id:007\ncontent-length:2\n\nhi\x00"
    )


def test_encode_frame_without_headers_or_body():
    assert encode_frame(Frame(Command.RECEIPT), V12) == b"RECEIPT\n\n\x00"


def test_encode_frame_keeps_a_matching_content_length():
    frame = Frame(Command.ERROR, (("content-length", "3"), ("message", "x")), b"a\x00b")
    assert encode_frame(frame, V12) == b"ERROR\ncontent-length:3\nmessage:x\n\na\x00b\x00"


@pytest.mark.parametrize("length", ["4", "x", "-3", "٣"])
def test_encode_frame_refuses_a_wrong_content_length(length):
    frame = Frame(Command.ERROR, (("content-length", length),), b"abc")
    with pytest.raises(ValueError, match="does not match"):
        encode_frame(frame, V12)


HEADERS = (("na:me", "line\nfeed"), ("cr", "a\rb"), ("back", "sl\\ash"))


def test_encode_1_2_escapes_names_and_values():
    frame = Frame(Command.MESSAGE, HEADERS)
    assert encode_frame(frame, V12) == (
        b"MESSAGE\nna\\cme:line\\nfeed\ncr:a\\rb\nback:sl\\\\ash\n\n\x00"
    )


def test_encode_1_1_replaces_carriage_returns_it_cannot_escape():
    frame = Frame(Command.MESSAGE, (*HEADERS, ("c\rr", "x")))
    assert encode_frame(frame, V11) == (
        b"MESSAGE\nna\\cme:line\\nfeed\ncr:a b\nback:sl\\\\ash\nc r:x\n\n\x00"
    )


@pytest.mark.parametrize("version", [None, V10])
def test_encode_without_escaping_replaces_delimiters(version):
    frame = Frame(Command.MESSAGE, (*HEADERS, ("plain", "a:b")))
    assert encode_frame(frame, version) == (
        b"MESSAGE\nna me:line feed\ncr:a b\nback:sl\\ash\nplain:a:b\n\n\x00"
    )


@pytest.mark.parametrize("command", [Command.CONNECT, Command.STOMP, Command.CONNECTED])
def test_connect_family_is_never_escaped(command):
    # "The CONNECT and CONNECTED frames do not escape the carriage return, line feed or
    # colon octets in order to remain backward compatible with STOMP 1.0."
    frame = Frame(command, (("login", "a:b\\c"), ("host", "x\ny")))
    name = command.value.encode()
    assert encode_frame(frame, V12) == name + b"\nlogin:a:b\\c\nhost:x y\n\n\x00"


# Round trips through the reader, for every command and version.


def decode(data: bytes, version: Version | None) -> Frame:
    reader = FrameReader(
        max_frame_size=1 << 20,
        max_body_size=1 << 20,
        max_headers=100,
        max_header_length=1 << 16,
        commands=CLIENT_COMMANDS | SERVER_COMMANDS,
    )
    reader.version = version
    reader.feed(data)
    frame = reader.next_frame()
    assert reader.next_frame() is None
    assert frame is not None
    return frame


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("version", [None, V10, V11, V12])
def test_round_trip_of_every_command_and_version(command, version):
    if version in (V11, V12) and command not in (Command.CONNECT, Command.STOMP, Command.CONNECTED):
        # Characters that need escaping survive where the version can escape them.
        value = "a:b\\c\nd" + ("\re" if version is V12 else "")
    else:
        value = "a:b\\c d"
    frame = Frame(
        command,
        (("x-name", value), ("x-name", "second"), ("pad", "  spaces  "), ("content-length", "5")),
        b"he\x00lo",
    )
    assert decode(encode_frame(frame, version), version) == frame


def test_round_trip_adds_content_length_to_a_body():
    frame = Frame(Command.SEND, (("destination", "/queue/a"),), b"\x00binary\x00")
    decoded = decode(encode_frame(frame, V12), V12)
    assert decoded.body == frame.body
    assert decoded.headers == (*frame.headers, ("content-length", "8"))
