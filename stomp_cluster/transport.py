"""How node-level messages travel from a sender to the node that holds the recipients.

A send asks the presence registry which nodes to reach, then hands one message per node to
the *transport* (:mod:`stomp_cluster.send`); each node reads its own *inbox* and fans the
messages out to its local sockets (:meth:`stomp_cluster.node.Node.deliver`). Two
transports ship:

:class:`ChannelLayerTransport` (the default)
    The Channels channel layer named by ``CHANNEL_LAYER``: each node has a channel of its
    own, and a send is ``layer.send()``. It works with any layer, the in-memory one
    included, so it suits a single node and tests.

:class:`RedisTransport`
    A Redis list per node, written through :mod:`stomp_cluster.redis_connection`, the
    auto-pipelining connection layer of the Redis presence and history backends too.
    Measured in ``docs/performance.md``, it is the fast one, for three reasons that a
    channel layer's API cannot give us:

    * *Sends are batched.* Concurrent sends of one process share a pipeline, so a burst
      costs the sender a fraction of a round trip per message; ``layer.send()`` takes a
      pooled connection and runs several commands for every message.
    * *Receives are batched.* A node pops up to ``batch`` messages per round trip
      (``BLMPOP`` on Redis 7, ``LPOP key count`` before), where channels_redis's core
      layer takes one message per ``BZPOPMIN`` and a Lua call (about 500 messages/s per
      node, measured on a 2-core machine).
    * *It stays bounded.* A push checks the inbox's length in the same script and fails
      with :class:`~channels.exceptions.ChannelFull` past ``capacity``, which the send
      helpers report as :class:`~stomp_cluster.exceptions.DeliveryFailed` (or, for a
      message kept in a history, as a missed node of the
      :class:`~stomp_cluster.send.Delivery`). The pub/sub layer, the other fast option,
      queues without bound in the receiving process.

    An inbox outlives a reconnect of its node (a list, unlike a pub/sub channel), expires
    ``expiry`` seconds after the last push when its node is gone, and is emptied when a
    node starts, since what it holds was for sessions of an earlier process.

Both raise :class:`~channels.exceptions.ChannelFull` for a full inbox; the Redis one raises
:class:`~stomp_cluster.exceptions.TransportUnavailable` when Redis cannot be reached (its
message starts with ``"transport unreachable: "``). Other failures propagate, and the send
helpers turn them into ``DeliveryFailed``.

The one-trip send
=================

A send to a user normally takes three calls: the registry says which nodes hold the user,
the history records the message, the transport pushes it to those nodes.
:meth:`NodeTransport.send_to_user` lets a transport do all three at once when it can; the
base class cannot (it returns None, and the caller goes the normal way), and
:class:`RedisTransport` can when the registry and the history are Redis backends on its own
Redis: one Lua script, one round trip, and the lookup and the append become atomic. The
script owns none of the key layouts it touches: the registry's lookup is the Lua function
``RedisPresence.user_nodes_function`` gives, the liveness check its
``node_alive_function``, the append is the history's ``APPEND_FUNCTION``, and only the inbox
keys are the transport's own. A node whose heartbeat lapsed gets no push from it, at once
rather than at the next sweep: its inbox would only fill up with messages nobody reads.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgpack  # type: ignore[import-untyped]  # a dependency of channels_redis
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from stomp_cluster.conf import get_settings
from stomp_cluster.exceptions import TransportUnavailable
from stomp_cluster.history.base import HistoryBackend
from stomp_cluster.history.redis import APPEND_FUNCTION, RedisHistory
from stomp_cluster.presence.base import PresenceBackend
from stomp_cluster.presence.redis import RedisPresence
from stomp_cluster.redis_connection import (
    LUA_DIGEST,
    OUTAGES,
    Call,
    Host,
    RedisConnection,
    Script,
    check_hosts_and_prefix,
    digest,
    lua_string,
)

__all__ = ["ChannelLayerTransport", "NodeTransport", "RedisTransport", "UserSend"]

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

    async def send_to_user(
        self,
        presence: PresenceBackend,
        history: HistoryBackend | None,
        user_key: str,
        message: Message,
        *,
        local_node: str,
    ) -> UserSend | None:
        """Look the user up, append to the history and push to the nodes, all at once.

        An optional shortcut for :func:`stomp_cluster.send.asend_to_user`: a transport
        that can do the three steps in one operation does them here; the others return
        None, and the caller does them one by one (``presence.user_nodes()``,
        ``history.append()``, :meth:`send` to each node). This base class always returns
        None.

        Args:
            presence: the registry to look *user_key* up in.
            history: the history to append *message* to, or None to keep none.
            message: the node-level message, without ``id``; ``destination``, ``body``
                and ``headers`` are also what the history records.
            local_node: this process's node id, which gets no push (the caller
                dispatches to it directly), or "".

        Returns:
            What was done, or None when this transport cannot do it in one operation
            (nothing was done then).

        Raises:
            BackendUnavailable: a backend the operation needs cannot be reached; nothing
                is known to have been sent.
        """
        return None

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
_PUSH = Script.from_source(
    """
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n + 1
"""
)

# The one-trip send to a user (see RedisTransport.send_to_user). What is the same for every
# send of one process (key prefixes, capacity, expiry, this node's id, history bounds) is
# written into the script's text as Lua string literals, so that a send passes only what
# varies: redis-py's packing and parsing cost the sender per argument and per reply item.
# KEYS: the history's stream and pending hash, or none. ARGV: 1 user digest, 2 the message
# (msgpack), 3 "1" to append to the history, 4 destination, 5 body, 6 headers JSON,
# 7 destination digest (the pending mark). Returns one string: the history id ("" for
# none), then node id, sessions there, status (1 pushed, 0 this node, -1 inbox full,
# -2 node dead: its heartbeat lapsed, so nothing is pushed) for each node holding the user,
# all separated by NUL. The message is pending (kept for the user's next subscription)
# when no live node holds the user. The registry's keys are read by its own functions
# (RedisPresence.user_nodes_function and node_alive_function), the history's written by
# its append().
_SEND_TO_USER_BODY = r"""
local found = user_nodes(ARGV[1])
local status = {}
local live = 0
for i, f in ipairs(found) do
  local s = 0
  if f[1] ~= LOCAL_NODE then
    if not node_alive(f[2]) then
      s = -2
    elseif redis.call('LLEN', INBOX_HEAD .. f[2] .. INBOX_TAIL) >= CAPACITY then
      s = -1
    else
      s = 1
    end
  end
  if s ~= -2 then live = live + 1 end
  status[i] = s
end
local id = ''
if ARGV[3] == '1' then
  local pending = ''
  if live == 0 then pending = ARGV[7] end
  id = append(KEYS, {MAX_LENGTH, MAX_AGE, ARGV[4], ARGV[5], ARGV[6], pending})
end
local element = ARGV[2]
if id ~= '' then element = '\193' .. id .. '\0' .. element end
local out = {id}
for i, f in ipairs(found) do
  if status[i] == 1 then
    local key = INBOX_HEAD .. f[2] .. INBOX_TAIL
    redis.call('RPUSH', key, element)
    redis.call('PEXPIRE', key, EXPIRY)
  end
  out[#out + 1] = f[1]
  out[#out + 1] = f[3]
  out[#out + 1] = status[i]
end
return table.concat(out, '\0')
"""


@functools.cache
def _send_to_user_script(
    user_nodes_function: str,
    node_alive_function: str,
    inbox_head: str,
    inbox_tail: str,
    capacity: int,
    expiry_ms: int,
    local_node: str,
    max_length: int,
    max_age_ms: int,
) -> Script:
    constants = {
        "INBOX_HEAD": lua_string(inbox_head),
        "INBOX_TAIL": lua_string(inbox_tail),
        "CAPACITY": str(int(capacity)),
        "EXPIRY": lua_string(expiry_ms),
        "LOCAL_NODE": lua_string(local_node),
        "MAX_LENGTH": lua_string(max_length),
        "MAX_AGE": lua_string(max_age_ms),
    }
    header = "".join(f"local {name} = {value}\n" for name, value in constants.items())
    source = (
        LUA_DIGEST
        + user_nodes_function
        + node_alive_function
        + APPEND_FUNCTION
        + header
        + _SEND_TO_USER_BODY
    )
    return Script.from_source(source)


_pack = msgpack.Packer(use_bin_type=True).pack

#: Marks an inbox element that carries a history id before its msgpack body: 0xC1 is the
#: one byte msgpack never uses, so no plain element can start with it.
_WITH_ID = 0xC1


def _unpack(raw: bytes) -> Message:
    if raw[0] == _WITH_ID:
        message_id, _, raw = raw[1:].partition(b"\0")
        message: Message = msgpack.unpackb(raw, raw=False)
        message["id"] = message_id.decode("ascii")
        return message
    message = msgpack.unpackb(raw, raw=False)
    return message


@dataclass(frozen=True, slots=True)
class UserSend:
    """What :meth:`NodeTransport.send_to_user` did: the history id and where it went.

    Attributes:
        message_id: the history id of the message, or None when it was not recorded.
        nodes: node id -> the user's sessions there, for every node holding the user.
        full: the nodes whose inbox was full (the message is not in them).
        dead: the nodes whose heartbeat had lapsed (not reaped yet): nothing was pushed
            to them, and the message is pending when no live node holds the user.
    """

    message_id: str | None
    nodes: dict[str, int]
    full: frozenset[str]
    dead: frozenset[str] = frozenset()


class RedisTransport(NodeTransport):
    """One Redis list per node; pushes pipelined, pops in batches.

    Args:
        hosts: Where Redis is, in any form
            :class:`~stomp_cluster.presence.redis.RedisPresence` accepts (see
            :data:`~stomp_cluster.redis_connection.Host`); the first entry is used.
            Default ``[("localhost", 6379)]``.
        prefix: Prefix of the inbox keys (``<prefix>:inbox:{<node hash>}``); no braces.
            Default ``"stomp_cluster"``.
        capacity: Messages an inbox may hold before sends to it fail with ChannelFull.
            Default 10,000.
        expiry: Seconds an inbox lives after its last push: how long messages wait for a
            node that stopped reading. Default 60, as channels_redis's channels.
        batch: Most messages a node pops per round trip. Default 1,000.
        socket_timeout: Seconds to wait for Redis before a call fails with
            :class:`~stomp_cluster.exceptions.TransportUnavailable`; at least 0.5, since
            a node's idle wait for its inbox must end within it. Default 3.
        max_connections: Size of each event loop's connection pool. Default 50.
    """

    def __init__(
        self,
        *,
        hosts: Sequence[Host] = (("localhost", 6379),),
        prefix: str = "stomp_cluster",
        capacity: int = 10_000,
        expiry: float = 60.0,
        batch: int = 1000,
        socket_timeout: float = 3.0,
        max_connections: int = 50,
    ) -> None:
        check_hosts_and_prefix("RedisTransport", hosts, prefix)
        for name, value in (("capacity", capacity), ("batch", batch)):
            if not isinstance(value, int) or value < 1:
                raise ImproperlyConfigured(
                    f"RedisTransport '{name}' must be a positive int, got {value!r}."
                )
        if not socket_timeout >= 0.5:
            raise ImproperlyConfigured(
                f"RedisTransport 'socket_timeout' must be at least 0.5 s, got {socket_timeout!r}: "
                "a node's blocking read of its inbox must end well within it."
            )
        if not expiry > 0:
            raise ImproperlyConfigured(f"RedisTransport 'expiry' must be positive, got {expiry!r}.")
        self.prefix = prefix
        self.host = hosts[0]
        self.capacity = capacity
        self.expiry_ms = int(expiry * 1000)
        self.batch = batch
        self.redis = RedisConnection(
            hosts[0],
            name="transport",
            unavailable=TransportUnavailable,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            decode_responses=False,
        )
        # An inbox key is <prefix>:inbox:{<digest of the node id>}, in Python and in Lua.
        self._inbox_head, self._inbox_tail = f"{prefix}:inbox:{{", "}"
        # A blocking pop holds its connection, so receivers get one of their own.
        self._receivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis | RedisCluster]
        self._receivers = weakref.WeakKeyDictionary()
        self._blmpop: bool | None = None  # whether the server has BLMPOP (Redis 7)
        self._shared: dict[tuple[int, ...], tuple[tuple[Any, ...], bool]] = {}
        # Block for less than the socket timeout, or an idle wait would look like an outage:
        # Redis ends a blocking pop on its 10 Hz clock, up to 100 ms late.
        self.block = min(1.0, socket_timeout - 0.3)

    def address(self, node_id: str) -> str:
        """The inbox key of *node_id*, with the node's hash tag as in the presence layout."""
        return self._inbox_head + digest(node_id) + self._inbox_tail

    async def open(self, node_id: str) -> str:
        address = self.address(node_id)
        await self.redis.run([Call(("DEL", address))])
        return address

    async def send(self, address: str, message: Message) -> None:
        call = Call.lua(_PUSH, (address,), self.capacity, self.expiry_ms, _pack(message))
        (length,) = await self.redis.run([call])
        if length == -1:
            raise ChannelFull(f"inbox {address} holds {self.capacity} messages")

    def _receiver(self) -> Redis | RedisCluster:
        loop = asyncio.get_running_loop()
        client = self._receivers.get(loop)
        if client is None:
            client = self._receivers[loop] = self.redis.make_client()
        return client

    async def receive(self, address: str) -> Sequence[Message]:
        client = self._receiver()
        raws: list[bytes]
        try:
            if self._blmpop is None:
                if isinstance(client, RedisCluster):  # one node's answer, not every node's
                    info = await client.info("server", target_nodes=RedisCluster.RANDOM)
                else:
                    info = await client.info("server")
                self._blmpop = int(str(info.get("redis_version", "0")).split(".")[0]) >= 7
            if self._blmpop:
                # Redis 7: wait and take up to a batch in one command.
                reply = await client.execute_command(
                    "BLMPOP", self.block, 1, address, "LEFT", "COUNT", self.batch
                )
                return () if reply is None else [_unpack(raw) for raw in reply[1]]
            # Older servers: take a batch if there is one, else wait for one.
            # (redis-py's annotations cover every reply type; with decode_responses off
            # and a count, LPOP gives a list of bytes or None, BLPOP a pair or None.)
            raws = cast(list[bytes], await client.lpop(address, self.batch) or [])
            if not raws:
                popped = await client.blpop([address], timeout=self.block)
                if popped is None:
                    return ()
                raws = [cast(bytes, popped[1])]
        except OUTAGES as exc:
            if isinstance(client, RedisCluster):  # the inbox's slot may have a new primary
                await self.redis.after_outage(client)
            raise self.redis.unreachable(exc) from exc
        return [_unpack(raw) for raw in raws]

    def shares_redis_with(self, *backends: Any) -> bool:
        """Whether each of *backends* keeps its keys in this transport's Redis.

        Then :meth:`send_to_user` can do in one script what takes the three of them a
        round trip each. A backend given as None (no history) does not count.
        """
        key = tuple(map(id, backends))
        known = self._shared.get(key)
        if known is not None and known[0] == backends:
            return known[1]
        # Never on a Redis Cluster: the script derives keys of other slots from what it
        # reads (the user's nodes, their inboxes), which a cluster node refuses.
        shared = self.redis.cluster is None and all(
            backend is None
            or (isinstance(backend, RedisPresence | RedisHistory) and backend.host == self.host)
            for backend in backends
        )
        self._shared[key] = (backends, shared)
        return shared

    async def send_to_user(
        self,
        presence: PresenceBackend,
        history: HistoryBackend | None,
        user_key: str,
        message: Message,
        *,
        local_node: str,
    ) -> UserSend | None:
        """Look the user up, append to the history and push to the nodes: one round trip.

        The sender's hot path (:func:`stomp_cluster.send.asend_to_user`). Done one call
        each, the registry lookup, the history append and the pushes cost three round
        trips and three redis-py pipelines of CPU; here it is one script, which also
        makes the lookup and the append atomic (no session can appear between them).

        It needs *presence* (a :class:`~stomp_cluster.presence.redis.RedisPresence`),
        *history* (a :class:`~stomp_cluster.history.redis.RedisHistory`, or None) and this
        transport in one standalone (or Sentinel) Redis (see :meth:`shares_redis_with`).
        On one Redis Cluster shared by the three (:meth:`shares_cluster_with`), where the
        script cannot run (it reaches keys of other slots), it takes two round trips
        instead (see ``_send_to_user_on_cluster``). Otherwise it returns None, and the
        caller asks each backend in turn.

        Args: as :meth:`NodeTransport.send_to_user`.

        Raises:
            TransportUnavailable: Redis cannot be reached; whether the script ran is
                unknown (on a cluster: whether the message was stored, and pushed to
                the nodes whose slots answered).
        """
        if not self.shares_redis_with(presence, history):
            if self.shares_cluster_with(presence, history):
                return await self._send_to_user_on_cluster(
                    cast(RedisPresence, presence),
                    cast(RedisHistory | None, history),
                    user_key,
                    message,
                    local_node,
                )
            return None
        # Checked just now by shares_redis_with (cached, so a cast rather than isinstance).
        registry = cast(RedisPresence, presence)
        store = cast(RedisHistory | None, history)
        if store is not None:
            keys: tuple[str, ...] = store.keys(user_key)
            # The pending mark (offline delivery) goes with every call; the script
            # sets it only when no node holds the user.
            max_length, max_age, *append = store.append_args(
                message["destination"], message["body"], message["headers"], pending=True
            )
        else:
            keys, max_length, max_age, append = (), 0, 0, ["", b"", "", ""]
        script = _send_to_user_script(
            registry.user_nodes_function,
            registry.node_alive_function,
            self._inbox_head,
            self._inbox_tail,
            self.capacity,
            self.expiry_ms,
            local_node,
            max_length,
            max_age,
        )
        args = (digest(user_key), _pack(message), "0" if store is None else "1", *append)
        (reply,) = await self.redis.run([Call.lua(script, keys, *args)])
        parts = reply.split(b"\0")
        message_id = parts[0].decode("ascii") or None
        nodes: dict[str, int] = {}
        full, dead = set(), set()
        for i in range(1, len(parts), 3):
            node_id = parts[i].decode()
            nodes[node_id] = int(parts[i + 1])
            if parts[i + 2] == b"-1":
                full.add(node_id)
            elif parts[i + 2] == b"-2":
                dead.add(node_id)
        return UserSend(message_id, nodes, frozenset(full), frozenset(dead))

    def shares_cluster_with(self, *backends: Any) -> bool:
        """Whether this transport and each of *backends* use the same Redis Cluster.

        Then :meth:`send_to_user` takes two round trips (see
        :meth:`_send_to_user_on_cluster`). A backend given as None does not count.
        """
        nodes = self.redis.cluster
        return nodes is not None and all(
            backend is None
            or (
                isinstance(backend, RedisPresence | RedisHistory) and backend.redis.cluster == nodes
            )
            for backend in backends
        )

    async def _send_to_user_on_cluster(
        self,
        registry: RedisPresence,
        store: RedisHistory | None,
        user_key: str,
        message: Message,
        local_node: str,
    ) -> UserSend:
        """:meth:`send_to_user` on a Redis Cluster: two round trips, whatever the sockets.

        The one-script send cannot run there: it reads which nodes hold the user, then
        writes their inboxes, keys of other slots. So:

        1. one pipeline (one per primary, sent concurrently): the node list, and for
           every node its count of the user's sessions, its liveness key and its inbox
           length (all in the node's slot), with the history append (the user's slot);
        2. one pipeline: the message, with its history id, pushed to the inbox of each
           live node holding the user (a script per inbox, which checks the capacity
           again); or, when no live node holds the user, the pending mark set in the
           user's slot, as the append would have set it.

        Unlike the one-script send, the lookup and the append are not atomic: a session
        that appears between them is found by the next send, and recovers this message
        from the history when its client resumes.
        """
        uh = digest(user_key)

        def per_node(node_id: str) -> list[Call]:
            return [
                Call(("SCARD", registry.node_key(node_id, "u:" + uh))),
                Call(("EXISTS", registry.node_key(node_id, "alive"))),
                Call(("LLEN", self.address(node_id))),
            ]

        extra: list[Call] = []
        if store is not None:
            extra.append(
                store.append_call(
                    user_key,
                    message["destination"],
                    message["body"],
                    message["headers"],
                    pending=False,
                )
            )
        found, appended = await registry.fanout(per_node, extra=extra, redis=self.redis)
        message_id = appended[0].decode("ascii") if appended else None
        packed = _pack(message)
        element = packed if message_id is None else b"\xc1%s\0%s" % (message_id.encode(), packed)
        nodes: dict[str, int] = {}
        dead: set[str] = set()
        push: list[str] = []
        full: set[str] = set()
        for node_id, (count, alive, length) in found.items():
            if not count:
                continue
            nodes[node_id] = int(count)
            if node_id == local_node:
                continue
            if not alive:
                dead.add(node_id)
            elif int(length) >= self.capacity:
                full.add(node_id)
            else:
                push.append(node_id)
        calls = [
            Call.lua(_PUSH, (self.address(node_id),), self.capacity, self.expiry_ms, element)
            for node_id in push
        ]
        if store is not None and message_id is not None and len(dead) == len(nodes):
            # No live node holds the user: the message waits for the next subscription.
            calls.append(store.mark_pending_call(user_key, message["destination"], message_id))
        if calls:
            replies = await self.redis.run(calls)
            full.update(node_id for node_id, n in zip(push, replies, strict=False) if n == -1)
        return UserSend(message_id, nodes, frozenset(full), frozenset(dead))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._receivers.pop(loop, None)
        if client is not None:
            await client.aclose()
        await self.redis.close()
