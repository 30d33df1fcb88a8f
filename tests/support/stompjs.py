"""Drive a real @stomp/stompjs 7 client (under Node) from Python tests.

:class:`StompJsClient` spawns ``node tests/js/driver.mjs``, writes one JSON command per
line to it and collects the JSON events it prints, in a thread. Tests wait for events with
:meth:`StompJsClient.wait_for`. Events are plain dicts with an ``event`` key; see the
header of ``tests/js/driver.mjs`` for the list.

The tests are skipped when ``node`` is not installed, and fail (with the fix) when
``npm ci --prefix tests/js`` has not been run.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DRIVER",
    "JS_DIR",
    "StompJsClient",
    "body_bytes",
    "messages_of",
    "received_before_marker",
]

JS_DIR = Path(__file__).resolve().parents[1] / "js"
DRIVER = JS_DIR / "driver.mjs"

Event = dict[str, Any]


def body_bytes(event: Event) -> bytes:
    """The exact body bytes of a ``message`` / ``error`` event."""
    return base64.b64decode(event.get("base64", ""))


class DriverError(RuntimeError):
    """The driver rejected a command or died."""


class StompJsClient:
    """One @stomp/stompjs ``Client`` in a Node process.

    Every command method returns once the driver has executed it (stompjs has written the
    frame to the WebSocket); waiting for what the server answers is up to
    :meth:`wait_for`.
    """

    def __init__(self, *, debug: bool = False, start_timeout: float = 20.0) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed; `make deps` does not install it")
        if not (JS_DIR / "node_modules" / "@stomp" / "stompjs").is_dir():
            raise DriverError(
                f"@stomp/stompjs is not installed in {JS_DIR}: run `npm ci --prefix tests/js` "
                "(or `make deps`)"
            )
        self.debug = debug
        self.events: list[Event] = []
        self.cond = threading.Condition()
        self.stderr: list[str] = []
        self._seq = itertools.count(1)
        self._write_lock = threading.Lock()
        self.proc = subprocess.Popen(
            [node, str(DRIVER)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, name="stompjs-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="stompjs-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.wait_for("ready", timeout=start_timeout)

    # -- plumbing -------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "driver-output", "line": line}
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "driver-exit", "code": self.proc.poll()})
            self.cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self.cond:
                self.stderr.append(raw.decode("utf-8", "replace").rstrip())

    def describe(self, last: int = 15) -> str:
        with self.cond:
            recent = [self._short(e) for e in self.events[-last:]]
            stderr = self.stderr[-20:]
        text = "recent events:\n  " + "\n  ".join(recent)
        if stderr:
            text += "\nnode stderr:\n  " + "\n  ".join(stderr)
        return text

    @staticmethod
    def _short(event: Event) -> str:
        event = dict(event)
        for key in ("body", "base64"):
            if isinstance(event.get(key), str) and len(event[key]) > 80:
                event[key] = event[key][:77] + "..."
        return json.dumps(event)

    def command(self, cmd: str, *, timeout: float = 10.0, **args: Any) -> Event:
        """Send a driver command and wait until it ran; return its ``cmd-done`` event."""
        seq = next(self._seq)
        payload = {"cmd": cmd, "seq": seq, **{k: v for k, v in args.items() if v is not None}}
        line = json.dumps(payload) + "\n"
        with self._write_lock:
            if self.proc.stdin is None or self.proc.poll() is not None:
                raise DriverError(f"driver is not running\n{self.describe()}")
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except BrokenPipeError as exc:
                raise DriverError(f"driver is gone\n{self.describe()}") from exc
        event = self.wait_for(
            ("cmd-done", "cmd-failed"), lambda e: e.get("seq") == seq, timeout=timeout
        )
        if event["event"] == "cmd-failed":
            raise DriverError(f"{cmd} failed: {event.get('message')}")
        return event

    def mark(self) -> int:
        """The number of events so far: pass it as ``since`` to ignore older events."""
        with self.cond:
            return len(self.events)

    def find(
        self,
        kind: str | Sequence[str],
        predicate: Callable[[Event], bool] | None = None,
        *,
        since: int = 0,
    ) -> list[Event]:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        with self.cond:
            return [
                e
                for e in self.events[since:]
                if e.get("event") in kinds and (predicate is None or predicate(e))
            ]

    def wait_for(
        self,
        kind: str | Sequence[str],
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Event:
        """Return the first event of *kind* (since event number *since*) matching *predicate*.

        Events already received count: this never misses one that came early.

        Raises:
            AssertionError: none came within *timeout* seconds (with the recent events).
        """
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)

        def check() -> Event | None:
            for event in self.events[since:]:
                if event.get("event") in kinds and (predicate is None or predicate(event)):
                    return event
            return None

        with self.cond:
            found = self.cond.wait_for(check, timeout)
        if found is None:
            raise AssertionError(f"no {'/'.join(kinds)} event within {timeout}s\n{self.describe()}")
        return found

    def wait_for_messages(
        self,
        count: int,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 30.0,
        *,
        since: int = 0,
    ) -> list[Event]:
        """Wait until *count* matching ``message`` events arrived; return them in order."""

        def check() -> list[Event] | None:
            found = [
                e
                for e in self.events[since:]
                if e.get("event") == "message" and (predicate is None or predicate(e))
            ]
            return found if len(found) >= count else None

        with self.cond:
            found = self.cond.wait_for(check, timeout)
        if found is None:
            got = len(self.find("message", predicate, since=since))
            raise AssertionError(f"{got} of {count} messages within {timeout}s\n{self.describe()}")
        return found

    # -- STOMP commands ---------------------------------------------------------------------

    def connect(
        self,
        url: str,
        *,
        login: str | None = None,
        passcode: str | None = None,
        connect_headers: Mapping[str, str] | None = None,
        heartbeat_incoming: int = 0,
        heartbeat_outgoing: int = 0,
        versions: Sequence[str] | None = None,
        protocols: Sequence[str] | None = None,
        force_binary_ws_frames: bool = False,
        split_large_frames: bool = False,
        max_websocket_chunk_size: int | None = None,
        heartbeat_tolerance_multiplier: float | None = None,
        wait: bool = True,
        timeout: float = 15.0,
    ) -> Event | None:
        """Activate the client; with *wait*, return the ``connected`` event.

        Raises:
            AssertionError: *wait* and the server sent ERROR or closed instead.
        """
        headers = dict(connect_headers or {})
        if login is not None:
            headers["login"] = login
        if passcode is not None:
            headers["passcode"] = passcode
        since = self.mark()
        self.command(
            "connect",
            url=url,
            connectHeaders=headers,
            heartbeatIncoming=heartbeat_incoming,
            heartbeatOutgoing=heartbeat_outgoing,
            versions=list(versions) if versions is not None else None,
            protocols=list(protocols) if protocols is not None else None,
            forceBinaryWSFrames=force_binary_ws_frames,
            splitLargeFrames=split_large_frames,
            maxWebSocketChunkSize=max_websocket_chunk_size,
            heartbeatToleranceMultiplier=heartbeat_tolerance_multiplier,
            debug=self.debug or None,
        )
        if not wait:
            return None
        event = self.wait_for(("connected", "error", "ws-close"), timeout=timeout, since=since)
        if event["event"] != "connected":
            raise AssertionError(f"connect failed: {event}\n{self.describe()}")
        return event

    def subscribe(
        self,
        destination: str,
        id: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        receipt: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Subscribe and return the subscription id; with *receipt*, wait for its RECEIPT."""
        hdrs = dict(headers or {})
        if receipt:
            hdrs["receipt"] = receipt
        done = self.command("subscribe", destination=destination, id=id, headers=hdrs)
        if receipt:
            self.wait_for_receipt(receipt, timeout)
        return str(done["id"])

    def unsubscribe(
        self, id: str, headers: Mapping[str, str] | None = None, *, receipt: str | None = None
    ) -> None:
        hdrs = dict(headers or {})
        if receipt:
            hdrs["receipt"] = receipt
        self.command("unsubscribe", id=id, headers=hdrs)
        if receipt:
            self.wait_for_receipt(receipt)

    def send(
        self,
        destination: str,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        binary_body: bytes | None = None,
        skip_content_length: bool = False,
        receipt: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        hdrs = dict(headers or {})
        if receipt:
            hdrs["receipt"] = receipt
        self.command(
            "send",
            destination=destination,
            body=body if binary_body is None else None,
            headers=hdrs,
            binaryBody=base64.b64encode(binary_body).decode() if binary_body is not None else None,
            skipContentLengthHeader=skip_content_length or None,
            timeout=max(timeout, 10.0),
        )
        if receipt:
            self.wait_for_receipt(receipt, timeout)

    def ack(
        self,
        message: Event | None = None,
        *,
        message_id: str | None = None,
        subscription: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """ACK a received ``message`` event (stompjs picks the header), or explicit ids."""
        self._settle("ack", message, message_id, subscription, headers)

    def nack(
        self,
        message: Event | None = None,
        *,
        message_id: str | None = None,
        subscription: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """NACK a received ``message`` event, or explicit ids (as :meth:`ack`)."""
        self._settle("nack", message, message_id, subscription, headers)

    def _settle(
        self,
        cmd: str,
        message: Event | None,
        message_id: str | None,
        subscription: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        if message is not None:
            self.command(cmd, ref=message["ref"], headers=dict(headers or {}))
        else:
            self.command(
                cmd, messageId=message_id, subscription=subscription, headers=dict(headers or {})
            )

    def begin(self, transaction: str | None = None) -> str:
        return str(self.command("begin", transaction=transaction)["transaction"])

    def commit(self, transaction: str) -> None:
        self.command("commit", transaction=transaction)

    def abort(self, transaction: str) -> None:
        self.command("abort", transaction=transaction)

    def disconnect(self, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> None:
        """DISCONNECT with a receipt and wait for the socket to close."""
        self.command("disconnect", headers=dict(headers) if headers else None, timeout=timeout)

    def force_close(self) -> None:
        """Close the WebSocket without DISCONNECT."""
        self.command("force-close")

    def silence(self) -> None:
        """Stop sending heart-beats, as a hung client would."""
        self.command("silence")

    def raw(self, data: str | bytes) -> None:
        """Write *data* to the WebSocket as is: text for ``str``, binary for ``bytes``."""
        if isinstance(data, bytes):
            self.command("raw", base64=base64.b64encode(data).decode())
        else:
            self.command("raw", data=data)

    def wait_for_receipt(self, receipt_id: str, timeout: float = 10.0) -> Event:
        return self.wait_for(
            "receipt", lambda e: e["headers"].get("receipt-id") == receipt_id, timeout
        )

    def wait_for_message(
        self,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Event:
        return self.wait_for("message", predicate, timeout, since=since)

    # -- life cycle -----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """End the driver: it closes its socket and exits; killed if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # The readers end at EOF, once node has exited; close the pipes after them.
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> StompJsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def messages_of(c: StompJsClient, sub_id: str) -> list[str]:
    """The bodies *c* received on subscription *sub_id* so far, in order."""
    return [
        e["body"] for e in c.find("message", lambda e: e["headers"].get("subscription") == sub_id)
    ]


def received_before_marker(
    sender: StompJsClient, destination: str, receiver: StompJsClient, sub_id: str
) -> list[str]:
    """Every body *receiver* got on *sub_id* before a marker *sender* sends now.

    How a test shows that something did *not* arrive, without sleeping: whatever was going
    to arrive on this path has arrived once the marker, sent after it, has.
    """
    marker = f"marker-{receiver.mark()}-{id(sender):x}"
    sender.send(destination, marker)
    receiver.wait_for_message(lambda e: e["body"] == marker)
    bodies = messages_of(receiver, sub_id)
    return bodies[: bodies.index(marker)]
