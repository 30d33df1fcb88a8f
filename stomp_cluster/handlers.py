"""Application handlers for ``/app/...`` destinations, in the spirit of Spring's
``@MessageMapping``.

A client SENDs to ``/app/<path>``; the handler registered for ``<path>`` runs with a
:class:`StompRequest` and may reply to the sender, publish to a destination, or send to a
user. Handlers live in a ``stomp_handlers`` module of any installed app (imported at
startup, like ``admin.py``) and may be sync or async::

    from stomp_cluster.handlers import message_mapping

    @message_mapping("/chat/{room}")
    async def chat(request, room):
        await request.apublish(f"/topic/chat.{room}", request.body)

Sync handlers run on the ``handlers`` thread pool (``HANDLER_WORKERS`` threads, see
``stomp_cluster.workers``), so they may use the ORM, and one slow handler delays only
its own session. Each call is a unit of its own: sync handlers no longer share one
thread, so a handler may not keep thread-local state between calls (database
connections are cleaned up around each call, as ``database_sync_to_async`` does).

The ``PERMISSION_HOOK``, when set, is asked about every SEND before anything else, those
to ``/app/`` destinations included: a handler runs only for a SEND the hook allowed, so a
hook that refuses every SEND refuses the handlers too. Let ``/app/`` through in the hook
and check the content in the handler.

:class:`HandlerError` lives here, with the handlers that raise it, rather than in
:mod:`stomp_cluster.exceptions`, though it derives from ``StompClusterError`` like the
rest. The table of registered handlers, ``registry``, is internal and not in ``__all__``:
the consumer looks patterns up in it, and tests that register handlers restore it.

Error policy: a :class:`HandlerError` raised by a handler sends its message to that
client in an ERROR frame; any other exception is logged at ERROR with its traceback and
the client gets a generic ``internal error`` ERROR frame. Either way, as STOMP requires
after an ERROR frame, that one connection is closed and every other session carries on.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import async_to_sync

from stomp_cluster import destinations
from stomp_cluster.exceptions import StompClusterError
from stomp_cluster.protocol import Frame
from stomp_cluster.send import Delivery, asend_to_destination, encode_body
from stomp_cluster.typing import Headers
from stomp_cluster.workers import run_in_pool

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

__all__ = ["HandlerError", "StompRequest", "message_mapping"]

Handler = Callable[..., Any]


class _Sender(Protocol):
    """The session a request came from, as far as a handler's reply needs it."""

    def deliver(self, destination: str, body: bytes, headers: Headers) -> int: ...


class HandlerError(StompClusterError):
    """Raise from a handler to refuse a message with *message* shown to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class StompRequest:
    """One SEND to an ``/app/`` destination, as given to a handler.

    Attributes:
        destination: the full destination, such as ``/app/chat/lobby``.
        frame: the SEND frame, with all its headers.
        user: the Django user of the session (``AnonymousUser`` when not logged in).
        session_id: the session's cluster-wide id.
    """

    destination: str
    frame: Frame
    user: AbstractBaseUser | AnonymousUser
    session_id: str
    _consumer: _Sender = field(repr=False)

    @property
    def body(self) -> bytes:
        """The raw body."""
        return self.frame.body

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers by name; for a repeated header the first value wins, as in STOMP 1.2."""
        return self.frame.header_map()

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.frame.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.frame.body)

    async def areply(
        self,
        destination: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Send to this session alone, on its subscriptions to *destination*.

        *destination* may be given as ``/queue/echo`` or ``/user/queue/echo``; both
        reach the sender's subscription to ``/user/queue/echo`` (Spring's
        ``@SendToUser`` to the sending session).

        Returns:
            How many of the session's subscriptions received it.
        """
        payload, extra = encode_body(body, headers, content_type)
        return self._consumer.deliver(destinations.user_destination(destination), payload, extra)

    def reply(
        self,
        destination: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Sync twin of :meth:`areply`, for sync handlers."""
        result: int = async_to_sync(self.areply)(destination, body, headers, content_type)
        return result

    async def apublish(
        self,
        destination: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Delivery:
        """Publish to every subscriber of a broker destination, on every node."""
        return await asend_to_destination(destination, body, headers, content_type)

    def publish(
        self,
        destination: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Delivery:
        """Sync twin of :meth:`apublish`."""
        result: Delivery = async_to_sync(self.apublish)(destination, body, headers, content_type)
        return result


class HandlerRegistry:
    """Maps ``/app/`` paths (with ``{name}`` placeholders) to handlers."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def register(self, pattern: str, handler: Handler) -> None:
        """Register *handler* for *pattern*, relative to the app prefix (``/echo``)."""
        regex = "".join(
            f"(?P<{part[1:-1]}>[^/]+)"
            if part.startswith("{") and part.endswith("}")
            else re.escape(part)
            for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", "/" + pattern.strip("/"))
        )
        self._routes = [r for r in self._routes if r[0] != pattern]
        self._routes.append((pattern, re.compile(regex + r"\Z"), handler))

    def resolve(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        """Find the handler for *path* (the destination without its app prefix)."""
        path = "/" + path.lstrip("/")
        for _, regex, handler in self._routes:
            match = regex.match(path)
            if match is not None:
                return handler, match.groupdict()
        return None

    def clear(self) -> None:
        """Forget every handler (tests)."""
        self._routes.clear()


#: The registry :func:`message_mapping` adds to. Internal, so not in ``__all__``: the
#: consumer looks handlers up in it, and tests save and restore it.
registry = HandlerRegistry()


def message_mapping(pattern: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for SENDs to ``<app prefix><pattern>``.

    Args:
        pattern: a path such as ``"/echo"`` or ``"/chat/{room}"``; placeholders are
            passed to the handler as keyword arguments.
    """

    def decorator(func: Handler) -> Handler:
        registry.register(pattern, func)
        return func

    return decorator


async def call_handler(handler: Handler, request: StompRequest, kwargs: dict[str, str]) -> None:
    """Run *handler*, on the ``handlers`` thread pool when it is a sync function."""
    if inspect.iscoroutinefunction(handler):
        await handler(request, **kwargs)
    else:
        await run_in_pool("handlers", handler, request, **kwargs)
