"""Thousands of STOMP sessions from one test: raw WebSockets on an asyncio loop of their own.

stomp.py runs a thread per connection, far too heavy for 3,000 sockets. A :class:`Crowd`
opens *count* anonymous STOMP 1.2 sessions over bare WebSockets (the ``websockets``
package), each subscribed to one topic with a receipt, on an event loop in a thread of
its own, so that a sync test can sleep, signal processes and run commands meanwhile.

Each session behaves as a client told to by the server would: when the server closes it
(with or without an ERROR), it counts the close, remembers the ERROR's ``message`` and,
with ``reconnect=True``, connects and subscribes again after a short random pause. The
counters are plain ints, read by the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["Crowd"]


class Crowd:
    """*count* anonymous sessions on *url*, each subscribed to *topic*.

    Args:
        url: the node's ``ws://.../ws``.
        count: how many sessions.
        topic: the destination each one subscribes to.
        reconnect: connect again when the server closes a session.
        concurrency: the most connection attempts in flight at once.
    """

    def __init__(
        self, url: str, count: int, topic: str, *, reconnect: bool = True, concurrency: int = 50
    ) -> None:
        self.url = url
        self.count = count
        self.topic = topic
        self.reconnect = reconnect
        self.concurrency = concurrency
        #: Sessions subscribed now (RECEIPT received, socket not closed since).
        self.subscribed = 0
        #: Sockets closed by the server, and the ERROR messages that came before.
        self.closed_by_server = 0
        self.errors: Counter[str] = Counter()
        #: Connection attempts that failed (refused, timed out, closed before RECEIPT).
        self.failed_attempts = 0
        #: Bodies received on the topic by each open session: index -> bodies.
        self.received: dict[int, list[str]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gate: asyncio.Semaphore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- from the test's thread ----------------------------------------------------------

    def start(self) -> None:
        """Start every session (in the background: poll :attr:`subscribed`)."""
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        """Close every session and stop the loop."""
        self._stopping = True
        with contextlib.suppress(Exception):
            self._call(self._stop(), timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def open_sessions(self) -> list[int]:
        """The indexes of the sessions subscribed now."""
        return list(self.received)

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- on the crowd's loop ---------------------------------------------------------------

    async def _start(self) -> None:
        self._gate = asyncio.Semaphore(self.concurrency)
        self._tasks = [asyncio.create_task(self._session(i)) for i in range(self.count)]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _session(self, index: int) -> None:
        while not self._stopping:
            ws = await self._open(index)
            if ws is None:
                await asyncio.sleep(0.2 + random.random())
                continue
            try:
                await self._read(index, ws)
            finally:
                if self.received.pop(index, None) is not None:
                    self.subscribed -= 1
            if not self.reconnect or self._stopping:
                return
            await asyncio.sleep(random.random())  # as clients back off, not all at once

    async def _open(self, index: int) -> ClientConnection | None:
        assert self._gate is not None
        async with self._gate:
            try:
                ws = await connect(
                    self.url,
                    subprotocols=["v12.stomp"],  # type: ignore[list-item]
                    open_timeout=30,
                    ping_interval=None,
                    compression=None,
                    max_queue=None,
                )
                await ws.send("CONNECT\naccept-version:1.2\nhost:127.0.0.1\nheart-beat:0,0\n\n\x00")
                await ws.send(f"SUBSCRIBE\nid:0\ndestination:{self.topic}\nreceipt:r\n\n\x00")
                async with asyncio.timeout(30):
                    while True:
                        message = await ws.recv()
                        text = message.decode() if isinstance(message, bytes) else message
                        if "RECEIPT" in text:
                            break
                        if text.startswith("ERROR"):
                            raise ConnectionError(text[:200])
            except Exception:
                self.failed_attempts += 1
                return None
        self.received[index] = []
        self.subscribed += 1
        return ws

    async def _read(self, index: int, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                text = message.decode() if isinstance(message, bytes) else message
                for frame in text.split("\x00"):
                    frame = frame.lstrip("\r\n")
                    if frame.startswith("MESSAGE"):
                        self.received[index].append(frame.split("\n\n", 1)[1])
                    elif frame.startswith("ERROR"):
                        head = frame.split("\n\n", 1)[0]
                        found = [h[8:] for h in head.split("\n") if h.startswith("message:")]
                        self.errors[found[0] if found else ""] += 1
        if not self._stopping:
            self.closed_by_server += 1
        with contextlib.suppress(Exception):
            await ws.close()
