"""The W5 clients: STOMP sessions that outlive their node and resume with ``x-resume-from``.

Each :class:`StormClient` is one user's session (a connection token login) subscribed to
``/user/queue/bench``. It keeps the ``message-id`` of the last message it received; when its
WebSocket closes (its node was SIGKILLed), it waits a random delay up to ``jitter`` seconds,
as a real client's reconnect delay would, and connects to one of the surviving nodes with
``x-resume-from`` set to that id, until it is subscribed again. It counts what the user
sees: the distinct messages (by the sequence number in the body), the duplicates, and the
gaps announced (``x-recovered:false`` on a RECEIPT or a MESSAGE).

An ERROR with ``x-resume-from`` (its node missed a message for it: a missed mark) says
where to resume instead: just before the earliest message missed, which may be before the
last one received. The client resumes from there (or from its own position, if that is
earlier: a replay the ERROR cut short), and that becomes its position, so that a second
ERROR before the replay got back there cannot move it past the first hole. It counts the
messages it
gets again, at or before the newest id it had, as ``replayed`` (the replay the ERROR
asked for), not as duplicates.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from websockets.asyncio.client import connect

__all__ = ["StormClient", "Tally"]


def _id_key(message_id: str) -> tuple[int, int]:
    """A stream id ``"<ms>-<seq>"`` as numbers, to compare."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


class Tally:
    """Counters shared by every :class:`StormClient` of one run."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.reconnects = 0
        self.reconnect_failures = 0
        self.resubscribed = 0
        self.last_resubscribed = 0.0
        #: Why reconnect attempts failed: exception name (or "closed") -> count.
        self.retry_reasons: dict[str, int] = {}


class StormClient:
    """One user session; :meth:`run` keeps it connected until :attr:`stop` is set.

    Args:
        index: which of the users this is; the sender sends sequence *n* to user
            ``n % users``.
        login, token: the CONNECT login and passcode.
        expected: how many messages the sender sends to this user.
    """

    def __init__(self, index: int, login: str, token: str, expected: int, tally: Tally) -> None:
        self.index = index
        self.login = login
        self.token = token
        self.expected = expected
        self.tally = tally
        self.seen: set[int] = set()
        self.duplicates = 0
        self.gaps = 0
        self.last_id: str | None = None
        #: From an ERROR's x-resume-from: where the next subscription resumes; and the
        #: last id received when it came (re-received ids up to it are ``replayed``).
        self.resume_from: str | None = None
        self.replay_until: tuple[int, int] | None = None
        self.replayed = 0
        self.newest: tuple[int, int] | None = None
        self.done_at: float | None = None
        self.subscribed = asyncio.Event()
        self.stop = asyncio.Event()
        self.failed: str | None = None

    async def _session(self, url: str, resume: bool) -> None:
        """Connect, subscribe (resuming when asked) and read until the socket closes."""
        async with connect(
            url,
            subprotocols=["v12.stomp"],  # type: ignore[list-item]
            open_timeout=30,
            ping_interval=None,
            compression=None,
            max_queue=None,
        ) as ws:
            headers = [
                "accept-version:1.2",
                "host:127.0.0.1",
                "heart-beat:0,0",
                f"login:{self.login}",
                f"passcode:{self.token}",
            ]
            await ws.send("CONNECT\n" + "\n".join(headers) + "\n\n\x00")
            sub = "SUBSCRIBE\nid:0\ndestination:/user/queue/bench\nreceipt:sub-0\n"
            start = self.resume_from or self.last_id
            if resume and start is not None:
                sub += f"x-resume-from:{start}\n"
            await ws.send(sub + "\n\x00")
            async for message in ws:
                text = message.decode() if isinstance(message, bytes) else message
                for frame in text.split("\x00"):
                    self._frame(frame.lstrip("\r\n"), resume)

    def _frame(self, frame: str, resume: bool) -> None:
        if not frame:
            return
        head, _, body = frame.partition("\n\n")
        lines = head.split("\n")
        if lines[0] == "MESSAGE":
            headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            if headers.get("x-recovered") == "false":
                self.gaps += 1
            message_id = headers.get("message-id")
            if message_id is not None:
                self.last_id = message_id  # the position in the stream, replays included
                if self.newest is None or _id_key(message_id) > self.newest:
                    self.newest = _id_key(message_id)
            if not body:
                return  # a gap MESSAGE (x-gap:true): counted above
            seq = int(body.split(" ", 1)[0])
            self.tally.deliveries += 1
            if seq in self.seen:
                replay = self.replay_until is not None and message_id is not None
                if replay and _id_key(message_id or "") <= (self.replay_until or (0, 0)):
                    self.replayed += 1
                else:
                    self.duplicates += 1
            else:
                self.seen.add(seq)
                if len(self.seen) >= self.expected and self.done_at is None:
                    self.done_at = time.monotonic()
        elif lines[0] == "RECEIPT":
            if "x-recovered:false" in lines:
                self.gaps += 1
            if resume:
                self.tally.resubscribed += 1
                self.tally.last_resubscribed = time.monotonic()
                self.resume_from = None  # resumed: next time, from the last id again
            self.subscribed.set()
        elif lines[0] == "ERROR":
            headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            if "x-resume-from" in headers:
                # From the header's id, or from our own position if it is earlier: a
                # replay cut short by this ERROR has not reached the header's id yet.
                start = headers["x-resume-from"]
                if self.last_id is not None and _id_key(self.last_id) < _id_key(start):
                    start = self.last_id
                # That is the session's position from now on: what came after it is sent
                # again. An ERROR that comes before the resumed replay reached the old
                # last id must not move the position back past this one.
                self.resume_from = self.last_id = start
                if self.replay_until is None or (self.newest or (0, 0)) > self.replay_until:
                    self.replay_until = self.newest
            else:
                self.failed = frame[:300]

    async def run(self, first: str, fallbacks: Sequence[str], jitter: float) -> None:
        """Stay connected: to *first*, then to one of *fallbacks* after each loss."""
        url, resume = first, False
        while not self.stop.is_set():
            reason = "closed"
            try:
                await self._session(url, resume)
            except Exception as exc:  # counted, then retried
                reason = type(exc).__name__
            if self.stop.is_set():
                return
            if not self.subscribed.is_set() and not resume:
                self.failed = self.failed or "the first subscription failed"
                self.subscribed.set()
                return
            # Lost: reconnect to a survivor after a random delay, resuming.
            if resume:
                self.tally.reconnect_failures += 1
                reasons = self.tally.retry_reasons
                reasons[reason] = reasons.get(reason, 0) + 1
            else:
                self.tally.reconnects += 1
            url, resume = fallbacks[self.index % len(fallbacks)], True
            await asyncio.sleep(random.uniform(0, jitter))
