"""Recovery of missed messages when a client subscribes again.

Theory of operation
-------------------
Messages sent to a user (and to broker destinations listed in ``HISTORY_TOPICS``) are
appended to a history before they are routed (:mod:`stomp_cluster.send`); the history
id is the MESSAGE ``message-id``, and ids only grow. A client that reconnects, to any
node, subscribes with ``x-resume-from: <the last message-id it saw>`` (or sends that
header on CONNECT for all its subscriptions). We then:

1. mark the subscription *recovering* before it is routed, so that live messages that
   arrive meanwhile are held back rather than delivered ahead of older ones;
2. route the subscription (node table, registry), so nothing sent from now on is missed;
3. read the history after the client's id and deliver it, oldest first;
4. release the held-back live messages whose id is newer than the last one delivered,
   and from then on drop any message whose id is not newer than the last delivered one.

Steps 2–4 make the switch from history to live without a gap (anything sent after step 2
is either in the history read or held back) and without a duplicate (ids are compared).

A subscription to a user destination without ``x-resume-from`` still gets the messages
sent while the user had no live session at all (``send_to_user`` marks them pending).

With ``ack:client`` or ``ack:client-individual``, the user's acknowledgements move a
cursor kept with the history. A NACK sends the message again at once, read back from the
history (a session keeps the ids of what awaits an acknowledgement, never the bodies:
10,000 unacknowledged messages of 1 MiB would otherwise be 10 GiB held for one client;
one trimmed from the history meanwhile is not sent again), and a later subscription in
one of those modes starts after the cursor, so whatever was delivered but
not acknowledged (say, the node crashed first) comes again, with ``redelivered: true``.
Acknowledged messages below the cursor never come again; one acknowledged out of order
(client-individual) above an older unacknowledged one may, since the cursor marks the
oldest gap.

Replay is bounded. The history is read :data:`RECOVERY_PAGE` entries at a time, and
before each further page the consumer hands what is queued to the socket (*drain*),
which under uvicorn waits while the client does not read; the consumer's byte budget
(``MAX_OUTBOX_BYTES``) ends a session that still falls behind, and the replay stops
there. The client reconnects and resumes from the last id it received: nothing is lost.

The headers recovery sets (``x-recovered``, ``redelivered``) come first among a
MESSAGE's extra headers, and a copy of them among the stored ones is dropped: under
STOMP 1.2 the first of a repeated header wins, and a recipient trusts them.

Every gap is announced. When the history no longer reaches back to the client's id, or
to the first message sent while the user was offline (trimmed by ``HISTORY_MAX_LENGTH`` or
``HISTORY_MAX_AGE``), or cannot be read at all, the SUBSCRIBE's RECEIPT carries
``x-recovered: false`` (whether or not the client sent ``x-resume-from``) and so does the
first recovered MESSAGE: the client should reload its state. When no MESSAGE follows (all
that was missed on this destination was trimmed) and the SUBSCRIBE asked for no receipt,
the client is told by a *gap MESSAGE* on that subscription: an empty body with
``x-recovered: false`` and ``x-gap: true`` (Centrifugo's clients know the same fact as
``recovered: false``), whose ``message-id`` is the history's newest id when it can be
read, so that a client resuming from the last id it saw gets what came after the gap.
Silence never means "nothing was lost".

Rewind
------

A SUBSCRIBE with ``x-rewind: N`` on a destination with a history gets the last N stored
messages of that destination before live ones, each marked ``x-rewind: true``: a chat
room's recent lines on joining. It runs through the same steps as a recovery, so the
switch to live messages has no gap and no duplicate; only the starting point differs:
the history finds the id just before the N-th newest message of the destination
(:meth:`~stomp_cluster.history.base.HistoryBackend.rewind_point`, one backward walk),
and recovery reads on from there. N is capped by ``MAX_REWIND``, and the rewound bodies
by half of ``MAX_OUTBOX_BYTES`` (newest first: an older message that does not fit is left
out), so that a rewind never ends the session as a slow consumer. Fewer messages than
asked for is not a gap: no ``x-recovered: false`` is said for a rewind, except when the
history cannot be read at all.

``x-resume-from`` (on the SUBSCRIBE or the CONNECT) wins over ``x-rewind``: a client
that reconnects sends the last id it saw and gets exactly what came after it. On a user
destination, messages that waited for the user (pending) or await an acknowledgement
are not skipped: the rewind starts at the older of the two points.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stomp_cluster.backends import get_history
from stomp_cluster.exceptions import BackendUnavailable
from stomp_cluster.history.base import parse_id, previous_id
from stomp_cluster.protocol import AckMode
from stomp_cluster.typing import Headers

__all__ = [
    "GAP_HEADER",
    "RECOVERED_HEADER",
    "RECOVERY_PAGE",
    "REDELIVERED_HEADER",
    "RESUME_HEADER",
    "REWIND_HEADER",
    "RecoveryState",
    "SessionRecovery",
    "parse_rewind",
]

logger = logging.getLogger(__name__)

#: SUBSCRIBE (or CONNECT) header naming the last message-id the client saw.
RESUME_HEADER = "x-resume-from"
#: RECEIPT/MESSAGE header telling whether the history reached back far enough.
RECOVERED_HEADER = "x-recovered"
#: MESSAGE header of a gap MESSAGE: an empty body that only says messages were lost.
GAP_HEADER = "x-gap"
#: MESSAGE header on a message that may have been delivered before (JMS, RabbitMQ use it).
REDELIVERED_HEADER = "redelivered"

#: SUBSCRIBE header asking for the last N stored messages; MESSAGE header (``true``) on
#: each message a rewind delivers.
REWIND_HEADER = "x-rewind"

#: History entries read per round trip while recovering a subscription; between pages
#: the session's queue is drained.
RECOVERY_PAGE = 100

#: Headers only recovery sets on a MESSAGE; a stored message's copies are dropped.
_OWN_HEADERS = frozenset({RECOVERED_HEADER, REDELIVERED_HEADER, GAP_HEADER, REWIND_HEADER})

# [0-9], not \d: int() would also accept other scripts' digits.
_COUNT = re.compile(r"[0-9]{1,20}")

#: The header on each rewound MESSAGE.
_REWOUND: Headers = ((REWIND_HEADER, "true"),)


def parse_rewind(value: str) -> int | None:
    """The message count of an ``x-rewind`` header, or None when it is not one.

    A count is a whole number written in ASCII digits, 0 or more (0 rewinds nothing);
    anything else (``-1``, ``2.5``, ``ten``, empty) is refused.
    """
    return int(value) if _COUNT.fullmatch(value) else None


#: The headers of a gap MESSAGE (no message-id of the history: it stands for none).
_GAP: Headers = ((RECOVERED_HEADER, "false"), (GAP_HEADER, "true"))


def _with(own: Headers, headers: Headers) -> Headers:
    """*own* (the server's headers) first, then *headers* without any copy of ours."""
    if not own:
        return headers
    return (*own, *(h for h in headers if h[0] not in _OWN_HEADERS))


@dataclass
class RecoveryState:
    """Per-session bookkeeping of the subscriptions that have a history."""

    #: Subscription id -> last id delivered on it from the history (the recovery's
    #: watermark): a live message at or below it was in the history read.
    last_ids: dict[str, str] = field(default_factory=dict)
    #: Subscription id -> live messages held back while it recovers.
    held: dict[str, list[tuple[str, bytes, Headers]]] = field(default_factory=dict)
    #: Subscription id -> (history key, destination) of client-acknowledged ones.
    acking: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Subscription id -> ids of delivered, not yet acknowledged messages, oldest first.
    unacked: dict[str, dict[str, None]] = field(default_factory=dict)
    #: Bytes of the bodies held back, all subscriptions together: the consumer ends a
    #: session whose recovery holds more than its byte budget.
    held_bytes: int = 0

    def begin(self, sub_id: str) -> None:
        """Start holding back live messages for *sub_id* (step 1)."""
        self.held[sub_id] = []

    def admit(self, sub_id: str, message_id: str | None, body: bytes, headers: Headers) -> bool:
        """Whether a live message may be delivered on *sub_id* now.

        Held back while recovering; afterwards dropped only when its id is not newer
        than the last one recovered from the history (it was in that read). Live
        messages are not compared with each other: two senders' messages may arrive in
        either order, and neither is a duplicate.
        """
        if message_id is None:
            return True  # not from a history: nothing to order it against
        held = self.held.get(sub_id)
        if held is not None:
            held.append((message_id, body, headers))
            self.held_bytes += len(body)
            return False
        last = self.last_ids.get(sub_id)
        return last is None or parse_id(message_id) > parse_id(last)

    def track(self, sub_id: str) -> None:
        """Remember delivered ids on *sub_id* from now on (a history-backed subscription)."""
        self.last_ids.setdefault(sub_id, "0-0")

    def delivered(self, sub_id: str, message_id: str) -> None:
        """Record that *message_id* went out on *sub_id*."""
        self.last_ids[sub_id] = message_id

    def finish(self, sub_id: str) -> list[tuple[str, bytes, Headers]]:
        """Stop holding back; return the held messages newer than the last delivered."""
        held = self.held.pop(sub_id, [])
        self.held_bytes -= sum(len(m[1]) for m in held)
        last = parse_id(self.last_ids.get(sub_id, "0-0"))
        fresh = sorted((m for m in held if parse_id(m[0]) > last), key=lambda m: parse_id(m[0]))
        unique: list[tuple[str, bytes, Headers]] = []
        for message in fresh:
            if not unique or unique[-1][0] != message[0]:
                unique.append(message)
        return unique

    def watch_acks(self, sub_id: str, key: str, destination: str) -> None:
        """Keep what *sub_id* delivers until acknowledged (client ack modes)."""
        self.acking[sub_id] = (key, destination)
        self.unacked[sub_id] = {}

    def record(self, sub_id: str, message_id: str) -> None:
        """A history message went out on *sub_id*; keep its id if it awaits an ACK."""
        unacked = self.unacked.get(sub_id)
        if unacked is not None:
            unacked.pop(message_id, None)
            unacked[message_id] = None

    def settle(self, sub_id: str, message_ids: tuple[str, ...]) -> str | None:
        """Forget acknowledged messages; return the new acknowledgement cursor.

        The cursor is the newest id below which everything delivered is acknowledged:
        a later subscription resumes after it. Returns None when it did not move.
        """
        unacked = self.unacked.get(sub_id)
        if unacked is None:
            return None
        settled = [m for m in message_ids if m in unacked]
        for m in settled:
            del unacked[m]
        if not settled:
            return None
        newest = max(settled, key=parse_id)
        if unacked:
            oldest_open = min(unacked, key=parse_id)
            if parse_id(oldest_open) < parse_id(newest):
                return previous_id(oldest_open)
        return newest

    def redeliveries(self, sub_id: str, message_ids: tuple[str, ...]) -> list[str]:
        """The ids of the NACKed messages to send again, oldest first."""
        unacked = self.unacked.get(sub_id, {})
        return sorted((m for m in message_ids if m in unacked), key=parse_id)

    def forget(self, sub_id: str) -> None:
        """The subscription is gone."""
        self.last_ids.pop(sub_id, None)
        self.held_bytes -= sum(len(m[1]) for m in self.held.pop(sub_id, ()))
        self.acking.pop(sub_id, None)
        self.unacked.pop(sub_id, None)


#: Queues one MESSAGE on a subscription: ``(subscription id, body, headers, message id)``;
#: returns whether it was queued.
SendMessage = Callable[[str, bytes, Headers, "str | None"], bool]

#: Hands the session's queue to the socket; returns whether the session may take more.
Drain = Callable[[], Awaitable[bool]]


class SessionRecovery:
    """The recovery and acknowledgement flows of one session, over its history.

    The consumer owns the socket and calls these at SUBSCRIBE, ACK and NACK time; this
    class reads and writes the history and queues MESSAGEs through *send*. Its
    :attr:`state` is the bookkeeping the consumer also consults for each live message.
    """

    def __init__(
        self,
        send: SendMessage,
        stats: Counter[str],
        session_id: str = "",
        *,
        drain: Drain | None = None,
    ) -> None:
        self.state = RecoveryState()
        self._send = send
        self._drain = drain
        self._stats = stats
        self.session_id = session_id

    async def recover(
        self,
        sub_id: str,
        key: str,
        destination: str,
        resume: str | None,
        ack: AckMode,
        *,
        per_user: bool,
        receipted: bool = True,
        rewind: int = 0,
        rewind_bytes: int | None = None,
    ) -> Headers:
        """Deliver what the subscription missed, then the live messages held back.

        *per_user* is True for a user destination: its offline messages (pending) and
        acknowledgement cursor belong to the user; a topic's history is shared, so it has
        neither. Call :meth:`RecoveryState.begin` before routing the subscription.
        *receipted* says whether the SUBSCRIBE asked for a RECEIPT: without one, a gap
        that no MESSAGE follows is announced by a gap MESSAGE. *rewind* (already capped)
        asks for the last messages of *destination*, whose bodies add up to at most
        *rewind_bytes*; *resume* wins over it (see "Rewind" in the module docstring).

        Returns:
            The headers the SUBSCRIBE's RECEIPT carries: ``x-recovered`` when the client
            resumed or something was lost, else none.
        """
        history = get_history()
        assert history is not None
        state = self.state
        state.track(sub_id)
        after = None
        receipt: Headers = ()
        try:
            again: Headers = ()
            if per_user:
                # Sent while the user had no live session at all: due now, unless the
                # client resumes from its own id (which covers them too).
                pending = await history.take_pending(key, destination)
                if resume is None and pending is not None:
                    after = previous_id(pending)
            if ack is not AckMode.AUTO and per_user:
                state.watch_acks(sub_id, key, destination)
                cursor = await history.acked(key, destination) if resume is None else None
                if cursor is not None:
                    # Delivered before, maybe, and not acknowledged: comes again.
                    after, again = cursor, ((REDELIVERED_HEADER, "true"),)
            if resume is not None:
                after = resume
            rewinding = False
            marker: Headers = ()
            if rewind and resume is None:
                marker = _REWOUND
                point = await history.rewind_point(
                    key, rewind, destination=destination, max_bytes=rewind_bytes
                )
                if after is None or parse_id(point) < parse_id(after):
                    after, rewinding = point, True
            complete = True
            first = True
            sent_any = False
            while after is not None:
                # Page through: a short read would leave a gap before the held messages.
                if not first and self._drain is not None and not await self._drain():
                    break  # over budget or gone: the client resumes from what it got
                page = await history.read(key, after, destination=destination, limit=RECOVERY_PAGE)
                if first:
                    # Fewer stored than asked for is no gap for a rewind.
                    complete, first = page.complete or rewinding, False
                    extra: Headers = () if complete else ((RECOVERED_HEADER, "false"),)
                self._stats["redelivered" if again else "recovered"] += len(page.entries)
                full = len(page.entries) == RECOVERY_PAGE
                for entry in page.entries:
                    headers = _with(extra + again + marker, entry.headers)
                    if not self._send(sub_id, entry.body, headers, entry.id):
                        full = False  # the session is ending: read no more
                        break
                    state.delivered(sub_id, entry.id)
                    extra, sent_any = (), True
                after = page.entries[-1].id if full else None
            if not complete:
                receipt = ((RECOVERED_HEADER, "false"),)
                if not sent_any and not receipted:
                    # Its message-id is the history's newest id: a client that resumes
                    # from it (as from any message-id it saw) gets what came after.
                    self._send(sub_id, b"", _GAP, await history.last_id(key))
            elif resume is not None:
                receipt = ((RECOVERED_HEADER, "true"),)
        except BackendUnavailable:
            # What was missed cannot be known: say it may be lost.
            logger.warning("history unavailable: session %s recovers nothing", self.session_id)
            if resume is not None or per_user or rewind:
                receipt = ((RECOVERED_HEADER, "false"),)
                if not receipted:
                    self._send(sub_id, b"", _GAP, None)
        finally:
            for message_id, body, headers in state.finish(sub_id):
                self._send(sub_id, body, headers, message_id)
        return receipt

    async def ack(self, sub_id: str, message_ids: tuple[str, ...]) -> None:
        """Settle acknowledged messages and move the cursor kept with the history.

        Messages without a history (topics, replies) are settled by the ACK alone. A
        history outage loses only the cursor's move: those messages may come again.
        """
        cursor = self.state.settle(sub_id, message_ids)
        if cursor is None:
            return
        history = get_history()
        if history is None:
            return
        key, destination = self.state.acking[sub_id]
        try:
            await history.set_acked(key, destination, cursor)
        except BackendUnavailable:
            logger.warning(
                "history unavailable: session %s could not record its ACK", self.session_id
            )

    async def nack(self, sub_id: str, message_ids: tuple[str, ...]) -> None:
        """Send NACKed history messages again at once, marked ``redelivered``.

        They are read back from the history, page by page as for a recovery. Others
        (and any trimmed from the history meanwhile) are dropped, as STOMP leaves
        NACK's effect to the server.
        """
        wanted = self.state.redeliveries(sub_id, message_ids)
        history = get_history()
        if not wanted or history is None:
            return
        key, destination = self.state.acking[sub_id]
        remaining = set(wanted)
        newest = parse_id(wanted[-1])
        after = previous_id(wanted[0])
        again = ((REDELIVERED_HEADER, "true"),)
        try:
            while remaining:
                page = await history.read(key, after, destination=destination, limit=RECOVERY_PAGE)
                for entry in page.entries:
                    if entry.id not in remaining:
                        continue
                    remaining.discard(entry.id)
                    self._stats["redelivered"] += 1
                    if not self._send(sub_id, entry.body, _with(again, entry.headers), entry.id):
                        return  # the session is ending
                if len(page.entries) < RECOVERY_PAGE or parse_id(page.entries[-1].id) >= newest:
                    return
                after = page.entries[-1].id
                if self._drain is not None and not await self._drain():
                    return
        except BackendUnavailable:
            logger.warning("history unavailable: session %s redelivers nothing", self.session_id)
