"""Small bounded thread pools for the blocking work a session waits on.

Django's ORM and password hashers are synchronous. ``database_sync_to_async`` runs them on
asgiref's single thread-sensitive worker, which every sync call of the process shares: one
password check (PBKDF2, about half a second of CPU) then delays every token check, cookie
load, permission hook and handler behind it, and a handful of wrong passwords stalls
every login of the node. Here each kind of work has a pool of its own, sized by a setting:

``passwords`` (``PASSWORD_WORKERS``, 2)
    password checks. PBKDF2 releases the GIL, so two checks run at once on two cores; more
    wait their turn here and delay nothing else.
``logins`` (``LOGIN_WORKERS``, 4)
    the quick database reads of a CONNECT: a token's user, a session cookie's user, the
    re-read behind a cached password.
``handlers`` (``HANDLER_WORKERS``, 8)
    sync ``PERMISSION_HOOK`` calls, sync ``/app/`` handlers and the "does this user
    exist" lookup of a SEND to ``/user/<name>/``, so that one slow hook or handler delays
    at most its own session, not the other users', and never a login.

Each call is a unit of its own, as Channels' ``database_sync_to_async`` makes it: stale
database connections are closed before and after, and the call may not rely on running on
the same thread as an earlier one (sync handlers no longer share one thread). Inside a call,
``async_to_sync`` still reaches the event loop, so a sync handler may ``reply``.

The pools are per process (per node) and are created at first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from channels.db import DatabaseSyncToAsync

from stomp_cluster.conf import get_settings

__all__ = ["Pool", "run_in_pool"]

R = TypeVar("R")

#: The pools: see the module's docstring.
Pool = Literal["passwords", "logins", "handlers"]

_SIZES: dict[str, str] = {
    "passwords": "PASSWORD_WORKERS",
    "logins": "LOGIN_WORKERS",
    "handlers": "HANDLER_WORKERS",
}
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_lock = threading.Lock()


def _executor(pool: Pool) -> ThreadPoolExecutor:
    size: int = getattr(get_settings(), _SIZES[pool])
    with _lock:
        found = _pools.get(pool)
        if found is not None and found[0] == size:
            return found[1]
        # A changed setting (tests) gets a new pool; the old one finishes its calls.
        executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"stomp-{pool}")
        _pools[pool] = (size, executor)
        if found is not None:
            found[1].shutdown(wait=False)
        return executor


async def run_in_pool(pool: Pool, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run the sync *func* on a thread of *pool* and return what it returns.

    Database connections are cleaned up around the call, as ``database_sync_to_async``
    does; exceptions propagate to the caller.
    """
    runner = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_executor(pool))
    result: R = await runner(*args, **kwargs)
    return result
