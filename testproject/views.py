"""Views of the demo: the page, who is online, and Django views that notify a user.

The demo shows the cluster from a browser:

* the page says which node serves it (and so holds its WebSocket, on the same port);
* ``/online/`` lists the users the presence registry knows, with their nodes;
* ``/notify/form/`` is a small form, embedded by the page once per node in an iframe
  loaded *from that node*, so that "Notify via node-b" really runs ``send_to_user`` in
  node-b's process, whichever node the recipient is connected to.

The nodes' URLs come from ``STOMP_DEMO_PEERS`` (comma-separated, set by
``testproject/demo.py``) and from ``?peer=URL`` on the page's URL. Only loopback URLs are
accepted: the demo serves 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from stomp_cluster import send_to_user
from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import DeliveryFailed, PresenceUnavailable

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

#: Who may frame /notify/form/: the demo's own nodes, which all listen on loopback.
FRAME_ANCESTORS = "'self' http://127.0.0.1:* http://localhost:* http://[::1]:*"


def _origin(url: str) -> str | None:
    """``http://host:port`` of a loopback http(s) URL, or ``None`` for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
        return None
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def peer_origins(request: HttpRequest) -> list[str]:
    """The other nodes' origins: ``STOMP_DEMO_PEERS`` and ``?peer=``, without this one."""
    own = f"{request.scheme}://{request.get_host()}"
    candidates = [*os.environ.get("STOMP_DEMO_PEERS", "").split(","), *request.GET.getlist("peer")]
    found = [origin for origin in map(_origin, candidates) if origin and origin != own]
    return list(dict.fromkeys(found))


@login_required
def demo(request: HttpRequest) -> HttpResponse:
    """The demo page: connects over STOMP with the session cookie."""
    own = f"{request.scheme}://{request.get_host()}"
    peers = peer_origins(request)
    return render(
        request,
        "testproject/demo.html",
        {
            "node_id": get_settings().NODE_ID,
            "clustered": bool(settings.REDIS_URL),
            "other_nodes": peers,
            "notify_origins": [own, *peers],
        },
    )


@require_GET
@login_required
def online(request: HttpRequest) -> JsonResponse:
    """Who is connected, from the presence registry: ``{"users": [{username, nodes}]}``.

    One page of at most 500 sessions, oldest first: plenty for a demo, and a bounded
    cost whatever the size of the cluster. Anonymous sessions are counted, not named.
    """
    try:
        page = async_to_sync(get_presence().sessions)(limit=500)
    except PresenceUnavailable as exc:
        return JsonResponse({"error": f"presence registry unavailable: {exc}"}, status=503)
    users: dict[str, dict[str, Any]] = {}
    anonymous = 0
    for session in page.sessions:
        if not session.username:
            anonymous += 1
            continue
        entry = users.setdefault(session.username, {"username": session.username, "nodes": []})
        if session.node_id not in entry["nodes"]:
            entry["nodes"].append(session.node_id)
    return JsonResponse(
        {
            "node": get_settings().NODE_ID,
            "users": sorted(users.values(), key=lambda u: u["username"]),
            "anonymous": anonymous,
            "sessions": len(page.sessions),
            "truncated": page.next_cursor is not None,
        }
    )


def _send_notification(request: HttpRequest, username: str, text: str) -> dict[str, Any]:
    delivery = send_to_user(
        username,
        "/queue/notify",
        {"from": request.user.get_username(), "text": text, "node": get_settings().NODE_ID},
    )
    return {"sessions": delivery.sessions, "nodes": delivery.nodes}


@require_POST
@login_required
def notify(request: HttpRequest) -> HttpResponse:
    """Send a private notification to a user, from whichever node serves this request.

    A plain sync view calling :func:`stomp_cluster.send_to_user`: the user may be
    connected to any node.
    """
    if request.content_type == "application/json":
        data = json.loads(request.body or b"{}")
    else:
        data = request.POST
    return JsonResponse(
        _send_notification(request, str(data.get("to", "")), str(data.get("text", "")))
    )


@xframe_options_exempt
@require_http_methods(["GET", "POST"])
@login_required
def notify_form(request: HttpRequest) -> HttpResponse:
    """The notify form of *this* node, made to sit in an iframe of the demo page.

    The page embeds one per node, each loaded from its node, so the form posts to that
    node and ``send_to_user`` runs there. The session and CSRF cookies are shared by the
    nodes (cookies ignore ports), so the iframe is logged in and its same-origin POST
    passes Django's CSRF check with no extra settings. Framing is allowed for loopback
    origins only (``frame-ancestors``), the demo's nodes.
    """
    context: dict[str, Any] = {"node_id": get_settings().NODE_ID, "to": "", "result": None}
    if request.method == "POST":
        context["to"] = username = request.POST.get("to", "").strip()
        text = request.POST.get("text", "").strip()
        if not username or not text:
            context["error"] = "Give a username and a text."
        else:
            try:
                context["result"] = _send_notification(request, username, text)
            except DeliveryFailed as exc:
                context["error"] = f"not sent: {exc}"
    response = render(request, "testproject/notify_form.html", context)
    response["Content-Security-Policy"] = f"frame-ancestors {FRAME_ANCESTORS}"
    return response
