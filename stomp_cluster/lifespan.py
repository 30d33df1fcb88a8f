"""The ASGI ``lifespan`` app: a clean shutdown under uvicorn and gunicorn.

In your ``asgi.py``, next to the ``"http"`` and ``"websocket"`` entries::

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": URLRouter(stomp_cluster.routing.websocket_urlpatterns),
        "lifespan": stomp_cluster.lifespan.LifespanApp(),
    })

Theory of operation
-------------------

An ASGI server that speaks the lifespan protocol (uvicorn, and gunicorn with uvicorn
workers) opens one ``lifespan`` scope per process: it sends ``lifespan.startup`` before
it accepts connections and ``lifespan.shutdown`` when it stops. Channels'
``ProtocolTypeRouter`` has no entry for that scope: without one, ``uvicorn --lifespan on``
exits at start-up ("Application startup failed"), and ``--lifespan auto``, the default of
uvicorn and of gunicorn's uvicorn workers, logs that the protocol "appears unsupported"
and never tells the application it stops. :class:`LifespanApp` is that entry.

* **Startup** does nothing. The node still starts with the first WebSocket the process
  accepts, so a process that serves only HTTP never joins the cluster.
* **Shutdown** awaits ``Node.shutdown()`` for the node of the process's event loop, if
  one started: it closes any session still open with an ERROR frame saying ``server
  shutting down``, stops the node's tasks, gives up the sweep lock if the node held it,
  and removes the node from the presence registry. ``manage.py stomp_cluster nodes`` no
  longer lists it, at once rather than after ``NODE_TTL``.

What a client sees depends on the order in which the server does things. uvicorn, on
SIGTERM, first stops listening and closes every WebSocket itself with close code 1012
("service restart"), then waits up to ``--timeout-graceful-shutdown`` seconds for the
applications of those connections to finish, and only then sends ``lifespan.shutdown``.
So under uvicorn a client gets **no ERROR frame**, only the WebSocket close with code
1012; the consumer reports each of those sessions with the reason ``"shutdown"`` and
removes it from the registry as the socket closes, and the lifespan shutdown then
removes the node. stomp.py reports a lost connection (``on_disconnected``) and
``@stomp/stompjs`` a WebSocket close with code 1012 (``onWebSocketClose``); clients that
reconnect do so through the load balancer to another node. A second Ctrl-C (uvicorn's
forced exit) skips the lifespan shutdown: the node then stays listed until its
``NODE_TTL`` lapses, as after a crash.

daphne does not speak the lifespan protocol; there the node hooks into Twisted's shutdown
instead, which runs before the sockets close, so daphne's clients do get the ERROR frame
before the close.
"""

from __future__ import annotations

import logging

from stomp_cluster.node import current_node
from stomp_cluster.typing import Receive, Scope, Send

__all__ = ["LifespanApp"]

logger = logging.getLogger(__name__)


class LifespanApp:
    """The ASGI app of the ``lifespan`` scope: leave the cluster when the server stops.

    Mount one instance as the ``"lifespan"`` entry of Channels' ``ProtocolTypeRouter``.
    It takes no arguments and holds no state: the node it stops is the one of the event
    loop the server runs it on, found when the shutdown comes.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``lifespan.startup`` and ``lifespan.shutdown`` until the latter.

        Raises:
            ValueError: *scope* is not a ``lifespan`` scope (a mounting mistake).
        """
        if scope["type"] != "lifespan":
            raise ValueError(f"LifespanApp serves the 'lifespan' scope, not {scope['type']!r}")
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown(send)
                return

    @staticmethod
    async def _shutdown(send: Send) -> None:
        node = current_node()
        if node is None:  # no WebSocket was ever accepted: nothing joined the cluster
            await send({"type": "lifespan.shutdown.complete"})
            return
        try:
            await node.shutdown()
        except Exception as exc:
            # The server logs the failure and exits anyway; the node then leaves the
            # registry when its TTL lapses, as after a crash.
            logger.exception("node %s: shutdown failed", node.node_id)
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
        else:
            await send({"type": "lifespan.shutdown.complete"})
