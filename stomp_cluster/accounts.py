"""Sessions that end when the user does: logout, deactivation, a password change.

A STOMP session outlives the credentials it was opened with: a token or a password is
checked once, at CONNECT. So that a user who logs out, is deactivated, changes password
(or has it changed by an administrator after a leak) or is deleted does not stay
connected, this module closes every open STOMP session of that user, on whichever node
holds it, with an ERROR frame that says why:

=============================  ======================================================
what happened                  ERROR ``message``
=============================  ======================================================
``user_logged_out``            ``logged out``
``is_active`` became False     ``account deactivated``
the password hash changed      ``password changed``
the user was deleted           ``account deleted``
=============================  ======================================================

A logout ends all of the user's STOMP sessions, not only those of the browser that
logged out: a session does not record which Django session or token opened it.

The hook is public: :func:`adisconnect_user` (and its sync twin :func:`disconnect_user`)
closes a user's sessions with any message, from your own code, an admin action of
yours, or the command line (``manage.py stomp_cluster disconnect --user NAME``). It
looks the user's sessions up in the presence registry (``sessions_of``) and closes
each with ``disconnect_session``: within a second on a healthy cluster.

The receivers (connected by the app config at start-up) watch the user model's saves:
before a save of an existing user they read its stored password hash and ``is_active``
(one indexed query; skipped when ``update_fields`` names neither, as for the
``last_login`` update of every login), and after the transaction commits they close the
sessions. A save that is rolled back closes nothing. Changes made behind the ORM's
back (``QuerySet.update()``, raw SQL) are not seen: call :func:`disconnect_user` after
them. Sessions are closed in the saving thread, which waits for the registry (bounded by
its timeouts); a failure is logged and never fails the save or the logout. Each change
also empties this node's login caches (``stomp_cluster.caches``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from stomp_cluster.caches import clear_caches
from stomp_cluster.queries import asessions_of
from stomp_cluster.send import adisconnect_session
from stomp_cluster.users import UserRef

__all__ = ["adisconnect_user", "connect_receivers", "disconnect_user"]

logger = logging.getLogger(__name__)

#: The ERROR message when :func:`adisconnect_user` is given none.
DEFAULT_MESSAGE = "your session was ended"

# Set on a user instance by the pre_save receiver: why its sessions end once saved.
_REASON_ATTR = "_stomp_cluster_session_end"


async def adisconnect_user(user: UserRef, message: str = DEFAULT_MESSAGE) -> int:
    """Close every open STOMP session of *user*, on every node, with an ERROR *message*.

    Args:
        user: a user object, a pk or a username.
        message: the ERROR frame's ``message`` header.

    Returns:
        How many sessions were closed.

    Raises:
        PresenceUnavailable: the registry does not answer.
        DeliveryFailed: a session's node could not be reached (the others are closed).
    """
    records = await asessions_of(user)
    results = await asyncio.gather(
        *(adisconnect_session(r.session_id, message) for r in records), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    closed = sum(1 for result in results if result)
    if records:
        logger.info("- closed %d STOMP session(s) of a user: %s", closed, message)
    return closed


def disconnect_user(user: UserRef, message: str = DEFAULT_MESSAGE) -> int:
    """Sync twin of :func:`adisconnect_user`."""
    result: int = async_to_sync(adisconnect_user)(user, message)
    return result


def _end_sessions(username: str, message: str) -> None:
    """Close *username*'s sessions, logging rather than raising (a save must not fail)."""
    try:
        disconnect_user(username, message)
    except Exception:  # any failure: the save or the logout goes on
        logger.exception("could not close the STOMP sessions of a user (%s)", message)


def _before_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance._state.adding or instance.pk is None:
        return
    fields = kwargs.get("update_fields")
    if fields is not None and not {"password", "is_active"} & set(fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if stored is None:
        return
    if stored["is_active"] and not getattr(instance, "is_active", True):
        setattr(instance, _REASON_ATTR, "account deactivated")
    elif stored["password"] != instance.password:
        setattr(instance, _REASON_ATTR, "password changed")


def _after_save(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    reason: str | None = instance.__dict__.pop(_REASON_ATTR, None)
    if created or reason is not None:
        clear_caches()
    if reason is not None:
        username = instance.get_username()
        transaction.on_commit(lambda: _end_sessions(username, reason))


def _after_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    clear_caches()
    username = instance.get_username()
    transaction.on_commit(lambda: _end_sessions(username, "account deleted"))


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and getattr(user, "is_authenticated", False):
        _end_sessions(user.get_username(), "logged out")


def connect_receivers() -> None:
    """Connect the receivers to the user model's signals (the app config does, once)."""
    model = get_user_model()
    uid = "stomp_cluster.accounts"
    pre_save.connect(_before_save, sender=model, dispatch_uid=uid)
    post_save.connect(_after_save, sender=model, dispatch_uid=uid)
    post_delete.connect(_after_delete, sender=model, dispatch_uid=uid)
    user_logged_out.connect(_logged_out, dispatch_uid=uid)
