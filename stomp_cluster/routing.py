"""URL patterns that mount the STOMP endpoint: the one routing line.

In your ``asgi.py``::

    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()

    import stomp_cluster.routing

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": URLRouter(stomp_cluster.routing.websocket_urlpatterns),
    })

The path is ``STOMP_CLUSTER["URL_PATH"]`` (``ws`` by default, so ``ws://host/ws``).
Origins are checked by the consumer against ``ALLOWED_HOSTS`` (or ``ALLOWED_ORIGINS``), and
the session cookie is read by the consumer when a CONNECT needs it; wrapping the router in
Channels' ``AuthMiddlewareStack`` works as well (see :mod:`stomp_cluster.auth`).
"""

from __future__ import annotations

from django.urls import path

from stomp_cluster.conf import get_settings
from stomp_cluster.consumer import StompConsumer

__all__ = ["websocket_urlpatterns"]

websocket_urlpatterns = [
    path(get_settings().URL_PATH.strip("/"), StompConsumer.as_asgi(), name="stomp_cluster"),
]
