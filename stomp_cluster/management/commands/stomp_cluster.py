"""``manage.py stomp_cluster``: look at the cluster and act on it from a shell.

::

    manage.py stomp_cluster nodes                      nodes, status, sessions, totals
    manage.py stomp_cluster sessions [--node N] [--user U] [--destination D] [--limit 100]
    manage.py stomp_cluster disconnect SESSION [SESSION ...] [--reason TEXT]
    manage.py stomp_cluster sweep                      reap the sessions of lost nodes now

Each prints an aligned table, or JSON with ``--json``. Run it with the cluster's settings:
it reads the same presence registry and channel layer as the nodes. All the work of one
invocation runs in one event loop, whose registry connections are closed at the end.

Exit status: 0 on success; 1 (a :class:`~django.core.management.CommandError`) when the
registry is unreachable, when a session to disconnect was not found, or on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.node import sweep_lost_nodes
from stomp_cluster.presence.base import NodeRecord, SessionRecord

__all__ = ["Command", "format_table"]

#: The ERROR frame's ``message`` when no ``--reason`` is given.
DEFAULT_REASON = "disconnected by an administrator"


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


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(unix: float, now: float) -> str:
    seconds = max(0, int(now - unix))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _unreachable(exc: PresenceUnavailable) -> str:
    detail = str(exc).removeprefix("presence backend unreachable: ").rstrip(".")
    return (
        f"The presence registry is unreachable ({detail}). Check that Redis is running and "
        "that STOMP_CLUSTER['PRESENCE_OPTIONS'] points at it."
    )


def _session_json(record: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": record.session_id,
        "username": record.username,
        "user_key": record.user_key,
        "node_id": record.node_id,
        "remote_addr": record.remote_addr,
        "user_agent": record.user_agent,
        "version": record.version,
        "connected_at": record.connected_at,
        "last_seen": record.last_seen,
        "subscriptions": [
            {"id": s.id, "destination": s.destination, "ack": s.ack} for s in record.subscriptions
        ],
    }


def _node_json(record: NodeRecord) -> dict[str, Any]:
    return {
        "node_id": record.node_id,
        "alive": record.alive,
        "session_count": record.session_count,
        "last_heartbeat": record.last_heartbeat,
        "started_at": record.started_at,
        "channel_name": record.channel_name,
        "stats": dict(record.stats),
    }


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
        disconnect.add_argument("session_ids", nargs="+", metavar="SESSION", help="session id")
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
        if action == "sessions" and options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        try:
            result: Any = async_to_sync(self._run)(action, options)
        except PresenceUnavailable as exc:
            raise CommandError(_unreachable(exc)) from exc
        except DeliveryFailed as exc:
            if isinstance(exc.__cause__, PresenceUnavailable):
                raise CommandError(_unreachable(exc.__cause__)) from exc
            raise CommandError(f"Could not reach the cluster: {exc}") from exc
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(getattr(self, f"_print_{action}")(result))
        if action == "disconnect" and result["not_found"]:
            missing = ", ".join(result["not_found"])
            raise CommandError(f"No such session: {missing}")

    async def _run(self, action: str, options: dict[str, Any]) -> Any:
        presence = get_presence()
        try:
            if action == "nodes":
                return [_node_json(n) for n in await presence.nodes()]
            if action == "sessions":
                return await self._sessions(options)
            if action == "disconnect":
                return await self._disconnect(options["session_ids"], options["reason"])
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
        from stomp_cluster.send import adisconnect_session

        done: list[str] = []
        missing: list[str] = []
        for session_id in dict.fromkeys(session_ids):
            if await adisconnect_session(session_id, reason):
                done.append(session_id)
            else:
                missing.append(session_id)
        return {"disconnected": done, "not_found": missing, "reason": reason}

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
            return "No node is registered."
        now = time.time()
        table = format_table(
            ["NODE", "STATUS", "SESSIONS", "LAST HEARTBEAT", "STARTED (UTC)", "COUNTERS"],
            [
                [
                    n["node_id"],
                    "alive" if n["alive"] else "lost",
                    n["session_count"],
                    _ago(n["last_heartbeat"], now),
                    _when(n["started_at"]),
                    " ".join(f"{k}={v}" for k, v in sorted(n["stats"].items())) or "-",
                ]
                for n in nodes
            ],
        )
        alive = sum(1 for n in nodes if n["alive"])
        sessions = sum(n["session_count"] for n in nodes)
        return (
            f"{table}\n\n{len(nodes)} node{'s' if len(nodes) != 1 else ''} "
            f"({alive} alive, {len(nodes) - alive} lost), {sessions} session"
            f"{'s' if sessions != 1 else ''}"
        )

    def _print_sessions(self, result: dict[str, Any]) -> str:
        sessions = result["sessions"]
        if not sessions:
            return "No session matches."
        now = time.time()
        table = format_table(
            ["SESSION", "USER", "NODE", "ADDRESS", "STOMP", "SUBS", "CONNECTED (UTC)", "LAST SEEN"],
            [
                [
                    s["session_id"],
                    s["username"] or "-",
                    s["node_id"],
                    s["remote_addr"] or "-",
                    s["version"] or "-",
                    len(s["subscriptions"]),
                    _when(s["connected_at"]),
                    _ago(s["last_seen"], now),
                ]
                for s in sessions
            ],
        )
        more = "\n(more sessions match: raise --limit)" if result["more"] else ""
        return f"{table}\n\n{len(sessions)} session{'s' if len(sessions) != 1 else ''}{more}"

    def _print_disconnect(self, result: dict[str, Any]) -> str:
        lines = [f"disconnected  {sid}" for sid in result["disconnected"]]
        lines += [f"not found     {sid}" for sid in result["not_found"]]
        return "\n".join(lines)

    def _print_sweep(self, result: dict[str, Any]) -> str:
        if not result["swept"]:
            return (
                "A node holds the sweep lock, and sweeps at each of its heartbeats: nothing to do."
            )
        if not result["lost_nodes"]:
            return "No lost node: nothing to reap."
        count = len(result["sessions"])
        return (
            f"Reaped {count} session{'s' if count != 1 else ''} of lost node(s): "
            f"{', '.join(result['lost_nodes'])}"
        )
