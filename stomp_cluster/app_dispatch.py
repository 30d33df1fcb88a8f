"""Running ``/app/`` handlers for a session's SEND and SUBSCRIBE frames.

The consumer hands a frame to an ``/app/`` destination here; this module finds the
handler (:mod:`stomp_cluster.handlers`), runs it with a
:class:`~stomp_cluster.handlers.StompRequest`, and applies the error policy described
in :mod:`stomp_cluster.handlers`: a :class:`~stomp_cluster.handlers.HandlerError` goes
to the session's ``/user/queue/errors`` subscriptions and the session goes on; a failed
send (:class:`~stomp_cluster.exceptions.DeliveryFailed`) and any other exception (unless
``HANDLER_EXCEPTIONS_KEEP_SESSION``) refuse the frame.

It does no I/O of its own: what the consumer must do next comes back as an
:class:`Outcome` (an ERROR to send, or a subscribe handler's answer to queue).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from django.contrib.auth.models import AnonymousUser

from stomp_cluster import destinations
from stomp_cluster.auth import check_permission
from stomp_cluster.conf import StompSettings
from stomp_cluster.exceptions import DeliveryFailed
from stomp_cluster.handlers import (
    ERRORS_DESTINATION,
    HandlerError,
    Route,
    StompRequest,
    ahandle_send,
    ahandle_subscribe,
    error_message,
    registry,
    subscribe_registry,
)
from stomp_cluster.node import Node
from stomp_cluster.protocol import Frame
from stomp_cluster.typing import Headers

__all__ = ["AppSession", "Outcome", "asend", "asubscribe"]

logger = logging.getLogger(__name__)


class AppSession(Protocol):
    """The session a frame came from, as far as running a handler needs it."""

    settings: StompSettings
    node: Node
    user: Any
    session_id: str

    def deliver(self, destination: str, body: bytes, headers: Headers) -> int: ...


@dataclass(frozen=True)
class Outcome:
    """What the consumer does after a handler ran.

    Attributes:
        refusal: the ``message`` of an ERROR frame that refuses the frame and ends the
            session; None when the frame was processed (even if a handler error went
            to ``/user/queue/errors``).
        answer: a subscribe handler's return value, encoded (body, headers), for the
            subscription that asked; None for nothing to send.
    """

    refusal: str | None = None
    answer: tuple[bytes, Headers] | None = None


async def asend(session: AppSession, destination: str, path: str, frame: Frame) -> Outcome:
    """Run the ``@message_mapping`` handler of *path* for a SEND to *destination*.

    The ``PERMISSION_HOOK`` was asked already, as for any SEND.
    """
    found = registry.resolve(path)
    if found is None:
        return Outcome(refusal=f"no handler for destination {destination}")
    route, kwargs = found
    return await _arun(session, route, kwargs, destination, frame, subscribe=False)


async def asubscribe(session: AppSession, destination: str, path: str, frame: Frame) -> Outcome:
    """Run the ``@subscribe_mapping`` handler of *path* for a SUBSCRIBE to *destination*.

    Spring's ``@SubscribeMapping``: the answer goes to the subscription that asked,
    once; it is never routed (no presence entry, nothing later), and the RECEIPT,
    queued after this event, follows the MESSAGE.
    """
    if not await check_permission(session.user, "subscribe", destination):
        return Outcome(refusal=f"permission denied: cannot subscribe to {destination}")
    found = subscribe_registry.resolve(path)
    if found is None:
        return Outcome(refusal=f"no subscribe handler for destination {destination}")
    route, kwargs = found
    return await _arun(session, route, kwargs, destination, frame, subscribe=True)


async def _arun(
    session: AppSession,
    route: Route,
    kwargs: dict[str, str],
    destination: str,
    frame: Frame,
    *,
    subscribe: bool,
) -> Outcome:
    """Run a handler and deal with its errors: see the policy in :mod:`stomp_cluster.handlers`."""
    request = StompRequest(
        destination=destination,
        frame=frame,
        user=session.user if session.user is not None else AnonymousUser(),
        session_id=session.session_id,
        _consumer=session,
    )
    try:
        if subscribe:
            return Outcome(answer=await ahandle_subscribe(route, request, kwargs))
        await ahandle_send(route, request, kwargs)
    except HandlerError as exc:
        _handler_error(session, exc.message, frame)
    except DeliveryFailed as exc:
        session.node.stats["send_failed"] += 1
        logger.warning(
            "reply of handler %r for session %s failed: %s",
            route.pattern,
            session.session_id,
            exc,
        )
        return Outcome(refusal=f"message not delivered: {exc}")
    except Exception:
        logger.exception(
            "handler %r failed for %r",
            getattr(route.handler, "__qualname__", route.handler),
            destination,
        )
        if not session.settings.HANDLER_EXCEPTIONS_KEEP_SESSION:
            return Outcome(refusal="internal error")
        _handler_error(session, "internal error", frame)
    return Outcome()


def _handler_error(session: AppSession, message: str, frame: Frame) -> None:
    # Spring's @MessageExceptionHandler + @SendToUser("/queue/errors"), to this
    # session only. The session stays open and the frame's receipt is answered
    # next, since the frame was processed.
    body, headers = error_message(message, frame)
    errors = destinations.user_destination(ERRORS_DESTINATION)
    if not session.deliver(errors, body, headers):
        logger.info(
            "session %s: handler error %r dropped, no subscription to %r",
            session.session_id,
            message,
            errors,
        )
