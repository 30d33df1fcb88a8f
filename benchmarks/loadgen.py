"""The load generator: many WebSocket clients in this one asyncio process.

:class:`Recorder` collects what the clients receive for one workload; each client parses
bodies ``"<seq> <send time>"`` (see ``sender.py``) into a latency and a sequence number.
Three client dialects are spoken: ``stomp`` (STOMP 1.2 over ``v12.stomp``), ``plain``
(the Channels baseline: one text message per event, ``ready`` once subscribed) and
``sio`` (Engine.IO 4 / Socket.IO 5 over a bare WebSocket: ``40`` to join the default
namespace, ``42["bench", body]`` events, ``2``/``3`` ping/pong).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["Client", "Recorder", "close_all", "connect_all", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values* by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Recorder:
    """What every client received during one workload."""

    latencies: list[float] = field(default_factory=list)
    #: seq -> deliveries of it (1 per client that got it).
    counts: dict[int, int] = field(default_factory=dict)
    #: seq -> receive time of its last delivery.
    last_seen: dict[int, float] = field(default_factory=dict)
    #: seq -> its send time (from the body).
    sent_at: dict[int, float] = field(default_factory=dict)
    deliveries: int = 0
    last_recv: float = 0.0
    errors: int = 0

    def record(self, body: str) -> None:
        now = time.time()
        try:
            seq_text, sent_text = body.split(" ", 1)
            seq, sent = int(seq_text), float(sent_text)
        except ValueError:
            self.errors += 1
            return
        self.deliveries += 1
        self.counts[seq] = self.counts.get(seq, 0) + 1
        self.last_seen[seq] = now
        self.sent_at[seq] = sent
        self.latencies.append(now - sent)
        self.last_recv = now

    @property
    def completion(self) -> dict[int, float]:
        """seq -> seconds from its send until its last delivery (fan-out completion)."""
        return {seq: last - self.sent_at[seq] for seq, last in self.last_seen.items()}

    async def drain(self, expected: int, idle: float = 3.0, limit: float = 30.0) -> None:
        """Wait until *expected* deliveries arrived, nothing came for *idle* s, or *limit* s."""
        deadline = time.monotonic() + limit
        seen, quiet_since = self.deliveries, time.monotonic()
        while self.deliveries < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.deliveries != seen:
                seen, quiet_since = self.deliveries, time.monotonic()
            elif time.monotonic() - quiet_since > idle:
                break


class Client:
    """One WebSocket client; :attr:`recorder` may be swapped between workloads."""

    def __init__(self, url: str, dialect: str, recorder: Recorder) -> None:
        self.url = url
        self.dialect = dialect
        self.recorder = recorder
        self.ws: ClientConnection | None = None
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(
        self, *, login: str | None, passcode: str | None, destination: str, wait: float = 30.0
    ) -> None:
        """Connect, CONNECT and SUBSCRIBE with a receipt (STOMP), or wait for ``ready``."""
        subprotocols = ["v12.stomp"] if self.dialect == "stomp" else None
        self.ws = await connect(
            self.url,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            open_timeout=wait,
            ping_interval=None,
            compression=None,
            max_queue=None,
        )
        self._reader = asyncio.create_task(self._read())
        if self.dialect == "stomp":
            headers = ["accept-version:1.2", "host:127.0.0.1", "heart-beat:0,0"]
            if login:
                headers += [f"login:{login}", f"passcode:{passcode}"]
            await self.ws.send("CONNECT\n" + "\n".join(headers) + "\n\n\x00")
            await self.ws.send(f"SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:sub-0\n\n\x00")
        elif self.dialect == "sio":
            await self.ws.send("40")
        await asyncio.wait_for(self.ready.wait(), wait)
        if self.failed:
            raise RuntimeError(self.failed)

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for message in self.ws:
                text = message.decode() if isinstance(message, bytes) else message
                if self.dialect == "sio":
                    if text == "2":
                        await self.ws.send("3")
                    elif text.startswith("42"):
                        event = json.loads(text[2:])
                        if event[0] == "ready":
                            self.ready.set()
                        else:
                            self.recorder.record(event[1])
                    elif text.startswith("44"):
                        self.failed = text[:300]
                        self.ready.set()
                    continue
                if self.dialect == "plain":
                    if text == "ready":
                        self.ready.set()
                    else:
                        self.recorder.record(text)
                    continue
                for frame in text.split("\x00"):
                    frame = frame.lstrip("\r\n")
                    if not frame:
                        continue
                    if frame.startswith("MESSAGE"):
                        self.recorder.record(frame.split("\n\n", 1)[1])
                    elif frame.startswith("RECEIPT"):
                        self.ready.set()
                    elif frame.startswith("ERROR"):
                        self.failed = frame[:300]
                        self.ready.set()
        if not self.ready.is_set():
            self.failed = self.failed or "connection closed before the subscription"
            self.ready.set()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


async def connect_all(
    specs: Iterable[tuple[str, str | None, str | None]],
    *,
    dialect: str,
    destination: str,
    recorder: Recorder,
    concurrency: int = 50,
    limit: float = 180.0,
) -> tuple[list[Client], int, float]:
    """Open one client per ``(url, login, passcode)``, *concurrency* at a time.

    Returns:
        the clients that subscribed, how many failed, and the seconds it took.
    """
    gate = asyncio.Semaphore(concurrency)
    clients: list[Client] = []
    failed = 0

    async def one(url: str, login: str | None, passcode: str | None) -> None:
        nonlocal failed
        async with gate:
            client = Client(url, dialect, recorder)
            try:
                await client.start(login=login, passcode=passcode, destination=destination)
            except Exception:  # counted, not raised
                failed += 1
                await client.close()
            else:
                clients.append(client)

    started = time.monotonic()
    tasks = [asyncio.create_task(one(*spec)) for spec in specs]
    done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    failed += len(pending)
    return clients, failed, time.monotonic() - started


async def close_all(clients: list[Client], concurrency: int = 200, limit: float = 60.0) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            await client.close()

    tasks = [asyncio.create_task(one(c)) for c in clients]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()
