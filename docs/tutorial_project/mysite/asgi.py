"""The tutorial's ASGI application: Django for HTTP, ``stomp_cluster`` for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()

# Import after get_asgi_application(), which sets Django up.
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
