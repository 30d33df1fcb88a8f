"""``manage.py stomp_cluster``: look at the cluster and act on it from a shell.

::

    manage.py stomp_cluster nodes                      nodes, status, sessions, totals
    manage.py stomp_cluster sessions [--node N] [--user U] [--destination D] [--limit 100]
    manage.py stomp_cluster disconnect SESSION [SESSION ...] [--reason TEXT]
    manage.py stomp_cluster disconnect --user USERNAME [--reason TEXT]
    manage.py stomp_cluster sweep                      reap the sessions of lost nodes now

Each prints an aligned table, or JSON with ``--json``. Run it with the cluster's settings:
it reads the same presence registry and channel layer as the nodes. All the work of one
invocation runs in one event loop, whose registry connections are closed at the end.

Exit status: 0 on success; 1 (a :class:`~django.core.management.CommandError`) when the
registry is unreachable, when a session to disconnect was not found or its node could not be
reached, or on bad arguments.

What it prints goes through Django's translation functions; the ``--help`` texts stay in
English, as those of Django's own commands do. Times and the default ``--reason`` are those
of the admin pages (:mod:`stomp_cluster.operators`), and ``disconnect`` closes sessions the
way the admin's *Disconnect* does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext, gettext_noop, ngettext

from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.node import sweep_lost_nodes
from stomp_cluster.operators import (
    DEFAULT_REASON,
    adisconnect_sessions,
    ago,
    registry_unreachable,
    utc,
)
from stomp_cluster.presence.base import NodeRecord, SessionRecord
from stomp_cluster.queries import asessions_of

__all__ = ["Command", "format_table"]

# Column headers: gettext_noop marks them for makemessages; they are translated when
# printed, in the language active then.
_ = gettext_noop
NODE_COLUMNS = (
    _("NODE"),
    _("STATUS"),
    _("SESSIONS"),
    _("LAST HEARTBEAT"),
    _("STARTED (UTC)"),
    _("COUNTERS"),
)
SESSION_COLUMNS = (
    _("SESSION"),
    _("USER"),
    _("NODE"),
    _("ADDRESS"),
    "STOMP",
    _("SUBS"),
    _("CONNECTED (UTC)"),
    _("LAST SEEN"),
)
del _


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Align *rows* under *headers* in columns two spaces apart (numbers right-aligned)."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(headers))
    ]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _ago(moment: float, now: float) -> str:
    # Plain spaces in a terminal, where the admin's non-breaking ones buy nothing.
    return ago(moment, now).replace("\xa0", " ")


def _unreachable(exc: PresenceUnavailable) -> str:
    advice = gettext(
        "Check that Redis is running and that STOMP_CLUSTER['PRESENCE_OPTIONS'] points at it."
    )
    return f"{registry_unreachable(exc)} {advice}"


def _session_json(record: SessionRecord) -> dict[str, Any]:
    return asdict(record)


def _node_json(record: NodeRecord) -> dict[str, Any]:
    return {**asdict(record), "stats": dict(record.stats)}


class Command(BaseCommand):
    help = (
        "Inspect and manage the STOMP cluster through its presence registry: list nodes "
        "or sessions, disconnect sessions, or sweep lost nodes now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

        def add(name: str, text: str) -> CommandParser:
            action: CommandParser = sub.add_parser(name, help=text, description=text)
            # Also accepted after the action; SUPPRESS keeps the top-level value otherwise.
            action.add_argument(
                "--json",
                action="store_true",
                default=argparse.SUPPRESS,
                help="print JSON instead of a table",
            )
            return action

        add("nodes", "List the nodes: status, session count, last heartbeat; and totals.")
        sessions = add("sessions", "List sessions, oldest first.")
        sessions.add_argument("--node", help="only sessions held by this node id")
        sessions.add_argument("--user", help="only sessions of this username")
        sessions.add_argument("--destination", help="only sessions subscribed to this destination")
        sessions.add_argument(
            "--limit", type=int, default=100, help="list at most this many (default 100)"
        )
        disconnect = add(
            "disconnect", "Close sessions on whichever node holds them, with an ERROR frame."
        )
        disconnect.add_argument("session_ids", nargs="*", metavar="SESSION", help="session id")
        disconnect.add_argument("--user", help="every session of this username")
        disconnect.add_argument(
            "--reason",
            default=DEFAULT_REASON,
            help=f"message of the ERROR frame the client gets (default: {DEFAULT_REASON!r})",
        )
        add(
            "sweep",
            "Reap the sessions of lost nodes now, as a node's sweeper would (useful when no "
            "node is running: a running node holds the sweep lock and sweeps by itself).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        as_json = bool(options.get("json"))
        if action == "disconnect" and not options["session_ids"] and not options["user"]:
            raise CommandError(gettext("Give session ids, or --user USERNAME"))
        if action == "sessions" and options["limit"] < 1:
            raise CommandError(gettext("--limit must be at least 1"))
        try:
            result: Any = async_to_sync(self._run)(action, options)
        except PresenceUnavailable as exc:
            raise CommandError(_unreachable(exc)) from exc
        except DeliveryFailed as exc:
            if isinstance(exc.__cause__, PresenceUnavailable):
                raise CommandError(_unreachable(exc.__cause__)) from exc
            raise CommandError(
                gettext("Could not reach the cluster: %(error)s") % {"error": exc}
            ) from exc
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(getattr(self, f"_print_{action}")(result))
        if action == "disconnect" and result["not_found"]:
            missing = ", ".join(result["not_found"])
            raise CommandError(gettext("No such session: %(ids)s") % {"ids": missing})

    async def _run(self, action: str, options: dict[str, Any]) -> Any:
        presence = get_presence()
        try:
            if action == "nodes":
                return [_node_json(n) for n in await presence.nodes()]
            if action == "sessions":
                return await self._sessions(options)
            if action == "disconnect":
                ids = list(options["session_ids"])
                if options["user"]:
                    ids += [r.session_id for r in await asessions_of(options["user"])]
                return await self._disconnect(ids, options["reason"])
            return await self._sweep()
        finally:
            await presence.close()

    async def _sessions(self, options: dict[str, Any]) -> dict[str, Any]:
        presence = get_presence()
        limit: int = options["limit"]
        found: list[SessionRecord] = []
        cursor: str | None = None
        while len(found) < limit:
            page = await presence.sessions(
                node=options["node"],
                user=options["user"],
                destination=options["destination"],
                cursor=cursor,
                limit=min(500, limit - len(found)),
            )
            found.extend(page.sessions)
            cursor = page.next_cursor
            if cursor is None:
                break
        return {"sessions": [_session_json(s) for s in found], "more": cursor is not None}

    async def _disconnect(self, session_ids: list[str], reason: str) -> dict[str, Any]:
        result = await adisconnect_sessions(session_ids, reason)
        if result.failed:
            raise CommandError(" ".join(result.failed))
        return {
            "disconnected": [r.session_id for r in result.done],
            "not_found": list(result.gone),
            "reason": reason,
        }

    async def _sweep(self) -> dict[str, Any]:
        # The nodes' own sweeper, run once under an owner name of ours: it reaps each lost
        # node's sessions exactly once and fires stomp_disconnected (reason "node_lost").
        presence = get_presence()
        owner = f"cli-{socket.gethostname()}-{os.getpid()}"
        try:
            swept = await sweep_lost_nodes(presence, owner, get_settings().NODE_TTL)
        finally:
            await presence.release_sweep_lock(owner)
        if swept is None:
            return {"swept": False, "lost_nodes": [], "sessions": []}
        return {
            "swept": True,
            "lost_nodes": swept.nodes,
            "sessions": [
                {"session_id": s.session_id, "node_id": s.node_id, "username": s.username}
                for s in swept.sessions
            ],
        }

    # -- tables ------------------------------------------------------------------------

    def _print_nodes(self, nodes: list[dict[str, Any]]) -> str:
        if not nodes:
            return gettext("No node is registered.")
        alive = sum(1 for n in nodes if n["alive"])
        totals = gettext("%(nodes)s (%(alive)d alive, %(lost)d lost), %(sessions)s") % {
            "nodes": ngettext("%(count)d node", "%(count)d nodes", len(nodes))
            % {"count": len(nodes)},
            "alive": alive,
            "lost": len(nodes) - alive,
            "sessions": _sessions(sum(n["session_count"] for n in nodes)),
        }
        return f"{_table(NODE_COLUMNS, nodes, _node_cells)}\n\n{totals}"

    def _print_sessions(self, result: dict[str, Any]) -> str:
        sessions = result["sessions"]
        if not sessions:
            return gettext("No session matches.")
        lines = [_table(SESSION_COLUMNS, sessions, _session_cells), "", _sessions(len(sessions))]
        if result["more"]:
            lines.append(gettext("(more sessions match: raise --limit)"))
        return "\n".join(lines)

    def _print_disconnect(self, result: dict[str, Any]) -> str:
        done, missing = gettext("disconnected"), gettext("not found")
        width = max(len(done), len(missing))
        lines = [f"{done:<{width}}  {sid}" for sid in result["disconnected"]]
        lines += [f"{missing:<{width}}  {sid}" for sid in result["not_found"]]
        return "\n".join(lines)

    def _print_sweep(self, result: dict[str, Any]) -> str:
        if not result["swept"]:
            return gettext(
                "The sweep lock is taken: a node is sweeping, or one stopped less than "
                "NODE_TTL ago and its lock has not expired yet. Nothing swept; running "
                "nodes sweep at each of their heartbeats, or try again after NODE_TTL."
            )
        lost = result["lost_nodes"]
        if not lost:
            return gettext("No lost node: nothing to reap.")
        return ngettext(
            "Reaped %(sessions)s of lost node: %(nodes)s",
            "Reaped %(sessions)s of lost nodes: %(nodes)s",
            len(lost),
        ) % {"sessions": _sessions(len(result["sessions"])), "nodes": ", ".join(lost)}


def _sessions(count: int) -> str:
    return ngettext("%(count)d session", "%(count)d sessions", count) % {"count": count}


def _table(
    columns: Sequence[str],
    items: list[dict[str, Any]],
    cells: Callable[[dict[str, Any], float], list[object]],
) -> str:
    """*items* (as their JSON) in a table: one row of *cells* each, under *columns*."""
    now = time.time()
    return format_table([gettext(c) for c in columns], [cells(item, now) for item in items])


def _node_cells(node: dict[str, Any], now: float) -> list[object]:
    return [
        node["node_id"],
        gettext("alive") if node["alive"] else gettext("lost"),
        node["session_count"],
        _ago(node["last_heartbeat"], now),
        utc(node["started_at"]),
        " ".join(f"{k}={v}" for k, v in sorted(node["stats"].items())) or "-",
    ]


def _session_cells(session: dict[str, Any], now: float) -> list[object]:
    return [
        session["session_id"],
        session["username"] or "-",
        session["node_id"],
        session["remote_addr"] or "-",
        session["version"] or "-",
        len(session["subscriptions"]),
        utc(session["connected_at"]),
        _ago(session["last_seen"], now),
    ]
