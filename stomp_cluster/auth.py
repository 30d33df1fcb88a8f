"""Who a STOMP session is, and what it may do.

A session's user comes, in this order, from:

1. a connection token in the CONNECT ``passcode`` (with ``login`` = username), see
   :mod:`stomp_cluster.tokens`: microseconds, the way for scripts and many clients;
2. ``login``/``passcode`` checked by :func:`django.contrib.auth.authenticate`, only when
   ``PASSWORD_LOGIN`` is on, since each check costs about half a second of CPU;
3. the WebSocket handshake's Django session cookie, through Channels'
   ``AuthMiddlewareStack`` (``scope["user"]``).

A CONNECT with a ``passcode`` that matches neither of the first two is refused rather
than silently falling back to the cookie, so that a client learns its credentials are
wrong. A ``login`` without a ``passcode`` is ignored (some clients always send one).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import authenticate
from django.contrib.auth.models import AnonymousUser
from django.utils.module_loading import import_string

from stomp_cluster.conf import get_settings
from stomp_cluster.tokens import verify_connection_token

__all__ = ["authenticate_connect", "check_permission"]

logger = logging.getLogger(__name__)


async def authenticate_connect(
    scope_user: Any, login: str | None, passcode: str | None
) -> tuple[Any, str | None]:
    """Decide the user of a CONNECT.

    Returns:
        ``(user, None)`` on success, or ``(None, message)`` where *message* is the
        reason for the ERROR frame.
    """
    settings = get_settings()
    user: Any = None
    if passcode:
        user = await database_sync_to_async(verify_connection_token)(login, passcode)
        if user is None and settings.PASSWORD_LOGIN and login:
            user = await database_sync_to_async(authenticate)(
                None, username=login, password=passcode
            )
        if user is None:
            logger.info("x refused CONNECT for login %r: bad credentials", login)
            return None, "authentication failed: bad login or passcode"
    else:
        user = scope_user if scope_user is not None else AnonymousUser()
    if settings.REQUIRE_AUTHENTICATION and not getattr(user, "is_authenticated", False):
        return None, "authentication required"
    return user, None


async def check_permission(user: Any, action: str, destination: str) -> bool:
    """Ask the ``PERMISSION_HOOK`` whether *user* may *action* (send/subscribe) *destination*.

    Without a hook everything is allowed, except that anonymous sessions may not SEND to
    ``/user/<name>/...`` destinations of users. A sync hook runs in a worker thread so it
    may query the database; an async hook is awaited.
    """
    settings = get_settings()
    if settings.PERMISSION_HOOK is None:
        if action == "send" and destination.startswith(settings.USER_PREFIX):
            return bool(getattr(user, "is_authenticated", False))
        return True
    hook = import_string(settings.PERMISSION_HOOK)
    if user is None:
        user = AnonymousUser()
    if inspect.iscoroutinefunction(hook):
        result = await hook(user, action, destination)
    else:
        result = await database_sync_to_async(hook)(user, action, destination)
    return bool(result)
