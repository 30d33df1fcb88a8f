"""A session's outgoing queue: what it holds in frames and bytes, and who writes it.

The consumer owns one :class:`Outbox` per session. Frames are queued on the session's
:class:`~stomp_cluster.protocol.StompConnection` (the node's fan-out, receipts,
heart-beats, errors) and written by a single flusher, so that they reach the socket in
the order they were queued and the node never waits on a slow socket.

Output is bounded in bytes as well as in frames: everything queued to the session and
not yet taken by the ASGI server (MESSAGEs, each copy counted, receipts, errors) is held
under ``MAX_OUTBOX_BYTES`` (and ``MAX_OUTBOX`` frames), and a session over it is closed
as a slow consumer with an ERROR saying so; what it missed stays in the history. Under
uvicorn a socket that does not drain makes the flusher wait, so the queue grows here
and the limit bites. Under daphne the server takes every frame at once and buffers it
itself, unseen, so replay and redelivery (which a client can ask for in bulk) are also
bounded by what was handed over since the client last sent anything: more than
``MAX_OUTBOX_BYTES`` of them in one go ends the session the same way.

The outbox decides *that* a session is too slow and says why; the consumer, which owns
the session's life, ends it. Writing goes through a callable the consumer gives, so the
consumer stays the only place that talks to the WebSocket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from stomp_cluster.protocol import PreparedMessage, State, StompConnection
from stomp_cluster.typing import Headers

__all__ = ["Outbox", "ws_message"]

#: Flush tasks in flight, held so that the loop's weak references do not lose them.
_flushes: set[asyncio.Task[None]] = set()


def ws_message(chunk: bytes) -> dict[str, Any]:
    """The ASGI ``websocket.send`` message that writes *chunk*.

    Text when the frame is valid UTF-8 (what browsers' STOMP clients expect), binary
    otherwise so that arbitrary bodies survive.
    """
    try:
        return {"type": "websocket.send", "text": chunk.decode("utf-8")}
    except UnicodeDecodeError:
        return {"type": "websocket.send", "bytes": chunk}


class Outbox:
    """The frames one session queued and the ASGI server has not taken yet.

    Args:
        connection: the session's protocol state machine, where frames are queued.
        write: sends one ASGI message to the socket (the consumer's ``send``).
        stats: the node's counters (``delivered``, ``frames_out``, ``bytes_out``).
        max_frames: ``MAX_OUTBOX``: frames waiting that make a session too slow.
        max_bytes: ``MAX_OUTBOX_BYTES``: bytes waiting, or replayed since the client
            last spoke, that make a session too slow.
        is_closed: whether the session has ended; a flush stops writing then.
        on_slow: called when a queued message takes the session over a budget (it
            must be idempotent: it may be called again before the session ends).
        on_queued: called with the subscription and message-id of each queued message
            that has an id (from a history), so that it can await its ACK.
        on_closing: awaited after a flush that leaves the protocol closing (an
            ERROR went out): the consumer closes the socket.
    """

    def __init__(
        self,
        connection: StompConnection,
        write: Callable[[dict[str, Any]], Awaitable[None]],
        stats: MutableMapping[str, int],
        *,
        max_frames: int,
        max_bytes: int,
        is_closed: Callable[[], bool],
        on_slow: Callable[[], None],
        on_queued: Callable[[str, str], None],
        on_closing: Callable[[], Awaitable[None]],
    ) -> None:
        self._connection = connection
        self._write = write
        self._stats = stats
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._is_closed = is_closed
        self._on_slow = on_slow
        self._on_queued = on_queued
        self._on_closing = on_closing
        #: Frames handed to the protocol or taken from it but not yet written to the
        #: socket: the queue that ``MAX_OUTBOX`` bounds.
        self.backlog = 0
        #: Bytes taken from the protocol and not yet handed to the server; with the
        #: protocol's ``outgoing_bytes``, what ``MAX_OUTBOX_BYTES`` bounds.
        self.unsent = 0
        #: Bytes of replay and redelivery handed over since the client last sent a
        #: WebSocket message: the bound that holds under daphne too.
        self.replayed = 0
        #: When a frame was last written (``time.monotonic()``), for heart-beats.
        self.last_sent = time.monotonic()
        #: Whether a flush is writing now.
        self.flushing = False
        self._flush_scheduled = False

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet taken by the server: what ``MAX_OUTBOX_BYTES`` bounds."""
        return self._connection.outgoing_bytes + self.unsent

    def over_budget(self) -> bool:
        """Whether more bytes or frames wait than the session may hold."""
        return self.queued_bytes > self.max_bytes or self.backlog >= self.max_frames

    def client_spoke(self) -> None:
        """The client sent something: it is alive and reading, we hope; replay restarts."""
        self.replayed = 0

    def queue_message(
        self,
        sub_id: str,
        body: bytes,
        headers: Headers,
        message_id: str | None,
        prepared: PreparedMessage | None = None,
        *,
        live: bool = False,
        replay: bool = False,
    ) -> bool:
        """Queue one MESSAGE on subscription *sub_id*, counting it against the budgets.

        *live* marks a message the node delivers, which counts towards ``MAX_OUTBOX``
        frames; *replay* a replayed, redelivered or held-back one, which counts towards
        the replay budget. A message that takes the session over a budget is
        still queued (the client may read it with the ERROR), and ``on_slow`` is called.
        The caller flushes (:meth:`schedule_flush`).

        Returns:
            Whether it was queued: False when the subscription is gone.
        """
        before = self._connection.outgoing_bytes
        sent = self._connection.send_message(
            sub_id,  # type: ignore[arg-type]
            body if prepared is None else prepared,
            headers=headers,
            message_id=message_id,
        )
        if sent is None:
            return False
        self._stats["delivered"] += 1
        if message_id is not None:
            self._on_queued(sub_id, message_id)
        if replay:
            self.replayed += self._connection.outgoing_bytes - before
        if self.queued_bytes > self.max_bytes or (replay and self.replayed > self.max_bytes):
            self._on_slow()
        if live:
            self.backlog += 1
        return True

    def slow_reason(self, held_bytes: int = 0) -> str:
        """Why the session is too slow, for its ERROR frame.

        Args:
            held_bytes: live messages held back by a recovery in progress, which count
                against ``MAX_OUTBOX_BYTES`` too.
        """
        if self.backlog >= self.max_frames:
            return f"more than {self.max_frames} messages waiting"
        if self.queued_bytes > self.max_bytes or held_bytes > self.max_bytes:
            return f"more than {self.max_bytes} bytes waiting"
        return f"more than {self.max_bytes} bytes replayed without a frame from the client"

    def schedule_flush(self) -> None:
        """Write what is queued soon, in a task of its own; never waits.

        One flush task at a time: a node delivers a whole batch of messages before the
        task runs, and a task per message cost a fifth of a node's CPU under W3.
        """
        if not self.flushing and not self._flush_scheduled:
            self._flush_scheduled = True
            task = asyncio.get_running_loop().create_task(self.flush())
            # Keep a reference until it is done: the loop holds tasks only weakly.
            _flushes.add(task)
            task.add_done_callback(_flushes.discard)

    async def flush(self) -> None:
        """Write everything queued, in order, then close if the protocol is closing.

        Under uvicorn this waits while the socket does not drain. Returns at once when
        another flush is writing (it will write what was queued meanwhile).
        """
        self._flush_scheduled = False
        if self.flushing:
            return
        self.flushing = True
        try:
            while not self._is_closed():
                chunks = self._connection.data_to_send()
                if not chunks:
                    break
                stats = self._stats
                stats["frames_out"] += len(chunks) - chunks.count(b"\n")  # not heart-beats
                stats["bytes_out"] += sum(map(len, chunks))
                self.backlog = len(chunks)
                self.unsent = sum(map(len, chunks))
                for chunk in chunks:
                    if self._is_closed():
                        break  # closed meanwhile (slow consumer): the socket is not ours
                    await self._write(ws_message(chunk))
                    self.backlog -= 1
                    self.unsent -= len(chunk)
                self.last_sent = time.monotonic()
            if self._connection.state is State.CLOSING and not self._is_closed():
                await self._on_closing()
        finally:
            self.flushing = False
