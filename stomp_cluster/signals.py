"""Signals fired by the STOMP consumer and the node, from async code.

Receivers may be sync or async functions; Django runs sync receivers in a thread. Each
signal is sent robustly: a receiver that raises is logged at ERROR, naming the
receiver, and neither the connection nor the other receivers notice.

Robustly, but not always through ``Signal.asend_robust()``: when the only receiver for
the sender is one async function (the package's own presence receiver, until a project
connects one), ``fire()`` awaits it directly, which saves the tasks ``asend_robust()``
creates. Telling the cases apart reads Django's private ``Signal._live_receivers()``;
should it change shape, every signal goes through ``asend_robust()`` again.

Every signal's ``sender`` is :class:`stomp_cluster.consumer.StompConsumer`, and every
one carries ``session_id`` (the CONNECTED ``session`` header, unique in the cluster),
``user`` (the Django user; ``None`` when fired by another node's sweeper),
``username`` (``""`` for anonymous sessions) and ``node_id``.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from django.dispatch import Signal

__all__ = [
    "DisconnectReason",
    "stomp_connected",
    "stomp_disconnected",
    "stomp_sessions_reaped",
    "stomp_subscribed",
    "stomp_unsubscribed",
]

logger = logging.getLogger(__name__)

#: The ``sender`` of every signal: the consumer class. The app config sets it at startup
#: (``StompClusterConfig.ready()`` in ``apps.py``): signals sit below the consumer
#: in the package's layers, so this module does not import it.
sender: type[Any] | None = None

#: After CONNECTED was queued. Extra kwargs: ``consumer``.
stomp_connected = Signal()

#: After a SUBSCRIBE was accepted and routed, before its RECEIPT. Extra kwargs:
#: ``destination``, ``subscription_id``, ``ack`` and ``consumer``.
stomp_subscribed = Signal()

#: After an UNSUBSCRIBE, and for each subscription still open when the session ends
#: (before ``stomp_disconnected``). Extra kwargs as ``stomp_subscribed``, plus
#: ``closing`` (True when the session is ending).
stomp_unsubscribed = Signal()

#: Exactly once per session that was CONNECTED, however it ended. Extra kwargs:
#: ``reason`` (``"client"``, ``"error"``, ``"heartbeat_timeout"``, ``"kicked"``,
#: ``"slow_consumer"``, ``"node_lost"``, ``"shutdown"``) and ``consumer`` (``None`` for
#: ``"node_lost"``).
stomp_disconnected = Signal()

#: Once per batch of sessions removed from the registry because their node was lost, on
#: the node whose sweeper reaped them (so once cluster-wide). Extra kwargs: ``node_id``
#: (the lost node) and ``sessions`` (a tuple of at most 1,000 session
#: records, with their subscriptions). For receivers that would rather take a lost node's
#: sessions in bulk than one ``stomp_disconnected`` at a time.
stomp_sessions_reaped = Signal()


class DisconnectReason(enum.StrEnum):
    """Why a session ended: the ``reason`` of ``stomp_disconnected`` (sent as its value)."""

    #: The client sent DISCONNECT or closed the socket.
    CLIENT = "client"
    #: The server refused a frame with an ERROR (protocol error, permission, handler).
    ERROR = "error"
    #: No heart-beat from the client within the negotiated interval and the grace.
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    #: Closed by the server on request (admin, CLI, ``disconnect_session``).
    KICKED = "kicked"
    #: More than ``MAX_OUTBOX`` frames were waiting for the client to read.
    SLOW_CONSUMER = "slow_consumer"
    #: Its node stopped heartbeating and was reaped by another node's sweep.
    NODE_LOST = "node_lost"
    #: Its node shut down (SIGTERM).
    SHUTDOWN = "shutdown"


async def fire(signal: Signal, **kwargs: Any) -> None:
    """Send *signal* to every receiver, logging each failure at ERROR.

    Private helper for the consumer and node: user code never needs it.
    """
    receiver = _only_async_receiver(signal, sender)
    if receiver is not None:
        # What asend_robust would do with a single async receiver, without the three
        # tasks its two gathers create: two signals per connection made them a tenth
        # of a node's CPU while clients connected (W4, docs/performance.md).
        try:
            await receiver(signal=signal, sender=sender, **kwargs)
        except Exception as exc:
            _log_failure(receiver, exc)
        return
    for receiver, result in await signal.asend_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            _log_failure(receiver, result)


def _only_async_receiver(signal: Signal, sender: Any) -> Any:
    """The receiver of *signal* when it is the only one and async, else None.

    Uses Django's ``Signal._live_receivers()`` (Django 5.0 and later), which returns the
    sync and the async receivers; any other shape means "use asend_robust".
    """
    try:
        sync_receivers, async_receivers = signal._live_receivers(sender)
    except Exception:
        return None
    if not sync_receivers and len(async_receivers) == 1:
        return async_receivers[0]
    return None


def _log_failure(receiver: Any, exc: BaseException) -> None:
    logger.error(
        "signal receiver %r raised", receiver, exc_info=(type(exc), exc, exc.__traceback__)
    )
