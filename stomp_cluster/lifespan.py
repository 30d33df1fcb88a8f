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
applications of those connections to finish, and only then sends ``lifespan.shutdown``:
too late for a goodbye. So at startup :class:`LifespanApp` also wraps the server's own
SIGTERM and SIGINT handlers (uvicorn installs them with :func:`signal.signal`, in the main
thread, before the lifespan starts): on the first signal, every local session gets its
ERROR frame ``server shutting down`` and its socket is closed by us (code 1000), for at
most :data:`CLOSE_TIMEOUT` seconds, and only then does the server's handler run and
uvicorn's shutdown begin. Clients therefore see what daphne's see. A second signal goes
straight to the server's handler (for uvicorn, a second Ctrl-C forces the exit; the
lifespan shutdown is then skipped and the node stays listed until its ``NODE_TTL``
lapses, as after a crash). Where no handler of the server's can be wrapped (the
lifespan runs outside the main thread, or the server left the default handlers), the
clients get uvicorn's close with code 1012 and no frame; the sessions still end with the
reason ``"shutdown"`` and the node still leaves the registry at the lifespan shutdown.

daphne does not speak the lifespan protocol; there the node hooks into Twisted's shutdown
instead, which runs before the sockets close, so daphne's clients do get the ERROR frame
before the close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from stomp_cluster.node import current_node
from stomp_cluster.typing import Receive, Scope, Send

__all__ = ["CLOSE_TIMEOUT", "LifespanApp"]

logger = logging.getLogger(__name__)

#: Seconds the sessions' ERROR frames may take to go out on SIGTERM before the server's
#: own shutdown starts anyway.
CLOSE_TIMEOUT = 5.0

#: The signals servers stop on (uvicorn handles these two).
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
        restore: Callable[[], None] = _nothing
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                restore = _wrap_signal_handlers(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                restore()
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


def _nothing() -> None:
    pass


def _wrap_signal_handlers(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Put our goodbye in front of the server's SIGTERM/SIGINT handlers.

    Returns:
        A function that puts the server's handlers back (at the lifespan shutdown).
    """
    if threading.current_thread() is not threading.main_thread():
        return _nothing  # signal handlers can only be set from the main thread
    closing = False
    wrapped: dict[int, Any] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        nonlocal closing
        previous = wrapped[sig]
        if closing:
            previous(sig, frame)  # a second signal keeps the server's meaning
            return
        closing = True
        # A signal handler runs between two bytecodes of whatever the loop was doing:
        # hand the work to the loop rather than touch it from here.
        loop.call_soon_threadsafe(lambda: loop.create_task(_close_then(previous, sig, frame)))

    for sig in _SIGNALS:
        previous = signal.getsignal(sig)
        if callable(previous) and previous is not signal.default_int_handler:
            wrapped[sig] = previous
            signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in wrapped.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return restore


async def _close_then(
    previous: Callable[[int, FrameType | None], Any], sig: int, frame: FrameType | None
) -> None:
    """Close the node's sessions with an ERROR frame, then run the server's handler."""
    node = current_node()
    try:
        if node is not None:
            await asyncio.wait_for(node.close_sessions(), CLOSE_TIMEOUT)
    except Exception:
        logger.exception("closing the sessions on signal %s failed", sig)
    finally:
        previous(sig, frame)
