"""What a client's SEND and SUBSCRIBE may do: the checks the consumer applies before it
acts on one, and where a client's SEND goes.

These are the session's business rules, kept apart from its I/O: each function looks at
a frame and the session's identity and answers with a refusal (the ``message`` of the
ERROR frame that ends the session) or goes ahead. The consumer owns the session's
state, turns a refusal into that ERROR, and hands ``/app/`` destinations to
:mod:`stomp_cluster.app_dispatch` instead.

* A SEND's ``user-id`` header must name the sender's own login, as RabbitMQ requires,
  and the ``PERMISSION_HOOK`` is asked first about every SEND and SUBSCRIBE.
* A SEND to a broker destination goes to every subscriber; one to
  ``/user/<username>/queue/x`` to that user, who must exist. The server stamps the
  sender's login in ``x-sender`` (``STAMP_SENDER``), and a sender's own copy never
  travels.
* A SUBSCRIBE names a broker destination, its own user's ``/user/queue/x``, or a
  ``/presence/`` destination that :mod:`stomp_cluster.roster` accepts. Its
  ``x-resume-from`` and ``x-rewind`` headers are checked here and only where the
  destination keeps a history (:mod:`stomp_cluster.recovery` acts on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stomp_cluster import destinations, roster
from stomp_cluster.auth import check_permission
from stomp_cluster.backends import get_history
from stomp_cluster.conf import StompSettings
from stomp_cluster.history.base import is_valid_id
from stomp_cluster.protocol import Frame
from stomp_cluster.recovery import RESUME_HEADER, REWIND_HEADER, parse_rewind
from stomp_cluster.send import SENDER_HEADER, asend_to_destination, asend_to_user
from stomp_cluster.users import auser_exists

__all__ = ["SubscribeOptions", "acheck_send", "acheck_subscribe", "aroute_send"]


@dataclass(frozen=True)
class SubscribeOptions:
    """What an accepted SUBSCRIBE asked of the history.

    Attributes:
        history_key: where the destination's history is kept (the user key of a
            ``/user/`` destination, the topic's key of a broker one), or None when it
            keeps none: then nothing is recovered.
        resume: the message-id to resume after (the frame's ``x-resume-from``, else
            the CONNECT's), or None.
        rewind: how many past messages to replay (``x-rewind``, capped at
            ``MAX_REWIND``); 0 for none.
    """

    history_key: str | None = None
    resume: str | None = None
    rewind: int = 0


async def acheck_send(user: Any, username: str, destination: str, frame: Frame) -> str | None:
    """Whether a session may SEND *frame* to *destination* at all.

    Returns:
        A refusal message, or None when the SEND may go on (to
        :func:`aroute_send`, or to an ``/app/`` handler).
    """
    user_id = frame.get("user-id")
    if user_id is not None and user_id != username:
        # RabbitMQ's rule: a user-id header must name the sender's own login.
        return f"user-id header {user_id!r} is not the login of this session"
    if not await check_permission(user, "send", destination):
        return f"permission denied: cannot send to {destination}"
    return None


async def aroute_send(
    username: str, destination: str, frame: Frame, *, stamp_sender: bool
) -> str | None:
    """Send a client's SEND on to a broker destination or to a user.

    Args:
        username: the sender's login; "" when anonymous.
        destination: a broker destination or ``/user/<username>/...``; not ``/app/``.
        frame: the SEND frame; its headers travel on.
        stamp_sender: ``STAMP_SENDER``: put *username* in ``x-sender``.

    Returns:
        A refusal message (unknown destination or user), or None once sent.

    Raises:
        DeliveryFailed: the cluster could not take the message.
    """
    # The SEND's headers travel on; the first of a repeated one wins (STOMP 1.2), and
    # encode_body drops those a MESSAGE reserves (destination, message-id, ...) and
    # those recovery sets. The sender's identity comes first, set by us; a sender's
    # own x-sender never travels.
    headers = frame.header_map()
    headers.pop(SENDER_HEADER, None)
    if stamp_sender and username:
        headers = {SENDER_HEADER: username, **headers}
    if destinations.is_user(destination):
        # /user/<username>/queue/x: to another user's (or our own) user destination.
        recipient = destinations.recipient(destination)
        if recipient is None:
            return f"unknown destination {destination}"
        name, tail = recipient
        if not await auser_exists(name):
            # No history key for a made-up name: the client learns nothing was sent.
            return f"unknown user {name}: message not delivered"
        await asend_to_user(name, tail, frame.body, headers)
        return None
    if not destinations.is_broker(destination):
        return f"unknown destination {destination}"
    await asend_to_destination(destination, frame.body, headers)
    return None


async def acheck_subscribe(
    user: Any,
    destination: str,
    frame: Frame,
    *,
    user_key: str | None,
    resume_from: str | None,
    settings: StompSettings,
) -> SubscribeOptions | str:
    """Whether a session may SUBSCRIBE to *destination* (not ``/app/``), and how.

    Args:
        user: the session's Django user, for the ``PERMISSION_HOOK``.
        destination: the SUBSCRIBE's destination.
        frame: the SUBSCRIBE frame, for ``x-resume-from`` and ``x-rewind``.
        user_key: what the session's ``/user/`` destinations route by (None when
            anonymous), which also keys their history.
        resume_from: the CONNECT's ``x-resume-from``, the default for every
            subscription of the session.
        settings: for ``USER_PREFIX`` and ``MAX_REWIND``.

    Returns:
        A refusal message, or what the subscription asked of the history.
    """
    match destinations.kind(destination):
        case destinations.Kind.USER | destinations.Kind.BROKER:
            pass
        case destinations.Kind.PRESENCE:
            refused = roster.refusal(destination)
            if refused is not None:
                return f"cannot subscribe to {destination}: {refused}"
        case _ if destinations.is_user(destination):
            # Only /user/queue/x style: a session subscribes to its own user's queue
            # and cannot name another user (Spring resolves it the same way).
            prefix = settings.USER_PREFIX
            return f"cannot subscribe to {destination}: use {prefix}queue/<name>"
        case _:
            return f"unknown destination {destination}"
    if not await check_permission(user, "subscribe", destination):
        return f"permission denied: cannot subscribe to {destination}"
    history_key = _history_key(destination, user_key)
    resume = frame.get(RESUME_HEADER) or resume_from
    if history_key is not None and resume is not None and not is_valid_id(resume):
        return f"{RESUME_HEADER} must be a message-id such as 1700000000000-0"
    rewind = frame.get(REWIND_HEADER)
    count = 0 if rewind is None else parse_rewind(rewind)
    if count is None:
        return f"{REWIND_HEADER} must be a whole number of messages, such as 10"
    if rewind is not None and history_key is None:
        return f"{REWIND_HEADER}: {destination} keeps no history"
    return SubscribeOptions(history_key, resume, min(count, settings.MAX_REWIND))


def _history_key(destination: str, user_key: str | None) -> str | None:
    if get_history() is None:
        return None
    if destinations.is_user(destination):
        return user_key
    return destinations.topic_history_key(destination)
