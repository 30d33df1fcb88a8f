"""Conversations with the server-side state machine, in literal bytes."""

from __future__ import annotations

import logging

import pytest

from stomp_cluster.protocol import (
    AckMode,
    AckRequested,
    Command,
    ConnectRequested,
    DisconnectRequested,
    Frame,
    FrameTooLarge,
    InvalidState,
    Limits,
    NackRequested,
    ProtocolFailed,
    ReceiptRequested,
    SendRequested,
    State,
    StompConnection,
    SubscribeRequested,
    Subscription,
    UnsubscribeRequested,
    UnsupportedVersion,
    Version,
)
from tests.support.protocol import (
    CONNECT,
    assert_error_and_close,
    assert_frames_sent,
    connected,
    parse,
)

V10, V11, V12 = Version.V1_0, Version.V1_1, Version.V1_2
ALL_VERSIONS = [V10, V11, V12]


def subscribe(conn: StompConnection, sub_id: str = "0", ack: str = "auto", dest: str = "/q/a"):
    conn.receive_data(f"SUBSCRIBE\nid:{sub_id}\ndestination:{dest}\nack:{ack}\n\n\x00")
    [event] = conn.events_received()
    assert isinstance(event, SubscribeRequested)
    return event.subscription


def ack_frame(version: Version, message_id: str, sub_id: str = "0", command: str = "ACK"):
    """An ACK/NACK as a client of ``version`` writes it for a MESSAGE it received."""
    if version is V12:
        return f"{command}\nid:{message_id}\n\n\x00".encode()
    return f"{command}\nmessage-id:{message_id}\nsubscription:{sub_id}\n\n\x00".encode()


# Connecting and version negotiation.


def test_connect_then_connected():
    conn = StompConnection(heartbeat=(10000, 10000))
    conn.receive_data(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\x00")
    [event] = conn.events_received()
    assert event == ConnectRequested(
        Frame(Command.CONNECT, (("accept-version", "1.2"), ("host", "stomp.github.org"))),
        V12,
        "stomp.github.org",
        None,
        None,
        (0, 0),
    )
    assert conn.state is State.CONNECT_PENDING and conn.version is V12
    assert_frames_sent(conn)
    conn.accept_connect(session="s1", server="stomp_cluster/0.1")
    assert conn.state is State.CONNECTED
    assert_frames_sent(
        conn,
        b"CONNECTED\nversion:1.2\nsession:s1\nserver:stomp_cluster/0.1\n"
        b"heart-beat:10000,10000\n\n\x00",
    )


def test_connect_picks_the_highest_common_version():
    # The spec's example: "accept-version:1.0,1.1,2.0" gets "version:1.1".
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.0,1.1,2.0\nhost:stomp.github.org\n\n\x00")
    [event] = conn.events_received()
    assert event.version is V11
    conn.accept_connect(session="s1")
    assert_frames_sent(conn, b"CONNECTED\nversion:1.1\nsession:s1\nheart-beat:10000,10000\n\n\x00")


def test_connect_accept_version_may_have_spaces():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.0, 1.1\n\n\x00")
    assert conn.events_received()[0].version is V11


def test_connect_without_accept_version_is_1_0():
    # "If the accept-version header is missing, it means that the client only supports
    # version 1.0 of the protocol."
    conn = StompConnection(heartbeat=(5000, 5000))
    conn.receive_data(b"CONNECT\nlogin:alice\npasscode:secret\n\n\x00")
    [event] = conn.events_received()
    assert (event.version, event.login, event.passcode, event.host) == (
        V10,
        "alice",
        "secret",
        None,
    )
    conn.accept_connect(session="s1")
    # 1.0 has neither version nor heart-beat headers.
    assert_frames_sent(conn, b"CONNECTED\nsession:s1\n\n\x00")
    assert conn.heartbeat_intervals == (0, 0)


def test_connect_without_accept_version_uses_the_websocket_subprotocol():
    conn = StompConnection(subprotocol=V12)
    conn.receive_data(b"CONNECT\nhost:localhost\n\n\x00")
    assert conn.events_received()[0].version is V12


def test_stomp_is_an_alias_of_connect():
    # "STOMP servers MUST handle a STOMP frame in the same manner as a CONNECT frame."
    conn = StompConnection()
    conn.receive_data(b"STOMP\naccept-version:1.2\nhost:localhost\n\n\x00")
    [event] = conn.events_received()
    assert event.frame.command is Command.STOMP and event.version is V12


def test_connect_event_hides_the_passcode():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nlogin:alice\npasscode:s3cret\n\n\x00")
    [event] = conn.events_received()
    assert event.passcode == "s3cret"
    assert "s3cret" not in repr(event)


def test_connect_with_no_common_version_sends_error_and_closes():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:2.0,2.1\nhost:localhost\n\n\x00")
    events = conn.events_received()
    assert isinstance(events[-1].error, UnsupportedVersion)
    error = assert_error_and_close(
        conn, "Supported protocol versions are 1.0,1.1,1.2", events=events
    )
    assert error.get("version") == "1.0,1.1,1.2"
    assert error.get("content-type") == "text/plain"


def test_supported_versions_can_be_restricted():
    conn = StompConnection(supported_versions=[V12])
    conn.receive_data(b"CONNECT\naccept-version:1.0,1.1\n\n\x00")
    error = assert_error_and_close(conn, "Supported protocol versions are 1.2")
    assert error.get("version") == "1.2"


def test_1_0_client_refused_when_1_0_is_not_supported():
    conn = StompConnection(supported_versions=[V11, V12])
    conn.receive_data(b"CONNECT\n\n\x00")
    assert_error_and_close(conn, "Supported protocol versions are 1.1,1.2")


def test_connect_heart_beat_is_negotiated():
    conn = StompConnection(heartbeat=(10000, 10000))
    conn.receive_data(b"CONNECT\naccept-version:1.1\nheart-beat:5000,20000\n\n\x00")
    [event] = conn.events_received()
    assert event.heartbeat == (5000, 20000)
    assert conn.heartbeat_intervals == (0, 0)  # until accepted
    conn.accept_connect(session="s1")
    assert conn.heartbeat_intervals == (20000, 10000)


def test_connect_with_malformed_heart_beat_sends_error_and_closes():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nheart-beat:soon\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "invalid heart-beat header", receipt_id="r1")


def test_heart_beat_header_means_nothing_in_1_0():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\nheart-beat:soon\n\n\x00")
    [event] = conn.events_received()
    assert event.heartbeat == (0, 0)


def test_connect_receipt_is_answered_by_connected():
    # "Any client frame other than CONNECT MAY specify a receipt header"
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nreceipt:r1\n\n\x00")
    assert [type(event) for event in conn.events_received()] == [ConnectRequested]


def test_frames_after_connect_wait_until_it_is_accepted():
    conn = StompConnection()
    conn.receive_data(CONNECT + b"SEND\ndestination:/q/a\nx:a\\cb\n\nhi\x00")
    assert [type(event) for event in conn.events_received()] == [ConnectRequested]
    assert conn.events_received() == []
    conn.accept_connect(session="s1")
    [event] = conn.events_received()
    # Parsed with 1.2 escaping, which was only known once accepted.
    assert event.frame.get("x") == "a:b"


def test_connect_headers_are_not_unescaped():
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nlogin:a\\cb\n\n\x00")
    assert conn.events_received()[0].login == "a\\cb"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_text_websocket_messages_are_utf8(version):
    conn = connected(version)
    conn.receive_data("SEND\ndestination:/q/é\n\nbody ✓\x00")
    [event] = conn.events_received()
    assert event.destination == "/q/é" and event.frame.body == "body ✓".encode()


def test_accept_connect_is_only_for_a_pending_connect():
    conn = StompConnection()
    with pytest.raises(InvalidState):
        conn.accept_connect(session="s1")
    conn = connected()
    with pytest.raises(InvalidState):
        conn.accept_connect(session="s1")


def test_send_receipt_before_accepting_is_our_bug():
    conn = StompConnection()
    conn.receive_data(CONNECT)
    conn.events_received()
    with pytest.raises(InvalidState):
        conn.send_receipt("r1")


# Malformed input: exactly one ERROR, then close.


@pytest.mark.parametrize("command", [b"SEND", b"SUBSCRIBE", b"DISCONNECT"])
def test_frame_before_connect_sends_error_and_closes(command):
    conn = StompConnection()
    conn.receive_data(command + b"\ndestination:/q/a\nreceipt:r1\n\n\x00")
    error = assert_error_and_close(
        conn, f"expected CONNECT frame, got {command.decode()}", receipt_id="r1"
    )
    assert error.body == b"The first frame of a connection must be CONNECT or STOMP."


def test_unknown_command_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"FOO\nreceipt:r1\n\n\x00")
    error = assert_error_and_close(conn, "unknown command 'FOO'")
    assert error.body.startswith(b"expected one of ABORT, ACK")


def test_second_connect_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nreceipt:r2\n\n\x00")
    assert_error_and_close(conn, "already connected", receipt_id="r2")


def test_header_line_without_colon_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"SEND\nreceipt:r1\ndestination\n\n\x00")
    error = assert_error_and_close(conn, "header line without colon", receipt_id="r1")
    assert error.body == b"got b'destination'"


def test_invalid_utf8_in_headers_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"SEND\ndestination:/q/\xff\n\n\x00")
    assert_error_and_close(conn, "invalid UTF-8 in header")


def test_bad_content_length_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"SEND\ndestination:/q/a\ncontent-length:-1\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "invalid content-length header", receipt_id="r1")


def test_undefined_escape_sends_error_and_closes():
    conn = connected(V12)
    conn.receive_data(b"SEND\ndestination:/q/\\t\n\n\x00")
    assert_error_and_close(conn, "undefined escape sequence '\\\\t' in header")


def test_error_before_connected_is_not_escaped():
    conn = StompConnection()
    conn.receive_data(b"A:B\n\n\x00")
    assert isinstance(conn.events_received()[-1], ProtocolFailed)
    assert conn.data_to_send() == [
        b"ERROR\nmessage:unknown command 'A:B'\ncontent-type:text/plain\ncontent-length:105\n\n"
        b"expected one of ABORT, ACK, BEGIN, COMMIT, CONNECT, DISCONNECT, NACK, SEND, "
        b"STOMP, SUBSCRIBE, UNSUBSCRIBE\x00"
    ]


def test_error_after_connected_is_escaped():
    conn = connected(V12)
    conn.receive_data(b"A:B\n\n\x00")
    conn.events_received()
    [data] = conn.data_to_send()
    assert data.startswith(b"ERROR\nmessage:unknown command 'A\\cB'\n")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_send_without_destination_sends_error_and_closes(version):
    conn = connected(version)
    conn.receive_data(b"SEND\nreceipt:r1\n\nhello\x00")
    error = assert_error_and_close(conn, "missing destination header in SEND", receipt_id="r1")
    assert error.body == b"SEND frames require a non-empty destination header."


def test_frames_before_the_bad_one_still_produce_events():
    conn = connected()
    conn.receive_data(b"SEND\ndestination:/q/a\nreceipt:r1\n\n\x00SEND\n\n\x00SEND\n\n\x00")
    events = conn.events_received()
    assert [type(event) for event in events] == [SendRequested, ReceiptRequested, ProtocolFailed]
    # The consumer answers the receipt; the ERROR still goes last.
    conn.send_receipt("r1")
    data = conn.data_to_send()
    assert data[0] == b"RECEIPT\nreceipt-id:r1\n\n\x00"
    assert data[1].startswith(b"ERROR\n") and len(data) == 2


def test_body_size_limit_sends_error_and_closes():
    conn = connected(limits=Limits(max_body_size=4))
    conn.receive_data(b"SEND\ndestination:/q/a\ncontent-length:5\nreceipt:r1\n\nhello\x00")
    events = conn.events_received()
    assert isinstance(events[-1].error, FrameTooLarge)
    assert_error_and_close(
        conn, "body of 5 bytes exceeds limit of 4", receipt_id="r1", events=events
    )


def test_frame_size_limit_sends_error_and_closes():
    conn = connected(limits=Limits(max_frame_size=50))
    conn.receive_data(b"SEND\ndestination:/q/a\n\n" + b"x" * 40)
    assert_error_and_close(conn, "frame of at least 51 bytes exceeds limit of 50")


def test_header_count_limit_sends_error_and_closes():
    conn = connected(limits=Limits(max_headers=2))
    conn.receive_data(b"SEND\nreceipt:r1\ndestination:/q/a\nx:y\n\n\x00")
    assert_error_and_close(conn, "too many headers: limit is 2", receipt_id="r1")


def test_header_length_limit_sends_error_and_closes():
    conn = connected(limits=Limits(max_header_length=20))
    conn.receive_data(b"SEND\ndestination:/q/" + b"a" * 20 + b"\n\n\x00")
    assert_error_and_close(conn, "header line longer than 20 bytes")


# SUBSCRIBE and UNSUBSCRIBE.


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_subscribe(version):
    conn = connected(version)
    conn.receive_data(b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\x00")
    [event] = conn.events_received()
    headers = (("id", "0"), ("destination", "/queue/foo"), ("ack", "client"))
    subscription = Subscription("0", "/queue/foo", AckMode.CLIENT)
    assert event == SubscribeRequested(subscription, Frame(Command.SUBSCRIBE, headers))
    assert conn.subscriptions == {"0": subscription}


def test_subscribe_ack_defaults_to_auto():
    # "If the header is not set, it defaults to auto."
    conn = connected()
    conn.receive_data(b"SUBSCRIBE\nid:0\ndestination:/q/a\n\n\x00")
    assert conn.events_received()[0].subscription.ack is AckMode.AUTO


def test_subscriptions_is_a_read_only_view():
    conn = connected()
    subscribe(conn)
    with pytest.raises(TypeError):
        conn.subscriptions["1"] = None  # type: ignore[index]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_subscribe_without_destination_sends_error_and_closes(version):
    conn = connected(version)
    conn.receive_data(b"SUBSCRIBE\nid:0\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "missing destination header in SUBSCRIBE", receipt_id="r1")


@pytest.mark.parametrize("version", [V11, V12])
def test_subscribe_without_id_sends_error_and_closes(version):
    # "an id header MUST be included in the frame to uniquely identify the subscription"
    conn = connected(version)
    conn.receive_data(b"SUBSCRIBE\ndestination:/q/a\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "missing id header in SUBSCRIBE", receipt_id="r1")


def test_subscribe_without_id_in_1_0_uses_the_destination():
    conn = connected(V10)
    conn.receive_data(b"SUBSCRIBE\ndestination:/q/a\n\n\x00")
    assert conn.events_received()[0].subscription.id == "/q/a"


def test_subscribe_with_invalid_ack_mode_sends_error_and_closes():
    conn = connected()
    conn.receive_data(b"SUBSCRIBE\nid:0\ndestination:/q/a\nack:sometimes\n\n\x00")
    error = assert_error_and_close(conn, "invalid ack mode 'sometimes'")
    assert b"auto, client, or client-individual" in error.body


def test_subscribe_with_duplicate_id_sends_error_and_closes():
    # "Within the same connection, different subscriptions MUST use different subscription
    # identifiers."
    conn = connected()
    subscribe(conn, "0")
    conn.receive_data(b"SUBSCRIBE\nid:0\ndestination:/q/b\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "subscription id '0' already in use", receipt_id="r1")


def test_too_many_subscriptions_sends_error_and_closes():
    conn = connected(limits=Limits(max_subscriptions=2))
    subscribe(conn, "0")
    subscribe(conn, "1")
    conn.receive_data(b"SUBSCRIBE\nid:2\ndestination:/q/a\n\n\x00")
    assert_error_and_close(conn, "too many subscriptions: limit is 2")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unsubscribe(version):
    conn = connected(version)
    subscription = subscribe(conn, "0")
    conn.receive_data(b"UNSUBSCRIBE\nid:0\n\n\x00")
    [event] = conn.events_received()
    assert event == UnsubscribeRequested(subscription, Frame(Command.UNSUBSCRIBE, (("id", "0"),)))
    assert conn.subscriptions == {}


def test_unsubscribe_by_destination_in_1_0():
    # 1.0: "It requires either a destination header or an id header"
    conn = connected(V10)
    subscribe(conn, "0", dest="/q/a")
    subscription = subscribe(conn, "1", dest="/q/b")
    conn.receive_data(b"UNSUBSCRIBE\ndestination:/q/b\n\n\x00")
    assert conn.events_received()[0].subscription == subscription
    assert list(conn.subscriptions) == ["0"]


def test_unsubscribe_from_unknown_destination_in_1_0_sends_error_and_closes():
    conn = connected(V10)
    conn.receive_data(b"UNSUBSCRIBE\ndestination:/q/b\n\n\x00")
    assert_error_and_close(conn, "unknown subscription to '/q/b'")


@pytest.mark.parametrize("version", [V11, V12])
def test_unsubscribe_without_id_sends_error_and_closes(version):
    conn = connected(version)
    subscribe(conn, "0")
    conn.receive_data(b"UNSUBSCRIBE\ndestination:/q/a\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "missing id header in UNSUBSCRIBE", receipt_id="r1")


def test_unsubscribe_unknown_id_sends_error_and_closes():
    # "This header MUST match the subscription identifier of an existing subscription."
    conn = connected()
    conn.receive_data(b"UNSUBSCRIBE\nid:7\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "unknown subscription id '7'", receipt_id="r1")


# MESSAGE.


def test_send_message_in_1_2_with_client_ack():
    conn = connected(V12)
    subscribe(conn, "0", "client")
    assert conn.send_message("0", b"hello queue a", headers=(("content-type", "text/plain"),))
    assert_frames_sent(
        conn,
        b"MESSAGE\ndestination:/q/a\nmessage-id:1\nsubscription:0\nack:1\n"
        b"content-type:text/plain\ncontent-length:13\n\nhello queue a\x00",
    )


@pytest.mark.parametrize("version", [V10, V11])
def test_send_message_before_1_2_has_no_ack_header(version):
    conn = connected(version)
    subscribe(conn, "0", "client")
    assert conn.send_message("0", b"") == "1"
    assert_frames_sent(conn, b"MESSAGE\ndestination:/q/a\nmessage-id:1\nsubscription:0\n\n\x00")


def test_send_message_to_an_auto_subscription_has_no_ack_header():
    conn = connected(V12)
    subscribe(conn, "0")
    conn.send_message("0", b"x", message_id="m-1", destination="/topic/other")
    assert_frames_sent(
        conn,
        b"MESSAGE\ndestination:/topic/other\nmessage-id:m-1\nsubscription:0\n"
        b"content-length:1\n\nx\x00",
    )


def test_send_message_drops_reserved_headers_and_escapes_the_rest():
    conn = connected(V12)
    subscribe(conn, "0")
    headers = (
        ("destination", "/evil"),
        ("message-id", "evil"),
        ("subscription", "evil"),
        ("ack", "evil"),
        ("content-length", "999"),
        ("x-user", "a:b\nc"),
    )
    conn.send_message("0", b"hi", headers=headers)
    assert_frames_sent(
        conn,
        b"MESSAGE\ndestination:/q/a\nmessage-id:1\nsubscription:0\nx-user:a\\cb\\nc\n"
        b"content-length:2\n\nhi\x00",
    )


def test_send_message_to_a_gone_subscription_does_nothing():
    conn = connected()
    assert conn.send_message("nope", b"x") is None
    assert_frames_sent(conn)


def test_send_message_before_connected_does_nothing():
    conn = StompConnection()
    assert conn.send_message("0", b"x") is None
    assert_frames_sent(conn)


def test_too_many_unacknowledged_messages_sends_error_and_closes():
    conn = connected(limits=Limits(max_pending_acks=2))
    subscribe(conn, "0", "client-individual")
    subscribe(conn, "1", "auto")
    assert conn.send_message("0", b"a") == "1"
    assert conn.send_message("0", b"b") == "2"
    assert conn.send_message("1", b"auto messages need no ack") == "3"
    assert conn.send_message("0", b"c") is None
    assert conn.state is State.CLOSING
    data = conn.data_to_send()
    assert len(data) == 4
    error = parse(data[-1], V12)
    assert error.get("message") == "too many unacknowledged messages: limit is 2"


# ACK and NACK.


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(
    ("command", "event_type"), [("ACK", AckRequested), ("NACK", NackRequested)]
)
def test_ack_and_nack_in_each_version(version, command, event_type):
    conn = connected(version)
    subscription = subscribe(conn, "0", "client-individual")
    conn.send_message("0", b"x", message_id="m1")
    conn.receive_data(ack_frame(version, "m1", command=command))
    [event] = conn.events_received()
    if version is V12:
        headers = (("id", "m1"),)
    else:
        headers = (("message-id", "m1"), ("subscription", "0"))
    assert event == event_type(subscription, ("m1",), None, Frame(Command(command), headers))


def test_ack_in_1_0_without_subscription():
    # 1.0: "ACK has one required header, message-id"
    conn = connected(V10)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x", message_id="m1")
    conn.receive_data(b"ACK\nmessage-id:m1\n\n\x00")
    assert conn.events_received()[0].message_ids == ("m1",)


def test_client_ack_is_cumulative():
    # "the acknowledgment operates on the message specified in the ACK frame and all
    # messages sent to the subscription before the ACK'ed message"
    conn = connected(V12)
    subscribe(conn, "0", "client")
    subscribe(conn, "1", "client")
    for sub_id in "0101":
        conn.send_message(sub_id, b"x")
    conn.receive_data(b"ACK\nid:3\n\n\x00")
    assert conn.events_received()[0].message_ids == ("1", "3")
    conn.receive_data(b"NACK\nid:4\n\n\x00")
    assert conn.events_received()[0].message_ids == ("2", "4")
    conn.receive_data(b"ACK\nid:1\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '1'")


def test_client_individual_ack_is_not_cumulative():
    # "an ACK or NACK frame for a subsequent message MUST NOT cause a previous message to
    # get acknowledged"
    conn = connected(V12)
    subscribe(conn, "0", "client-individual")
    conn.send_message("0", b"x")
    conn.send_message("0", b"x")
    conn.receive_data(b"ACK\nid:2\n\n\x00ACK\nid:1\n\n\x00")
    events = conn.events_received()
    assert [event.message_ids for event in events] == [("2",), ("1",)]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ack_for_unknown_message_sends_error_and_closes(version):
    conn = connected(version)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x", message_id="41")
    conn.receive_data(ack_frame(version, "42")[:-2] + b"receipt:r1\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '42'", receipt_id="r1")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ack_twice_sends_error_and_closes(version):
    conn = connected(version)
    subscribe(conn, "0", "client-individual")
    conn.send_message("0", b"x")
    conn.receive_data(ack_frame(version, "1"))
    conn.events_received()
    conn.receive_data(ack_frame(version, "1", command="NACK"))
    assert_error_and_close(conn, "NACK for unknown message id '1'")


def test_ack_of_an_auto_message_sends_error_and_closes():
    conn = connected(V12)
    subscribe(conn, "0", "auto")
    conn.send_message("0", b"x")
    conn.receive_data(b"ACK\nid:1\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '1'")


def test_ack_on_the_wrong_subscription_sends_error_and_closes():
    conn = connected(V11)
    subscribe(conn, "0", "client")
    subscribe(conn, "1", "client")
    conn.send_message("0", b"x")
    conn.receive_data(b"ACK\nmessage-id:1\nsubscription:1\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '1'")


@pytest.mark.parametrize(
    ("version", "frame", "message"),
    [
        (V12, b"ACK\nmessage-id:1\nsubscription:0\n\n\x00", "missing id header in ACK"),
        (V11, b"ACK\nid:1\n\n\x00", "missing message-id header in ACK"),
        (V11, b"NACK\nmessage-id:1\n\n\x00", "missing subscription header in NACK"),
        (V10, b"ACK\nsubscription:0\n\n\x00", "missing message-id header in ACK"),
    ],
)
def test_ack_without_required_headers_sends_error_and_closes(version, frame, message):
    conn = connected(version)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.receive_data(frame)
    assert_error_and_close(conn, message)


def test_unsubscribe_drops_pending_acks():
    conn = connected(V12)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.receive_data(b"UNSUBSCRIBE\nid:0\n\n\x00ACK\nid:1\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '1'")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_reused_message_ids_stay_acknowledgeable(version):
    conn = connected(version)
    subscribe(conn, "0", "client-individual")
    subscribe(conn, "1", "client-individual")
    assert conn.send_message("0", b"x", message_id="m") == "m"
    assert conn.send_message("1", b"x", message_id="m") == "m"
    data = conn.data_to_send()
    second = parse(data[1], version)
    if version is V12:
        assert second.get("ack") == "m-1"  # unique within the connection
    conn.receive_data(ack_frame(version, second.get("ack") or "m", sub_id="1"))
    conn.receive_data(ack_frame(version, "m", sub_id="0"))
    events = conn.events_received()
    assert [(e.subscription.id, e.message_ids) for e in events] == [("1", ("m",)), ("0", ("m",))]


# Transactions.


def test_transactional_send_is_delivered_on_commit():
    conn = connected()
    conn.receive_data(
        b"BEGIN\ntransaction:tx1\nreceipt:r1\n\n\x00"
        b"SEND\ndestination:/q/a\ntransaction:tx1\nreceipt:r2\n\nhello\x00"
    )
    # The receipt for a transactional SEND comes when it is buffered.
    assert conn.events_received() == [ReceiptRequested("r1"), ReceiptRequested("r2")]
    conn.receive_data(b"COMMIT\ntransaction:tx1\nreceipt:r3\n\n\x00")
    [send, receipt] = conn.events_received()
    assert (send.destination, send.transaction, send.frame.body) == ("/q/a", "tx1", b"hello")
    assert receipt == ReceiptRequested("r3")


def test_abort_discards_the_transaction():
    conn = connected()
    conn.receive_data(
        b"BEGIN\ntransaction:tx1\n\n\x00SEND\ndestination:/q/a\ntransaction:tx1\n\n\x00"
        b"ABORT\ntransaction:tx1\nreceipt:r1\n\n\x00"
    )
    assert conn.events_received() == [ReceiptRequested("r1")]
    conn.receive_data(b"COMMIT\ntransaction:tx1\n\n\x00")
    assert_error_and_close(conn, "unknown transaction 'tx1'")


def test_disconnect_discards_open_transactions():
    # "Any started transactions which have not been committed will be implicitly aborted
    # if the client sends a DISCONNECT frame"
    conn = connected()
    conn.receive_data(
        b"BEGIN\ntransaction:tx1\n\n\x00SEND\ndestination:/q/a\ntransaction:tx1\n\n\x00"
        b"DISCONNECT\n\n\x00COMMIT\ntransaction:tx1\n\n\x00"
    )
    assert [type(event) for event in conn.events_received()] == [DisconnectRequested]


def test_transactional_ack_is_settled_on_commit():
    conn = connected(V12)
    subscription = subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.send_message("0", b"y")
    conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00ACK\nid:2\ntransaction:t\n\n\x00")
    assert conn.events_received() == []
    conn.receive_data(b"COMMIT\ntransaction:t\n\n\x00")
    [event] = conn.events_received()
    assert event == AckRequested(
        subscription, ("1", "2"), "t", Frame(Command.ACK, (("id", "2"), ("transaction", "t")))
    )


def test_aborted_ack_leaves_the_message_pending():
    conn = connected(V12)
    subscribe(conn, "0", "client-individual")
    conn.send_message("0", b"x")
    conn.receive_data(
        b"BEGIN\ntransaction:t\n\n\x00NACK\nid:1\ntransaction:t\n\n\x00"
        b"ABORT\ntransaction:t\n\n\x00ACK\nid:1\n\n\x00"
    )
    [event] = conn.events_received()
    assert isinstance(event, AckRequested) and event.transaction is None


def test_transactional_ack_of_unknown_message_is_refused_at_once():
    conn = connected(V12)
    conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00ACK\nid:9\ntransaction:t\n\n\x00")
    assert_error_and_close(conn, "ACK for unknown message id '9'")


def test_commit_is_atomic():
    # "any messages sent or acknowledged during a transaction will be processed
    # atomically": a COMMIT that cannot settle an ACK delivers nothing.
    conn = connected(V12)
    subscribe(conn, "0", "client-individual")
    conn.send_message("0", b"x")
    conn.receive_data(
        b"BEGIN\ntransaction:t\n\n\x00"
        b"SEND\ndestination:/q/a\ntransaction:t\n\n\x00"
        b"ACK\nid:1\ntransaction:t\n\n\x00"
        b"ACK\nid:1\n\n\x00"
    )
    assert [type(event) for event in conn.events_received()] == [AckRequested]
    conn.receive_data(b"COMMIT\ntransaction:t\nreceipt:r9\n\n\x00")
    events = conn.events_received()
    assert [type(event) for event in events] == [ProtocolFailed]
    assert_error_and_close(conn, "ACK for unknown message id '1'", receipt_id="r9", events=events)


@pytest.mark.parametrize(
    ("mode", "acks", "settled", "error"),
    [
        ("client-individual", b"1", [("1",)], None),
        ("client-individual", b"11", None, "'1'"),
        ("client", b"21", None, "'1'"),  # 1 is settled by the cumulative ACK of 2
        ("client", b"12", [("1",), ("2",)], None),
    ],
)
def test_commit_checks_acks_in_order(mode, acks, settled, error):
    conn = connected(V12)
    subscribe(conn, "0", mode)
    conn.send_message("0", b"x")
    conn.send_message("0", b"y")
    data = b"BEGIN\ntransaction:t\n\n\x00"
    for ack in acks:
        data += b"ACK\nid:%c\ntransaction:t\n\n\x00" % ack
    conn.receive_data(data + b"COMMIT\ntransaction:t\n\n\x00")
    if error is None:
        # Pinned, not all(...): an empty list would pass all() and hide a COMMIT
        # that settles nothing.
        events = conn.events_received()
        assert [type(e) for e in events] == [AckRequested] * len(settled)
        assert [(e.message_ids, e.transaction) for e in events] == [(s, "t") for s in settled]
    else:
        assert_error_and_close(conn, f"ACK for unknown message id {error}")


def test_commit_after_unsubscribe_sends_error_and_closes():
    conn = connected(V12)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.receive_data(
        b"BEGIN\ntransaction:t\n\n\x00ACK\nid:1\ntransaction:t\n\n\x00"
        b"UNSUBSCRIBE\nid:0\n\n\x00COMMIT\ntransaction:t\n\n\x00"
    )
    events = conn.events_received()
    assert_error_and_close(conn, "ACK for unknown message id '1'", events=events)


@pytest.mark.parametrize("command", [b"BEGIN", b"COMMIT", b"ABORT"])
def test_transaction_header_is_required(command):
    conn = connected()
    conn.receive_data(command + b"\nreceipt:r1\n\n\x00")
    assert_error_and_close(
        conn, f"missing transaction header in {command.decode()}", receipt_id="r1"
    )


def test_begin_twice_sends_error_and_closes():
    # "Within the same connection, different transactions MUST use different transaction
    # identifiers."
    conn = connected()
    conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00BEGIN\ntransaction:t\n\n\x00")
    assert_error_and_close(conn, "transaction 't' already started")


@pytest.mark.parametrize("command", [b"COMMIT", b"ABORT"])
def test_commit_or_abort_of_unknown_transaction_sends_error_and_closes(command):
    conn = connected()
    conn.receive_data(command + b"\ntransaction:nope\nreceipt:r1\n\n\x00")
    assert_error_and_close(conn, "unknown transaction 'nope'", receipt_id="r1")


@pytest.mark.parametrize(
    "frame",
    [b"SEND\ndestination:/q/a\ntransaction:nope\n\n\x00", b"ACK\nid:1\ntransaction:nope\n\n\x00"],
)
def test_frame_in_unknown_transaction_sends_error_and_closes(frame):
    conn = connected(V12)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.receive_data(frame)
    assert_error_and_close(conn, "unknown transaction 'nope'")


def test_too_many_transactions_sends_error_and_closes():
    conn = connected(limits=Limits(max_transactions=2))
    conn.receive_data(b"".join(b"BEGIN\ntransaction:%d\n\n\x00" % i for i in range(3)))
    assert_error_and_close(conn, "too many transactions: limit is 2")


def test_too_many_frames_in_a_transaction_sends_error_and_closes():
    conn = connected(limits=Limits(max_transaction_frames=2))
    send = b"SEND\ndestination:/q/a\ntransaction:t\n\n\x00"
    conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00" + send * 3)
    assert_error_and_close(conn, "too many frames in transaction: limit is 2")


# Receipts.


@pytest.mark.parametrize(
    ("frame", "event_types"),
    [
        (b"SEND\ndestination:/q/a\n", [SendRequested]),
        (b"SUBSCRIBE\nid:9\ndestination:/q/a\n", [SubscribeRequested]),
        (b"UNSUBSCRIBE\nid:0\n", [UnsubscribeRequested]),
        (b"ACK\nid:1\n", [AckRequested]),
        (b"NACK\nid:1\n", [NackRequested]),
        (b"BEGIN\ntransaction:t\n", []),
        (b"DISCONNECT\n", [DisconnectRequested]),
    ],
)
def test_receipt_comes_right_after_the_frame_events(frame, event_types):
    # "This will cause the server to acknowledge the processing of the client frame with
    # a RECEIPT frame"
    conn = connected(V12)
    subscribe(conn, "0", "client")
    conn.send_message("0", b"x")
    conn.receive_data(frame + b"receipt:77\n\n\x00")
    events = conn.events_received()
    assert [type(event) for event in events] == [*event_types, ReceiptRequested]
    assert events[-1].receipt_id == "77"


def test_send_receipt():
    conn = connected()
    conn.send_receipt("message-12345")
    assert_frames_sent(conn, b"RECEIPT\nreceipt-id:message-12345\n\n\x00")


def test_send_receipt_with_extra_headers_keeps_its_own_receipt_id():
    conn = connected()
    conn.send_receipt("9", headers=(("receipt-id", "forged"), ("x-recovered", "false")))
    assert_frames_sent(conn, b"RECEIPT\nreceipt-id:9\nx-recovered:false\n\n\x00")


# DISCONNECT.


def test_disconnect_with_receipt():
    conn = connected()
    subscribe(conn, "0")
    conn.receive_data(b"DISCONNECT\nreceipt:77\n\n\x00SEND\ndestination:/q/a\n\n\x00")
    events = conn.events_received()
    assert events == [
        DisconnectRequested(Frame(Command.DISCONNECT, (("receipt", "77"),))),
        ReceiptRequested("77"),
    ]
    assert conn.state is State.CLOSING
    conn.send_receipt("77")
    assert conn.send_message("0", b"too late") is None
    conn.send_heartbeat()
    assert_frames_sent(conn, b"RECEIPT\nreceipt-id:77\n\n\x00")
    # "Clients MUST NOT send any more frames after the DISCONNECT frame is sent."
    conn.receive_data(b"SEND\ndestination:/q/a\n\n\x00")
    assert conn.events_received() == []
    conn.send_error("kicked")  # already closing: nothing more
    assert_frames_sent(conn)


# The consumer's own refusals.


def test_send_error_refuses_a_connect():
    conn = StompConnection()
    conn.receive_data(CONNECT)
    conn.events_received()
    conn.send_error("access denied: bad passcode", detail="try again", receipt_id="r1")
    assert conn.state is State.CLOSING
    assert conn.events_received() == []  # no ProtocolFailed for our own refusal
    # Not connected yet, so not escaped, although 1.2 was negotiated.
    assert_frames_sent(
        conn,
        b"ERROR\nmessage:access denied: bad passcode\nreceipt-id:r1\n"
        b"content-type:text/plain\ncontent-length:9\n\ntry again\x00",
    )


def test_send_error_with_extra_headers_is_escaped_once_connected():
    conn = connected(V11)
    conn.send_error("kicked: bye", headers=(("x-reason", "admin\nsaid so"),))
    assert_frames_sent(conn, b"ERROR\nmessage:kicked\\c bye\nx-reason:admin\\nsaid so\n\n\x00")


def test_send_error_before_connect():
    conn = StompConnection()
    conn.send_error("server shutting down")
    assert_frames_sent(conn, b"ERROR\nmessage:server shutting down\n\n\x00")
    conn.receive_data(CONNECT)
    assert conn.events_received() == []


def test_nothing_is_sent_after_the_error():
    conn = connected()
    conn.send_error("bye")
    conn.send_receipt("r1")  # queued before the ERROR goes out: still sent first
    [receipt, error] = conn.data_to_send()
    assert receipt == b"RECEIPT\nreceipt-id:r1\n\n\x00" and error.startswith(b"ERROR\n")
    conn.send_receipt("r2")
    assert_frames_sent(conn)


def test_a_transition_missing_from_the_table_is_our_bug():
    conn = StompConnection()
    with pytest.raises(InvalidState, match="no transition from AWAITING_CONNECT on DISCONNECT"):
        conn._transition("DISCONNECT")
    assert conn.state is State.AWAITING_CONNECT


# Heart-beats.


def test_send_heartbeat_when_connected():
    conn = connected()
    conn.send_heartbeat()
    assert_frames_sent(conn, b"\n")


def test_send_heartbeat_before_connected_does_nothing():
    conn = StompConnection()
    conn.send_heartbeat()
    assert_frames_sent(conn)


def test_received_heart_beats_produce_no_events():
    conn = connected()
    conn.receive_data(b"\n")
    conn.receive_data(b"\r\n")
    assert conn.events_received() == []


# Logging.


def test_frames_are_logged_at_debug_without_credentials(caplog):
    caplog.set_level(logging.DEBUG, logger="stomp_cluster.protocol.connection")
    conn = StompConnection()
    conn.receive_data(b"CONNECT\naccept-version:1.2\nlogin:alice\npasscode:s3cret\n\n\x00")
    conn.events_received()
    conn.accept_connect(session="s1")
    conn.receive_data(b"FOO\n\n\x00")
    conn.events_received()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "< CONNECT accept-version='1.2' login='***' passcode='***'"
    assert lines[1:4] == [
        "= CONNECT_PENDING",
        "= CONNECTED",
        "> CONNECTED version='1.2' session='s1' heart-beat='10000,10000'",
    ]
    assert lines[4].startswith("x ERROR message=\"unknown command 'FOO'\"")
    assert lines[5] == "= CLOSING"
    assert "s3cret" not in caplog.text


def test_nothing_is_logged_unless_debug_is_enabled(caplog):
    caplog.set_level(logging.INFO, logger="stomp_cluster.protocol.connection")
    conn = connected()
    conn.receive_data(b"SEND\ndestination:/q/a\n\n\x00")
    conn.events_received()
    assert caplog.records == []
