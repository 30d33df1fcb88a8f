"""ASGI entry point: Django's HTTP app, the STOMP endpoint at ``/ws``, and the lifespan.

The ``"lifespan"`` entry lets uvicorn (``--lifespan on``) and gunicorn's uvicorn workers
stop the node cleanly: on SIGTERM it leaves the presence registry at once. daphne ignores
it and stops the node through its own shutdown hook.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

import stomp_cluster.lifespan  # noqa: E402
import stomp_cluster.routing  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(stomp_cluster.routing.websocket_urlpatterns),
        "lifespan": stomp_cluster.lifespan.LifespanApp(),
    }
)
