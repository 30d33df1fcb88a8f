"""HTTP views for operators: ``health/``, for load balancers and Kubernetes probes, and
``metrics/``, for Prometheus.

Mount them with ``path("stomp/", include("stomp_cluster.urls"))``. They are async views:
served by the ASGI server that runs the node, they see that process's node (the node of
the running event loop), which a sync view, run in a worker thread, would not.

Access
------

Every view here answers only clients whose address is in ``ENDPOINTS_ALLOWED_NETWORKS``
(loopback by default: ``127.0.0.0/8`` and ``::1``) and refuses others with 403, through
:func:`allowed_networks_only`, which any later endpoint of this module shares. The
address is Django's ``REMOTE_ADDR``, the connection's peer; we never read
``X-Forwarded-For`` ourselves, since any client can send one: a server configured to
trust the proxy in front of it (``daphne --proxy-headers``, uvicorn's
``--forwarded-allow-ips``) rewrites the peer address, and that is the one compared. An
IPv4 client of a server listening on a dual-stack IPv6 socket arrives as
``::ffff:a.b.c.d`` and is compared as ``a.b.c.d``.

Health
------

:func:`health` answers 200 while this process can serve STOMP sessions that the rest of
the cluster reaches, and 503 otherwise, with a small JSON body saying why:

* a node that the registry lists as alive: 200,
  ``{"status": "ok", "node": "<node id>", "sessions": <local sessions>}``;
* a node that the registry does not list (Redis restarted empty; the node writes itself
  again at its next heartbeat): 503, ``{"status": "unavailable", "node": "<node id>",
  "reason": "node not registered"}``;
* a node that the registry lists as lost (its heartbeats stalled past ``NODE_TTL``): 503,
  with the reason ``"node's liveness key expired"``;
* the registry cannot be reached: 503, with the reason ``"presence registry
  unreachable"`` and ``"node"`` null when the process is not a node;
* a process that is not a node (no WebSocket accepted yet, or a WSGI worker) while the
  registry answers: 200, ``{"status": "ok", "node": null}``.

A process that is not a node answers 200 when the registry answers: it can serve HTTP
and, under an ASGI server, becomes a node with the first WebSocket it accepts, so a load
balancer must keep sending it traffic. Each request costs one registry call (the list of
nodes: one round trip with the Redis backend); a Redis that hangs makes it wait for the
backend's ``socket_timeout`` (3 s by default), so give the probe a longer timeout or
count a timeout as a failure.

Metrics
-------

:func:`metrics` answers this process's node's metrics in Prometheus' text format (or
OpenMetrics, when the scraper's ``Accept`` asks for it), as :mod:`stomp_cluster.metrics`
lists them. It reads counters the node keeps in memory: no registry call, no Redis round
trip. Without ``prometheus_client`` installed (the ``metrics`` extra) it answers 501 with
a plain-text body saying what to install.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Coroutine
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.metrics import MetricsUnavailable, render
from stomp_cluster.node import current_node

__all__ = ["allowed_networks_only", "client_allowed", "health", "metrics"]

AsyncView = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]


def client_allowed(request: HttpRequest) -> bool:
    """Whether the request's client address is in ``ENDPOINTS_ALLOWED_NETWORKS``.

    A missing or unparsable ``REMOTE_ADDR`` (a Unix socket, a test client that sets
    none) is refused.
    """
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        address in ipaddress.ip_network(network)
        for network in get_settings().ENDPOINTS_ALLOWED_NETWORKS
    )


def allowed_networks_only(view: AsyncView) -> AsyncView:
    """Decorate an async view so that it answers only :func:`client_allowed` clients.

    Others get 403 with the JSON body ``{"status": "forbidden"}``, which names neither
    the setting nor the address, so as to tell a stranger nothing.
    """

    @functools.wraps(view)
    async def wrapper(request: HttpRequest) -> HttpResponse:
        if not client_allowed(request):
            return JsonResponse({"status": "forbidden"}, status=403)
        return await view(request)

    return wrapper


def _unavailable(node: str | None, reason: str) -> JsonResponse:
    return JsonResponse({"status": "unavailable", "node": node, "reason": reason}, status=503)


@require_safe
@never_cache
@allowed_networks_only
async def health(request: HttpRequest) -> HttpResponse:
    """200 while this process's node is registered and its registry reachable, else 503.

    See the module's documentation for each answer and its JSON body.
    """
    node = current_node()
    node_id = node.node_id if node is not None else None
    try:
        records = await get_presence().nodes()
    except PresenceUnavailable:
        return _unavailable(node_id, "presence registry unreachable")
    if node is None:
        return JsonResponse({"status": "ok", "node": None})
    record = next((r for r in records if r.node_id == node_id), None)
    if record is None:
        return _unavailable(node_id, "node not registered")
    if not record.alive:
        return _unavailable(node_id, "node's liveness key expired")
    return JsonResponse({"status": "ok", "node": node_id, "sessions": len(node.sessions)})


@require_safe
@never_cache
@allowed_networks_only
async def metrics(request: HttpRequest) -> HttpResponse:
    """This process's node's metrics for Prometheus; 501 without ``prometheus_client``."""
    try:
        body, content_type = render(request.headers.get("Accept", ""))
    except MetricsUnavailable as exc:
        return HttpResponse(f"{exc}\n", status=501, content_type="text/plain; charset=utf-8")
    return HttpResponse(body, content_type=content_type)
