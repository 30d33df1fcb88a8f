r"""How the Redis backends talk to Redis: one connection layer for all three.

The presence registry (:mod:`stomp_cluster.presence.redis`), the message history
(``stomp_cluster.history.redis``) and the node-to-node transport
(:mod:`stomp_cluster.transport`) each hold one :class:`RedisConnection` (as ``.redis``)
and express every operation as a list of :class:`Call`\ s, which :meth:`RedisConnection.run`
sends in one round trip. Everything below is shared, so each backend only describes its
keys and its scripts.

Clients
=======

One client per running event loop, as in channels_redis: redis-py's asyncio connections
belong to the loop that opened them, and ``async_to_sync`` may run a fresh loop per call.
The pool is a :class:`~redis.asyncio.BlockingConnectionPool`, which waits up to
``pool_timeout`` (30 s) for a free connection instead of failing at once: under a burst,
calls queue for the pool rather than report an outage that is only load (with the socket
timeout as the wait, a thousand concurrent calls on a slow machine failed). Its size and the
socket timeout are set explicitly, because redis-py 8's defaults are what broke
channels_redis under load when we measured it: a pool capped at 100 connections made
concurrent sends beyond that fail with ``MaxConnectionsError``, and a 5 s socket timeout
equal to the layer's 5 s blocking read made consumers crash now and then.

redis-py's automatic retries are off: a script whose reply was lost may have run, and
running the presence registry's ``reap_node`` twice would lose its sessions. We speak RESP2,
under which the pool replaces connections that died while idle, so the first call after a
Redis restart succeeds (under redis-py 8's default RESP3 it fails). After a failed call the
idle connections are dropped, as they are likely dead too.

Auto-pipelining
===============

Each redis-py command costs the caller far more CPU than Redis spends on it: a pooled
connection is taken and given back, the command packed, the reply awaited and parsed
(about 140 µs per pipeline, ``docs/performance.md``). So the calls of concurrent tasks
share pipelines (:class:`Batcher`): at most two are in flight per event loop, and a call
made while they are busy goes out in the next one, with every other call made meanwhile.
An idle backend adds no delay, a busy one sends bigger pipelines, and the pool never needs
more than two connections for them.

Scripts
=======

Changes that touch several keys are Lua scripts (:class:`Script`), sent as ``EVALSHA`` so
that a call carries the script's digest rather than its text. A script the server does not
know yet (first use, or after a restart) fails with ``NOSCRIPT`` without running; those
calls alone are sent again as ``EVAL``, which also caches the script: one more round trip,
once.

Outages
=======

A connection error, a timeout or a reply from a read-only replica (after a failover)
becomes the :class:`~stomp_cluster.exceptions.BackendUnavailable` subclass of the backend
that owns the connection (``unavailable=``), with a message naming it, such as ``"message
history unreachable: ..."``. Callers degrade on it; every other error is a bug and
propagates as it is.

Round-trip latency
==================

Each pipeline sent is timed, from taking a pooled connection to the parsed replies, into
the :class:`RoundTrips` histogram of its connection's name (see :func:`round_trips`): one
``perf_counter`` pair and one bisect per round trip, read by the ``metrics/`` endpoint
(:mod:`stomp_cluster.metrics`) at scrape time. Round trips that fail are not counted.

Key names
=========

User keys, destinations and node ids are hashed into key names with :func:`digest` (the
first :data:`HASH_LEN` hex digits of their SHA-1), so no id can reach another key, and in
braces the digest is the Redis Cluster hash tag of every key of that user or node. Scripts
that name keys themselves compute it with the Lua function :data:`LUA_DIGEST`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import hashlib
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from django.core.exceptions import ImproperlyConfigured
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from stomp_cluster.exceptions import BackendUnavailable

__all__ = [
    "HASH_LEN",
    "LUA_DIGEST",
    "OUTAGES",
    "ROUND_TRIP_BUCKETS",
    "Batcher",
    "Call",
    "Command",
    "Host",
    "RedisConnection",
    "RoundTrips",
    "Script",
    "check_hosts_and_prefix",
    "cluster_nodes",
    "digest",
    "lua_string",
    "round_trips",
]

#: Where Redis is: a ``redis://``/``rediss://``/``unix://`` URL, a ``(host, port)`` pair,
#: or a dict of connection keyword arguments (with an optional ``"address"`` URL, or a
#: Sentinel's ``"sentinels"``, ``"master_name"`` and ``"sentinel_kwargs"``). A Redis
#: Cluster is a ``redis+cluster://host:port,host:port/`` URL (``rediss+cluster://`` for
#: TLS) or a dict with ``"startup_nodes"`` (``"host:port"`` strings or pairs) and any
#: other keyword arguments of redis-py's ``RedisCluster``; see :func:`cluster_nodes`.
Host = str | tuple[str, int] | Mapping[str, Any]

#: URL schemes of a Redis Cluster: the startup nodes, comma-separated, as the host part.
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

#: One Redis command: its name and arguments (bytes for binary values).
Command = tuple[str | int | bytes, ...]

#: The errors that mean Redis cannot be reached (rather than a bug in a command). The
#: cluster ones: the cluster is down or a slot has no primary (during a failover), a
#: slot is being migrated (TRYAGAIN), redirections that did not settle, no node reachable.
OUTAGES = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.AskError,
    redis_errors.SlotNotCoveredError,
    redis_errors.RedisClusterUnreachableError,
)

#: The argument types redis-py packs (it refuses bool, None and the rest).
_ENCODABLE = frozenset({str, bytes, int, float})

#: Hex digits of SHA-1 kept in key names: 80 bits make a collision negligible.
HASH_LEN = 20

#: Lua source of ``digest(value)``, the same as :func:`digest`, for scripts that build key
#: names from ids they read (the one-trip send reads node ids from the registry).
LUA_DIGEST = (
    f"local function digest(value) return string.sub(redis.sha1hex(value), 1, {HASH_LEN}) end\n"
)


#: Upper bounds, in seconds, of the round-trip latency histogram's buckets (a last one,
#: unbounded, takes the rest): from a local Redis's fraction of a millisecond to the 3 s
#: socket timeout.
ROUND_TRIP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class RoundTrips:
    """A fixed-bucket histogram of round-trip times: plain ints, one bisect to observe.

    Attributes:
        counts: per bucket of :data:`ROUND_TRIP_BUCKETS`, then the unbounded one, how many
            round trips took at most that long and more than the previous bound.
        total: the seconds of all of them.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(ROUND_TRIP_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one round trip of *seconds*."""
        # bisect_left: a time equal to a bound belongs to its bucket (Prometheus' "le").
        self.counts[bisect.bisect_left(ROUND_TRIP_BUCKETS, seconds)] += 1
        self.total += seconds


#: Connection name -> its histogram, for the life of the process (Prometheus counters
#: never go down, even when the tests make the backends anew).
_round_trips: dict[str, RoundTrips] = {}


def round_trips() -> dict[str, RoundTrips]:
    """The round-trip histograms of this process, by connection name (``"transport"``…)."""
    return dict(_round_trips)


@functools.lru_cache(maxsize=4096)  # user keys and destinations repeat: W1 asks 3 per send
def digest(value: str) -> str:
    """The first :data:`HASH_LEN` hex digits of the SHA-1 of *value*: its part of key names."""
    return hashlib.sha1(value.encode()).hexdigest()[:HASH_LEN]


def lua_string(value: str | int) -> str:
    """*value* as a Lua string literal, every byte escaped: safe for any text."""
    return '"' + "".join(f"\\{byte}" for byte in str(value).encode()) + '"'


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA-1, the name ``EVALSHA`` knows it by."""

    source: str
    sha: str

    @classmethod
    def from_source(cls, source: str) -> Script:
        """The script of *source*."""
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Call:
    """One command of a pipeline; for a script, ``args`` are EVALSHA's."""

    args: Command
    script: Script | None = None

    @classmethod
    def lua(cls, script: Script, keys: Sequence[str], *args: str | int | bytes) -> Call:
        """Run *script* with *keys* as ``KEYS`` and *args* as ``ARGV``.

        Every key a script touches is declared, as Redis Cluster requires, unless the
        script derives names itself from a key base (the presence registry does, inside
        one hash tag).
        """
        return cls(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def as_eval(self) -> Command:
        """The same call as ``EVAL`` with the script's text, for a server without it."""
        assert self.script is not None
        return ("EVAL", self.script.source, *self.args[2:])


class Batcher:
    """Put the commands of concurrent calls into shared pipelines (auto-pipelining).

    Each redis-py command costs the caller far more CPU than Redis spends on it: a pooled
    connection is taken and given back, the command packed, the reply awaited and parsed.
    Under load that, not Redis, caps a sender (about 1 ms per send with three commands;
    ``docs/performance.md``). So calls queue here, and at most :attr:`depth` pipelines
    are in flight per event loop: a call made while they are busy goes out with every
    other call made meanwhile, in the next pipeline. An idle backend adds no delay (the
    first call starts a pipeline on the next loop iteration), a busy one sends bigger
    pipelines, and the pool never needs more than *depth* connections for them.

    Commands of one call stay together and in order; calls of different tasks were never
    ordered, and two pipelines in flight may run in either order, as two pooled
    connections could.

    Args:
        send: sends one pipeline and returns its replies, errors as values.
        depth: most pipelines in flight.
        max_commands: most commands in one pipeline (a call is never split).
    """

    def __init__(
        self,
        send: Callable[[Sequence[Command]], Awaitable[list[Any]]],
        *,
        depth: int = 2,
        max_commands: int = 4096,
    ) -> None:
        self.depth = depth
        self.max_commands = max_commands
        self._send = send
        self._waiting: deque[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = deque()
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def submit(self, commands: Sequence[Command]) -> list[Any]:
        """Send *commands* with whatever else is waiting; return their replies in order.

        Raises:
            redis.exceptions.DataError: an argument is not bytes, str, int or float. It is
                checked here, since redis-py would fail the whole shared pipeline for it.
        """
        for command in commands:
            for arg in command:
                if type(arg) not in _ENCODABLE:
                    raise redis_errors.DataError(
                        f"invalid argument of type {type(arg).__name__} in {command[0]!r}: "
                        "convert it to bytes, str, int or float first"
                    )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((commands, future))
        if self._inflight < self.depth:
            self._inflight += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._drained)
        return await future

    def _drained(self, task: asyncio.Task[None]) -> None:
        # A done callback rather than a finally: it also runs for a task cancelled
        # before it started.
        self._tasks.discard(task)
        self._inflight -= 1

    async def _drain(self) -> None:
        while self._waiting:
            batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
            size = 0
            while self._waiting and (
                not batch or size + len(self._waiting[0][0]) <= self.max_commands
            ):
                item = self._waiting.popleft()
                if item[1].done():
                    continue  # its caller was cancelled while it waited: never sent
                batch.append(item)
                size += len(item[0])
            if not batch:
                continue
            flat = [command for commands, _ in batch for command in commands]
            try:
                replies = await self._send(flat)
            except asyncio.CancelledError:
                # The loop is closing: nobody is left to send what waits.
                for _, future in (*batch, *self._waiting):
                    future.cancel()
                self._waiting.clear()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for commands, future in batch:
                end = start + len(commands)
                if not future.done():  # its caller was cancelled while it was sent
                    future.set_result(replies[start:end])
                start = end


def _split_node(node: Any) -> tuple[str, int]:
    if isinstance(node, str):
        host, sep, port = node.rpartition(":")
        if sep and host and port.isdigit():
            return host.strip("[]"), int(port)
    elif (
        isinstance(node, list | tuple)
        and len(node) == 2
        and isinstance(node[0], str)
        and node[0]
        and isinstance(node[1], int)
        and not isinstance(node[1], bool)
    ):
        return node[0], node[1]
    raise ImproperlyConfigured(
        f"a Redis Cluster startup node must be 'host:port' or (host, port), got {node!r}."
    )


def cluster_nodes(host: Host) -> list[tuple[str, int]] | None:
    """The startup nodes of *host* when it names a Redis Cluster, else None.

    A cluster is a ``redis+cluster://h1:p1,h2:p2/`` URL (``rediss+cluster://`` for TLS;
    user and password as in any Redis URL; no database number other than 0) or a dict
    with ``"startup_nodes"``: a non-empty list of ``"host:port"`` strings or
    ``(host, port)`` pairs. Any one reachable node is enough for the client to find the
    others.

    Raises:
        ImproperlyConfigured: it names a cluster, but a node or the database is wrong.
    """
    if isinstance(host, str):
        scheme, sep, rest = host.partition("://")
        if not sep or scheme.lower() not in _CLUSTER_SCHEMES:
            return None
        netloc, _, path = rest.partition("/")
        netloc = netloc.rpartition("@")[2]
        path = path.partition("?")[0]
        if path not in ("", "0"):
            raise ImproperlyConfigured(
                f"a Redis Cluster has only database 0, but the URL names {path!r}: "
                "use another key prefix to share a cluster."
            )
        nodes = [_split_node(node) for node in netloc.split(",") if node]
    elif isinstance(host, Mapping) and "startup_nodes" in host:
        given = host["startup_nodes"]
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise ImproperlyConfigured(
                "'startup_nodes' must be a list of 'host:port' strings or (host, port) "
                f"pairs, got {given!r}."
            )
        nodes = [_split_node(node) for node in given]
        if host.get("db", 0) not in (0, None, "0"):
            raise ImproperlyConfigured(
                f"a Redis Cluster has only database 0, got db={host['db']!r}."
            )
    else:
        return None
    if not nodes:
        raise ImproperlyConfigured("a Redis Cluster needs at least one startup node.")
    return nodes


def check_hosts_and_prefix(owner: str, hosts: Sequence[Host], prefix: str) -> None:
    """Refuse what no Redis backend of ours can work with, naming *owner* in the message.

    Raises:
        ImproperlyConfigured: *hosts* is empty or names a Redis Cluster wrongly (see
            :func:`cluster_nodes`), or *prefix* is empty or has braces.
    """
    if not hosts:
        raise ImproperlyConfigured(f"{owner} needs at least one entry in 'hosts'.")
    try:
        cluster_nodes(hosts[0])
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(f"{owner} 'hosts': {exc}") from None
    if not prefix or "{" in prefix or "}" in prefix:
        raise ImproperlyConfigured(
            f"{owner} 'prefix' must be non-empty and without braces, got {prefix!r}: "
            "braces would change the Redis Cluster hash tag of every key."
        )


class RedisConnection:
    """A backend's way to Redis: per-loop clients, shared pipelines, scripts, outages.

    Args:
        host: where Redis is (see :data:`Host`).
        name: what the owner is, for error messages: ``"presence backend"`` makes
            ``"presence backend unreachable: ..."``.
        unavailable: the exception an outage raises, the owner's subclass of
            :class:`~stomp_cluster.exceptions.BackendUnavailable`.
        socket_timeout: seconds to wait for Redis to connect or reply.
        max_connections: size of each event loop's connection pool.
        pool_timeout: seconds a call waits for a free pooled connection: a burst of calls
            queues for the pool rather than failing, since a busy pool is load, not an
            outage.
        decode_responses: replies as str (True) or bytes (False, for binary bodies). It
            overrides the same key in *host*.
    """

    def __init__(
        self,
        host: Host,
        *,
        name: str,
        unavailable: type[BackendUnavailable],
        socket_timeout: float = 3.0,
        max_connections: int = 50,
        pool_timeout: float = 30.0,
        decode_responses: bool = True,
    ) -> None:
        self.host = host
        self.name = name
        self.unavailable = unavailable
        self.socket_timeout = socket_timeout
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.decode_responses = decode_responses
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis | RedisCluster]
        self._clients = weakref.WeakKeyDictionary()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher]
        self._batchers = weakref.WeakKeyDictionary()
        # The last loop asked, and its batcher: almost always the one running.
        self._last_batcher: tuple[asyncio.AbstractEventLoop, Batcher] | None = None
        self.round_trips = _round_trips.setdefault(name, RoundTrips())

    @functools.cached_property
    def cluster(self) -> list[tuple[str, int]] | None:
        """The startup nodes when :attr:`host` is a Redis Cluster, else None."""
        return cluster_nodes(self.host)

    def make_client(self) -> Redis | RedisCluster:
        """A new client with its own pool, for a caller that holds connections itself
        (the transport's blocking reads); everything else uses :meth:`client`.

        On a Redis Cluster it is a ``RedisCluster``: it learns the slot map from any
        startup node, routes each command (a script by its first key) to the primary of
        its slot, follows MOVED and ASK redirections, and keeps a pool per node.
        """
        common: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 0),
            # redis-py 8 defaults to RESP3, which turns on "maintenance notifications",
            # which skip the check that replaces pooled connections that died while idle:
            # the first call after a Redis restart would fail. RESP2 keeps that check.
            "protocol": 2,
        }
        host = self.host
        if self.cluster is not None:
            return self._make_cluster_client(self.cluster, common)
        if isinstance(host, str):
            kwargs = {**common, "address": host}
        elif isinstance(host, Mapping):
            kwargs = {**common, **host}
        else:
            kwargs = {**common, "host": host[0], "port": host[1]}
        kwargs["decode_responses"] = self.decode_responses
        if "sentinels" in kwargs:
            # redis-py before 8.2 leaves Sentinel's constructor unannotated; calling it through
            # a typed name type-checks the same on every version we allow.
            make_sentinel: Callable[..., Sentinel] = Sentinel
            sentinel = make_sentinel(
                kwargs.pop("sentinels"),
                sentinel_kwargs=kwargs.pop("sentinel_kwargs", None),
                socket_timeout=self.socket_timeout,
            )
            name = kwargs.pop("master_name")
            return cast(
                Redis, sentinel.master_for(name, max_connections=self.max_connections, **kwargs)
            )
        pool_kwargs: dict[str, Any] = {
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,
        }
        if "address" in kwargs:
            address = kwargs.pop("address")
            pool = BlockingConnectionPool.from_url(address, **pool_kwargs, **kwargs)
        else:
            pool = BlockingConnectionPool(**pool_kwargs, **kwargs)
        return Redis.from_pool(pool)

    def _make_cluster_client(
        self, nodes: list[tuple[str, int]], common: dict[str, Any]
    ) -> RedisCluster:
        kwargs: dict[str, Any] = {**common}
        if isinstance(self.host, str):
            scheme, _, rest = self.host.partition("://")
            userinfo, at, _ = rest.partition("/")[0].rpartition("@")
            if at:
                user, colon, password = userinfo.partition(":")
                kwargs["username"] = unquote(user) or None
                if colon:
                    kwargs["password"] = unquote(password)
            if scheme.lower() == "rediss+cluster":
                kwargs["ssl"] = True
        elif isinstance(self.host, Mapping):
            kwargs.update({k: v for k, v in self.host.items() if k not in ("startup_nodes", "db")})
        kwargs["decode_responses"] = self.decode_responses
        # No retries (as for a single Redis, a script whose reply was lost may have run),
        # but redirections are not retries: MOVED and ASK are followed by the client.
        # Its pools do not wait for a free connection; the batcher needs two per node.
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            max_connections=self.max_connections,
            require_full_coverage=True,
            **kwargs,
        )

    def client(self) -> Redis | RedisCluster:
        """This event loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]  # its connections died with it
            client = self._clients[loop] = self.make_client()
        return client

    def unreachable(self, exc: BaseException) -> BackendUnavailable:
        """The exception to raise for *exc*, one of :data:`OUTAGES`, from a direct call."""
        return self.unavailable(f"{self.name} unreachable: {exc}")

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """Send *calls* in one pipeline (one round trip) and return their replies.

        Calls made at the same time by other tasks of this event loop share that pipeline
        (see :class:`Batcher`), which is what makes a burst of sends cheap.

        A script unknown to the server (first use, or Redis restarted) fails with NOSCRIPT
        without running, so those calls alone are sent again as EVAL, which also caches the
        script: a second round trip, once.

        Raises:
            BackendUnavailable: the ``unavailable`` subclass given to the constructor, when
                Redis is unreachable or read-only (a replica, after a failover).
            redis.exceptions.ResponseError: any other error reply; a bug.
        """
        batcher = self._batcher()
        try:
            replies = await batcher.submit([call.args for call in calls])
            retry = [
                i
                for i, reply in enumerate(replies)
                if isinstance(reply, redis_errors.NoScriptError)
            ]
            if retry:
                again = await batcher.submit([calls[i].as_eval() for i in retry])
                for i, reply in zip(retry, again, strict=True):
                    replies[i] = reply
        except OUTAGES as exc:
            await self.after_outage(self.client())
            raise self.unreachable(exc) from exc
        for reply in replies:
            if isinstance(reply, redis_errors.ReadOnlyError):  # a replica, after a failover
                raise self.unavailable(f"{self.name} read-only: {reply}") from reply
            if isinstance(reply, OUTAGES):  # a cluster slot down or moving, per command
                await self.after_outage(self.client())
                raise self.unreachable(reply) from reply
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def after_outage(self, client: Redis | RedisCluster) -> None:
        """Forget what an outage made stale, so that the next call starts afresh.

        A single Redis's idle connections are likely dead too (it restarted or failed
        over): they are dropped. A cluster client is asked to read the slot map again
        on its next call, since a failover moves slots to a promoted replica.
        """
        with contextlib.suppress(Exception):
            if isinstance(client, RedisCluster):
                client._request_refresh()
            else:
                await client.connection_pool.disconnect(inuse_connections=False)

    def _batcher(self) -> Batcher:
        loop = asyncio.get_running_loop()
        last = self._last_batcher
        if last is not None and last[0] is loop:
            return last[1]
        batcher = self._batchers.get(loop)
        if batcher is None:
            # Late-bound, so that tests can wrap _pipeline to count round trips.
            batcher = self._batchers[loop] = Batcher(lambda cmds: self._pipeline(cmds))
        self._last_batcher = (loop, batcher)
        return batcher

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        start = time.perf_counter()
        pipe = self.client().pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        self.round_trips.observe(time.perf_counter() - start)
        return replies

    async def close(self) -> None:
        """Close this event loop's client and its connections."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
