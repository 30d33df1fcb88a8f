"""PreparedMessage and MessageEncoder: MESSAGEs encoded with what repeats kept, byte for
byte the same as encode_frame."""

from __future__ import annotations

import logging

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from stomp_cluster.protocol import (
    Command,
    Frame,
    FrameReader,
    MessageEncoder,
    PreparedMessage,
    SubscribeRequested,
    Version,
    encode_frame,
)
from tests.support.protocol import connected

# No NUL: a STOMP frame cannot carry one in a header (it ends the frame), and the reader
# refuses it; the server never puts one in a header it makes.
_chars = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.text(_chars, min_size=1, max_size=12)
headers = st.lists(st.tuples(text, st.text(_chars, max_size=12)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=64),
    extra=headers,
    head=st.tuples(text, text, text),
    version=st.sampled_from(list(Version)),
)
def test_encoding_is_the_whole_frames_encoding(body, extra, head, version):
    prepared = PreparedMessage(body, tuple(extra))
    head_headers = (("destination", head[0]), ("message-id", head[1]), ("subscription", head[2]))
    expected = encode_frame(prepared.frame(head_headers), version)

    assert prepared.encode(head_headers, version) == expected
    assert prepared.encode(head_headers, version) == expected  # from the cached tail


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=16),
    destination=text,
    sub_id=text,
    message_id=st.text(_chars, max_size=12),
    ack=st.one_of(st.none(), st.text(_chars, max_size=12)),
    version=st.sampled_from(list(Version)),
)
def test_message_encoder_gives_encode_frames_bytes(
    body, destination, sub_id, message_id, ack, version
):
    encoder = MessageEncoder(version)
    prepared = PreparedMessage(body, (("content-type", "text/plain"),))
    head = (("destination", destination), ("message-id", message_id), ("subscription", sub_id))
    if ack is not None:
        head += (("ack", ack),)
    expected = encode_frame(prepared.frame(head), version)

    assert encoder.encode(prepared, destination, sub_id, message_id, ack) == expected
    # Again, from the kept head lines.
    assert encoder.encode(prepared, destination, sub_id, message_id, ack) == expected


def test_reserved_headers_are_dropped_and_the_rest_kept_in_order():
    prepared = PreparedMessage(
        b"x",
        (
            ("content-type", "text/plain"),
            ("message-id", "forged"),
            ("subscription", "forged"),
            ("content-length", "99"),
            ("x-a", "1"),
        ),
    )
    assert prepared.headers == (("content-type", "text/plain"), ("x-a", "1"))
    frame = prepared.frame((("destination", "/topic/a"),))
    assert frame.headers[0] == ("destination", "/topic/a")
    assert frame.get("content-length") is None  # added by the encoder, from the body


def test_a_connection_sends_one_prepared_message_to_each_subscription_as_its_own_frame(caplog):
    caplog.set_level(logging.DEBUG, logger="stomp_cluster.protocol.connection")
    conn = connected(Version.V1_2)
    conn.receive_data(
        b"SUBSCRIBE\nid:a\ndestination:/topic/t\n\n\0SUBSCRIBE\nid:b\ndestination:/topic/t\n\n\0"
    )
    subs = [e.subscription.id for e in conn.events_received() if isinstance(e, SubscribeRequested)]
    conn.data_to_send()
    prepared = PreparedMessage(b"hello", (("content-type", "text/plain"),))

    for sub in subs:
        conn.send_message(sub, prepared)

    reader = _reader(Version.V1_2)
    reader.feed(b"".join(conn.data_to_send()))
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    assert [f.get("subscription") for f in frames] == ["a", "b"]
    assert [f.get("message-id") for f in frames] == ["1", "2"]
    assert all(f.body == b"hello" and f.get("content-type") == "text/plain" for f in frames)
    assert all(isinstance(f, Frame) and f.command is Command.MESSAGE for f in frames)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("> MESSAGE")]
    assert len(logged) == 2 and "subscription" in logged[0]


@settings(max_examples=200, deadline=None)
@given(
    destination=text,
    sub_id=text,
    message_id=st.one_of(st.none(), text),
    ack=st.sampled_from(["auto", "client", "client-individual"]),
    version=st.sampled_from(list(Version)),
    body=st.binary(max_size=16),
)
# Whatever Hypothesis draws, the kept-head path and the general one are both taken.
@example("/topic/a", "0", None, "client", Version.V1_2, b"x")
@example("/topic/a:b", "0\\1", "m:1", "client-individual", Version.V1_2, b"")
def test_a_connection_encodes_each_message_as_encode_frame_would(
    destination, sub_id, message_id, ack, version, body
):
    # The connection keeps the escaped destination and subscription lines per
    # subscription; whatever the ids, the bytes must be encode_frame's.
    conn = connected(version)
    subscription = Frame(
        Command.SUBSCRIBE, (("id", sub_id), ("destination", destination), ("ack", ack))
    )
    conn.receive_data(encode_frame(subscription, version))
    events = conn.events_received()
    if not any(isinstance(e, SubscribeRequested) for e in events):
        event("refused")
        return  # an id or destination this version cannot carry: refused, nothing to send
    event("sent")
    parsed = next(e for e in events if isinstance(e, SubscribeRequested)).subscription
    conn.data_to_send()
    prepared = PreparedMessage(body, (("content-type", "text/plain"),))

    for _ in range(2):  # the second one uses the kept head
        sent = conn.send_message(parsed.id, prepared, message_id=message_id)
        assert sent is not None
        (frame_bytes,) = conn.data_to_send()
        head = [
            ("destination", parsed.destination),
            ("message-id", sent),
            ("subscription", parsed.id),
        ]
        if ack != "auto" and version is Version.V1_2:
            ack_header = [h for h in _reparse(frame_bytes, version).headers if h[0] == "ack"]
            head += ack_header
        assert frame_bytes == encode_frame(prepared.frame(tuple(head)), version)


def _reader(version: Version) -> FrameReader:
    reader = FrameReader(
        commands=frozenset(Command),
        max_frame_size=1 << 16,
        max_body_size=1 << 16,
        max_headers=100,
        max_header_length=1 << 12,
    )
    reader.version = version
    return reader


def _reparse(data: bytes, version: Version) -> Frame:
    reader = _reader(version)
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None
    return frame


def test_the_kept_heads_stay_bounded_as_subscriptions_come_and_go():
    encoder = MessageEncoder(Version.V1_2)
    prepared = PreparedMessage(b"x")
    for i in range(300):
        data = encoder.encode(prepared, f"/topic/{i}", str(i), str(i + 1))
        assert data.startswith(f"MESSAGE\ndestination:/topic/{i}\nmessage-id:{i + 1}\n".encode())
        assert len(encoder._heads) <= 256


def test_a_connection_keeps_sending_as_subscriptions_come_and_go():
    conn = connected(Version.V1_2)
    prepared = PreparedMessage(b"x")
    for i in range(300):
        conn.receive_data(f"SUBSCRIBE\nid:{i}\ndestination:/topic/{i}\n\n\0".encode())
        conn.events_received()
        conn.send_message(str(i), prepared)
        conn.receive_data(f"UNSUBSCRIBE\nid:{i}\n\n\0".encode())
        conn.events_received()
    frames = [f for f in conn.data_to_send() if f.startswith(b"MESSAGE")]
    assert len(frames) == 300
    assert frames[-1].startswith(b"MESSAGE\ndestination:/topic/299\nmessage-id:300\n")
