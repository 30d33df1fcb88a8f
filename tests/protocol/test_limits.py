"""Limits that keep one peer from hurting the rest: work per call, ACK lookups, NUL bytes."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from stomp_cluster.protocol import Limits, SendRequested, Version
from tests.support.protocol import connected

V10, V11, V12 = Version.V1_0, Version.V1_1, Version.V1_2


def subscribe(conn, sub_id: str, ack: str = "client", dest: str = "/q/a") -> None:
    conn.receive_data(f"SUBSCRIBE\nid:{sub_id}\ndestination:{dest}\nack:{ack}\n\n\x00")
    conn.events_received()


def test_events_received_parses_at_most_limit_events_per_call():
    conn = connected(V12)
    conn.receive_data(b"SEND\ndestination:/q/a\n\n\x00" * 250)
    sizes = []
    while events := conn.events_received(limit=100):
        assert all(isinstance(event, SendRequested) for event in events)
        sizes.append(len(events))
    assert sizes == [100, 100, 50]


@pytest.mark.parametrize("version", [V10, V11])
def test_ack_by_message_id_is_found_without_a_scan(version):
    # 10,000 ACKs in one message over 1,000 subscriptions: a scan of the subscriptions per
    # ACK is 10^7 steps. Counted, not timed: the subscriptions are never walked.
    conn = connected(version)
    for sub in range(1000):
        subscribe(conn, str(sub))
    for n in range(10_000):
        conn.send_message(str(n % 1000), b"x", message_id=f"m{n}")
    state = conn._client_state
    state.subscriptions = _NoWalk(state.subscriptions)
    # 1.0 names no subscription: a scan looked through every one of them.
    sub = "\nsubscription:{}" if version is V11 else ""
    acks = "".join(f"ACK\nmessage-id:m{n}{sub.format(n % 1000)}\n\n\x00" for n in range(10_000))
    conn.receive_data(acks)
    events = conn.events_received()
    assert len(events) == 10_000
    assert {e.subscription.id for e in events} == {str(n) for n in range(1000)}
    assert _NoWalk.walks == 0


class _NoWalk(dict):  # type: ignore[type-arg]
    """The subscriptions, counting every walk through them (a lookup by key is free)."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _NoWalk.walks += 1
        return super().__iter__()

    def values(self):  # type: ignore[no-untyped-def]
        _NoWalk.walks += 1
        return super().values()

    def items(self):  # type: ignore[no-untyped-def]
        _NoWalk.walks += 1
        return super().items()


@pytest.mark.parametrize("version", [V10, V11])
def test_a_message_id_pending_on_two_subscriptions_is_settled_one_at_a_time(version):
    conn = connected(version)
    subscribe(conn, "0", "client-individual")
    subscribe(conn, "1", "client-individual")
    conn.send_message("0", b"x", message_id="m1")
    conn.send_message("1", b"x", message_id="m1")
    conn.send_message("0", b"x", message_id="m1")  # reused while pending: ack value m1-1
    sub = "\nsubscription:1" if version is V11 else ""
    conn.receive_data(f"ACK\nmessage-id:m1{sub}\n\n\x00")
    [event] = conn.events_received()
    assert event.subscription.id == ("1" if version is V11 else "0")
    rest = ("0", "0") if version is V11 else ("0", "1")
    for sub_id in rest:
        conn.receive_data(f"ACK\nmessage-id:m1\nsubscription:{sub_id}\n\n\x00")
    events = conn.events_received()
    assert [(e.subscription.id, e.message_ids) for e in events] == [
        (sub_id, ("m1",)) for sub_id in rest
    ]


def test_nul_in_a_header_value_is_refused():
    conn = connected(V12)
    conn.receive_data(b"SEND\ndestination:/q/a\x00/q/b\n\n\x00")
    events = conn.events_received()
    assert events[-1].error.message == "NUL byte in header"


def test_transaction_bytes_are_bounded_per_transaction_and_together():
    conn = connected(V12, limits=Limits(max_transaction_bytes=4096, max_buffered_bytes=6144))
    conn.receive_data(b"BEGIN\ntransaction:t1\n\n\x00BEGIN\ntransaction:t2\n\n\x00")
    conn.receive_data(b"SEND\ndestination:/q/a\ntransaction:t1\n\n" + b"x" * 3000 + b"\x00")
    assert conn.events_received() == []
    # t2 alone would stay under 4096, but both together go over 6144.
    conn.receive_data(b"SEND\ndestination:/q/a\ntransaction:t2\n\n" + b"x" * 3500 + b"\x00")
    [failed] = conn.events_received()
    assert failed.error.message == "too many bytes in open transactions: limit is 6144"


def test_one_transaction_over_its_bytes_is_refused_and_a_commit_frees_its_bytes():
    conn = connected(V12, limits=Limits(max_transaction_bytes=4096, max_buffered_bytes=6144))
    send = b"SEND\ndestination:/q/a\ntransaction:t\n\n" + b"x" * 3000 + b"\x00"
    for _ in range(3):  # each commit gives its bytes back
        conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00" + send + b"COMMIT\ntransaction:t\n\n\x00")
        assert len(conn.events_received()) == 1
    conn.receive_data(b"BEGIN\ntransaction:t\n\n\x00" + send + send)
    [failed] = conn.events_received()
    assert failed.error.message == "too many bytes in transaction: limit is 4096"


def test_outgoing_bytes_counts_what_data_to_send_holds():
    conn = connected(V12)
    subscribe(conn, "0", "auto")
    conn.send_message("0", b"x" * 100)
    conn.send_heartbeat()
    conn.receive_data(b"SEND\ndestination:/q/a\nreceipt:r\n\n\x00")
    conn.events_received()
    conn.send_receipt("r")
    conn.send_error("bye")
    queued = conn.outgoing_bytes
    assert queued == sum(map(len, conn.data_to_send()))
    assert conn.outgoing_bytes == 0


def test_a_transaction_of_cumulative_acks_is_checked_without_a_scan_per_ack():
    conn = connected(V12, limits=Limits(max_pending_acks=20_000))
    subscribe(conn, "0", "client")
    for _ in range(10_000):
        conn.send_message("0", b"x")
    acks = "".join(f"ACK\nid:{n}\ntransaction:t\n\n\x00" for n in range(9001, 10_001))
    # Counted, not timed: the 10,000 pending messages are walked once per COMMIT, not
    # once per ACK (settling pops from the front, which walks nothing).
    state = conn._client_state
    state._pending["0"] = pending = _CountedWalks(state._pending["0"])
    conn.receive_data(f"BEGIN\ntransaction:t\n\n\x00{acks}COMMIT\ntransaction:t\n\n\x00")
    events = conn.events_received()
    assert len(events) == 1000 and events[0].message_ids[-1] == "9001"
    assert pending.walks == 1


class _CountedWalks(OrderedDict):  # type: ignore[type-arg]
    """Pending messages of one subscription, counting every walk through them."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.walks += 1
        return super().__iter__()


def test_a_cumulative_ack_behind_an_earlier_one_in_the_same_transaction_is_refused():
    conn = connected(V12)
    subscribe(conn, "0", "client")
    for _ in range(3):
        conn.send_message("0", b"x")
    conn.receive_data(
        b"BEGIN\ntransaction:t\n\n\x00ACK\nid:3\ntransaction:t\n\n\x00"
        b"ACK\nid:2\ntransaction:t\n\n\x00COMMIT\ntransaction:t\n\n\x00"
    )
    [failed] = conn.events_received()
    assert failed.error.message == "ACK for unknown message id '2'"
