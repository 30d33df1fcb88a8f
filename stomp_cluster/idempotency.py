"""Idempotency keys for the send helpers: a retried send is not sent twice.

Theory of operation
-------------------

A caller that retries a send after a failure or a timeout cannot know whether the first
attempt went out: a ``send_to_user`` that timed out on the caller's side may have stored
and delivered its message. Sending again would make a duplicate under a new message id,
which no client can recognise. So the send helpers take an ``idempotency_key`` (as
Centrifugo's publish API does): the caller passes the same key on every attempt, and
within ``IDEMPOTENCY_TTL`` seconds (five minutes by default) of the first, a call with
that key sends nothing and returns the first call's :class:`~stomp_cluster.send.Delivery`,
with the same ``message_id``.

A key is scoped by what is sent to whom: the helper, the recipient (user key, session id
or nothing) and the destination. The same key used for another recipient is another key.

:func:`once` does the bookkeeping around one send, in the presence registry's Redis
(``SET NX PX``, one key per send, ``<prefix>:idem:<sha256>``), or in this process with a
registry that is not in Redis (the memory backend: one process, as its registry):

1. it *claims* the key, marking it in progress for the whole window;
2. the send runs;
3. its Delivery replaces the mark, for the rest of the window;
4. if the send raises :class:`~stomp_cluster.exceptions.DeliveryFailed` (not sent), the
   mark is removed, so that a retry sends;
5. a second call that finds the key in progress waits for the first up to
   :data:`WAIT_FOR_FIRST` seconds, and returns its Delivery. If the first is still in
   progress, or was interrupted (its task cancelled: then nobody knows whether it was
   sent), the second raises ``DeliveryFailed`` rather than risk a duplicate; the key is
   free again once the window has passed.

If the store cannot be reached, the send is not made (``DeliveryFailed``): sending
without the key could duplicate a message, which is what the caller asked us to avoid.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from stomp_cluster.backends import get_presence
from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import BackendUnavailable, DeliveryFailed
from stomp_cluster.presence.base import PresenceBackend
from stomp_cluster.redis_connection import Call, RedisConnection

if TYPE_CHECKING:
    import stomp_cluster.send

__all__ = ["MAX_KEY_BYTES", "WAIT_FOR_FIRST", "check_key", "once"]

#: The longest idempotency key accepted, in UTF-8 bytes.
MAX_KEY_BYTES = 256

#: Seconds a call waits for a first call with the same key that is still in progress.
WAIT_FOR_FIRST = 5.0

#: What a key holds while its first send is in progress.
_IN_PROGRESS = "-"

# The keys of this process, for a registry that is not in Redis, kept with that registry
# (a new one, as tests make, starts empty): key -> (expiry on the monotonic clock, value).
_memory: weakref.WeakKeyDictionary[PresenceBackend, dict[str, tuple[float, str]]] = (
    weakref.WeakKeyDictionary()
)


def check_key(key: str) -> None:
    """Refuse an idempotency key that is empty, not a string, or too long.

    Raises:
        ValueError: *key* is empty or longer than :data:`MAX_KEY_BYTES` bytes in UTF-8.
        TypeError: *key* is not a string.
    """
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, not {type(key).__name__}")
    size = len(key.encode("utf-8", "surrogatepass"))
    if not key or size > MAX_KEY_BYTES:
        raise ValueError(
            f"idempotency_key of {size} bytes: it must have 1 to {MAX_KEY_BYTES} bytes"
        )


async def once(
    key: str,
    scope: tuple[str, ...],
    send: Callable[[], Awaitable[stomp_cluster.send.Delivery]],
    rebuild: Callable[..., stomp_cluster.send.Delivery],
) -> stomp_cluster.send.Delivery:
    """Run *send* unless a send with *key* in *scope* ran within ``IDEMPOTENCY_TTL``.

    Args:
        key: the caller's idempotency key (see :func:`check_key`).
        scope: what the send is (helper, recipient, destination): the key counts within it.
        send: makes the send and returns its Delivery.
        rebuild: makes a Delivery from the keyword arguments stored for a first send.

    Returns:
        The Delivery of this send, or of the first send with this key.

    Raises:
        DeliveryFailed: the send failed (then the key is free again), a first send with
            this key is still in progress or was interrupted, or the store of the keys
            cannot be reached (nothing was sent).
        ValueError: *key* is empty or too long.
    """
    check_key(key)
    store = _store()
    name = _name(store, key, scope)
    ttl = get_settings().IDEMPOTENCY_TTL
    try:
        first = await _claim_or_first(store, name, ttl)
        if first is not None:
            return rebuild(**first)
    except BackendUnavailable as exc:
        raise DeliveryFailed(
            "idempotency keys unavailable: the message was not sent, to avoid a duplicate"
        ) from exc
    try:
        delivery = await send()
    except DeliveryFailed:
        # Not sent: a retry with this key must send.
        await _quietly(store.release(name))
        raise
    # The send happened: if the result cannot be kept, a retry finds the key in progress
    # and fails rather than sending a duplicate.
    await _quietly(store.keep(name, json.dumps(asdict(delivery)), ttl))
    return delivery


async def _claim_or_first(store: _Store, name: str, ttl: float) -> dict[str, Any] | None:
    """Claim *name* (None), or return the Delivery stored by the first send with it.

    Waits while the first send is in progress, and claims the key if that send failed
    meanwhile (it released the key).
    """
    deadline = time.monotonic() + WAIT_FOR_FIRST
    delay = 0.01
    while True:
        if await store.claim(name, ttl):
            return None
        value = await store.get(name)
        if value is not None and value != _IN_PROGRESS:
            stored: dict[str, Any] = json.loads(value)
            return stored
        if time.monotonic() >= deadline:
            raise DeliveryFailed(
                "a send with this idempotency_key is in progress or was interrupted: "
                "its outcome is unknown, so this one was not sent"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def _quietly(call: Awaitable[None]) -> None:
    try:
        await call
    except BackendUnavailable:
        pass


def _name(store: _Store, key: str, scope: tuple[str, ...]) -> str:
    # Hashed: the scope holds user keys and destinations of any length.
    digest = hashlib.sha256("\x00".join((*scope, key)).encode("utf-8", "surrogatepass"))
    return store.prefix + digest.hexdigest()


class _Store:
    """Where idempotency keys live: the presence registry's Redis, or this process."""

    prefix = "idem:"

    def __init__(self, entries: dict[str, tuple[float, str]]) -> None:
        self.entries = entries

    async def claim(self, name: str, ttl: float) -> bool:
        now = time.monotonic()
        entries = self.entries
        for old in [k for k, (expires, _) in entries.items() if expires <= now]:
            del entries[old]
        if name in entries:
            return False
        entries[name] = (now + ttl, _IN_PROGRESS)
        return True

    async def keep(self, name: str, value: str, ttl: float) -> None:
        self.entries[name] = (time.monotonic() + ttl, value)

    async def release(self, name: str) -> None:
        self.entries.pop(name, None)

    async def get(self, name: str) -> str | None:
        entry = self.entries.get(name)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]


class _RedisStore(_Store):
    def __init__(self, redis: RedisConnection, prefix: str) -> None:
        super().__init__({})
        self.redis = redis
        self.prefix = f"{prefix}:idem:"

    async def _run(self, *args: str | int) -> Any:
        (reply,) = await self.redis.run([Call(args)])
        return reply

    async def claim(self, name: str, ttl: float) -> bool:
        return bool(await self._run("SET", name, _IN_PROGRESS, "NX", "PX", _ms(ttl)))

    async def keep(self, name: str, value: str, ttl: float) -> None:
        await self._run("SET", name, value, "PX", _ms(ttl))

    async def release(self, name: str) -> None:
        await self._run("DEL", name)

    async def get(self, name: str) -> str | None:
        value = await self._run("GET", name)
        return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _store() -> _Store:
    presence = get_presence()
    redis = getattr(presence, "redis", None)
    if isinstance(redis, RedisConnection):
        return _RedisStore(redis, getattr(presence, "prefix", "stomp_cluster"))
    entries = _memory.get(presence)
    if entries is None:
        entries = _memory[presence] = {}
    return _Store(entries)
