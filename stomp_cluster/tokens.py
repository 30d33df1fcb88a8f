"""Signed, expiring connection tokens: the cheap way to authenticate a STOMP CONNECT.

A Django password check costs about half a second of CPU with the default hasher
(PBKDF2, 1,000,000 iterations, measured on a 2-core machine), so checking a password on
every CONNECT cannot scale to many connections. A token is signed with ``SECRET_KEY``
through :mod:`django.core.signing` and verified in microseconds, with no hash check.

A client sends the token as the CONNECT ``passcode`` header and its username as
``login``. Mint tokens in a view the user is logged into, or with
``manage.py stomp_token USERNAME`` for scripts.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.utils.crypto import constant_time_compare

from stomp_cluster.conf import get_settings

__all__ = [
    "connection_token",
    "token_claims",
    "token_user",
    "token_user_matches",
    "verify_connection_token",
]

_SALT = "stomp_cluster.connection-token"


def connection_token(user: AbstractBaseUser, max_age: int | None = None) -> str:
    """Return a token that lets *user* CONNECT for the next *max_age* seconds.

    Args:
        user: the user the token authenticates.
        max_age: lifetime in seconds; ``STOMP_CLUSTER["TOKEN_MAX_AGE"]`` when None.

    Returns:
        An URL-safe string to send as the CONNECT ``passcode`` with ``login`` set to
        the user's username. It also stops working when the user's password changes.
    """
    lifetime = get_settings().TOKEN_MAX_AGE if max_age is None else max_age
    payload = {
        "u": str(user.pk),
        "n": user.get_username(),
        "e": int(time.time()) + int(lifetime),
        # Ties the token to the password hash, so changing the password revokes it.
        "p": signing.get_cookie_signer(salt=_SALT).signature(user.password or "")[:12],
    }
    return signing.dumps(payload, salt=_SALT, compress=True)


def token_claims(login: str | None, token: str) -> dict[str, Any] | None:
    """The claims of a well-signed, unexpired *token* for *login*, or None.

    Checks the signature and the expiry only, with no database query: microseconds, so it
    may run on the event loop. Whether the user still exists, is active and has the same
    password is :func:`token_user_matches`'s question.
    """
    try:
        payload: Any = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict) or int(payload.get("e", 0)) < time.time():
        return None
    if login is not None and login != payload.get("n"):
        return None
    if not isinstance(payload.get("u"), str) or not isinstance(payload.get("p"), str):
        return None
    return payload


def token_user_matches(user: AbstractBaseUser, claims: dict[str, Any]) -> bool:
    """Whether *user* is the active user *claims* name, with the password it was minted for."""
    if not getattr(user, "is_active", True) or user.get_username() != claims.get("n"):
        return False
    expected = signing.get_cookie_signer(salt=_SALT).signature(user.password or "")[:12]
    return constant_time_compare(claims["p"], expected)


def token_user(claims: dict[str, Any]) -> AbstractBaseUser | None:
    """The user *claims* name, read from the database, or None. Runs where the ORM may."""
    model = get_user_model()
    try:
        user: AbstractBaseUser = model._default_manager.get(pk=claims["u"])
    except (model.DoesNotExist, ValueError, TypeError):
        return None
    return user


def verify_connection_token(login: str | None, token: str) -> AbstractBaseUser | None:
    """Return the active user whose valid token this is, or None.

    Must run where database access is allowed (wrap in ``database_sync_to_async`` from
    async code). Never raises for a bad token: forged, expired, for another login, or
    for a user who changed password or was deactivated all give None. The consumer uses
    the parts, :func:`token_claims` on the loop and the user from a short cache.
    """
    claims = token_claims(login, token)
    if claims is None:
        return None
    user = token_user(claims)
    if user is None or not token_user_matches(user, claims):
        return None
    return user
