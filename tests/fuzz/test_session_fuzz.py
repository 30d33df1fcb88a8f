"""A stateful fuzz test of one STOMP session against a real consumer.

Hypothesis drives a :class:`~stomp_cluster.consumer.StompConsumer` through the project's
own :class:`~stomp_cluster.testing.StompCommunicator` (in process, memory backends) with
sequences of frames, under each STOMP version: valid frames (CONNECT, SUBSCRIBE,
UNSUBSCRIBE, SEND, BEGIN, COMMIT, ABORT, ACK, NACK, DISCONNECT, heart-beat EOLs), often
split across WebSocket messages at random points or sent several to a message, mixed
with malformed ones. A small model of the session (its subscriptions, transactions and
unacknowledged messages) says what the server must answer, and after every step:

* no exception escapes the consumer: the communicator would raise it, and anything the
  ``stomp_cluster.consumer`` logger records at ERROR (an "internal error") fails the
  step, as does an exception the event loop sees in a task;
* a valid frame gets its RECEIPT and the MESSAGEs it causes, and never an ERROR;
* a malformed frame (unknown command, bad escape, a header line with no colon, too
  many or too long headers, a body over the limit, a wrong or invalid content-length,
  a missing required header, a limit exceeded, a refused destination) gets exactly one
  ERROR, then the socket closes, and nothing is received after the ERROR;
* a mutated frame (flipped, inserted or dropped bytes, a truncated frame, a missing
  NUL) may be anything, so only the rules that always hold are checked: at most one
  ERROR, nothing after it but the close, nothing after the close;
* no frame the server sends holds a NUL in a header, and
  each one parses;
* the memory the session holds stays within the configured budgets
  (:func:`tests.support.budgets.assert_within_budgets`).

The limits are set low (:data:`LIMITS`) so that sequences of a few steps reach them.

Budgets: ``make test`` runs the ``stomp-fuzz-short`` Hypothesis profile, derandomized,
50 sequences of up to 25 steps (about 20 seconds on two cores); ``make fuzz`` runs
``stomp-fuzz-long``, thousands of random sequences of up to 40 steps
(``FUZZ_PROFILE=long``; ``FUZZ_EXAMPLES`` changes how many). The profiles have names of
their own so that they change no other Hypothesis test.

A sequence that finds a bug in ``stomp_cluster`` is not fixed by loosening this test:
it is written down as a test of its own with the minimal frame sequence, marked
``xfail(strict=True)`` until the bug is fixed. The first one it found, a NUL byte inside
a SEND header forwarded in the MESSAGE (where it ends the frame for the recipient's
parser), is fixed: :func:`test_nul_in_a_sent_header_is_not_forwarded` now guards it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from stomp_cluster import backends
from stomp_cluster.conf import get_settings
from stomp_cluster.node import get_node
from stomp_cluster.protocol import (
    SERVER_COMMANDS,
    Command,
    Frame,
    FrameReader,
    Version,
    encode_frame,
)
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application
from tests.support.budgets import assert_within_budgets

__all__ = ["LIMITS", "SessionMachine"]

# -- budgets ---------------------------------------------------------------------------

settings.register_profile(
    "stomp-fuzz-short",
    max_examples=50,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
settings.register_profile(
    "stomp-fuzz-long",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
#: ``FUZZ_PROFILE=long`` (what ``make fuzz`` sets) picks the long budget.
PROFILE = "stomp-fuzz-long" if os.environ.get("FUZZ_PROFILE") == "long" else "stomp-fuzz-short"

# The long budget runs for as long as it takes (0: no timeout).
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(0 if PROFILE == "stomp-fuzz-long" else 300)]

#: Low limits, so that a few steps reach every one of them.
LIMITS: dict[str, int] = {
    "MAX_FRAME_SIZE": 4096,
    "MAX_BODY_SIZE": 2048,
    "MAX_HEADERS": 12,
    "MAX_HEADER_LENGTH": 256,
    "MAX_SUBSCRIPTIONS": 3,
    "MAX_TRANSACTIONS": 2,
    "MAX_TRANSACTION_FRAMES": 3,
    "MAX_PENDING_ACKS": 8,
    "MAX_OUTBOX": 50,
}
FUZZ_SETTINGS = {
    "NODE_ID": "fuzz-node",
    "PRESENCE_BACKEND": "stomp_cluster.presence.memory.MemoryPresence",
    **LIMITS,
}

#: How long to wait for an answer the model expects; generous, it only waits on a bug.
ANSWER_TIMEOUT = 3.0
#: How long a silence must last to count as "nothing more is coming".
QUIET = 0.02

VERSIONS = ["1.0", "1.1", "1.2"]
TOPICS = ["/topic/fuzz.a", "/topic/fuzz.b"]
ECHO = "/user/queue/echo"
SUB_IDS = ["s0", "s1", "s2", "s3", "s4"]
TX_IDS = ["t0", "t1", "t2"]
# Hypothesis leans towards the first choice: the modes that keep messages come first.
ACK_MODES = ["client-individual", "client", "auto"]

# -- the consumer's loggers --------------------------------------------------------------


class _Records(logging.Handler):
    """Keeps every record at ERROR or above: an "internal error" of the consumer."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class _Loop:
    """The event loop every example of one test runs on, and what went wrong in it."""

    loop: asyncio.AbstractEventLoop
    records: _Records
    loop_errors: list[dict[str, Any]] = field(default_factory=list)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


# -- frames ----------------------------------------------------------------------------


def encode(command: str, headers: list[tuple[str, str]], body: bytes, version: Version) -> bytes:
    """A valid frame of *version*, as the client sends it."""
    frame = Frame(Command(command), tuple(headers), body)
    return encode_frame(frame, None if command in ("CONNECT", "STOMP") else version)


def raw(command: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    """A frame assembled byte by byte, so that it can be wrong in any way."""
    return command + b"\n" + b"".join(h + b"\n" for h in headers) + b"\n" + body + b"\0"


def malformed(kind: str, version: Version, limits: dict[str, int]) -> bytes:
    """A frame the server must refuse with one ERROR, whatever state the session is in."""
    match kind:
        case "unknown command":
            return raw(b"FROBNICATE", [b"destination:/topic/fuzz.a"])
        case "lower-case command":
            return raw(b"send", [b"destination:/topic/fuzz.a"])
        case "header without colon":
            return raw(b"SEND", [b"destination/topic/fuzz.a"])
        case "empty header name":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b":value"])
        case "bad escape":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"x:a\\qb"])
        case "header too long":
            value = b"v" * (limits["MAX_HEADER_LENGTH"] + 1)
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"x:" + value])
        case "too many headers":
            extra = [b"x%d:v" % i for i in range(limits["MAX_HEADERS"])]
            return raw(b"SEND", [b"destination:/topic/fuzz.a", *extra])
        case "body too large":
            body = b"b" * (limits["MAX_BODY_SIZE"] + 1)
            return raw(b"SEND", [b"destination:/topic/fuzz.a"], body)
        case "content-length too large":
            size = b"%d" % (limits["MAX_BODY_SIZE"] + 1)
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"content-length:" + size])
        case "content-length short":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"content-length:2"], b"hello")
        case "content-length invalid":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"content-length:-1"], b"x")
        case "invalid UTF-8 header":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"x:\xff\xfe"])
        case "SEND without destination":
            return raw(b"SEND", [b"x:y"], b"body")
        case "SEND to unknown destination":
            return raw(b"SEND", [b"destination:/nowhere/fuzz"], b"body")
        case "SUBSCRIBE to unknown destination":
            return raw(b"SUBSCRIBE", [b"id:bad", b"destination:/nowhere/fuzz"])
        case "SUBSCRIBE without destination":
            return raw(b"SUBSCRIBE", [b"id:bad"])
        case "invalid ack mode":
            return raw(b"SUBSCRIBE", [b"id:bad", b"destination:/topic/fuzz.a", b"ack:sometimes"])
        case "ACK without id":
            return raw(b"ACK", [b"x:y"])
        case "BEGIN without transaction":
            return raw(b"BEGIN", [])
        case "UNSUBSCRIBE unknown id":
            return raw(b"UNSUBSCRIBE", [b"id:never-subscribed"])
        case "COMMIT unknown transaction":
            return raw(b"COMMIT", [b"transaction:never-begun"])
        case "ABORT unknown transaction":
            return raw(b"ABORT", [b"transaction:never-begun"])
        case "SEND in unknown transaction":
            return raw(b"SEND", [b"destination:/topic/fuzz.a", b"transaction:never-begun"])
        case "second CONNECT":
            return raw(b"CONNECT", [b"accept-version:" + version.value.encode()])
    raise AssertionError(kind)


def malformed_kinds(version: Version) -> list[str]:
    kinds = [
        "unknown command",
        "lower-case command",
        "header without colon",
        "empty header name",
        "header too long",
        "too many headers",
        "body too large",
        "content-length too large",
        "content-length short",
        "content-length invalid",
        "invalid UTF-8 header",
        "SEND without destination",
        "SEND to unknown destination",
        "SUBSCRIBE to unknown destination",
        "SUBSCRIBE without destination",
        "invalid ack mode",
        "ACK without id",
        "BEGIN without transaction",
        "UNSUBSCRIBE unknown id",
        "COMMIT unknown transaction",
        "ABORT unknown transaction",
        "SEND in unknown transaction",
        "second CONNECT",
    ]
    if version is not Version.V1_0:
        kinds.append("bad escape")  # 1.0 has no escapes: a backslash is a backslash
    return kinds


def mutate(data: bytes, how: str, position: int, noise: bytes) -> bytes:
    """*data* damaged in one way; what the server makes of it is anybody's guess."""
    at = position % max(len(data), 1)
    match how:
        case "flip":
            return data[:at] + bytes([data[at] ^ (noise[0] | 1)]) + data[at + 1 :]
        case "insert":
            return data[:at] + noise + data[at:]
        case "delete":
            return data[:at] + data[at + len(noise) :]
        case "truncate":
            return data[:at]
        case "drop NUL":
            return data.rstrip(b"\0")
        case "NUL in header":
            head = data.find(b"\n")
            return data[: head + 1] + b"x:a\0b\n" + data[head + 1 :]
    raise AssertionError(how)


def cut(data: bytes, fractions: list[float]) -> list[bytes]:
    """*data* split into WebSocket messages at the given fractions of its length."""
    points = sorted({int(len(data) * f) for f in fractions} - {0, len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


MUTATIONS = ["flip", "insert", "delete", "truncate", "drop NUL", "NUL in header"]
#: The frames that get damaged, with their headers.
MUTATED: dict[str, list[tuple[str, str]]] = {
    "SEND": [("destination", TOPICS[0])],
    "SUBSCRIBE": [("id", "m"), ("destination", TOPICS[1])],
    "BEGIN": [("transaction", "m")],
    "ACK": [("id", "m"), ("message-id", "m"), ("subscription", "m")],
    "DISCONNECT": [],
}

splits = st.lists(st.floats(0, 1, allow_nan=False), max_size=3)
eols = st.sampled_from([b"", b"", b"\n", b"\r\n", b"\n\n\r\n"])
bodies = st.binary(max_size=64) | st.text(max_size=32).map(lambda s: s.encode())

# -- the machine -----------------------------------------------------------------------


class SessionMachine(RuleBasedStateMachine):
    """One STOMP session, its model, and the checks of every step."""

    env: _Loop  # set by the test, before Hypothesis builds any machine

    def __init__(self) -> None:
        super().__init__()
        self.client: StompCommunicator | None = None
        self.version = Version.V1_2
        self.limits = dict(LIMITS)
        self._reset_model()

    def _reset_model(self) -> None:
        self.live = False  # CONNECTED and not ended
        self.closed = False  # the socket close was received
        self.errors = 0  # ERROR frames received on this socket
        self.frames_after_close = 0
        self.subs: dict[str, tuple[str, str]] = {}  # id -> (destination, ack mode)
        self.txs: dict[str, list[str]] = {}  # id -> destinations of the SENDs it holds
        # Unacknowledged messages, oldest first: subscription id -> the ACK keys.
        self.pending: dict[str, list[tuple[str, str]]] = {}
        self.reader: FrameReader | None = None
        self.session_id = ""
        self.counter = 0

    # -- plumbing --------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        return self.env.run(coro)

    @property
    def consumer(self) -> Any:
        return get_node().sessions.get(self.session_id)

    async def _open(self, version: str) -> None:
        self._reset_model()
        self.version = Version(version)
        self.client = StompCommunicator(application, "/ws", version=version)
        self.reader = FrameReader(
            max_frame_size=1 << 24,
            max_body_size=1 << 24,
            max_headers=10_000,
            max_header_length=1 << 20,
            commands=SERVER_COMMANDS,
        )
        connected, code = await self.client.connect(ANSWER_TIMEOUT)
        assert connected, f"WebSocket refused with code {code}"

    async def _connect(self, command: str = "CONNECT") -> None:
        heart = [("heart-beat", "0,0")] if self.version is not Version.V1_0 else []
        headers = [("accept-version", self.version.value), ("host", "localhost"), *heart]
        await self._transmit([encode(command, headers, b"", self.version)])
        frames = await self._answer(lambda got: any(f.command is Command.CONNECTED for f in got))
        connected = frames[-1]
        assert connected.command is Command.CONNECTED, frames
        assert self.reader is not None
        self.reader.version = self.version
        self.session_id = connected.get("session") or ""
        self.live = True

    async def _transmit(self, messages: list[bytes]) -> None:
        assert self.client is not None
        for data in messages:
            try:
                await self.client.send_input({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                await self.client.send_input({"type": "websocket.receive", "bytes": data})

    async def _next(self, wait: float) -> dict[str, Any] | None:
        """The next message the consumer sent, or None after *wait* seconds of silence."""
        client = self.client
        assert client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while client.output_queue.empty():
            if client.future.done():
                client.future.result()  # raises what escaped the consumer
                return None  # the consumer ended: nothing more will come
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.002)
        message: dict[str, Any] = client.output_queue.get_nowait()
        return message

    def _absorb(self, message: dict[str, Any]) -> list[Frame]:
        """Record one message from the consumer, checking what may follow what."""
        assert self.reader is not None
        if message["type"] == "websocket.close":
            assert not self.closed, "closed twice"
            self.closed = True
            self.live = False
            return []
        assert message["type"] == "websocket.send", message
        if self.closed:
            self.frames_after_close += 1
            raise AssertionError(f"received after the close: {message}")
        data = message.get("bytes")
        if data is None:
            data = message["text"].encode()
        self.reader.feed(data)
        frames = []
        while (frame := self.reader.next_frame()) is not None:
            assert self.errors == 0, f"a frame after the ERROR: {frame}"
            if frame.command is Command.ERROR:
                self.errors += 1
                self.live = False
            # A NUL inside a header ends the frame early for the client's parser: the
            # server refuses one from a client (test_nul_in_a_sent_header_is_not_forwarded)
            # and never sends one.
            assert not any("\0" in n or "\0" in v for n, v in frame.headers), frame
            frames.append(frame)
            self._record_message(frame)
        return frames

    def _record_message(self, frame: Frame) -> None:
        if frame.command is not Command.MESSAGE:
            return
        sub = frame.get("subscription") or ""
        assert sub in self.subs, f"MESSAGE for a subscription we do not have: {frame}"
        if self.subs[sub][1] == "auto":
            return
        if self.version is Version.V1_2:
            key = frame.get("ack") or ""
        else:
            key = frame.get("message-id") or ""
        self.pending.setdefault(sub, []).append((key, frame.get("message-id") or ""))

    async def _answer(self, done: Any) -> list[Frame]:
        """Frames until ``done(frames)``; an ERROR or a close ends it early."""
        got: list[Frame] = []
        while not done(got):
            message = await self._next(ANSWER_TIMEOUT)
            assert message is not None, f"no answer in {ANSWER_TIMEOUT}s; got {got}"
            got += self._absorb(message)
            if self.errors or self.closed:
                break
        return got

    async def _quiet(self) -> list[Frame]:
        """Whatever arrives until a short silence."""
        got: list[Frame] = []
        while (message := await self._next(QUIET)) is not None:
            got += self._absorb(message)
        return got

    async def _expect_ok(self, receipt: str, messages: int = 0) -> None:
        def done(got: list[Frame]) -> bool:
            receipts = [f for f in got if f.command is Command.RECEIPT]
            count = sum(f.command is Command.MESSAGE for f in got)
            return any(f.get("receipt-id") == receipt for f in receipts) and count >= messages

        got = await self._answer(done)
        assert not self.errors and not self.closed, f"valid frame refused: {got}"
        got += await self._quiet()
        count = sum(f.command is Command.MESSAGE for f in got)
        assert count == messages, f"expected {messages} MESSAGEs, got {got}"
        assert not self.errors and not self.closed, got

    async def _expect_error(self) -> None:
        got = await self._answer(lambda got: False)
        assert self.errors == 1, f"expected an ERROR, got {got}"
        if not self.closed:
            message = await self._next(ANSWER_TIMEOUT)
            assert message is not None, "no close after the ERROR"
            self._absorb(message)
        assert self.closed, "no close after the ERROR"
        await self._quiet()

    def _receipt(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    def _delivery(self, destination: str) -> int:
        """How many MESSAGEs a SEND to *destination* brings back to this session."""
        if destination == "/app/echo":
            destination = ECHO
        return sum(1 for d, _ in self.subs.values() if d == destination)

    def _destinations(self) -> st.SearchStrategy[str]:
        """Where to SEND: those we subscribed to first, so that messages come back."""
        subscribed = sorted({"/app/echo" if d == ECHO else d for d, _ in self.subs.values()})
        others = [d for d in (TOPICS[0], "/app/echo", TOPICS[1]) if d not in subscribed]
        return st.sampled_from(subscribed + others)

    def _overflows(self, destinations: list[str]) -> bool:
        """Whether delivering SENDs to *destinations* would go over MAX_PENDING_ACKS."""
        pending = sum(len(p) for p in self.pending.values())
        for destination in destinations:
            target = ECHO if destination == "/app/echo" else destination
            pending += sum(1 for d, m in self.subs.values() if d == target and m != "auto")
        return pending > self.limits["MAX_PENDING_ACKS"]

    async def _valid(
        self,
        command: str,
        headers: list[tuple[str, str]],
        body: bytes,
        pieces: list[float],
        eol: bytes,
    ) -> str:
        receipt = self._receipt()
        data = eol + encode(command, [*headers, ("receipt", receipt)], body, self.version)
        await self._transmit(cut(data, pieces))
        return receipt

    # -- steps -----------------------------------------------------------------------

    @initialize(version=st.sampled_from(VERSIONS))
    def open_session(self, version: str) -> None:
        self._run(self._open(version))
        self._run(self._connect())

    @precondition(lambda self: not self.live)
    @rule(
        version=st.sampled_from(VERSIONS),
        start=st.sampled_from(["CONNECT", "CONNECT", "STOMP", "frame first", "damaged CONNECT"]),
        data=st.data(),
    )
    def reopen(self, version: str, start: str, data: st.DataObject) -> None:
        """A new session, opened with CONNECT or STOMP, or refused, or damaged.

        "frame first": a SEND before CONNECT, refused with one ERROR. "damaged CONNECT":
        a mutated CONNECT, which may be accepted, refused, or wait for more bytes; the
        session is not used further.
        """
        self._run(self._finish())
        self._run(self._open(version))
        match start:
            case "CONNECT":
                self._run(self._connect())
            case "STOMP":
                self._run(self._connect("STOMP" if self.version is not Version.V1_0 else "CONNECT"))
            case "frame first":
                frame = encode("SEND", [("destination", TOPICS[0])], b"x", self.version)
                self._run(self._transmit([frame]))
                self._run(self._expect_error())
            case "damaged CONNECT":
                headers = [("accept-version", self.version.value), ("host", "localhost")]
                damaged = mutate(
                    encode("CONNECT", headers, b"", self.version),
                    data.draw(st.sampled_from(MUTATIONS), label="mutation"),
                    data.draw(st.integers(0, 80), label="position"),
                    data.draw(st.binary(min_size=1, max_size=4), label="noise"),
                )
                self._run(self._transmit(cut(damaged, data.draw(splits, label="pieces"))))
                self._run(self._quiet())
                assert self.errors <= 1
                if self.errors:
                    self._run(self._expect_closed())

    @precondition(lambda self: self.live)
    @rule(
        reuse=st.booleans(),
        data=st.data(),
        destination=st.sampled_from([TOPICS[0], ECHO, TOPICS[1]]),
        ack=st.sampled_from(ACK_MODES),
        pieces=splits,
        eol=eols,
    )
    def subscribe(
        self,
        reuse: bool,
        data: st.DataObject,
        destination: str,
        ack: str,
        pieces: list[float],
        eol: bytes,
    ) -> None:
        """A new subscription; *reuse*: with the id of an open one, which is refused.

        In STOMP 1.0 the id is optional: without one, the destination is the id.
        """
        if self.version is Version.V1_0 and data.draw(st.booleans(), label="no id"):
            sub_id = destination
            headers = [("destination", destination), ("ack", ack)]
        else:
            if reuse and self.subs:
                sub_id = data.draw(st.sampled_from(sorted(self.subs)), label="sub_id")
            else:
                sub_id = next(i for i in SUB_IDS if i not in self.subs)
            headers = [("id", sub_id), ("destination", destination), ("ack", ack)]
        receipt = self._run(self._valid("SUBSCRIBE", headers, b"", pieces, eol))
        if sub_id in self.subs or len(self.subs) >= self.limits["MAX_SUBSCRIPTIONS"]:
            self._run(self._expect_error())  # id in use, or one subscription too many
            return
        self.subs[sub_id] = (destination, ack)
        self._run(self._expect_ok(receipt))

    @precondition(lambda self: self.live and self.subs)
    @rule(data=st.data(), pieces=splits, eol=eols)
    def unsubscribe(self, data: st.DataObject, pieces: list[float], eol: bytes) -> None:
        """Close an open subscription: by id, or in STOMP 1.0 by destination."""
        sub_id = data.draw(st.sampled_from(sorted(self.subs)), label="sub_id")
        headers = [("id", sub_id)]
        if self.version is Version.V1_0 and data.draw(st.booleans(), label="by destination"):
            # 1.0 closes the first subscription to the destination, whatever its id.
            destination = self.subs[sub_id][0]
            sub_id = next(i for i, (d, _) in self.subs.items() if d == destination)
            headers = [("destination", destination)]
        receipt = self._run(self._valid("UNSUBSCRIBE", headers, b"", pieces, eol))
        del self.subs[sub_id]
        self.pending.pop(sub_id, None)
        self._run(self._expect_ok(receipt))

    @precondition(lambda self: self.live)
    @rule(
        body=bodies,
        in_transaction=st.booleans(),
        data=st.data(),
        pieces=splits,
        eol=eols,
    )
    def send(
        self,
        body: bytes,
        in_transaction: bool,
        data: st.DataObject,
        pieces: list[float],
        eol: bytes,
    ) -> None:
        destination = data.draw(self._destinations(), label="destination")
        transaction = None
        if in_transaction and self.txs:
            transaction = data.draw(st.sampled_from(sorted(self.txs)), label="transaction")
        headers = [("destination", destination), ("content-type", "text/plain")]
        if transaction is not None:
            headers.append(("transaction", transaction))
        receipt = self._run(self._valid("SEND", headers, body, pieces, eol))
        if transaction is not None:
            held = self.txs.get(transaction)
            if held is None or len(held) >= self.limits["MAX_TRANSACTION_FRAMES"]:
                self._run(self._expect_error())  # unknown transaction, or one frame too many
                return
            held.append(destination)
            self._run(self._expect_ok(receipt))
            return
        if self._overflows([destination]):
            self._run(self._expect_error())  # too many unacknowledged messages
            return
        self._run(self._expect_ok(receipt, self._delivery(destination)))

    @precondition(lambda self: self.live)
    @rule(reuse=st.booleans(), data=st.data(), pieces=splits, eol=eols)
    def begin(self, reuse: bool, data: st.DataObject, pieces: list[float], eol: bytes) -> None:
        """A new transaction; *reuse*: with the name of an open one, which is refused."""
        if reuse and self.txs:
            transaction = data.draw(st.sampled_from(sorted(self.txs)), label="transaction")
        else:
            transaction = next(t for t in TX_IDS if t not in self.txs)
        receipt = self._run(self._valid("BEGIN", [("transaction", transaction)], b"", pieces, eol))
        if transaction in self.txs or len(self.txs) >= self.limits["MAX_TRANSACTIONS"]:
            self._run(self._expect_error())
            return
        self.txs[transaction] = []
        self._run(self._expect_ok(receipt))

    @precondition(lambda self: self.live and self.txs)
    @rule(data=st.data(), commit=st.booleans(), pieces=splits, eol=eols)
    def end_transaction(
        self, data: st.DataObject, commit: bool, pieces: list[float], eol: bytes
    ) -> None:
        transaction = data.draw(st.sampled_from(sorted(self.txs)), label="transaction")
        command = "COMMIT" if commit else "ABORT"
        receipt = self._run(self._valid(command, [("transaction", transaction)], b"", pieces, eol))
        held = self.txs.pop(transaction, None)
        if held is None:
            self._run(self._expect_error())
            return
        if not commit:
            self._run(self._expect_ok(receipt))
            return
        if self._overflows(held):
            self._run(self._expect_error())
            return
        self._run(self._expect_ok(receipt, sum(self._delivery(d) for d in held)))

    @precondition(lambda self: self.live and any(self.pending.values()))
    @rule(data=st.data(), nack=st.booleans(), pieces=splits, eol=eols)
    def settle(self, data: st.DataObject, nack: bool, pieces: list[float], eol: bytes) -> None:
        """ACK or NACK a message we received and have not settled."""
        sub = data.draw(st.sampled_from(sorted(s for s, p in self.pending.items() if p)))
        queue = self.pending[sub]
        index = data.draw(st.integers(0, len(queue) - 1))
        key, _ = queue[index]
        if self.version is Version.V1_0:
            nack = False  # NACK is 1.1 and later
        if self.version is Version.V1_2:
            headers = [("id", key)]
        elif self.version is Version.V1_1:
            headers = [("message-id", key), ("subscription", sub)]
        else:
            headers = [("message-id", key)]
        receipt = self._run(self._valid("NACK" if nack else "ACK", headers, b"", pieces, eol))
        if self.subs[sub][1] == "client":
            del queue[: index + 1]  # cumulative
        else:
            del queue[index]
        self._run(self._expect_ok(receipt))

    @precondition(lambda self: self.live)
    @rule(beats=st.integers(1, 5), crlf=st.booleans())
    def heartbeat(self, beats: int, crlf: bool) -> None:
        """Heart-beat EOLs alone: no answer at all."""
        self._run(self._transmit([(b"\r\n" if crlf else b"\n") * beats]))
        got = self._run(self._quiet())
        assert not got and not self.closed, got

    @precondition(lambda self: self.live)
    @rule(count=st.integers(2, 4), data=st.data(), pieces=splits)
    def batch(self, count: int, data: st.DataObject, pieces: list[float]) -> None:
        """Several SENDs in one WebSocket message (re-cut at random points)."""
        destination = data.draw(self._destinations(), label="destination")
        frames = []
        for i in range(count):
            frames.append(
                encode(
                    "SEND",
                    [("destination", destination), ("receipt", self._receipt())],
                    b"%d" % i,
                    self.version,
                )
            )
        self._run(self._transmit(cut(b"".join(frames), pieces)))
        if self._overflows([destination] * count):
            self._run(self._expect_error())
            return
        last = f"r{self.counter}"
        self._run(self._expect_ok(last, count * self._delivery(destination)))

    # Steps that end the session: one rule picks among them, so that sessions live long
    # enough to reach their limits (Hypothesis picks among enabled rules evenly).

    @precondition(lambda self: self.live)
    @rule(
        how=st.sampled_from(["malformed", "malformed", "mutated", "mutated", "unknown ack", "bye"]),
        data=st.data(),
    )
    def end_session(self, how: str, data: st.DataObject) -> None:
        pieces = data.draw(splits, label="pieces")
        match how:
            case "malformed":
                kind = data.draw(st.sampled_from(malformed_kinds(self.version)), label="kind")
                self._send_malformed(kind, pieces, data.draw(st.booleans(), label="valid first"))
            case "mutated":
                self._send_mutated(
                    data.draw(st.sampled_from(MUTATIONS), label="mutation"),
                    data.draw(st.integers(0, 200), label="position"),
                    data.draw(st.binary(min_size=1, max_size=4), label="noise"),
                    data.draw(st.sampled_from(sorted(MUTATED)), label="command"),
                    data.draw(st.booleans(), label="then valid"),
                    pieces,
                )
            case "unknown ack":
                self._settle_unknown(data.draw(st.sampled_from(["nope", "0", "999"])), pieces)
            case "bye":
                self._disconnect(pieces)

    def _settle_unknown(self, key: str, pieces: list[float]) -> None:
        """ACK a message never sent: one ERROR."""
        known = {k for p in self.pending.values() for pair in p for k in pair}
        if key in known:
            return
        name = "id" if self.version is Version.V1_2 else "message-id"
        headers = [(name, key), ("subscription", "s0")]
        self._run(self._valid("ACK", headers, b"", pieces, b""))
        self._run(self._expect_error())

    def _send_malformed(self, kind: str, pieces: list[float], valid_before: bool) -> None:
        """A frame that breaks the protocol (or a limit): one ERROR, then the close."""
        bad = malformed(kind, self.version, self.limits)
        prefix = b""
        if valid_before and "tx-before" not in self.txs:
            if len(self.txs) < self.limits["MAX_TRANSACTIONS"]:
                # A valid frame first, in the same message.
                prefix = encode("BEGIN", [("transaction", "tx-before")], b"", self.version)
        self._run(self._transmit(cut(prefix + bad, pieces)))
        self._run(self._expect_error())

    def _send_mutated(
        self,
        how: str,
        position: int,
        noise: bytes,
        command: str,
        then_valid: bool,
        pieces: list[float],
    ) -> None:
        """A damaged frame: whatever the server makes of it, the session rules hold.

        The session is ended after it: the model no longer knows what the server holds.
        """
        good = encode(command, [*MUTATED[command], ("receipt", "m")], b"body", self.version)
        data = mutate(good, how, position, noise)
        if then_valid:
            data += encode("SEND", [("destination", TOPICS[0])], b"after", self.version)
        self.live = False
        self._run(self._transmit(cut(data, pieces)))
        self._run(self._quiet())
        assert self.errors <= 1
        if self.errors:
            self._run(self._expect_closed())

    async def _expect_closed(self) -> None:
        if not self.closed:
            message = await self._next(ANSWER_TIMEOUT)
            assert message is not None, "no close after the ERROR"
            self._absorb(message)
        assert self.closed
        await self._quiet()

    def _disconnect(self, pieces: list[float]) -> None:
        """DISCONNECT with a receipt: the RECEIPT, then the server closes."""
        receipt = self._run(self._valid("DISCONNECT", [], b"", pieces, b""))
        got = self._run(self._answer(lambda got: self.closed))
        assert [f.command for f in got] == [Command.RECEIPT], got
        assert got[0].get("receipt-id") == receipt
        assert self.closed and not self.errors
        self.live = False

    # -- checks after every step -----------------------------------------------------

    @invariant()
    def nothing_went_wrong_inside(self) -> None:
        records = self.env.records.records
        assert not records, [r.getMessage() for r in records]
        assert not self.env.loop_errors, self.env.loop_errors
        assert self.errors <= 1 and not self.frames_after_close

    @invariant()
    def within_budgets(self) -> None:
        if self.client is None or self.closed:
            return
        consumer = self._run(self._consumer())
        if consumer is None:  # not CONNECTED (yet), or gone
            assert not self.live, "the session is not on the node"
            return
        used = assert_within_budgets(consumer, get_settings())
        if not self.live:
            return  # after a damaged frame the model no longer knows what the session holds
        assert used.subscriptions == len(self.subs), (used, self.subs)
        assert used.transactions == len(self.txs), (used, self.txs)
        assert used.pending_acks == sum(len(p) for p in self.pending.values()), used

    async def _consumer(self) -> Any:
        return self.consumer

    async def _finish(self) -> None:
        client = self.client
        if client is None:
            return
        self.client = None
        if not client.future.done():
            await client.send_input({"type": "websocket.disconnect", "code": 1000})
            try:
                await asyncio.wait_for(asyncio.shield(client.future), ANSWER_TIMEOUT)
            except TimeoutError:
                client.future.cancel()
        if client.future.done() and not client.future.cancelled():
            client.future.result()  # raises what escaped the consumer

    def teardown(self) -> None:
        self._run(self._finish())


# -- the tests -------------------------------------------------------------------------


@pytest.fixture
def fuzz_loop() -> Iterator[_Loop]:
    """One event loop for every example of a test, with its error records."""
    loop = asyncio.new_event_loop()
    records = _Records()
    env = _Loop(loop, records)
    loop.set_exception_handler(lambda _loop, context: env.loop_errors.append(context))
    logger = logging.getLogger("stomp_cluster.consumer")
    logger.addHandler(records)
    backends.reset()
    try:
        yield env
    finally:
        logger.removeHandler(records)

        async def stop() -> None:
            await get_node().stop()

        loop.run_until_complete(stop())

        async def cancel_the_rest() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        loop.run_until_complete(cancel_the_rest())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        backends.reset()


def test_session_survives_random_and_malformed_frames(fuzz_loop: _Loop) -> None:
    """Every STOMP version, every rule of the session, the budgets held: see the module."""
    SessionMachine.env = fuzz_loop
    with override_settings(STOMP_CLUSTER=FUZZ_SETTINGS):
        run_state_machine_as_test(SessionMachine, settings=settings.get_profile(PROFILE))


async def test_nul_in_a_sent_header_is_not_forwarded() -> None:
    """SUBSCRIBE to a topic, SEND to it with ``x:a<NUL>b``: refused, or delivered without it.

    The minimal sequence, under STOMP 1.2 (every version does the same)::

        CONNECT accept-version:1.2
        SUBSCRIBE id:0 destination:/topic/t receipt:r
        SEND destination:/topic/t x:a\\0b   body "hi"
    """
    client = StompCommunicator(application, "/ws")
    await client.connect_stomp()
    await client.send_frame("SUBSCRIBE", {"id": "0", "destination": "/topic/t", "receipt": "r"})
    assert (await client.receive_frame()).command is Command.RECEIPT
    await client.send_to(text_data="SEND\ndestination:/topic/t\nx:a\0b\n\nhi\0")
    output = await client.receive_output(ANSWER_TIMEOUT)
    await client.disconnect()
    data = output.get("text", "")
    head = data.split("\n\n", 1)[0]
    assert data.startswith("ERROR") or "\0" not in head, repr(data)
