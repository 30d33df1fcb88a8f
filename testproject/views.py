"""Views of the demo: the page, and a plain Django view that notifies a user."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from stomp_cluster import send_to_user
from stomp_cluster.conf import get_settings


@login_required
def demo(request: HttpRequest) -> HttpResponse:
    """The demo page: connects over STOMP with the session cookie."""
    return render(
        request,
        "testproject/demo.html",
        {
            "node_id": get_settings().NODE_ID,
            "clustered": bool(settings.REDIS_URL),
            "other_nodes": [u for u in request.GET.getlist("peer") if u],
        },
    )


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
    username = str(data.get("to", ""))
    text = str(data.get("text", ""))
    delivery = send_to_user(
        username,
        "/queue/notify",
        {"from": request.user.get_username(), "text": text, "node": get_settings().NODE_ID},
    )
    return JsonResponse({"sessions": delivery.sessions, "nodes": delivery.nodes})
