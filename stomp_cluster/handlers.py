"""Application handlers for ``/app/...`` destinations, in the spirit of Spring's
``@MessageMapping``, ``@SendTo``, ``@SendToUser``, ``@SubscribeMapping`` and
``@MessageExceptionHandler``.

A client SENDs to ``/app/<path>``; the handler registered for ``<path>`` runs with a
:class:`StompRequest`. What it returns is sent on (Spring's ``@SendTo``); it may also
reply to the sender, publish to a destination, or send to a user itself. Handlers live
in a ``stomp_handlers`` module of any installed app (imported at startup, like
``admin.py``) and may be sync or async::

    from stomp_cluster.handlers import HandlerError, message_mapping, subscribe_mapping

    @message_mapping("/chat/{room}", send_to="/topic/chat.{room}")
    async def chat(request, room):
        if not request.body:
            raise HandlerError("empty message")
        return request.text()          # to every subscriber of /topic/chat.<room>

    @subscribe_mapping("/whoami")
    def whoami(request):
        return {"username": request.user.get_username()}  # once, to this subscriber

Where a return value goes (None sends nothing, which is how a handler opts out):

* ``@message_mapping(pattern)``: to ``/topic`` + the path, as Spring's ``@SendTo``
  default: a SEND to ``/app/chat`` is answered on ``/topic/chat``.
* ``send_to="/topic/x.{room}"``: to that broker destination; ``{name}`` placeholders of
  the pattern are filled in from the SEND's path.
* ``send_to_user="/queue/reply"``: to the sending user, as Spring's ``@SendToUser``:
  every session of a logged-in user that subscribes to ``/user/queue/reply``, or the
  sending session alone when the sender is anonymous or with ``broadcast=False``.
* ``@subscribe_mapping(pattern)``: as ONE MESSAGE to the subscription that asked, and
  only to it; no broker subscription is made, so nothing else ever arrives on it.

A ``str`` is sent as ``text/plain;charset=utf-8``, ``bytes`` as they are, anything else
JSON-serialisable as ``application/json``; return a :class:`Reply` to set headers or the
content type. A reply published to a broker destination carries ``x-sender`` naming the
user whose SEND it answers (when ``STAMP_SENDER`` is on and the user is logged in),
unless the :class:`Reply` sets ``x-sender`` itself: subscribers see who caused it, as
they would for a SEND to the topic. The destinations are the handler author's, so they
are not put to the ``PERMISSION_HOOK``.

Sync handlers run on the ``handlers`` thread pool (``HANDLER_WORKERS`` threads, see
``stomp_cluster.workers``), so they may use the ORM, and one slow handler delays only
its own session. Each call is a unit of its own: sync handlers no longer share one
thread, so a handler may not keep thread-local state between calls (database
connections are cleaned up around each call, as ``database_sync_to_async`` does).

The ``PERMISSION_HOOK``, when set, is asked about every SEND (action ``"send"``) and
SUBSCRIBE (``"subscribe"``) before anything else, those to ``/app/`` destinations
included: a handler runs only for a frame the hook allowed, so a hook that refuses every
SEND refuses the handlers too. Let ``/app/`` through in the hook and check the content
in the handler.

:class:`HandlerError` lives here, with the handlers that raise it, rather than in
:mod:`stomp_cluster.exceptions`, though it derives from ``StompClusterError`` like the
rest. The tables of registered handlers, ``registry`` and ``subscribe_registry``, are
internal and not in ``__all__``: ``stomp_cluster.app_dispatch``, which runs handlers for
a session, looks patterns up in them, and tests that register handlers restore them.

Error policy (Spring's ``@MessageExceptionHandler`` with ``@SendToUser("/queue/errors")``):
a :class:`HandlerError` raised by a handler becomes a MESSAGE to the *sending session's*
subscriptions to ``/user/queue/errors`` (:data:`ERRORS_DESTINATION`), with a JSON body
``{"error": ..., "destination": ..., "receipt": ...}`` and an ``x-error-destination``
header; the frame's receipt is still answered and the session stays open. A client that
does not subscribe to ``/user/queue/errors`` never sees the error (it is logged at INFO),
so clients should subscribe to it first, as in Spring. The error goes to the session,
not to every session of the user as Spring's default would: another tab of the same user
did nothing wrong, and an error about one frame means something only to the session
that sent it.

Any other exception is a bug: it is logged at ERROR with its traceback. By default the
client gets a generic ``internal error`` ERROR frame and, as STOMP requires after an
ERROR frame, that one connection is closed while every other session carries on. With
``HANDLER_EXCEPTIONS_KEEP_SESSION`` it is reported as a :class:`HandlerError` saying
``internal error`` (no details) and the session stays open. A handler that makes a send
fail (:class:`~stomp_cluster.exceptions.DeliveryFailed`) closes the session with
``message not delivered``, as a SEND to a topic does.
"""

from __future__ import annotations

import inspect
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import async_to_sync

from stomp_cluster import destinations
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import StompClusterError
from stomp_cluster.protocol import Frame
from stomp_cluster.send import (
    SENDER_HEADER,
    Delivery,
    asend_to_destination,
    asend_to_user,
    encode_body,
)
from stomp_cluster.typing import Headers
from stomp_cluster.workers import run_in_pool

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

__all__ = [
    "ERRORS_DESTINATION",
    "HandlerError",
    "Reply",
    "StompRequest",
    "message_mapping",
    "subscribe_mapping",
]

Handler = Callable[..., Any]

#: Where handler errors go: the sending session's subscriptions to ``/user/queue/errors``
#: (with the default ``USER_PREFIX``). Subscribe to it to see them.
ERRORS_DESTINATION = "/queue/errors"

#: The MESSAGE header of a handler error naming the destination of the frame it refused.
ERROR_DESTINATION_HEADER = "x-error-destination"

#: Where a ``@message_mapping`` handler's return value goes without ``send_to``: this
#: prefix and the path (Spring's ``@SendTo`` default).
DEFAULT_SEND_TO_PREFIX = "/topic"


class _Sender(Protocol):
    """The session a request came from, as far as a handler's reply needs it."""

    def deliver(self, destination: str, body: bytes, headers: Headers) -> int: ...


class HandlerError(StompClusterError):
    """Raise from a handler to refuse a frame, with *message* shown to the client.

    The client receives *message* on its subscription to ``/user/queue/errors``
    (:data:`ERRORS_DESTINATION`) and its session stays open; see the module docstring.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reply:
    """A handler's return value with headers: what to send, and how.

    Return one from a handler when a bare body is not enough::

        return Reply({"text": text}, headers={"x-room": room})

    Attributes:
        body: ``str``, ``bytes`` or anything JSON-serialisable, encoded as a bare
            return value is.
        headers: extra MESSAGE headers. Those the server owns (``destination``,
            ``message-id``, ``subscription``, ...) are dropped.
        content_type: the ``content-type`` header, instead of the one the body's type
            implies.
    """

    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class StompRequest:
    """One SEND or SUBSCRIBE to an ``/app/`` destination, as given to a handler.

    Attributes:
        destination: the full destination, such as ``/app/chat/lobby``.
        frame: the SEND (or, for a ``@subscribe_mapping`` handler, SUBSCRIBE) frame,
            with all its headers.
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
        ``@SendToUser(broadcast=false)``).

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


@dataclass(frozen=True)
class Route:
    """One registered handler: its pattern, and where its return value goes."""

    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    send_to: str | None = None
    send_to_user: str | None = None
    broadcast: bool = True


def _check(
    pattern: str, send_to: str | None, send_to_user: str | None, broadcast: bool = True
) -> list[str]:
    """Split *pattern* into literal parts and ``{name}`` placeholders, after checking
    that *send_to*, *send_to_user* and *broadcast* make sense with it."""
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", "/" + pattern.strip("/"))
    if send_to is not None and send_to_user is not None:
        raise ValueError(f"{pattern}: give send_to or send_to_user, not both")
    if not broadcast and send_to_user is None:
        raise ValueError(f"{pattern}: broadcast=False goes with send_to_user")
    names = {part[1:-1] for part in parts if part.startswith("{") and part.endswith("}")}
    wanted = {n for _, n, _, _ in string.Formatter().parse(send_to or "") if n is not None}
    unknown = wanted - names
    if unknown:
        raise ValueError(
            f"send_to {send_to!r} names {', '.join(sorted(unknown))}, "
            f"which the pattern {pattern!r} does not have"
        )
    return parts


class HandlerRegistry:
    """Maps ``/app/`` paths (with ``{name}`` placeholders) to handlers."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def register(
        self,
        pattern: str,
        handler: Handler,
        *,
        send_to: str | None = None,
        send_to_user: str | None = None,
        broadcast: bool = True,
    ) -> None:
        """Register *handler* for *pattern*, relative to the app prefix (``/echo``).

        Raises:
            ValueError: as :func:`message_mapping`.
        """
        parts = _check(pattern, send_to, send_to_user, broadcast)
        regex = "".join(
            f"(?P<{part[1:-1]}>[^/]+)"
            if part.startswith("{") and part.endswith("}")
            else re.escape(part)
            for part in parts
        )
        route = Route(pattern, re.compile(regex + r"\Z"), handler, send_to, send_to_user, broadcast)
        self._routes = [r for r in self._routes if r.pattern != pattern]
        self._routes.append(route)

    def resolve(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """Find the route for *path* (the destination without its app prefix), and the
        values of its placeholders."""
        path = "/" + path.lstrip("/")
        for route in self._routes:
            match = route.regex.match(path)
            if match is not None:
                return route, match.groupdict()
        return None

    def clear(self) -> None:
        """Forget every handler (tests)."""
        self._routes.clear()


#: The registry :func:`message_mapping` adds to. Internal, so not in ``__all__``: the
#: session's handler dispatch looks handlers up in it, and tests save and restore it.
registry = HandlerRegistry()

#: The registry :func:`subscribe_mapping` adds to (SUBSCRIBEs to ``/app/``). Internal.
subscribe_registry = HandlerRegistry()


def message_mapping(
    pattern: str,
    *,
    send_to: str | None = None,
    send_to_user: str | None = None,
    broadcast: bool = True,
) -> Callable[[Handler], Handler]:
    """Register the decorated function for SENDs to ``<app prefix><pattern>``.

    What the handler returns, unless None, is sent on (see the module docstring): to
    ``/topic<path>`` by default, to *send_to*, or to the sending user's *send_to_user*.

    Args:
        pattern: a path such as ``"/echo"`` or ``"/chat/{room}"``; placeholders are
            passed to the handler as keyword arguments.
        send_to: the broker destination of the return value (Spring's ``@SendTo``),
            such as ``"/topic/chat.{room}"``; the pattern's placeholders are filled in.
        send_to_user: the user destination of the return value (Spring's
            ``@SendToUser``), such as ``"/queue/reply"``: it reaches the user's
            sessions that subscribe to ``/user/queue/reply``, or only the sending
            session when the sender is anonymous.
        broadcast: with *send_to_user*, False sends to the sending session alone, as
            Spring's ``@SendToUser(broadcast = false)``.

    Raises:
        ValueError: both *send_to* and *send_to_user* are given, *broadcast* is False
            without *send_to_user*, or *send_to* names a placeholder that *pattern*
            does not have.
    """

    _check(pattern, send_to, send_to_user, broadcast)  # at the decorator, not at first use

    def decorator(func: Handler) -> Handler:
        registry.register(
            pattern, func, send_to=send_to, send_to_user=send_to_user, broadcast=broadcast
        )
        return func

    return decorator


def subscribe_mapping(pattern: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for SUBSCRIBEs to ``<app prefix><pattern>``.

    As Spring's ``@SubscribeMapping``: the handler's return value, unless None, is sent
    once to the subscription that asked, as one MESSAGE with that subscription's
    ``subscription`` header; then a RECEIPT if the SUBSCRIBE asked for one. No broker
    subscription is made (no presence entry, nothing later): use it for request-reply,
    such as loading the initial state of a page. The handler gets a
    :class:`StompRequest` whose ``frame`` is the SUBSCRIBE.

    Args:
        pattern: a path such as ``"/whoami"`` or ``"/rooms/{room}"``; placeholders are
            passed to the handler as keyword arguments.
    """

    def decorator(func: Handler) -> Handler:
        subscribe_registry.register(pattern, func)
        return func

    return decorator


async def call_handler(handler: Handler, request: StompRequest, kwargs: dict[str, str]) -> Any:
    """Run *handler*, on the ``handlers`` thread pool when it is a sync function.

    Returns:
        What the handler returned.
    """
    if inspect.iscoroutinefunction(handler):
        return await handler(request, **kwargs)
    return await run_in_pool("handlers", handler, request, **kwargs)


def _unpack(result: Any) -> tuple[Any, dict[str, str], str | None]:
    if isinstance(result, Reply):
        return result.body, dict(result.headers), result.content_type
    return result, {}, None


def encode_reply(result: Any) -> tuple[bytes, Headers]:
    """A handler's return value (a body or a :class:`Reply`) as wire bytes and headers.

    Raises:
        TypeError: the body is not str, bytes or JSON-serialisable.
    """
    body, headers, content_type = _unpack(result)
    return encode_body(body, headers, content_type)


async def ahandle_send(route: Route, request: StompRequest, kwargs: dict[str, str]) -> None:
    """Run a ``@message_mapping`` handler and send its return value where it goes.

    Raises:
        HandlerError: the handler refused the SEND.
        DeliveryFailed: the return value (or a send of the handler's) was not sent.
        Exception: whatever else the handler raised.
    """
    result = await call_handler(route.handler, request, kwargs)
    if result is None:
        return
    body, headers, content_type = _unpack(result)
    username = request.user.get_username() if request.user.is_authenticated else ""
    if route.send_to_user is not None:
        if username and route.broadcast:
            await asend_to_user(username, route.send_to_user, body, headers, content_type)
        else:
            await request.areply(route.send_to_user, body, headers, content_type)
        return
    if route.send_to is not None:
        destination = route.send_to.format_map(kwargs)
    else:
        path = destinations.app_path(request.destination) or ""
        destination = DEFAULT_SEND_TO_PREFIX + path
    if username and get_settings().STAMP_SENDER and SENDER_HEADER not in headers:
        headers = {SENDER_HEADER: username, **headers}
    await asend_to_destination(destination, body, headers, content_type)


async def ahandle_subscribe(
    route: Route, request: StompRequest, kwargs: dict[str, str]
) -> tuple[bytes, Headers] | None:
    """Run a ``@subscribe_mapping`` handler; its return value, encoded, or None.

    The caller sends it on the subscription that asked.

    Raises:
        HandlerError: the handler refused the SUBSCRIBE.
        TypeError: the return value cannot be encoded.
        Exception: whatever else the handler raised.
    """
    result = await call_handler(route.handler, request, kwargs)
    if result is None:
        return None
    return encode_reply(result)


def error_message(message: str, frame: Frame) -> tuple[bytes, Headers]:
    """The MESSAGE body and headers that tell a client its *frame* was refused.

    The body is JSON: ``{"error": message, "destination": ..., "receipt": ...}``, the
    receipt being the frame's ``receipt`` header or null. The ``x-error-destination``
    header repeats the destination, for clients that route on headers.
    """
    destination = frame.get("destination") or ""
    body = {"error": message, "destination": destination, "receipt": frame.get("receipt")}
    return encode_body(body, {ERROR_DESTINATION_HEADER: destination}, None)
