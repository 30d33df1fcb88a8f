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

What the two pages share (no table, no add/change/delete, the ``live/`` endpoint, a change
view that redirects to the connections page, rendering on the admin's base template) is
written once, in ``_RegistryAdmin``; their templates extend
``admin/stomp_cluster/live_page.html``. What the admin shares with ``manage.py
stomp_cluster`` (the default reason, times for people, closing sessions) is in
:mod:`stomp_cluster.operators`. Every text shown goes through Django's translation
functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
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
from django.utils.translation import gettext, ngettext

from stomp_cluster.backends import get_presence
from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.models import Connection, Node
from stomp_cluster.operators import (
    DEFAULT_REASON,
    adisconnect_sessions,
    aget_sessions,
    ago,
    registry_unreachable,
    since,
    utc,
)
from stomp_cluster.presence.base import NodeRecord, SessionRecord, decode_cursor

if TYPE_CHECKING:
    from django.db.models import QuerySet

    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin is generic for django-stubs only
    _ModelAdmin = admin.ModelAdmin

__all__ = ["ConnectionAdmin", "NodeAdmin"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest reason accepted; it travels in a STOMP header.
MAX_REASON = 200


def _iso(unix: float) -> str:
    """ISO 8601 in UTC, for ``<time datetime>``."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def _query_string(params: dict[str, str | None]) -> str:
    """``?a=1&b=2`` from the non-empty *params*, or ``?`` when there are none."""
    return "?" + urlencode({k: v for k, v in params.items() if v})


def _registry_error(exc: PresenceUnavailable) -> str:
    consequence = gettext(
        "Live connections cannot be listed until it answers; the nodes keep serving their "
        "sockets meanwhile."
    )
    return f"{registry_unreachable(exc)} {consequence}"


def _user(username: str) -> str:
    return username or gettext("anonymous")


def _live_texts() -> dict[str, str]:
    """What ``static/stomp_cluster/live.js`` writes for people, translated.

    The page hands them to the script as JSON; the script fills in each ``%(name)s``.
    """
    return {
        "pause": gettext("Pause live updates"),
        "resume": gettext("Resume live updates"),
        "paused": gettext("Live updates paused"),
        "resuming": gettext("Live: resuming"),
        "updated": gettext("Live: updated %(time)s"),
        "failed": gettext("Live updates failed at %(time)s (%(error)s); retrying"),
        "sessionEnded": gettext("your admin session ended: reload the page to log in again"),
        "added": gettext("%(count)s new"),
        "removed": gettext("%(count)s gone"),
        "announce": gettext("%(changes)s (live update)"),
        "selected": gettext("%(checked)s of %(total)s selected"),
    }


async def _nothing(value: T) -> T:
    return value


class _RegistryAdmin(_ModelAdmin):
    """What the two pages share: no database, no add/change/delete, registry-backed views.

    Its model is an unmanaged placeholder. The default admin views that would query the
    missing table are turned into redirects or refusals. Each page adds a ``live/`` JSON
    endpoint (:meth:`live_view`, answering :meth:`live_data`) for its live refresh.
    """

    #: Seconds between two polls of the page's JSON endpoint.
    refresh_interval = 3.0

    #: The connections page's query parameter that shows one object: an object's change
    #: URL redirects there, since nothing here has a change form.
    change_redirect_param = ""

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

    def extra_views(self) -> dict[str, Callable[[HttpRequest], HttpResponse]]:
        """The page's own views by name, besides the admin's.

        Each is served at ``<name>/``, named ``admin:<app>_<model>_<name>``, behind the
        admin site's login check. Subclasses add theirs to this mapping.
        """
        return {"live": self.live_view}

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        extra = [
            path(f"{name}/", wrap(view), name=f"{prefix}_{name}")
            for name, view in self.extra_views().items()
        ]
        return [*extra, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # No change form: show the object's row(s) on the connections page instead.
        url = self._url("connection_changelist")
        return HttpResponseRedirect(url + _query_string({self.change_redirect_param: object_id}))

    def live_data(self, request: HttpRequest) -> dict[str, Any]:
        """The page's data for its live refresh; ``"error"`` is set on a registry outage."""
        raise NotImplementedError

    def live_view(self, request: HttpRequest) -> HttpResponse:
        """:meth:`live_data` as JSON (staff + view permission); 503 on a registry outage."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": gettext("permission denied")}, status=403)
        data = self.live_data(request)
        return JsonResponse(data, status=503 if data["error"] else 200)

    def _check_view_permission(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def _url(self, name: str) -> str:
        """Reverse ``admin:stomp_cluster_<name>`` on this admin site."""
        return reverse(f"{self.admin_site.name}:stomp_cluster_{name}")

    def _render(
        self, request: HttpRequest, template: str, title: str, context: dict[str, Any]
    ) -> TemplateResponse:
        """*template* on the admin's base template, with the site's context and *context*."""
        opts = self.model._meta
        request.current_app = self.admin_site.name
        page = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": opts,
            "app_label": opts.app_label,
            "refresh_interval": self.refresh_interval,
            "live_texts": _live_texts(),
        }
        return TemplateResponse(request, template, {**page, **context})


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
    subs = [
        {"id": sub.id, "destination": sub.destination, "ack": sub.ack}
        for sub in session.subscriptions
    ]
    count = len(subs)
    names = {"user": _user(session.username), "session": session.session_id}
    return {
        "key": session.session_id,
        "session_id": session.session_id,
        "user": names["user"],
        "anonymous": not session.username,
        "node_id": session.node_id,
        "remote_addr": session.remote_addr or "–",
        "user_agent": session.user_agent or "–",
        "version": session.version or "–",
        "subscription_count": count,
        "subscription_label": (
            ngettext("%(count)d subscription", "%(count)d subscriptions", count) % {"count": count}
        ),
        "subscriptions": subs,
        "connected_at": _iso(session.connected_at),
        "connected_at_display": utc(session.connected_at),
        "connected_for": since(session.connected_at, now),
        "last_seen": _iso(session.last_seen),
        "last_seen_ago": ago(session.last_seen, now),
        "select_label": gettext("Select the session of %(user)s (%(session)s)") % names,
        "disconnect_label": gettext("Disconnect %(user)s (session %(session)s)") % names,
    }


@admin.register(Connection)
class ConnectionAdmin(_RegistryAdmin):
    """The "Live connections" page: sessions of the whole cluster, from presence."""

    change_list_template = "admin/stomp_cluster/connections.html"
    disconnect_template = "admin/stomp_cluster/disconnect.html"
    change_redirect_param = "q"  # a session's row, found by searching its id
    list_per_page = 100
    actions = None

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        """Whether the user may close sessions (``stomp_cluster.disconnect_connection``)."""
        return request.user.has_perm(f"{self.opts.app_label}.disconnect_connection")

    def extra_views(self) -> dict[str, Callable[[HttpRequest], HttpResponse]]:
        return {**super().extra_views(), "disconnect": self.disconnect_view}

    def _load(self, request: HttpRequest) -> tuple[ConnectionQuery, ConnectionPage]:
        self._check_view_permission(request)
        query = ConnectionQuery.from_request(request)
        page: ConnectionPage = async_to_sync(load_connections)(query, self.list_per_page)
        return query, page

    def _summary(self, query: ConnectionQuery, page: ConnectionPage) -> dict[str, str]:
        shown = len(page.sessions)
        if page.error:
            result = gettext("registry unreachable")
        elif page.total is not None:
            first = (query.page - 1) * self.list_per_page + 1
            numbers = {"first": first, "last": first + shown - 1, "total": page.total}
            if shown:
                result = ngettext(
                    "%(first)d–%(last)d of %(total)d session",
                    "%(first)d–%(last)d of %(total)d sessions",
                    page.total,
                )
            else:
                result = ngettext("0 of %(total)d session", "0 of %(total)d sessions", page.total)
            result %= numbers
        else:
            result = ngettext(
                "%(count)d session on this page", "%(count)d sessions on this page", shown
            ) % {"count": shown}
        summary = {"result": result, "page": gettext("page %(number)d") % {"number": query.page}}
        if page.destination_subscriptions is not None:
            n = page.destination_subscriptions
            summary["destination"] = ngettext(
                "%(count)d subscription to %(destination)s",
                "%(count)d subscriptions to %(destination)s",
                n,
            ) % {"count": n, "destination": query.destination}
        return summary

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        query, page = self._load(request)
        now = time.time()
        node_choices = [
            {
                "label": (
                    "%(node)s (%(count)d)" if n.alive else gettext("%(node)s (%(count)d) – lost")
                )
                % {"node": n.node_id, "count": n.session_count},
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
            "query": query,
            "rows": rows,
            "error": page.error,
            "summary": self._summary(query, page),
            "node_choices": node_choices,
            "all_nodes_url": _query_string(query.params(node=None)),
            "clear_url": self._url("connection_changelist"),
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
        return self._render(
            request, self.change_list_template, gettext("Live connections"), context
        )

    def live_data(self, request: HttpRequest) -> dict[str, Any]:
        query, page = self._load(request)
        now = time.time()
        return {
            "rows": [connection_row(s, now) for s in page.sessions],
            "summary": self._summary(query, page),
            "next_cursor": page.next_cursor,
            "total": page.total,
            "nodes": [_node_row(n, now) for n in page.nodes],
            "error": page.error,
        }

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
            messages.warning(request, gettext("Select at least one session to disconnect."))
            return HttpResponseRedirect(back)
        reason = " ".join(request.POST.get("reason", "").split())[:MAX_REASON] or DEFAULT_REASON
        if request.POST.get("confirm") != "yes":
            return self._confirm_disconnect(request, session_ids, reason, back)
        try:
            result = async_to_sync(adisconnect_sessions)(session_ids, reason)
        except PresenceUnavailable as exc:
            messages.error(request, _registry_error(exc))
            return HttpResponseRedirect(back)
        assert request.user.pk is not None  # admin_view let a staff user in
        for record in result.done:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=[Connection(session_id=record.session_id)],
                action_flag=DELETION,
                change_message=gettext(
                    "Disconnected %(user)s on node %(node)s (%(address)s): %(reason)s"
                )
                % {
                    "user": _user(record.username),
                    "node": record.node_id,
                    "address": record.remote_addr or gettext("unknown address"),
                    "reason": reason,
                },
            )
        if result.done:
            names = ", ".join(
                gettext("%(user)s on %(node)s") % {"user": _user(r.username), "node": r.node_id}
                for r in result.done
            )
            count = len(result.done)
            messages.success(
                request,
                ngettext(
                    "Disconnected %(count)d session: %(names)s.",
                    "Disconnected %(count)d sessions: %(names)s.",
                    count,
                )
                % {"count": count, "names": names},
            )
        if result.gone:
            messages.warning(
                request, gettext("Already gone: %(ids)s.") % {"ids": ", ".join(result.gone)}
            )
        if result.failed:
            messages.error(request, " ".join(result.failed))
        return HttpResponseRedirect(back)

    def _confirm_disconnect(
        self, request: HttpRequest, session_ids: list[str], reason: str, back: str
    ) -> HttpResponse:
        try:
            found = async_to_sync(aget_sessions)(session_ids)
            error = None
        except PresenceUnavailable as exc:
            found, error = {}, _registry_error(exc)
        now = time.time()
        context = {
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
        title = gettext("Disconnect live connections")
        return self._render(request, self.disconnect_template, title, context)


# -- nodes -----------------------------------------------------------------------------


def _node_row(node: NodeRecord, now: float, connections_url: str = "") -> dict[str, Any]:
    return {
        "key": node.node_id,
        "node_id": node.node_id,
        # "status" is also a CSS hook (data-status): it stays untranslated.
        "status": "alive" if node.alive else "lost",
        "status_display": gettext("alive") if node.alive else gettext("lost"),
        "session_count": node.session_count,
        "last_heartbeat": _iso(node.last_heartbeat),
        "last_heartbeat_ago": ago(node.last_heartbeat, now),
        "started_at": _iso(node.started_at),
        "started_at_display": utc(node.started_at),
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
    change_redirect_param = "node"  # a node's "page" is the list of its connections
    actions = None

    def _load(self, request: HttpRequest) -> tuple[ClusterTotals, list[dict[str, Any]]]:
        self._check_view_permission(request)
        totals: ClusterTotals = async_to_sync(load_nodes)()
        connections = self._url("connection_changelist")
        now = time.time()
        return totals, [_node_row(n, now, connections) for n in totals.nodes]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        totals, rows = self._load(request)
        context = {
            "rows": rows,
            "totals": totals,
            "error": totals.error,
            "live_url": self._url("node_live"),
            **(extra_context or {}),
        }
        return self._render(request, self.change_list_template, gettext("Nodes"), context)

    def live_data(self, request: HttpRequest) -> dict[str, Any]:
        totals, rows = self._load(request)
        return {"rows": rows, "summary": totals.summary, "error": totals.error}
