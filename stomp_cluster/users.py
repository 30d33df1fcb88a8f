"""Users as the send helpers and queries accept them, and the key they are routed by.

A user may be given as a user object, a primary key or a username; the cluster keys
users by username, as Spring keys them by principal name: a view usually has the name at
hand, and no database query is needed to route.

A client's SEND to ``/user/<name>/...`` is routed only when a user named *name* exists
(:func:`auser_exists`), so that a client cannot create a history per made-up name. The
answer, yes or no, is kept ``USER_CACHE_TTL`` seconds per name on each node (at most
10,000 names), so a chat's SENDs to the same few users cost no query; a user created a
moment ago may be unknown to a node for that long.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from stomp_cluster.caches import TTLCache
from stomp_cluster.conf import get_settings
from stomp_cluster.workers import run_in_pool

__all__ = ["UserRef", "auser_exists", "auser_key"]

_known: TTLCache[str, bool] = TTLCache()

#: A user as the send helpers and queries accept it: a user object, a pk or a username.
UserRef = AbstractBaseUser | int | str


async def auser_key(user: UserRef) -> str:
    """The key *user* is routed by: its username.

    A pk costs one database query (in a worker thread); a user object or a username
    costs none.

    Raises:
        LookupError: *user* is a pk that matches no user.
        TypeError: *user* is none of a user object, a pk or a username.
    """
    if isinstance(user, AbstractBaseUser):
        return user.get_username()
    if isinstance(user, str):
        return user
    if isinstance(user, int) and not isinstance(user, bool):
        model = get_user_model()

        def lookup() -> str | None:
            found = model._default_manager.filter(pk=user).first()
            return found.get_username() if found is not None else None

        name: str | None = await database_sync_to_async(lookup)()
        if name is None:
            raise LookupError(f"no user with pk {user!r}")
        return name
    raise TypeError(f"user must be a user object, a pk or a username, not {type(user).__name__}")


def _exists(username: str) -> bool:
    model = get_user_model()
    return bool(model._default_manager.filter(**{model.USERNAME_FIELD: username}).exists())


async def auser_exists(username: str) -> bool:
    """Whether a user named *username* exists; the answer is cached briefly (see above)."""
    found = _known.get(username)
    if found is None:
        found = await run_in_pool("handlers", _exists, username)
        _known.set(username, found, get_settings().USER_CACHE_TTL)
    return found
