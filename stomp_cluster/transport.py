"""How node-level messages travel from a sender to the node that holds the recipients.

A send asks the presence registry which nodes to reach, then hands one message per node to
the *transport* (:mod:`stomp_cluster.send`); each node reads its own *inbox* and fans the
messages out to its local sockets (:meth:`stomp_cluster.node.Node.dispatch`). Two
transports ship:

:class:`ChannelLayerTransport` (the default)
    The Channels channel layer named by ``CHANNEL_LAYER``: each node has a channel of its
    own, and a send is ``layer.send()``. It works with any layer, the in-memory one
    included, so it suits a single node and tests.

:class:`RedisTransport`
    A Redis list per node, written through the same auto-pipelining plumbing as the
    Redis presence backend. Measured in ``docs/performance.md``, it is the fast one, for
    three reasons that a channel layer's API cannot give us:

    * *Sends are batched.* Concurrent sends of one process share a pipeline, so a burst
      costs the sender a fraction of a round trip per message; ``layer.send()`` takes a
      pooled connection and runs several commands for every message.
    * *Receives are batched.* A node pops up to ``batch`` messages per round trip
      (``LPOP key count``), where channels_redis's core layer takes one message per
      ``BZPOPMIN`` and a Lua call (about 500 messages/s per node here, FINDINGS.md).
    * *It stays bounded.* A push checks the inbox's length in the same script and fails
      with :class:`~channels.exceptions.ChannelFull` past ``capacity``, which the send
      helpers report as :class:`~stomp_cluster.exceptions.DeliveryFailed`. The pub/sub
      layer, the other fast option, queues without bound in the receiving process.

    An inbox outlives a reconnect of its node (a list, unlike a pub/sub channel), expires
    ``expiry`` seconds after the last push when its node is gone, and is emptied when a
    node starts, since what it holds was for sessions of an earlier process.

Both raise :class:`~channels.exceptions.ChannelFull` for a full inbox; other failures
propagate and the send helpers turn them into ``DeliveryFailed``.
"""

from __future__ import annotations

import abc
import asyncio
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, cast

import msgpack  # type: ignore[import-untyped]  # a dependency of channels_redis
from channels.exceptions import ChannelFull
from django.core.exceptions import ImproperlyConfigured
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.presence.redis import RedisPresence, _Call, _digest, _script, binary_host

__all__ = ["ChannelLayerTransport", "NodeTransport", "RedisTransport"]

Message = dict[str, Any]


class NodeTransport(abc.ABC):
    """Carries node-level messages (plain dicts of str, bytes, ints and lists) to nodes."""

    @abc.abstractmethod
    async def open(self, node_id: str) -> str:
        """Create this node's inbox and return its address (the registry's channel name)."""

    @abc.abstractmethod
    async def send(self, address: str, message: Message) -> None:
        """Put *message* in the inbox at *address*.

        Raises:
            ChannelFull: the inbox holds ``capacity`` messages already.
        """

    @abc.abstractmethod
    async def receive(self, address: str) -> Sequence[Message]:
        """Wait for messages in the inbox at *address*; return one or more, or none.

        An empty result (nothing arrived for a while) is not an error: call again.
        """

    async def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release this event loop's connections."""


class ChannelLayerTransport(NodeTransport):
    """The channel layer named by the ``CHANNEL_LAYER`` setting.

    Args:
        alias: a key of ``settings.CHANNEL_LAYERS``; default the ``CHANNEL_LAYER`` setting.
    """

    def __init__(self, *, alias: str | None = None) -> None:
        self.alias = alias

    def _layer(self) -> Any:
        from channels.layers import get_channel_layer

        from stomp_cluster.conf import get_settings

        alias = self.alias or get_settings().CHANNEL_LAYER
        layer = get_channel_layer(alias)
        if layer is None:
            raise ImproperlyConfigured(
                f"stomp_cluster needs a channel layer named {alias!r} in "
                "settings.CHANNEL_LAYERS (see `manage.py check`)."
            )
        return layer

    async def open(self, node_id: str) -> str:
        name: str = await self._layer().new_channel()
        return name

    async def send(self, address: str, message: Message) -> None:
        await self._layer().send(address, message)

    async def receive(self, address: str) -> Sequence[Message]:
        message: Message = await self._layer().receive(address)
        return (message,)


# KEYS: inbox. ARGV: capacity, expiry ms, message. Returns the new length, or -1 when full.
_PUSH = _script(
    """
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n + 1
""",
    prelude=False,
)

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(raw: bytes) -> Message:
    message: Message = msgpack.unpackb(raw, raw=False)
    return message


class RedisTransport(NodeTransport):
    """One Redis list per node; pushes pipelined, pops in batches.

    Args:
        hosts: Where Redis is, in any form
            :class:`~stomp_cluster.presence.redis.RedisPresence` accepts; the first entry
            is used. Default ``[("localhost", 6379)]``.
        prefix: Prefix of the inbox keys (``<prefix>:inbox:{<node hash>}``); no braces.
            Default ``"stomp_cluster"``.
        capacity: Messages an inbox may hold before sends to it fail with ChannelFull.
            Default 10,000.
        expiry: Seconds an inbox lives after its last push: how long messages wait for a
            node that stopped reading. Default 60, as channels_redis's channels.
        batch: Most messages a node pops per round trip. Default 1,000.
        socket_timeout: Seconds to wait for Redis before a call fails. Default 3.
        max_connections: Size of each event loop's connection pool. Default 50.
    """

    def __init__(
        self,
        *,
        hosts: Sequence[str | tuple[str, int] | Mapping[str, Any]] = (("localhost", 6379),),
        prefix: str = "stomp_cluster",
        capacity: int = 10_000,
        expiry: float = 60.0,
        batch: int = 1000,
        socket_timeout: float = 3.0,
        max_connections: int = 50,
    ) -> None:
        if not hosts:
            raise ImproperlyConfigured("RedisTransport needs at least one entry in 'hosts'.")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ImproperlyConfigured(
                f"RedisTransport 'prefix' must be non-empty and without braces, got {prefix!r}."
            )
        for name, value in (("capacity", capacity), ("batch", batch)):
            if not isinstance(value, int) or value < 1:
                raise ImproperlyConfigured(
                    f"RedisTransport '{name}' must be a positive int, got {value!r}."
                )
        if not expiry > 0:
            raise ImproperlyConfigured(f"RedisTransport 'expiry' must be positive, got {expiry!r}.")
        self.prefix = prefix
        self.capacity = capacity
        self.expiry_ms = int(expiry * 1000)
        self.batch = batch
        # Its plumbing only: a client per event loop, auto-pipelining, NOSCRIPT handling.
        self._io = RedisPresence(
            hosts=[binary_host(hosts[0])],
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
        )
        # A blocking pop holds its connection, so receivers get one of their own.
        self._receivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis]
        self._receivers = weakref.WeakKeyDictionary()
        # Block for less than the socket timeout, or an idle wait would look like an outage.
        self.block = max(0.1, min(1.0, socket_timeout / 2))

    def address(self, node_id: str) -> str:
        """The inbox key of *node_id*, with the node's hash tag as in the presence layout."""
        return f"{self.prefix}:inbox:{{{_digest(node_id)}}}"

    async def open(self, node_id: str) -> str:
        address = self.address(node_id)
        await self._io._run([_Call(("DEL", address))])
        return address

    async def send(self, address: str, message: Message) -> None:
        call = _Call(
            ("EVALSHA", _PUSH.sha, 1, address, self.capacity, self.expiry_ms, _pack(message)), _PUSH
        )
        (length,) = await self._io._run([call])
        if length == -1:
            raise ChannelFull(f"inbox {address} holds {self.capacity} messages")

    def _receiver(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._receivers.get(loop)
        if client is None:
            client = self._receivers[loop] = self._io._make_client()
        return client

    async def receive(self, address: str) -> Sequence[Message]:
        client = self._receiver()
        raws: list[bytes]
        try:
            # redis-py's annotations cover every reply type; with decode_responses off
            # and a count, LPOP gives a list of bytes or None, BLPOP a pair or None.
            raws = cast(list[bytes], await client.lpop(address, self.batch) or [])
            if not raws:
                popped = await client.blpop([address], timeout=self.block)
                if popped is None:
                    return ()
                raws = [cast(bytes, popped[1])]
                if self.batch > 1:
                    raws += cast(list[bytes], await client.lpop(address, self.batch - 1) or [])
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise PresenceUnavailable(f"transport unreachable: {exc}") from exc
        return [_unpack(raw) for raw in raws]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._receivers.pop(loop, None)
        if client is not None:
            await client.aclose()
        await self._io.close()
