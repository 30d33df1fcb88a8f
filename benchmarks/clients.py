"""Redis clients compared on the operation mix of our presence registry and transport.

Usage (needs the client candidates, which are not in the lock: install them in a
throwaway virtualenv, see benchmarks/README.md)::

    python -m benchmarks.clients                      # every client, 3 interleaved runs
    python -m benchmarks.clients --clients ours,ours-hiredis --ops 5000 --runs 1

It starts a standalone redis-server and a 3-primary Redis Cluster on free loopback ports
(:mod:`benchmarks.redis_cluster`) and measures, for each client, two mixes issued by many
concurrent tasks of one event loop:

* ``registry``: what a connect costs the presence registry: an ``EVALSHA`` (a script doing
  ``HSET``, ``ZADD``, ``PEXPIRE`` under a node's hash tag) plus ``HSET``, ``ZADD`` and
  ``PEXPIRE`` on the user's keys, the four sent together as one call;
* ``send``: a ``send_to_user`` shaped for a cluster: an ``EVALSHA`` in the user's slot
  (look the user's sessions up and ``XADD`` to the history) and then an ``RPUSH`` to the
  node's inbox, two round trips.

It reports operations per second, the client process's CPU per operation and Redis's CPU
per operation. Candidates that are not installed are skipped, with a line saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.redis_cluster import LocalCluster
from tests.support.procs import RedisServer

__all__ = ["main"]

CLK_TCK = os.sysconf("SC_CLK_TCK")

REGISTER = (
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('ZADD', KEYS[1] .. ':z', ARGV[2], ARGV[1]) "
    "redis.call('PEXPIRE', KEYS[1], 30000) return 1"
)
SEND = (
    "local s = redis.call('HKEYS', KEYS[1]) "
    "local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100, '*', 'b', ARGV[1]) "
    "return {id, #s}"
)
Command = tuple[Any, ...]


def sha1(source: str) -> str:
    import hashlib

    return hashlib.sha1(source.encode()).hexdigest()


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- the candidates: each turns a call (a list of commands) into replies ----------------------


class Candidate:
    """One client under test; :meth:`call` sends a list of commands together."""

    label = ""

    async def open(self) -> None:
        raise NotImplementedError

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Ours(Candidate):
    """``RedisConnection`` as the backends use it: redis-py plus our ``Batcher``."""

    def __init__(self, url: str, *, hiredis: bool) -> None:
        self.url, self.hiredis = url, hiredis
        self.label = "ours: redis-py + auto-pipelining" + (" + hiredis" if hiredis else "")

    async def open(self) -> None:
        from redis.asyncio.connection import _AsyncHiredisParser, _AsyncRESP2Parser

        from stomp_cluster.exceptions import BackendUnavailable
        from stomp_cluster.redis_connection import Call, RedisConnection

        parser = _AsyncHiredisParser if self.hiredis else _AsyncRESP2Parser
        self.conn = RedisConnection(
            {"address": self.url, "parser_class": parser},
            name="bench",
            unavailable=BackendUnavailable,
        )
        self._call = Call

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        return await self.conn.run([self._call(c) for c in commands])

    async def close(self) -> None:
        await self.conn.close()


class RedisPyPlain(Candidate):
    """redis-py without auto-pipelining: one pipeline per call from a pool."""

    def __init__(self, url: str, *, hiredis: bool) -> None:
        self.url, self.hiredis = url, hiredis
        self.label = "redis-py, a pipeline per call" + (" + hiredis" if hiredis else "")

    async def open(self) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.connection import _AsyncHiredisParser, _AsyncRESP2Parser

        parser = _AsyncHiredisParser if self.hiredis else _AsyncRESP2Parser
        pool = BlockingConnectionPool.from_url(
            self.url, max_connections=50, parser_class=parser, decode_responses=True, protocol=2
        )
        self.client = Redis.from_pool(pool)

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [await self.client.execute_command(*commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        return list(await pipe.execute())

    async def close(self) -> None:
        await self.client.aclose()


class RedisPyCluster(Candidate):
    """redis-py's asyncio ``RedisCluster`` (hiredis when installed)."""

    def __init__(self, nodes: str) -> None:
        self.nodes = nodes
        self.label = "redis-py RedisCluster, 3 primaries" + (
            " + hiredis" if importlib.util.find_spec("hiredis") else ""
        )

    async def open(self) -> None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        startup = [ClusterNode(h, int(p)) for h, p in (n.split(":") for n in self.nodes.split(","))]
        self.client = RedisCluster(
            startup_nodes=startup, decode_responses=True, protocol=2, max_connections=200
        )
        await self.client.initialize()

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [await self.client.execute_command(*commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        return list(await pipe.execute())

    async def close(self) -> None:
        await self.client.aclose()


def _typed(client: Any, c: Command, glide: bool) -> Awaitable[Any]:
    """*c* through the typed API of coredis or valkey-glide."""
    name = c[0]
    if name == "EVALSHA":
        nkeys = int(c[2])
        keys, args = list(c[3 : 3 + nkeys]), list(c[3 + nkeys :])
        if glide:
            from glide import Script

            source = REGISTER if c[1] == sha1(REGISTER) else SEND
            return client.invoke_script(Script(source), keys=keys, args=[str(a) for a in args])
        return client.evalsha(c[1], keys=keys, args=args)
    if name == "HSET":
        return client.hset(c[1], {c[2]: c[3]})
    if name == "ZADD":
        return client.zadd(c[1], {c[3]: float(c[2])})
    if name == "PEXPIRE":
        return client.pexpire(c[1], int(c[2]))
    if name == "RPUSH":
        return client.rpush(c[1], list(c[2:]))
    raise ValueError(name)


class Coredis(Candidate):
    """coredis, standalone or cluster; a call's commands are issued concurrently."""

    def __init__(self, url: str | None = None, nodes: str | None = None) -> None:
        self.url, self.nodes = url, nodes
        self.label = "coredis" + (" RedisCluster, 3 primaries" if nodes else "")

    async def open(self) -> None:
        import coredis

        if self.nodes:
            startup = [
                {"host": h, "port": int(p)}
                for h, p in (n.split(":") for n in self.nodes.split(","))
            ]
            self.client: Any = coredis.RedisCluster(startup_nodes=startup, decode_responses=True)
        else:
            host, port = self.url.rsplit("/", 1)[0].split("//")[1].split(":")  # type: ignore[union-attr]
            self.client = coredis.Redis(host, int(port), decode_responses=True)
        self._ctx = self.client.__aenter__() if hasattr(self.client, "__aenter__") else None
        if self._ctx is not None:
            await self._ctx

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [await _typed(self.client, commands[0], False)]
        return list(await asyncio.gather(*(_typed(self.client, c, False) for c in commands)))

    async def close(self) -> None:
        if self._ctx is not None:
            await self.client.__aexit__(None, None, None)


class Glide(Candidate):
    """valkey-glide (Rust core, one multiplexed connection per node)."""

    def __init__(self, url: str | None = None, nodes: str | None = None) -> None:
        self.url, self.nodes = url, nodes
        self.label = "valkey-glide" + (" cluster client, 3 primaries" if nodes else "")

    async def open(self) -> None:
        from glide import (
            GlideClient,
            GlideClientConfiguration,
            GlideClusterClient,
            GlideClusterClientConfiguration,
            NodeAddress,
        )

        if self.nodes:
            addrs = [
                NodeAddress(h, int(p)) for h, p in (n.split(":") for n in self.nodes.split(","))
            ]
            self.client: Any = await GlideClusterClient.create(
                GlideClusterClientConfiguration(addrs)
            )
        else:
            host, port = self.url.rsplit("/", 1)[0].split("//")[1].split(":")  # type: ignore[union-attr]
            self.client = await GlideClient.create(
                GlideClientConfiguration([NodeAddress(host, int(port))])
            )

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [await _typed(self.client, commands[0], True)]
        return list(await asyncio.gather(*(_typed(self.client, c, True) for c in commands)))

    async def close(self) -> None:
        await self.client.close()


# -- the mixes ----------------------------------------------------------------------------------


def registry_op(i: int, users: int) -> list[Command]:
    u, sid, now = i % users, f"s{i}", 1_700_000_000_000 + i
    return [
        ("EVALSHA", sha1(REGISTER), 1, f"bench:{{node-{i % 3}}}:sessions", sid, now),
        ("HSET", f"bench:{{u{u}}}:s", sid, f"node-{i % 3}"),
        ("ZADD", f"bench:{{u{u}}}:z", now, sid),
        ("PEXPIRE", f"bench:{{u{u}}}:s", 30000),
    ]


async def send_op(cand: Candidate, i: int, users: int) -> None:
    u = i % users
    body = f"{i} " + "x" * 100
    await cand.call([("EVALSHA", sha1(SEND), 2, f"bench:{{u{u}}}:s", f"bench:{{u{u}}}:h", body)])
    await cand.call([("RPUSH", f"bench:{{node-{u % 3}}}:inbox", body)])


async def drive(ops: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def load_scripts(ports: list[int]) -> None:
    for port in ports:
        for source in (REGISTER, SEND):
            subprocess.run(
                ["redis-cli", "-p", str(port), "script", "load", source],
                capture_output=True,
                check=True,
            )


async def measure(
    cand: Candidate, args: argparse.Namespace, redis_pids: list[int]
) -> dict[str, float]:
    await cand.open()
    out: dict[str, float] = {}
    try:
        await cand.call(registry_op(0, args.users))  # connect, warm up
        for mix, conc in (("registry", args.concurrency), ("send", args.send_concurrency)):
            if mix == "registry":

                async def one(i: int) -> None:
                    await cand.call(registry_op(i, args.users))

            else:

                async def one(i: int) -> None:
                    await send_op(cand, i, args.users)

            cpu0, r0 = self_cpu(), sum(proc_cpu(p) for p in redis_pids)
            wall = await drive(args.ops, conc, one)
            cpu, rcpu = self_cpu() - cpu0, sum(proc_cpu(p) for p in redis_pids) - r0
            out[f"{mix}_ops_s"] = args.ops / wall
            out[f"{mix}_client_us"] = 1e6 * cpu / args.ops
            out[f"{mix}_redis_us"] = 1e6 * rcpu / args.ops
    finally:
        await cand.close()
    return out


CANDIDATES = [
    "ours",
    "ours-hiredis",
    "redis-py",
    "redis-py-hiredis",
    "redis-py-cluster",
    "coredis",
    "coredis-cluster",
    "glide",
    "glide-cluster",
]


def make(name: str, url: str, nodes: str) -> Candidate | str:
    """The candidate *name*, or why it cannot run here."""
    hiredis = importlib.util.find_spec("hiredis") is not None
    if "hiredis" in name and not hiredis:
        return "hiredis is not installed"
    if name.startswith("coredis") and importlib.util.find_spec("coredis") is None:
        return "coredis is not installed"
    if name.startswith("glide") and importlib.util.find_spec("glide") is None:
        return "valkey-glide is not installed"
    return {
        "ours": lambda: Ours(url, hiredis=False),
        "ours-hiredis": lambda: Ours(url, hiredis=True),
        "redis-py": lambda: RedisPyPlain(url, hiredis=False),
        "redis-py-hiredis": lambda: RedisPyPlain(url, hiredis=True),
        "redis-py-cluster": lambda: RedisPyCluster(nodes),
        "coredis": lambda: Coredis(url=url),
        "coredis-cluster": lambda: Coredis(nodes=nodes),
        "glide": lambda: Glide(url=url),
        "glide-cluster": lambda: Glide(nodes=nodes),
    }[name]()


def fmt(values: list[float], spec: str = "{:,.0f}") -> str:
    if not values:
        return "–"
    med = spec.format(statistics.median(values))
    return (
        med
        if len(values) == 1
        else f"{med} ({spec.format(min(values))}–{spec.format(max(values))})"
    )


async def amain(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.clients.split(",") if n.strip()]
    redis = RedisServer()
    redis.start()
    try:
        cluster = LocalCluster().start()
    except BaseException:
        redis.close()
        raise
    try:
        assert redis.proc is not None
        print(
            f"# redis :{redis.port}, cluster {cluster.nodes}; "
            f"{args.runs} run(s), {args.ops} ops per mix",
            flush=True,
        )
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        labels: dict[str, str] = {}
        for run in range(args.runs):
            for name in names:
                cand = make(name, redis.url, cluster.nodes)
                if isinstance(cand, str):
                    if run == 0:
                        print(f"# {name}: skipped, {cand}", flush=True)
                    continue
                labels[name] = cand.label
                on_cluster = "cluster" in name
                redis.flush()
                cluster.flush()
                load_scripts(cluster.ports if on_cluster else [redis.port])
                pids = cluster.pids if on_cluster else [redis.proc.pid]
                try:
                    out = await asyncio.wait_for(measure(cand, args, pids), 300)
                except Exception as exc:  # one candidate failing must not hide the rest
                    print(f"# run {run + 1} {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    continue
                results[name].append(out)
                print(
                    f"# run {run + 1} {name}: "
                    + json.dumps({k: round(v, 1) for k, v in out.items()}),
                    flush=True,
                )
        print()
        print(
            "| client | registry ops/s | client µs/op | Redis µs/op "
            "| send ops/s | client µs/op | Redis µs/op |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, runs in results.items():
            if not runs:
                continue
            cells = [labels[name]]
            for mix in ("registry", "send"):
                cells.append(fmt([r[f"{mix}_ops_s"] for r in runs]))
                cells.append(fmt([r[f"{mix}_client_us"] for r in runs], "{:.0f}"))
                cells.append(fmt([r[f"{mix}_redis_us"] for r in runs], "{:.1f}"))
            print("| " + " | ".join(cells) + " |")
        if args.json:
            args.json.write_text(json.dumps({"labels": labels, "runs": results}, indent=1))
    finally:
        cluster.close()
        redis.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Redis clients on our operation mix")
    p.add_argument(
        "--clients", default=",".join(CANDIDATES), help=f"comma-separated of {CANDIDATES}"
    )
    p.add_argument("--ops", type=int, default=20_000, help="operations per mix")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=200, help="tasks issuing registry calls")
    p.add_argument("--send-concurrency", type=int, default=100, help="tasks issuing sends")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path)
    asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    main()
