"""Who a STOMP session is, and what it may do.

A session's user comes, in this order, from:

1. a connection token in the CONNECT ``passcode`` (with ``login`` = username), see
   :mod:`stomp_cluster.tokens`: microseconds, the way for scripts and many clients;
2. ``login``/``passcode`` checked by :func:`django.contrib.auth.authenticate`, only when
   ``PASSWORD_LOGIN`` is on, since each check costs about half a second of CPU;
3. the WebSocket handshake's Django session cookie: ``scope["user"]`` when Channels'
   ``AuthMiddlewareStack`` wraps the consumer, else the session cookie read here, only
   when the CONNECT has no ``passcode`` and the handshake has a session cookie.

Reading the cookie ourselves, lazily, saves a thread hop per connection: Channels'
``AuthMiddleware`` loads the user of every WebSocket in a worker thread before the
consumer runs, even when the client then logs in with a token or has no cookie at all
(``docs/performance.md``). Both ways give the same user.

A CONNECT with a ``passcode`` that matches neither of the first two is refused rather
than silently falling back to the cookie, so that a client learns its credentials are
wrong. A ``login`` without a ``passcode`` is ignored (some clients always send one).

Each refused CONNECT counts in the node's counters, by reason: ``auth_failed_credentials``
(a ``passcode`` that matched nothing) or ``auth_failed_required`` (an anonymous session
under ``REQUIRE_AUTHENTICATION``); the ``metrics/`` endpoint reports them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    authenticate,
    get_user_model,
    load_backend,
)
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from stomp_cluster import destinations
from stomp_cluster.conf import get_settings
from stomp_cluster.node import current_node
from stomp_cluster.tokens import verify_connection_token

__all__ = ["authenticate_connect", "check_permission", "scope_user"]

logger = logging.getLogger(__name__)


async def scope_user(scope: Mapping[str, Any]) -> Any:
    """The Django user of the WebSocket handshake: its session cookie's, or anonymous."""
    if "user" in scope:  # resolved by Channels' AuthMiddlewareStack
        return scope["user"] or AnonymousUser()
    key = _session_cookie(scope)
    if not key:
        return AnonymousUser()
    return await database_sync_to_async(_session_user)(key)


def _session_cookie(scope: Mapping[str, Any]) -> str | None:
    settings = django_settings
    if "cookies" in scope:  # parsed by Channels' CookieMiddleware
        found: str | None = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        return found
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for name, raw in headers:
        if name == b"cookie":
            return parse_cookie(raw.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
    return None


def _session_user(key: str) -> Any:
    """The user of the session *key*, checked as Django's ``get_user()`` checks it.

    One difference: a session signed under a key of ``SECRET_KEY_FALLBACKS`` is accepted
    without ``cycle_key()``, which would give the session a new key that no response can
    ever bring to the browser (its cookie would point at a deleted row). The next HTTP
    request cycles it. A session whose hash matches no key is flushed, as Django and
    Channels do: the password changed, so every session of that user ends.
    """
    settings = django_settings
    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    if hasattr(user, "get_session_auth_hash"):
        stored = session.get(HASH_SESSION_KEY) or ""
        expected = [user.get_session_auth_hash()]
        with_secret = getattr(user, "_get_session_auth_hash", None)  # what Django uses
        if with_secret is not None:
            expected += [with_secret(secret=secret) for secret in settings.SECRET_KEY_FALLBACKS]
        if not any(constant_time_compare(stored, hashed) for hashed in expected):
            session.flush()
            return AnonymousUser()
    return user


async def authenticate_connect(
    scope: Mapping[str, Any], login: str | None, passcode: str | None
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
            _count_failure("auth_failed_credentials")
            return None, "authentication failed: bad login or passcode"
    else:
        user = await scope_user(scope)
    if settings.REQUIRE_AUTHENTICATION and not getattr(user, "is_authenticated", False):
        _count_failure("auth_failed_required")
        return None, "authentication required"
    return user, None


def _count_failure(counter: str) -> None:
    node = current_node()
    if node is not None:  # None outside a node: nothing to report it
        node.stats[counter] += 1


async def check_permission(user: Any, action: str, destination: str) -> bool:
    """Ask the ``PERMISSION_HOOK`` whether *user* may *action* (send/subscribe) *destination*.

    Without a hook everything is allowed, except that anonymous sessions may not SEND to
    ``/user/<name>/...`` destinations of users. A sync hook runs in a worker thread so it
    may query the database; an async hook is awaited.
    """
    settings = get_settings()
    if settings.PERMISSION_HOOK is None:
        if action == "send" and destinations.is_user(destination):
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
