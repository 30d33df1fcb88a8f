"""What the operators' two tools share: the admin pages and ``manage.py stomp_cluster``.

Both read the presence registry and close sessions on whichever node holds them, and both
show the results to people. What they say and do the same way lives here, once:

* the reason a session is closed with when the operator gives none
  (:data:`DEFAULT_REASON`), and closing many sessions at once
  (:func:`adisconnect_sessions`);
* moments and durations as people read them: UTC date and time (:func:`utc`), "12 seconds",
  "3 hours, 5 minutes" (:func:`since`), "… ago" (:func:`ago`), built on Django's
  :func:`~django.utils.timesince.timesince` so that they are translated like the rest of
  the admin;
* the first sentence of the message shown when the registry does not answer
  (:func:`registry_unreachable`); each tool adds its own advice.

This module belongs to the Django edges: the admin and the command import it, and it imports
only the layers below them. It is not part of the public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext

from stomp_cluster.backends import get_presence
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.presence.base import SessionRecord
from stomp_cluster.send import adisconnect_session

__all__ = [
    "DEFAULT_REASON",
    "Disconnection",
    "adisconnect_sessions",
    "ago",
    "aget_sessions",
    "registry_unreachable",
    "since",
    "utc",
]

#: The ERROR frame's ``message`` when the operator gives no reason. It is not translated:
#: it travels to the client in a STOMP header, like the protocol's own messages.
DEFAULT_REASON = "disconnected by an administrator"


# -- time, for people ------------------------------------------------------------------


def utc(moment: float) -> str:
    """A Unix time as "YYYY-MM-DD HH:MM:SS", in UTC: the same on every node and shell."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")


def since(moment: float, now: float) -> str:
    """How long from *moment* to *now* (Unix times): "12 seconds", "3 hours, 5 minutes".

    Django's :func:`~django.utils.timesince.timesince` gives the two largest units (its
    words joined by non-breaking spaces, as the admin shows them). It starts at minutes,
    which would show every heartbeat of the last minute as "0 minutes": below one minute
    we count seconds. A *moment* after *now* (clocks of two machines) counts as no time.
    """
    seconds = max(0, int(now - moment))
    if seconds < 60:
        return ngettext("%(num)d\xa0second", "%(num)d\xa0seconds", seconds) % {"num": seconds}
    return timesince(datetime.fromtimestamp(moment, UTC), datetime.fromtimestamp(now, UTC))


def ago(moment: float, now: float) -> str:
    """How long ago *moment* was at *now*: "12 seconds ago", "3 hours, 5 minutes ago"."""
    return gettext("%(delta)s ago") % {"delta": since(moment, now)}


# -- the registry ----------------------------------------------------------------------


def registry_unreachable(exc: PresenceUnavailable) -> str:
    """Say that the registry does not answer, and why, as the first sentence of a message.

    The detail is the error of the connection underneath (host, port, what failed) when
    there is one, so that the operator sees where we tried to connect.
    """
    detail = str(exc.__cause__ or exc).rstrip(".")
    return gettext("The presence registry is unreachable (%(detail)s).") % {"detail": detail}


async def aget_sessions(session_ids: Sequence[str]) -> dict[str, SessionRecord]:
    """The registry's records of *session_ids*, asked all at once; unknown ids are left out.

    Raises:
        PresenceUnavailable: the registry does not answer.
    """
    presence = get_presence()
    records = await asyncio.gather(*(presence.get_session(sid) for sid in session_ids))
    return {r.session_id: r for r in records if r is not None}


@dataclass(frozen=True, slots=True)
class Disconnection:
    """What :func:`adisconnect_sessions` did.

    Attributes:
        done: The records of the sessions closed, in the order asked (for the admin log).
        gone: Ids the registry did not know, or that left before we closed them.
        failed: One message per session whose node could not be reached.
    """

    done: tuple[SessionRecord, ...] = ()
    gone: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


async def adisconnect_sessions(session_ids: Sequence[str], reason: str) -> Disconnection:
    """Close each session on its node with an ERROR frame saying *reason*, all at once.

    Each session is looked up first, so that the caller can tell who it closed (user,
    node, address) and log it. Ids given twice are closed once.

    Raises:
        PresenceUnavailable: the registry does not answer, so nothing was closed.
    """
    unique = list(dict.fromkeys(session_ids))
    records = await aget_sessions(unique)
    present = [sid for sid in unique if sid in records]
    gone = [sid for sid in unique if sid not in records]
    results = await asyncio.gather(
        *(adisconnect_session(sid, reason) for sid in present), return_exceptions=True
    )
    done: list[SessionRecord] = []
    failed: list[str] = []
    for sid, result in zip(present, results, strict=True):
        if isinstance(result, DeliveryFailed):
            failed.append(
                gettext("Could not reach the node of session %(session)s: %(error)s")
                % {"session": sid, "error": result}
            )
        elif isinstance(result, BaseException):
            raise result
        elif result:
            done.append(records[sid])
        else:
            gone.append(sid)  # it left between the two look-ups
    return Disconnection(tuple(done), tuple(gone), tuple(failed))
