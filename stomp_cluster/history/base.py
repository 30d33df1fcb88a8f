r"""The history interface: messages sent to a user, kept so that reconnects can catch up.

Theory of operation
===================

Every message sent to a user (``send_to_user``) is first appended to that user's *history*
with :meth:`HistoryBackend.append`, which returns its id. The id becomes the STOMP MESSAGE's
``message-id``: ids are ``"<ms>-<seq>"`` strings (Redis Stream ids), strictly increasing per
user, compared with :func:`compare_ids`. A client that reconnects, to any node, subscribes
with ``x-resume-from: <the last message-id it saw>``; the node calls :meth:`~HistoryBackend.read`
with ``after`` set to that id and the subscribed destination, sends what comes back, then
live messages.

The history is bounded per user by count (``max_length``) and by age (``max_age``). When a
client's resume point is older than what is kept, the page says so: ``complete`` is
``False`` and the node tells the client that it missed messages, rather than silently
leaving a gap.

A message for a user with no live session is appended with ``pending=True``, which records,
per (user, destination), the id of the *first* message waiting there. The user's next
subscription to that destination calls :meth:`~HistoryBackend.take_pending`, which hands the
id to exactly one caller, then reads from just before it::

    first = await history.take_pending(user_key, destination)
    if first is not None:
        page = await history.read(user_key, previous_id(first), destination=destination)

Completeness
============

``complete`` answers one question: was any message of this user with an id greater than
``after`` removed before the read? Backends know the newest id they removed
(``max_deleted``) and compare it with ``after``. The rule is about the user's whole history,
not just the destination read, so a trimmed message of another destination also makes it
``False``: a spurious "you may have missed messages" is better than a silent gap.

A history can also vanish whole: it expires ``max_age`` after its last append (all its
messages are older than that by then), or Redis restarts without persistence. So:

- reading a history that does not exist is complete only from the beginning (``"0-0"``):
  any other ``after`` was an id of a history that is gone;
- a history that starts (again) records "everything before my first message" as removed,
  so an id from the previous history reads as incomplete;
- ``after="0-0"`` asks for everything kept; it is complete when nothing was ever trimmed
  from the current history (its own start does not count).

Backends
========

:class:`~stomp_cluster.history.memory.MemoryHistory` keeps histories in the process (one
node: tests, the demo). :class:`~stomp_cluster.history.redis.RedisHistory` keeps one Redis
Stream per user, shared by the cluster. Both pass ``tests/history/test_contract.py``.

Errors
======

A backend that cannot reach its store raises
:class:`~stomp_cluster.exceptions.HistoryUnavailable` (a
:class:`~stomp_cluster.exceptions.BackendUnavailable`, like the presence registry's
``PresenceUnavailable``): callers degrade (deliver live, without history) rather than
crash. A malformed id or a non-positive ``limit`` raises :class:`ValueError`; bad options
raise :class:`~django.core.exceptions.ImproperlyConfigured`.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from stomp_cluster.typing import Headers

__all__ = [
    "BEGINNING",
    "HistoryBackend",
    "HistoryEntry",
    "HistoryPage",
    "compare_ids",
    "format_id",
    "is_complete",
    "is_valid_id",
    "parse_id",
    "previous_id",
]

#: The ``after`` that reads a history from its beginning.
BEGINNING = "0-0"

#: Both parts of a stream id are unsigned 64-bit integers, as in Redis.
_MAX_PART = 2**64 - 1
# [0-9], not \d, which also matches other scripts' digits that int() would accept.
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message of a user's history.

    Attributes:
        id: Its stream id, ``"<ms>-<seq>"``, unique and increasing per user; the STOMP
            ``message-id``. Compare ids with :func:`compare_ids`, never as strings.
        destination: The destination it was sent to, such as ``/user/queue/notify``.
        body: The frame body, as given to :meth:`HistoryBackend.append`.
        headers: The extra headers given to :meth:`HistoryBackend.append`, in order.
    """

    id: str
    destination: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What :meth:`HistoryBackend.read` found.

    Attributes:
        entries: Entries with ids after ``after``, oldest first, ids strictly increasing.
        complete: ``False`` when messages after ``after`` were removed (trimmed by count
            or age, or the whole history expired or was lost) before this read, so the
            client missed some. See "Completeness" in this module's documentation.
    """

    entries: tuple[HistoryEntry, ...]
    complete: bool


def parse_id(value: str) -> tuple[int, int]:
    """Return the ``(ms, seq)`` of a stream id.

    Raises:
        ValueError: If *value* is not ``"<ms>-<seq>"`` with two decimal numbers that fit in
            64 bits, as Redis requires. ``"5"`` alone, which Redis would accept, is
            rejected: a ``message-id`` always has both parts.
    """
    match = _ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid history id: {value!r}")
    ms, seq = int(match[1]), int(match[2])
    if ms > _MAX_PART or seq > _MAX_PART:
        raise ValueError(f"invalid history id (over 64 bits): {value!r}")
    return ms, seq


def is_valid_id(value: str) -> bool:
    """Return whether *value* is a stream id that :func:`parse_id` accepts.

    Use it on ``x-resume-from`` headers, which come from clients.
    """
    try:
        parse_id(value)
    except ValueError:
        return False
    return True


def compare_ids(a: str, b: str) -> int:
    """Compare two stream ids numerically: ``-1`` if *a* is older, ``0`` if equal, ``1``.

    Strings would sort ``"10-0"`` before ``"9-0"``.

    Raises:
        ValueError: If either id is malformed.
    """
    left, right = parse_id(a), parse_id(b)
    return (left > right) - (left < right)


def previous_id(value: str) -> str:
    """Return the greatest id smaller than *value*, to read a history *from* an id.

    :meth:`HistoryBackend.read` returns entries strictly after its ``after``; pass
    ``previous_id(first)`` to include ``first``.

    Raises:
        ValueError: If *value* is malformed or ``"0-0"``, which has no predecessor.
    """
    ms, seq = parse_id(value)
    if seq:
        return f"{ms}-{seq - 1}"
    if ms:
        return f"{ms - 1}-{_MAX_PART}"
    raise ValueError("0-0 has no previous id")


def format_id(ms: int, seq: int) -> str:
    """Return the stream id of ``(ms, seq)``; the inverse of :func:`parse_id`."""
    return f"{ms}-{seq}"


def is_complete(
    after: tuple[int, int], *, exists: bool, length: int, added: int, max_deleted: tuple[int, int]
) -> bool:
    """Apply the completeness rule of this module's documentation, for both backends.

    Args:
        after: The parsed ``after`` of the read.
        exists: Whether the user has a history at all.
        length: How many entries it holds now.
        added: How many entries were ever added to it (since it started).
        max_deleted: The newest id removed from it, or the id just before its first entry
            when nothing was trimmed yet (its start marker).
    """
    if not exists:
        return after == (0, 0)
    if after == (0, 0):
        return added == length
    return max_deleted <= after


class HistoryBackend(abc.ABC):
    """Per-user message histories, shared by the cluster, bounded by count and by age.

    Subclasses take their settings as keyword arguments, consume the ones they know and
    pass the rest to this constructor, which rejects leftovers so that a typo fails loudly.

    Args:
        max_length: At most this many entries are kept per user; appending one more
            removes the oldest. Default 1000.
        max_age: Seconds an entry is kept. Entries older than that (by their id, which is
            the store's clock) are removed by the next append to that user's history, and
            a history with no append for ``max_age`` is dropped whole. Default 86400.

    All methods may raise :class:`~stomp_cluster.exceptions.HistoryUnavailable`. Each is
    atomic: concurrent callers on any node see it happen entirely or not at all.
    """

    def __init__(self, *, max_length: int = 1000, max_age: float = 86400.0, **options: Any) -> None:
        if options:
            raise ImproperlyConfigured(
                f"Unknown option(s) for {type(self).__name__}: {', '.join(sorted(options))}. "
                "Remove them from the history backend's OPTIONS."
            )
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ImproperlyConfigured(
                f"History 'max_length' must be a positive integer, got {max_length!r}."
            )
        if (
            isinstance(max_age, bool)
            or not isinstance(max_age, int | float)
            or not math.isfinite(max_age)
            or max_age < 0.001
        ):
            raise ImproperlyConfigured(
                f"History 'max_age' must be a number of seconds of at least 0.001, got {max_age!r}."
            )
        self.max_length = max_length
        self.max_age = float(max_age)

    @property
    def max_age_ms(self) -> int:
        """``max_age`` in whole milliseconds (rounded up), the unit of stream ids."""
        return math.ceil(self.max_age * 1000)

    @abc.abstractmethod
    async def append(
        self,
        user_key: str,
        destination: str,
        body: bytes,
        headers: Headers,
        *,
        pending: bool = False,
    ) -> str:
        """Add a message to the user's history and return its id, atomically, in one trip.

        Trims the history to ``max_length`` entries and drops those older than
        ``max_age`` in the same step.

        Args:
            user_key: ``str(user.pk)`` of the recipient.
            destination: The ``/user/...`` destination the message is sent to.
            body: The frame body.
            headers: Extra frame headers to send again on replay.
            pending: ``True`` when the user has no live session: unless a pending message
                is already recorded for ``(user_key, destination)``, this one's id is
                recorded, for :meth:`take_pending` on the user's next subscription.

        Returns:
            The new id: greater than every id of this user's history, even if the clock
            went back.
        """

    @abc.abstractmethod
    async def read(
        self,
        user_key: str,
        after: str,
        *,
        destination: str | None = None,
        limit: int = 10_000,
    ) -> HistoryPage:
        """Return the user's entries with ids greater than *after*, oldest first.

        Args:
            user_key: Whose history.
            after: Exclusive lower bound: the last id the client saw, or ``"0-0"``
                (:data:`BEGINNING`) for everything kept.
            destination: Only entries sent to this destination, when given.
            limit: At most this many entries (after filtering). To page, read again with
                ``after`` set to the last entry's id.

        Returns:
            The entries, and whether the history still reaches back to *after*.

        Raises:
            ValueError: If *after* is malformed or *limit* is less than 1.
        """

    async def rewind_point(
        self,
        user_key: str,
        count: int,
        *,
        destination: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """Return the ``after`` from which :meth:`read` gives the newest *count* entries.

        For a subscription's ``x-rewind: N`` and :func:`stomp_cluster.queries.ahistory`:
        read from the returned id, page by page, to get the last *count* entries
        (of *destination*, when given) oldest first, and anything appended since.

        This default pages through the whole history with :meth:`read`; the shipped
        backends override it with one backward walk.

        Args:
            user_key: Whose history.
            count: How many of the newest entries to take; 0 takes none.
            destination: Count only entries sent to this destination, when given.
            max_bytes: Stop before the bodies of the entries taken exceed this many
                bytes in total, newest first (so an entry larger than it is never taken).

        Returns:
            The id just before the oldest entry taken; when none is taken, the newest id
            of the history, or :data:`BEGINNING` when the history is empty.

        Raises:
            ValueError: If *count* is negative.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count!r}")
        newest, after, window = BEGINNING, BEGINNING, list[HistoryEntry]()
        while True:
            page = await self.read(user_key, after, limit=1000)
            for entry in page.entries:
                newest = entry.id
                if destination is None or entry.destination == destination:
                    window.append(entry)
            window = window[-count:] if count else []
            if len(page.entries) < 1000:
                break
            after = page.entries[-1].id
        taken: list[HistoryEntry] = []
        used = 0
        for entry in reversed(window):
            used += len(entry.body)
            if max_bytes is not None and used > max_bytes:
                break
            taken.append(entry)
        return previous_id(taken[-1].id) if taken else newest

    @abc.abstractmethod
    async def take_pending(self, user_key: str, destination: str) -> str | None:
        """Remove and return the first pending id of ``(user_key, destination)``.

        Atomic: of concurrent callers, exactly one gets the id, the others ``None``. Read
        from it with ``read(user_key, previous_id(id), destination=destination)``; that
        page is incomplete when the pending message itself was trimmed meanwhile.

        Returns:
            The id recorded by the first ``append(..., pending=True)`` since the last
            take, or ``None``.
        """

    @abc.abstractmethod
    async def set_acked(self, user_key: str, destination: str, message_id: str) -> None:
        """Record that the user has acknowledged everything on *destination* up to *message_id*.

        Only ``client`` and ``client-individual`` subscriptions write it. A later
        subscription in one of those modes resumes after it, so what was delivered but
        not acknowledged is delivered again (``redelivered: true``). The cursor only moves
        forward, and lives as long as the history.
        """

    @abc.abstractmethod
    async def acked(self, user_key: str, destination: str) -> str | None:
        """Return the acknowledgement cursor of ``(user_key, destination)``, or ``None``."""

    @abc.abstractmethod
    async def last_id(self, user_key: str) -> str | None:
        """Return the newest id of the user's history, or ``None`` when there is none."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release this event loop's connections, if any. The backend stays usable."""
