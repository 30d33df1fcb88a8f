"""The operators' view in Django's admin: live connections and nodes, read from presence.

Two pages hang off the unmanaged placeholder models of :mod:`stomp_cluster.models`:

* **Live connections** (``stomp_cluster.view_connection``): one row per STOMP session of
  the cluster, with filters by node and destination, search by username or session id,
  cursor pagination in ``(connected_at, session_id)`` order, live refresh, and a
  *Disconnect* action (``stomp_cluster.disconnect_connection``) that closes sessions on
  whichever node holds them and writes :class:`~django.contrib.admin.models.LogEntry` rows.
* **Nodes** (``stomp_cluster.view_node``): each node's id, status, session count and last
  heartbeat, with cluster totals.

Nothing is copied into the database. Each page view is one ``async_to_sync`` call that asks
the presence backend, concurrently, for what the page shows (see ``docs/topics/admin.rst``
for what that costs in Redis calls). Every query is bounded by the page size, never by the
number of connections: a page is one ``PresenceBackend.sessions()`` call with a cursor,
and totals come from the per-node counts of ``PresenceBackend.nodes()``.

Each page polls a JSON endpoint of its own (``live/``, staff and view permission required)
from ``static/stomp_cluster/live.js`` and patches its table in place, keyed by session or
node id, so that ticked checkboxes and opened subscription lists survive a refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from stomp_cluster.backends import get_presence
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable
from stomp_cluster.models import Connection, Node
from stomp_cluster.presence.base import NodeRecord, SessionRecord, decode_cursor
from stomp_cluster.send import adisconnect_session

if TYPE_CHECKING:
    from django.db.models import QuerySet

    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin is generic for django-stubs only
    _ModelAdmin = admin.ModelAdmin

__all__ = ["ConnectionAdmin", "NodeAdmin"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The ERROR frame's ``message`` when the operator gives no reason.
DEFAULT_REASON = "disconnected by an administrator"

#: Longest reason accepted; it travels in a STOMP header.
MAX_REASON = 200


def _ago(seconds: float) -> str:
    """Say how long ago, coarsely: "4 s ago", "12 min ago", "3 h 5 min ago"."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} d {s % 86400 // 3600} h ago"


def _timestamp(unix: float) -> tuple[str, str]:
    """Return (ISO 8601 for ``<time datetime>``, "YYYY-MM-DD HH:MM:SS" in UTC to display)."""
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.isoformat(timespec="seconds"), moment.strftime("%Y-%m-%d %H:%M:%S")


def _query_string(params: dict[str, str | None]) -> str:
    """``?a=1&b=2`` from the non-empty *params*, or ``?`` when there are none."""
    return "?" + urlencode({k: v for k, v in params.items() if v})


def _registry_error(exc: PresenceUnavailable) -> str:
    return (
        f"The presence registry is unreachable ({exc}). Live connections cannot be listed "
        "until it answers; the nodes keep serving their sockets meanwhile."
    )


async def _nothing(value: T) -> T:
    return value


class _RegistryAdmin(_ModelAdmin):
    """What the two pages share: no database, no add/change/delete, registry-backed views.

    Its model is an unmanaged placeholder. The default admin views that would query the
    missing table are turned into redirects or refusals.
    """

    #: Seconds between two polls of the page's JSON endpoint.
    refresh_interval = 3.0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # There is no table: anything that asks for rows gets none, without a query.
        queryset: QuerySet[Any] = self.model._default_manager.none()
        return queryset

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        # An unsaved placeholder, so that the history view can list the LogEntry rows
        # written for this id (their object_id is the session or node id).
        return self.model(pk=object_id)

    def _url(self, name: str) -> str:
        """Reverse ``admin:stomp_cluster_<name>`` on this admin site."""
        return reverse(f"{self.admin_site.name}:stomp_cluster_{name}")

    def _page_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        opts = self.model._meta
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": opts,
            "app_label": opts.app_label,
            "refresh_interval": self.refresh_interval,
        }


# -- live connections ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionQuery:
    """What the operator asked the "Live connections" page for, from its query string.

    Attributes:
        node: Only sessions held by this node.
        destination: Only sessions subscribed to this destination.
        search: A username or a session id.
        cursor: Where the page starts (``None``: the first page); from the backend.
        page: The page's number, for display only.
    """

    node: str | None = None
    destination: str | None = None
    search: str | None = None
    cursor: str | None = None
    page: int = 1

    @classmethod
    def from_request(cls, request: HttpRequest) -> ConnectionQuery:
        """Parse the query string; a cursor that is not the backend's is dropped."""
        get = request.GET
        cursor = get.get("cursor") or None
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError:
                cursor = None
        try:
            page = max(1, int(get.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            node=get.get("node", "").strip() or None,
            destination=get.get("destination", "").strip() or None,
            search=get.get("q", "").strip() or None,
            cursor=cursor,
            page=page if cursor is not None else 1,
        )

    def params(self, **changes: str | None) -> dict[str, str | None]:
        """The filters as query parameters (no cursor), with *changes* applied."""
        params: dict[str, str | None] = {
            "node": self.node,
            "destination": self.destination,
            "q": self.search,
        }
        params.update(changes)
        return params

    def matches(self, session: SessionRecord) -> bool:
        """Whether *session* passes the node and destination filters."""
        if self.node is not None and session.node_id != self.node:
            return False
        if self.destination is not None:
            return any(sub.destination == self.destination for sub in session.subscriptions)
        return True


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    """What one view of the "Live connections" page shows."""

    sessions: tuple[SessionRecord, ...] = ()
    nodes: tuple[NodeRecord, ...] = ()
    next_cursor: str | None = None
    total: int | None = None
    destination_subscriptions: int | None = None
    error: str | None = None


async def load_connections(query: ConnectionQuery, limit: int) -> ConnectionPage:
    """Ask the presence backend for one page, all calls at once.

    Returns:
        The page; on a registry outage, an empty one whose ``error`` says so.
    """
    presence = get_presence()
    filters = {"node": query.node, "destination": query.destination, "cursor": query.cursor}
    if query.search is not None:
        page_call = presence.sessions(user=query.search, limit=limit, **filters)
        # A session id found on the first page only, so that it is never listed twice.
        one: Awaitable[SessionRecord | None] = (
            presence.get_session(query.search) if query.cursor is None else _nothing(None)
        )
    else:
        page_call = presence.sessions(limit=limit, **filters)
        one = _nothing(None)
    per_node: Awaitable[dict[str, int]] = (
        presence.destination_nodes(query.destination) if query.destination else _nothing({})
    )
    try:
        nodes, page, found, by_node = await asyncio.gather(
            presence.nodes(), page_call, one, per_node
        )
    except PresenceUnavailable as exc:
        logger.warning("admin: presence registry unavailable: %s", exc)
        return ConnectionPage(error=_registry_error(exc))
    sessions = list(page.sessions)
    if found is not None and query.matches(found):
        if all(s.session_id != found.session_id for s in sessions):
            sessions.insert(0, found)
    total: int | None = None
    if query.search is None and query.destination is None:
        total = sum(n.session_count for n in nodes if query.node in (None, n.node_id))
    elif query.search is not None and query.cursor is None and page.next_cursor is None:
        total = len(sessions)
    return ConnectionPage(
        sessions=tuple(sessions),
        nodes=tuple(nodes),
        next_cursor=page.next_cursor,
        total=total,
        destination_subscriptions=sum(by_node.values()) if query.destination else None,
    )


def connection_row(session: SessionRecord, now: float) -> dict[str, Any]:
    """One session as the page's table and its JSON endpoint show it."""
    connected_iso, connected = _timestamp(session.connected_at)
    seen_iso, _ = _timestamp(session.last_seen)
    subs = [
        {"id": sub.id, "destination": sub.destination, "ack": sub.ack}
        for sub in session.subscriptions
    ]
    count = len(subs)
    user = session.username or "anonymous"
    return {
        "key": session.session_id,
        "session_id": session.session_id,
        "user": user,
        "anonymous": not session.username,
        "node_id": session.node_id,
        "remote_addr": session.remote_addr or "–",
        "user_agent": session.user_agent or "–",
        "version": session.version or "–",
        "subscription_count": count,
        "subscription_label": f"{count} subscription{'' if count == 1 else 's'}",
        "subscriptions": subs,
        "connected_at": connected_iso,
        "connected_at_display": connected,
        "connected_for": _ago(now - session.connected_at).removesuffix(" ago"),
        "last_seen": seen_iso,
        "last_seen_ago": _ago(now - session.last_seen),
        "select_label": f"Select the session of {user} ({session.session_id})",
        "disconnect_label": f"Disconnect {user} (session {session.session_id})",
    }


@admin.register(Connection)
class ConnectionAdmin(_RegistryAdmin):
    """The "Live connections" page: sessions of the whole cluster, from presence."""

    change_list_template = "admin/stomp_cluster/connections.html"
    disconnect_template = "admin/stomp_cluster/disconnect.html"
    list_per_page = 100
    actions = None

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        """Whether the user may close sessions (``stomp_cluster.disconnect_connection``)."""
        return request.user.has_perm(f"{self.opts.app_label}.disconnect_connection")

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("live/", wrap(self.live_view), name="{}_{}_live".format(*info)),
            path("disconnect/", wrap(self.disconnect_view), name="{}_{}_disconnect".format(*info)),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A session has no change form: show its row, found by searching its id.
        url = self._url("connection_changelist")
        return HttpResponseRedirect(url + _query_string({"q": object_id}))

    def _load(self, request: HttpRequest) -> tuple[ConnectionQuery, ConnectionPage]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        query = ConnectionQuery.from_request(request)
        page: ConnectionPage = async_to_sync(load_connections)(query, self.list_per_page)
        return query, page

    def _summary(self, query: ConnectionQuery, page: ConnectionPage) -> dict[str, str]:
        shown = len(page.sessions)
        if page.error:
            result = "registry unreachable"
        elif page.total is not None:
            first = (query.page - 1) * self.list_per_page + 1
            result = (
                f"{first}–{first + shown - 1} of {page.total} sessions"
                if shown
                else f"0 of {page.total} sessions"
            )
        else:
            result = f"{shown} session{'' if shown == 1 else 's'} on this page"
        summary = {"result": result, "page": f"page {query.page}"}
        if page.destination_subscriptions is not None:
            n = page.destination_subscriptions
            summary["destination"] = (
                f"{n} subscription{'' if n == 1 else 's'} to {query.destination}"
            )
        return summary

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        query, page = self._load(request)
        now = time.time()
        changelist = self._url("connection_changelist")
        node_choices = [
            {
                "label": f"{n.node_id} ({n.session_count})" + ("" if n.alive else " – lost"),
                "url": _query_string(query.params(node=n.node_id)),
                "selected": n.node_id == query.node,
            }
            for n in page.nodes
        ]
        next_url = None
        if page.next_cursor is not None:
            next_params = query.params(cursor=page.next_cursor, page=str(query.page + 1))
            next_url = _query_string(next_params)
        rows = [connection_row(s, now) for s in page.sessions]
        context = {
            **self._page_context(request, "Live connections"),
            "query": query,
            "rows": rows,
            "page": page,
            "summary": self._summary(query, page),
            "node_choices": node_choices,
            "all_nodes_url": _query_string(query.params(node=None)),
            "clear_url": changelist,
            "has_filters": bool(query.node or query.destination or query.search),
            "first_url": _query_string(query.params()) if query.cursor else None,
            "next_url": next_url,
            "destinations_seen": sorted(
                {sub["destination"] for row in rows for sub in row["subscriptions"]}
            ),
            "can_disconnect": self.has_disconnect_permission(request),
            "filters_qs": _query_string(query.params(cursor=query.cursor)).lstrip("?"),
            "live_url": self._url("connection_live"),
            "disconnect_url": self._url("connection_disconnect"),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context)

    def live_view(self, request: HttpRequest) -> JsonResponse:
        """The page's data as JSON, for its live refresh (staff + view permission)."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        query, page = self._load(request)
        now = time.time()
        return JsonResponse(
            {
                "rows": [connection_row(s, now) for s in page.sessions],
                "summary": self._summary(query, page),
                "next_cursor": page.next_cursor,
                "total": page.total,
                "nodes": [_node_row(n, now) for n in page.nodes],
                "error": page.error,
            },
            status=503 if page.error else 200,
        )

    def disconnect_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then close the posted sessions and log it (disconnect permission)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_disconnect_permission(request):
            raise PermissionDenied
        changelist = self._url("connection_changelist")
        # The page's filters come back so that we return to the same view; they only
        # ever form the query string of our own changelist URL.
        filters = request.POST.get("filters", "").lstrip("?")
        back = changelist + ("?" + filters if filters else "")
        only = request.POST.get("only")
        session_ids = [only] if only else request.POST.getlist("session")
        session_ids = list(dict.fromkeys(sid.strip() for sid in session_ids if sid.strip()))
        if not session_ids:
            messages.warning(request, "Select at least one session to disconnect.")
            return HttpResponseRedirect(back)
        reason = " ".join(request.POST.get("reason", "").split())[:MAX_REASON] or DEFAULT_REASON
        if request.POST.get("confirm") != "yes":
            return self._confirm_disconnect(request, session_ids, reason, back)
        done, gone, failed = async_to_sync(_disconnect)(session_ids, reason)
        assert request.user.pk is not None  # admin_view let a staff user in
        for record in done:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=[Connection(session_id=record.session_id)],
                action_flag=DELETION,
                change_message=(
                    f"Disconnected {record.username or 'anonymous'} on node {record.node_id} "
                    f"({record.remote_addr or 'unknown address'}): {reason}"
                ),
            )
        if done:
            names = ", ".join(f"{r.username or 'anonymous'} on {r.node_id}" for r in done)
            count = len(done)
            messages.success(
                request, f"Disconnected {count} session{'' if count == 1 else 's'}: {names}."
            )
        if gone:
            messages.warning(request, f"Already gone: {', '.join(gone)}.")
        if failed:
            messages.error(request, failed)
        return HttpResponseRedirect(back)

    def _confirm_disconnect(
        self, request: HttpRequest, session_ids: list[str], reason: str, back: str
    ) -> HttpResponse:
        try:
            found = async_to_sync(_get_sessions)(session_ids)
            error = None
        except PresenceUnavailable as exc:
            found, error = {}, _registry_error(exc)
        now = time.time()
        context = {
            **self._page_context(request, "Disconnect live connections"),
            "rows": [connection_row(found[sid], now) for sid in session_ids if sid in found],
            "missing": [sid for sid in session_ids if sid not in found and not error],
            "session_ids": session_ids,
            "reason": reason,
            "max_reason": MAX_REASON,
            "back_url": back,
            "filters": request.POST.get("filters", ""),
            "error": error,
            "disconnect_url": request.path,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.disconnect_template, context)


async def _get_sessions(session_ids: list[str]) -> dict[str, SessionRecord]:
    presence = get_presence()
    records = await asyncio.gather(*(presence.get_session(sid) for sid in session_ids))
    return {r.session_id: r for r in records if r is not None}


async def _disconnect(
    session_ids: list[str], reason: str
) -> tuple[list[SessionRecord], list[str], str | None]:
    """Close each session on its node; return (closed records, ids not found, error)."""
    try:
        records = await _get_sessions(session_ids)
    except PresenceUnavailable as exc:
        return [], [], _registry_error(exc)
    present = [sid for sid in session_ids if sid in records]
    gone = [sid for sid in session_ids if sid not in records]
    # Each call finds the session's node and sends it the kick: all at once for a bulk.
    results = await asyncio.gather(
        *(adisconnect_session(sid, reason) for sid in present), return_exceptions=True
    )
    done: list[SessionRecord] = []
    failed: list[str] = []
    for sid, result in zip(present, results, strict=True):
        if isinstance(result, DeliveryFailed):
            failed.append(f"Could not reach the node of session {sid}: {result}")
        elif isinstance(result, BaseException):
            raise result
        elif result:
            done.append(records[sid])
        else:
            gone.append(sid)  # it left between the two look-ups
    return done, gone, " ".join(failed) or None


# -- nodes -----------------------------------------------------------------------------


def _node_row(node: NodeRecord, now: float, connections_url: str = "") -> dict[str, Any]:
    started_iso, started = _timestamp(node.started_at)
    heartbeat_iso, _ = _timestamp(node.last_heartbeat)
    return {
        "key": node.node_id,
        "node_id": node.node_id,
        "status": "alive" if node.alive else "lost",
        "session_count": node.session_count,
        "last_heartbeat": heartbeat_iso,
        "last_heartbeat_ago": _ago(now - node.last_heartbeat),
        "started_at": started_iso,
        "started_at_display": started,
        "connections_url": connections_url + _query_string({"node": node.node_id}),
        "stats": ", ".join(f"{name} {value}" for name, value in node.stats) or "–",
    }


@dataclass(frozen=True, slots=True)
class ClusterTotals:
    """The cluster at a glance, from one ``PresenceBackend.nodes()`` call."""

    nodes: tuple[NodeRecord, ...] = ()
    error: str | None = None

    @property
    def summary(self) -> dict[str, str]:
        """Totals as the page shows them: nodes, alive, lost, sessions."""
        if self.error:
            return {}
        alive = sum(1 for n in self.nodes if n.alive)
        sessions = sum(n.session_count for n in self.nodes)
        lost = len(self.nodes) - alive
        return {
            "nodes": str(len(self.nodes)),
            "alive": str(alive),
            "lost": str(lost),
            "sessions": str(sessions),
        }


async def load_nodes() -> ClusterTotals:
    """Ask the presence backend for the nodes; on an outage, say so instead."""
    try:
        return ClusterTotals(nodes=tuple(await get_presence().nodes()))
    except PresenceUnavailable as exc:
        logger.warning("admin: presence registry unavailable: %s", exc)
        return ClusterTotals(error=_registry_error(exc))


@admin.register(Node)
class NodeAdmin(_RegistryAdmin):
    """The "Nodes" page: every node of the cluster, alive or lost, and totals."""

    change_list_template = "admin/stomp_cluster/nodes.html"
    actions = None

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("live/", wrap(self.live_view), name="{}_{}_live".format(*info)),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A node's "page" is the list of its connections.
        url = self._url("connection_changelist")
        return HttpResponseRedirect(url + _query_string({"node": object_id}))

    def _load(self, request: HttpRequest) -> tuple[ClusterTotals, list[dict[str, Any]]]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        totals: ClusterTotals = async_to_sync(load_nodes)()
        connections = self._url("connection_changelist")
        now = time.time()
        return totals, [_node_row(n, now, connections) for n in totals.nodes]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        totals, rows = self._load(request)
        context = {
            **self._page_context(request, "Nodes"),
            "rows": rows,
            "totals": totals,
            "live_url": self._url("node_live"),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context)

    def live_view(self, request: HttpRequest) -> JsonResponse:
        """The nodes and totals as JSON, for the page's live refresh."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        totals, rows = self._load(request)
        return JsonResponse(
            {"rows": rows, "summary": totals.summary, "error": totals.error},
            status=503 if totals.error else 200,
        )
