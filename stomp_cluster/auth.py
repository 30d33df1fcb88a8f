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

Logins cannot starve the node:

* every check runs on a bounded pool of its own (``stomp_cluster.workers``), never on
  asgiref's one thread-sensitive worker: password checks on ``passwords``, token users and
  cookie sessions on ``logins``, sync permission hooks on ``handlers``. A token CONNECT
  does not wait behind password checks, and a slow hook delays only its own session;
* a token's signature and expiry are checked on the loop (microseconds); its user is kept
  ``USER_CACHE_TTL`` seconds (5) by pk, and checked against the token's claims (active,
  same username, same password) on every use;
* a verified password is remembered ``AUTH_CACHE_TTL`` seconds (60), as RabbitMQ's auth
  cache does: the key is the login and an HMAC of the passcode under a per-process
  random key (the passcode itself is never kept), the value the user's pk and password
  hash. A hit re-reads the user (one indexed query on ``logins``) and is honoured only when
  the user is still active with the same password hash, so a password change or a
  deactivation takes effect at once, on every node. Thirty CONNECTs of one user cost one
  hash instead of thirty;
* failed CONNECTs are throttled per login and per client address
  (``stomp_cluster.throttle``), with the ERROR ``too many failed logins: retry in N s``.
  The throttle is asked only before a password check: a valid token, and a password this
  node verified a moment ago, still get in, so that whoever fails on purpose cannot lock a
  user with a token or a live session out.

A CONNECT with a ``passcode`` that matches neither of the first two is refused rather
than silently falling back to the cookie, so that a client learns its credentials are
wrong. A ``login`` without a ``passcode`` is ignored (some clients always send one).

Each refused CONNECT counts in the node's counters, by reason: ``auth_failed_credentials``
(a ``passcode`` that matched nothing) or ``auth_failed_required`` (an anonymous session
under ``REQUIRE_AUTHENTICATION``); the ``metrics/`` endpoint reports them.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import inspect
import logging
import os
from collections.abc import Mapping
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

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
from django.http.request import split_domain_port, validate_host
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from stomp_cluster import destinations
from stomp_cluster.caches import TTLCache
from stomp_cluster.conf import get_settings
from stomp_cluster.node import current_node
from stomp_cluster.throttle import login_throttle, retry_message
from stomp_cluster.tokens import token_claims, token_user, token_user_matches
from stomp_cluster.workers import run_in_pool

__all__ = ["authenticate_connect", "check_permission", "origin_allowed", "scope_user"]

logger = logging.getLogger(__name__)


async def scope_user(scope: Mapping[str, Any]) -> Any:
    """The Django user of the WebSocket handshake: its session cookie's, or anonymous."""
    if "user" in scope:  # resolved by Channels' AuthMiddlewareStack
        return scope["user"] or AnonymousUser()
    key = _session_cookie(scope)
    if not key:
        return AnonymousUser()
    return await run_in_pool("logins", _session_user, key)


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


#: Users of tokens, by pk: ``USER_CACHE_TTL`` seconds.
_token_users: TTLCache[str, Any] = TTLCache()
#: Verified passwords: (login, HMAC of the passcode) -> (pk, password hash, backend).
_passwords: TTLCache[tuple[str, bytes], tuple[Any, str, str | None]] = TTLCache()
#: The key of the passcode HMACs: random per process, so nothing kept can be reversed.
_HMAC_KEY = os.urandom(32)


def _client_address(scope: Mapping[str, Any]) -> str | None:
    """The client's address (host) from the ASGI scope, when the server gives it."""
    client = scope.get("client")
    if client:
        return str(client[0])
    return None


async def _token_login(login: str | None, passcode: str) -> Any:
    claims = token_claims(login, passcode)  # signature and expiry, on the loop
    if claims is None:
        return None
    pk = str(claims["u"])
    user = _token_users.get(pk)
    if user is not None and token_user_matches(user, claims):
        # A copy: each session (and its handlers) may change its user without the others.
        return copy.copy(user)
    user = await run_in_pool("logins", token_user, claims)
    if user is None:
        return None
    _token_users.set(pk, user, get_settings().USER_CACHE_TTL)
    return user if token_user_matches(user, claims) else None


def _passcode_key(login: str, passcode: str) -> tuple[str, bytes]:
    digest = hmac.new(_HMAC_KEY, passcode.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return login, digest.digest()


def _cached_password_user(pk: Any, password: str, backend: str | None) -> Any:
    user = get_user_model()._default_manager.filter(pk=pk).first()
    if user is None or not getattr(user, "is_active", True):
        return None
    if not constant_time_compare(user.password or "", password):
        return None
    if backend is not None:
        user.backend = backend
    return user


async def _password_login(login: str, passcode: str) -> Any:
    key = _passcode_key(login, passcode)
    cached = _passwords.get(key)
    if cached is not None:
        user = await run_in_pool("logins", _cached_password_user, *cached)
        if user is not None:
            return user
        _passwords.discard(key)
    user = await run_in_pool("passwords", authenticate, None, username=login, password=passcode)
    if user is not None and user.password:
        entry = (user.pk, user.password, getattr(user, "backend", None))
        _passwords.set(key, entry, get_settings().AUTH_CACHE_TTL)
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
        address = _client_address(scope)
        user = await _token_login(login, passcode)
        if user is None and settings.PASSWORD_LOGIN and login:
            if _passwords.get(_passcode_key(login, passcode)) is None:
                wait = login_throttle.retry_after(login, address)
                if wait is not None:
                    logger.info("x refused CONNECT for login %r: throttled", login)
                    return None, retry_message(wait)
            user = await _password_login(login, passcode)
        if user is None:
            login_throttle.failed(login, address)
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


def _history_by_wildcard(destination: str) -> bool:
    """Whether *destination* gets a history only through a pattern of ``HISTORY_TOPICS``."""
    return (
        destinations.topic_history_key(destination) is not None
        and destination not in get_settings().HISTORY_TOPICS
    )


async def check_permission(user: Any, action: str, destination: str) -> bool:
    """Ask the ``PERMISSION_HOOK`` whether *user* may *action* (send/subscribe) *destination*.

    Without a hook everything is allowed, except that anonymous sessions may not SEND to
    ``/user/<name>/...`` destinations of users, nor to a broker destination whose history
    a wildcard of ``HISTORY_TOPICS`` would create (``/topic/room.*`` lets anyone who may
    send create one history per made-up name; a destination listed exactly is allowed).
    A hook, when set, decides all of it itself. A sync hook runs on the ``handlers`` pool
    (``stomp_cluster.workers``), so it may query the database, and a slow one delays
    only the session that asked; an async hook is awaited.
    """
    settings = get_settings()
    if settings.PERMISSION_HOOK is None:
        if action == "send" and not getattr(user, "is_authenticated", False):
            if destinations.is_user(destination):
                return False
            return not _history_by_wildcard(destination)
        return True
    hook = import_string(settings.PERMISSION_HOOK)
    if user is None:
        user = AnonymousUser()
    if inspect.iscoroutinefunction(hook):
        result = await hook(user, action, destination)
    else:
        result = await run_in_pool("handlers", hook, user, action, destination)
    return bool(result)


def origin_allowed(origin: str) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` header may open a session.

    The host of *origin* is matched against ``ALLOWED_ORIGINS``, or else Django's
    ``ALLOWED_HOSTS`` (with ``DEBUG`` and no ``ALLOWED_HOSTS``: the local host names, as
    Django does), with the patterns of ``ALLOWED_HOSTS``; see :doc:`/topics/security`.
    An empty *origin* (no header) is allowed.
    """
    # Browsers always send Origin on a WebSocket handshake; other clients (stomp.py,
    # Node, Java) usually don't, and cross-site request forgery needs a browser, so
    # a missing Origin is allowed.
    if not origin:
        return True
    allowed = get_settings().ALLOWED_ORIGINS
    if allowed is None:
        allowed = tuple(django_settings.ALLOWED_HOSTS)
        if django_settings.DEBUG and not allowed:
            allowed = (".localhost", "127.0.0.1", "[::1]")
    host, _ = split_domain_port(urlsplit(origin).netloc)
    return bool(host) and validate_host(host, list(allowed))
