"""Run the benchmark workloads W1–W6 against every stack and print one table.

Usage (from the repository root, or through ``make bench``)::

    python -m benchmarks.run                  # all stacks, all workloads, 3 interleaved runs
    python -m benchmarks.run --quick          # smoke test: W1 with 2,000 messages, 1 run
    python -m benchmarks.run --stacks stomp-uvicorn --workloads W1,W2 --runs 5
    python -m benchmarks.run --stacks stomp-uvicorn --workloads W5 --runs 1   # failover storm
    python -m benchmarks.run --stacks stomp-uvicorn,websockets-bare --workloads W6 --runs 1

This process starts its own redis-server (free loopback port), two nodes per stack, and a
sender process, and is itself the single load generator. Everything it starts, it stops.
See benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Recorder, close_all, connect_all, percentile
from benchmarks.redis_cluster import LocalCluster
from benchmarks.storm import StormClient, Tally
from tests.support.nodes import (
    APPLICATION,
    REPO_ROOT,
    AsgiNode,
    manage,
    prepare_database,
    server_env,
)
from tests.support.procs import RedisServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") / 1024


# -- processes -----------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of *pid* from /proc, in seconds (0 when gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except OSError:
        return 0.0


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class AppNode(AsgiNode):
    """An :class:`AsgiNode` serving another ASGI application and settings module."""

    def __init__(self, *args: Any, app: str, settings: str, **kwargs: Any) -> None:
        env = dict(kwargs.pop("env", None) or {})
        env["DJANGO_SETTINGS_MODULE"] = settings
        super().__init__(*args, env=env, **kwargs)
        self.app = app

    def command(self) -> list[str]:
        parts = [self.app if part == APPLICATION else part for part in super().command()]
        # The baselines have no lifespan handler: uvicorn's "on" (the testproject's)
        # would refuse to start them.
        return [
            "auto" if i and parts[i - 1] == "--lifespan" else part for i, part in enumerate(parts)
        ]


class BareNode(AsgiNode):
    """The bare ``websockets`` server of ``benchmarks/baselines/ws_server.py``."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.baselines.ws_server", "--port", str(self.port)]


@dataclass(frozen=True)
class Stack:
    name: str
    label: str
    server: str
    dialect: str  # "stomp" or "plain"
    env: dict[str, str]
    app: str | None = None  # None: our testproject
    settings: str | None = None
    #: sender.py modes for unicast and for broadcast.
    modes: tuple[str, str] = ("group-user", "group-topic")
    #: Only a WebSocket server (W4 and W6): no Redis, no sender.
    bare: bool = False
    #: Nodes and sender import hiredis (from ``--hiredis-path``), so redis-py parses with it.
    hiredis: bool = False
    #: On the 3-primary Redis Cluster: ``REDIS_CLUSTER_NODES`` set and ``REDIS_URL`` unset,
    #: so that a testproject without cluster support fails instead of measuring one Redis.
    cluster: bool = False

    def redis_url(self, ctx: Context) -> str | None:
        return None if self.cluster else ctx.redis.url

    def _env(self, ctx: Context) -> dict[str, str]:
        env = {**self.env, "STOMP_LOG_LEVEL": "WARNING"}
        if self.cluster:
            assert ctx.cluster is not None
            env["REDIS_CLUSTER_NODES"] = ctx.cluster.nodes
        if self.hiredis:
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(ctx.args.hiredis_path)])
        return env

    @property
    def ours(self) -> bool:
        return self.app is None and not self.bare

    def node(self, node_id: str, ctx: Context) -> AsgiNode:
        env = self._env(ctx)
        if self.bare:
            return BareNode(node_id, db_path=ctx.db, server=self.server, env=env, log_dir=ctx.logs)
        if self.ours:
            return AsgiNode(
                node_id,
                db_path=ctx.db,
                redis_url=self.redis_url(ctx),
                server=self.server,
                env=env,
                log_dir=ctx.logs,
            )
        return AppNode(
            node_id,
            db_path=ctx.db,
            redis_url=self.redis_url(ctx),
            server=self.server,
            env=env,
            log_dir=ctx.logs,
            app=self.app or "",
            settings=self.settings or "",
        )

    def sender_env(self, ctx: Context) -> dict[str, str]:
        extra = self._env(ctx)
        if self.settings:
            extra["DJANGO_SETTINGS_MODULE"] = self.settings
        return server_env(
            db_path=ctx.db, redis_url=self.redis_url(ctx), node_id="bench-sender", extra=extra
        )

    def url(self, node: AsgiNode, user: str | None, topic: bool = False) -> str:
        if self.ours:
            return node.ws_url
        query = f"user={user or 'anonymous'}" + ("&topic=1" if topic else "")
        if self.dialect == "sio":
            return f"ws://{node.host}:{node.port}/socket.io/?EIO=4&transport=websocket&{query}"
        return f"{node.ws_url}?{query}"


_BASELINE = "benchmarks.baselines.channels_app:application"
_BASELINE_SETTINGS = "benchmarks.baselines.settings"
_OURS = ("user", "topic")

STACKS = {
    s.name: s
    for s in [
        Stack("stomp-daphne", "stomp_cluster, daphne", "daphne", "stomp", {}, modes=_OURS),
        Stack("stomp-uvicorn", "stomp_cluster, uvicorn", "uvicorn", "stomp", {}, modes=_OURS),
        # The same with hiredis, redis-py's C reply parser, installed: side by side.
        # On a 3-primary Redis Cluster (needs the testproject's REDIS_CLUSTER_NODES support).
        Stack(
            "stomp-uvicorn-cluster",
            "stomp_cluster, uvicorn, Redis Cluster (3 primaries)",
            "uvicorn",
            "stomp",
            {},
            modes=_OURS,
            cluster=True,
        ),
        Stack(
            "stomp-uvicorn-cluster-hiredis",
            "stomp_cluster, uvicorn, Redis Cluster (3 primaries), with hiredis",
            "uvicorn",
            "stomp",
            {},
            modes=_OURS,
            cluster=True,
            hiredis=True,
        ),
        Stack(
            "stomp-uvicorn-hiredis",
            "stomp_cluster, uvicorn, with hiredis",
            "uvicorn",
            "stomp",
            {},
            modes=_OURS,
            hiredis=True,
        ),
        # The same with the channel-layer transport (channels_redis core layer, capacity
        # 10,000): what RedisTransport and the one-trip send bought, in the same run.
        Stack(
            "stomp-uvicorn-layer",
            "stomp_cluster, uvicorn, ChannelLayerTransport",
            "uvicorn",
            "stomp",
            {"STOMP_TRANSPORT": "layer"},
            modes=_OURS,
        ),
        Stack(
            "channels-core-daphne",
            "Channels group_send, daphne, RedisChannelLayer",
            "daphne",
            "plain",
            {"BENCH_LAYER": "core"},
            _BASELINE,
            _BASELINE_SETTINGS,
        ),
        Stack(
            "channels-pubsub-daphne",
            "Channels group_send, daphne, RedisPubSubChannelLayer",
            "daphne",
            "plain",
            {"BENCH_LAYER": "pubsub"},
            _BASELINE,
            _BASELINE_SETTINGS,
        ),
        Stack(
            "channels-pubsub-uvicorn",
            "Channels group_send, uvicorn, RedisPubSubChannelLayer",
            "uvicorn",
            "plain",
            {"BENCH_LAYER": "pubsub"},
            _BASELINE,
            _BASELINE_SETTINGS,
        ),
        Stack(
            "socketio-uvicorn",
            "python-socketio + AsyncRedisManager, uvicorn",
            "uvicorn",
            "sio",
            {},
            "benchmarks.baselines.socketio_app:application",
            _BASELINE_SETTINGS,
            modes=("sio-user", "sio-topic"),
        ),
        # The floor under every ASGI node's memory per connection (W4, W6 only).
        Stack(
            "websockets-bare",
            "bare websockets server (no Redis)",
            "uvicorn",
            "plain",
            {},
            bare=True,
        ),
    ]
}


#: What ``make bench`` runs: the variants (hiredis, Redis Cluster) only when named.
DEFAULT_STACKS = [name for name, s in STACKS.items() if not (s.hiredis or s.cluster)]


@dataclass
class Context:
    args: argparse.Namespace
    redis: RedisServer
    db: Path
    logs: Path
    tokens: dict[str, str]
    cluster: LocalCluster | None = None

    def redis_pids(self, stack: Stack) -> list[int | None]:
        """The Redis processes *stack* uses, for their CPU seconds."""
        if stack.cluster and self.cluster is not None:
            return list(self.cluster.pids)
        return [self.redis.proc.pid if self.redis.proc else None]

    def flush(self, stack: Stack) -> None:
        if stack.cluster and self.cluster is not None:
            self.cluster.flush()
        else:
            self.redis.flush()


def create_users(db: Path, count: int) -> dict[str, str]:
    """Create users bench0..bench<count-1> (idempotent) and return {username: token}."""
    code = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from stomp_cluster.tokens import connection_token\n"
        "User = get_user_model()\n"
        "out = {}\n"
        f"for i in range({count}):\n"
        "    u, made = User.objects.get_or_create(username=f'bench{i}')\n"
        "    if made:\n"
        "        u.set_unusable_password(); u.save()\n"
        "    out[u.username] = connection_token(u, max_age=6 * 3600)\n"
        "print(json.dumps(out))\n"
    )
    out = manage("shell", "-c", code, db_path=db, timeout=300)
    return json.loads(out.strip().splitlines()[-1])


# -- sender --------------------------------------------------------------------------------


class Sender:
    """``benchmarks/sender.py`` in its own process: started, warmed up, then told to go."""

    def __init__(self, stack: Stack, ctx: Context, argv: list[str]) -> None:
        self.stack, self.ctx, self.argv = stack, ctx, argv
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Sender:
        # Its log goes to a file: a pipe nobody reads fills up (64 KiB) and blocks the
        # sender in the middle of a run, as its warnings did in W5.
        self.ctx.logs.mkdir(parents=True, exist_ok=True)
        self.log = self.ctx.logs / f"sender-{self.stack.name}.log"
        stderr = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.sender",
            *self.argv,
            cwd=REPO_ROOT,
            env=self.stack.sender_env(self.ctx),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        stderr.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"sender did not start: {line!r} {await self._stderr()}")
        return self

    async def _stderr(self) -> str:
        await asyncio.sleep(0.5)
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def run(self, limit: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), limit)
        if not line:
            raise RuntimeError(f"sender failed: {await self._stderr()}")
        return json.loads(line)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- workloads -----------------------------------------------------------------------------


async def unicast(
    stack: Stack,
    ctx: Context,
    nodes: list[AsgiNode],
    clients_users: list[str],
    recorder: Recorder,
    *,
    count: int,
    window: int,
    rate: float,
) -> dict[str, float]:
    """Shared by W1 (closed loop) and W2 (open loop at *rate*)."""
    mode = stack.modes[0]
    argv = [
        "--mode",
        mode,
        "--users",
        ",".join(clients_users),
        "--count",
        str(count),
        "--window",
        str(window),
        "--rate",
        str(rate),
    ]
    procs = {
        "nodes": [n.pid for n in nodes],
        "redis": ctx.redis_pids(stack),
    }
    async with Sender(stack, ctx, argv) as sender:
        before = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        lg0 = self_cpu()
        result = await sender.run(limit=300)
        await recorder.drain(count, idle=3.0, limit=30.0)
    if result["failures"]:
        print(
            f"#   {stack.name} sender failures: {result['failures']}, "
            f"e.g. {result['failure_samples']}",
            flush=True,
        )
    after = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
    delivered = len(recorder.counts)
    span = max(recorder.last_recv - result["t0"], 1e-9)
    return {
        "msg_s": delivered / span,
        "delivered_pct": 100.0 * delivered / count,
        "send_failed": result["failed"],
        "p50": 1000 * percentile(recorder.latencies, 0.50),
        "p90": 1000 * percentile(recorder.latencies, 0.90),
        "p99": 1000 * percentile(recorder.latencies, 0.99),
        "max": 1000 * max(recorder.latencies, default=float("nan")),
        "cpu_nodes": after["nodes"] - before["nodes"],
        "cpu_redis": after["redis"] - before["redis"],
        "cpu_sender": result["cpu"],
        "cpu_loadgen": self_cpu() - lg0,
        "hiredis": float(bool(result.get("hiredis"))),
    }


async def w1_w2(
    stack: Stack, ctx: Context, nodes: list[AsgiNode], which: set[str]
) -> dict[str, dict[str, float]]:
    a = ctx.args
    users = [f"bench{i}" for i in range(a.clients)]
    recorder = Recorder()
    specs = [(stack.url(nodes[1], u), u, ctx.tokens.get(u)) for u in users]
    dest = "/user/queue/bench" if stack.ours else ""
    clients, failed, _ = await connect_all(
        specs, dialect=stack.dialect, destination=dest, recorder=recorder
    )
    out: dict[str, dict[str, float]] = {}
    try:
        if failed:
            raise RuntimeError(f"{failed} of {len(specs)} W1/W2 clients failed to subscribe")
        if "W1" in which:
            out["W1"] = await unicast(
                stack, ctx, nodes, users, recorder, count=a.w1_count, window=a.window, rate=0
            )
        if "W2" in which:
            recorder = Recorder()
            for c in clients:
                c.recorder = recorder
            out["W2"] = await unicast(
                stack,
                ctx,
                nodes,
                users,
                recorder,
                count=int(a.w2_rate * a.w2_seconds),
                window=a.w2_window,
                rate=a.w2_rate,
            )
    finally:
        await close_all(clients)
    return out


async def w3(stack: Stack, ctx: Context, nodes: list[AsgiNode]) -> dict[str, float]:
    a = ctx.args
    recorder = Recorder()
    specs = [
        (stack.url(nodes[i % 2], f"fan{i}", topic=True), None, None) for i in range(a.w3_clients)
    ]
    dest = "/topic/bench" if stack.ours else ""
    clients, failed, _ = await connect_all(
        specs, dialect=stack.dialect, destination=dest, recorder=recorder
    )
    try:
        mode = stack.modes[1]
        argv = ["--mode", mode, "--count", str(a.w3_broadcasts), "--window", "10"]
        n_clients = len(clients)
        expected = n_clients * a.w3_broadcasts
        pids = [n.pid for n in nodes]
        redis_pids = ctx.redis_pids(stack)
        async with Sender(stack, ctx, argv) as sender:
            cpu0 = sum(cpu_seconds(p) for p in pids)
            redis0, lg0 = sum(cpu_seconds(p) for p in redis_pids), self_cpu()
            result = await sender.run(limit=300)
            await recorder.drain(expected, idle=3.0, limit=60.0)
        span = max(recorder.last_recv - result["t0"], 1e-9)
        return {
            "deliveries_s": recorder.deliveries / span,
            "delivered_pct": 100.0 * recorder.deliveries / expected if expected else 0.0,
            "last_p50": 1000 * percentile(list(recorder.completion.values()), 0.5),
            "last_max": 1000 * max(recorder.completion.values(), default=float("nan")),
            "subscribe_failed": failed,
            "cpu_nodes": sum(cpu_seconds(p) for p in pids) - cpu0,
            "cpu_redis": sum(cpu_seconds(p) for p in redis_pids) - redis0,
            "cpu_sender": result["cpu"],
            "cpu_loadgen": self_cpu() - lg0,
        }
    finally:
        await close_all(clients)


async def w4(
    stack: Stack,
    ctx: Context,
    nodes: list[AsgiNode],
    *,
    tokens: bool = False,
    connections: int | None = None,
) -> dict[str, float]:
    """W4, anonymous; with *tokens* (W4T) each CONNECT logs in with a connection token,
    round-robin over the bench users, as an authenticated client fleet reconnects.
    W6 is W4 with *connections* (20,000) instead of 5,000, on node B, which W4 left
    untouched: memory freed by W4's closed connections would hide W6's growth."""
    a = ctx.args
    count = connections or a.w4_connections
    node = nodes[1] if connections else nodes[0]
    recorder = Recorder()
    rss0 = rss_kib(node.pid)
    users = sorted(ctx.tokens)
    specs: list[tuple[str, str | None, str | None]] = []
    for i in range(count):
        if tokens:
            user = users[i % len(users)]
            specs.append((stack.url(node, user), user, ctx.tokens[user]))
        else:
            specs.append((stack.url(node, f"idle{i}"), None, None))
    dest = "/topic/idle" if stack.ours else ""
    clients, failed, elapsed = await connect_all(
        specs,
        dialect=stack.dialect,
        destination=dest,
        recorder=recorder,
        concurrency=100,
        limit=300,
    )
    try:
        await asyncio.sleep(1.0)
        rss1 = rss_kib(node.pid)
        return {
            "conn_s": len(clients) / elapsed,
            "kib_conn": (rss1 - rss0) / max(len(clients), 1),
            "failed": failed,
            "rss_mib": rss1 / 1024,
        }
    finally:
        await close_all(clients, limit=180)


async def w5(stack: Stack, ctx: Context) -> dict[str, float]:
    """W5, the failover storm: sessions on node B, B SIGKILLed while the sender sends.

    Three fresh nodes A, B, C on a flushed Redis; ``--w5-sessions`` users, each one
    session on B subscribed to ``/user/queue/bench`` (user destinations keep a history);
    the sender sends ``--w5-messages`` per user, round-robin, and B is SIGKILLed once
    ``--w5-kill-at`` of them were delivered. Each session then reconnects to A or C after a
    random delay up to ``--w5-jitter`` s, with ``x-resume-from`` its last message-id.
    """
    a = ctx.args
    ctx.flush(stack)
    nodes = [stack.node(f"bench-{x}", ctx) for x in "abc"]
    for node in nodes:
        node.spawn()
    users = [f"bench{i}" for i in range(a.w5_sessions)]
    tally = Tally()
    clients = [StormClient(i, u, ctx.tokens[u], a.w5_messages, tally) for i, u in enumerate(users)]
    tasks: list[asyncio.Task[None]] = []
    try:
        for node in nodes:
            node.wait_ready()
        await asyncio.sleep(1.0)
        b, survivors = nodes[1], [nodes[0], nodes[2]]
        fallbacks = [n.ws_url for n in survivors]
        started = time.monotonic()
        for i in range(0, len(clients), 100):  # 100 connects at a time
            wave = clients[i : i + 100]
            for c in wave:
                tasks.append(asyncio.create_task(c.run(b.ws_url, fallbacks, a.w5_jitter)))
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in wave)), 120)
        connect_s = time.monotonic() - started
        failed = [c.failed for c in clients if c.failed]
        if failed:
            raise RuntimeError(f"{len(failed)} W5 sessions failed to subscribe: {failed[0]}")
        count = a.w5_sessions * a.w5_messages
        argv = ["--mode", "user", "--users", ",".join(users), "--count", str(count)]
        argv += ["--window", str(a.window), "--max-seconds", "600", "--rate", str(a.w5_rate)]
        pids = [n.pid for n in survivors]
        async with Sender(stack, ctx, argv) as sender:
            sending = asyncio.create_task(sender.run(limit=900))
            give_up = time.monotonic() + 600
            while tally.deliveries < a.w5_kill_at * count and not sending.done():
                if time.monotonic() > give_up:
                    raise RuntimeError(f"W5: only {tally.deliveries} of {count} delivered")
                await asyncio.sleep(0.01)
            assert b.pid is not None
            os.kill(b.pid, signal.SIGKILL)
            killed = time.monotonic()
            cpu0 = sum(cpu_seconds(p) for p in pids)
            delivered_at_kill = tally.deliveries
            newest_at_kill = max((max(c.seen, default=-1) for c in clients), default=-1)
            cpu_resub: float | None = None
            resubscribed_s = float("nan")
            deadline = killed + a.w5_limit
            sent_all = float("nan")
            while time.monotonic() < deadline:
                if sent_all != sent_all and sending.done():
                    sent_all = time.monotonic()
                if cpu_resub is None and tally.resubscribed >= len(clients):
                    cpu_resub = sum(cpu_seconds(p) for p in pids) - cpu0
                    resubscribed_s = tally.last_resubscribed - killed
                if all(c.done_at is not None for c in clients) and sending.done():
                    break
                await asyncio.sleep(0.05)
            cpu_catch_up = sum(cpu_seconds(p) for p in pids) - cpu0
            result = await sending
            await asyncio.sleep(2.0)  # anything sent twice would arrive by now
        if tally.retry_reasons:
            print(f"#   W5 failed reconnect attempts by reason: {tally.retry_reasons}", flush=True)
        if result["failures"]:
            print(f"#   W5 sender failures: {result['failures']}, e.g. {result['failure_samples']}")
        done = [c.done_at for c in clients if c.done_at is not None]
        return {
            "sessions": len(clients),
            "messages": count,
            "connect_s": connect_s,
            "delivered_before_kill_pct": 100.0 * delivered_at_kill / count,
            "catch_up_s": (max(done) - killed) if len(done) == len(clients) else float("nan"),
            # The sender may still be sending long after the kill: how long after its last
            # send every session had everything, and when that last send was.
            "sent_all_s": sent_all - killed,
            "after_last_send_s": (max(done) - max(sent_all, killed))
            if len(done) == len(clients)
            else float("nan"),
            "resubscribed_s": resubscribed_s,
            "lost": sum(a.w5_messages - len(c.seen) for c in clients),
            # Lost messages older than a message the same session did receive: holes
            # that a resume from the last message-id cannot fill.
            "sessions_with_loss": sum(1 for c in clients if len(c.seen) < a.w5_messages),
            "lost_sent_before_kill": sum(
                1
                for c in clients
                for n in range(c.index, min(newest_at_kill + 1, count), len(clients))
                if n not in c.seen
            ),
            "lost_holes": sum(
                sum(
                    1
                    for n in range(c.index, max(c.seen, default=-1), len(clients))
                    if n not in c.seen
                )
                for c in clients
            ),
            "duplicates": sum(c.duplicates for c in clients),
            "replayed": sum(c.replayed for c in clients),
            "gaps_announced": sum(c.gaps for c in clients),
            "reconnects": tally.reconnects,
            "reconnect_retries": tally.reconnect_failures,
            "send_failed": result["failed"],
            "send_missed_nodes": result.get("missed_nodes", 0),
            "send_s": result["elapsed"],
            "cpu_ms_per_reconnect": 1000
            * (cpu_resub if cpu_resub is not None else float("nan"))
            / max(tally.reconnects, 1),
            "cpu_catch_up": cpu_catch_up,
        }
    finally:
        for c in clients:
            c.stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in nodes:
            node.terminate(timeout=10)


# -- runs and the table --------------------------------------------------------------------


async def measure_stack(
    stack: Stack, ctx: Context, workloads: set[str]
) -> dict[str, dict[str, float]]:
    """Start two fresh nodes of *stack* on a flushed Redis, run *workloads*, stop them.

    W5 starts three nodes of its own afterwards."""
    if stack.bare:
        workloads = workloads & {"W4", "W6"}
    elif not stack.ours:
        workloads = workloads - {"W5"}
    ctx.flush(stack)
    nodes = [stack.node("bench-a", ctx), stack.node("bench-b", ctx)]
    for node in nodes:
        node.spawn()
    out: dict[str, dict[str, float]] = {}
    try:
        for node in nodes:
            node.wait_ready()
        await asyncio.sleep(1.0)  # let the nodes register (presence heartbeat)
        if workloads & {"W1", "W2"}:
            out.update(await w1_w2(stack, ctx, nodes, workloads))
        if "W3" in workloads:
            out["W3"] = await w3(stack, ctx, nodes)
        if "W4" in workloads:
            out["W4"] = await w4(stack, ctx, nodes)
        if "W4T" in workloads and stack.ours:
            out["W4T"] = await w4(stack, ctx, nodes, tokens=True)
        if "W6" in workloads:
            out["W6"] = await w4(stack, ctx, nodes, connections=ctx.args.w6_connections)
    finally:
        for node in nodes:
            node.terminate(timeout=10)
    if "W5" in workloads:
        out["W5"] = await w5(stack, ctx)
    return out


def summarise(values: list[float], fmt: str = "{:.0f}") -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "–"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(results: dict[str, list[dict[str, dict[str, float]]]], workloads: set[str]) -> str:
    cols = ["stack"]
    if "W1" in workloads:
        cols += ["W1 msg/s", "W1 deliv %", "W1 CPU s nodes/sender/redis/loadgen"]
    if "W2" in workloads:
        cols += ["W2 p50/p90/p99/max ms", "W2 deliv %", "W2 CPU s"]
    if "W3" in workloads:
        cols += ["W3 deliveries/s", "W3 last client p50/max ms", "W3 deliv %", "W3 CPU s"]
    if "W4" in workloads:
        cols += ["W4 conn/s", "W4 KiB/conn"]
    if "W4T" in workloads:
        cols += ["W4T (tokens) conn/s"]
    if "W5" in workloads:
        cols += [
            "W5 sessions/messages",
            "W5 catch-up s (after last send)",
            "W5 all resubscribed s",
            "W5 lost/dup/gaps/replayed",
            "W5 CPU ms/reconnect",
        ]
    if "W6" in workloads:
        cols += ["W6 conn/s", "W6 KiB/conn"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, runs in results.items():

        def get(w: str, key: str, runs: list[dict[str, dict[str, float]]] = runs) -> list[float]:
            return [r[w][key] for r in runs if w in r and key in r[w]]

        def med(w: str, key: str, fmt: str = "{:.0f}") -> str:
            vals = [v for v in get(w, key) if v == v]
            return fmt.format(statistics.median(vals)) if vals else "–"

        def cpu(w: str) -> str:
            keys = ("cpu_nodes", "cpu_sender", "cpu_redis", "cpu_loadgen")
            return "/".join(med(w, k, "{:.1f}") for k in keys)

        row = [STACKS[name].label]
        if "W1" in workloads:
            row += [
                summarise(get("W1", "msg_s")),
                summarise(get("W1", "delivered_pct"), "{:.1f}"),
                cpu("W1"),
            ]
        if "W2" in workloads:
            row += [
                "/".join(med("W2", k, "{:.1f}") for k in ("p50", "p90", "p99", "max")),
                summarise(get("W2", "delivered_pct"), "{:.1f}"),
                cpu("W2"),
            ]
        if "W3" in workloads:
            row += [
                summarise(get("W3", "deliveries_s")),
                "/".join(med("W3", k) for k in ("last_p50", "last_max")),
                summarise(get("W3", "delivered_pct"), "{:.1f}"),
                cpu("W3"),
            ]
        if "W4" in workloads:
            row += [summarise(get("W4", "conn_s")), summarise(get("W4", "kib_conn"), "{:.1f}")]
        if "W4T" in workloads:
            row += [summarise(get("W4T", "conn_s"))]
        if "W5" in workloads:
            row += [
                "/".join(med("W5", k) for k in ("sessions", "messages")),
                summarise(get("W5", "catch_up_s"), "{:.1f}")
                + f" ({med('W5', 'after_last_send_s', '{:.1f}')})",
                summarise(get("W5", "resubscribed_s"), "{:.1f}"),
                "/".join(
                    med("W5", k) for k in ("lost", "duplicates", "gaps_announced", "replayed")
                ),
                summarise(get("W5", "cpu_ms_per_reconnect"), "{:.2f}"),
            ]
        if "W6" in workloads:
            row += [summarise(get("W6", "conn_s")), summarise(get("W6", "kib_conn"), "{:.1f}")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="stomp_cluster benchmarks W1–W4 (see benchmarks/README.md)"
    )
    p.add_argument(
        "--stacks",
        default=",".join(DEFAULT_STACKS),
        help=f"comma-separated, of: {', '.join(STACKS)}; default all but the hiredis and "
        "cluster variants",
    )
    p.add_argument(
        "--workloads",
        default=None,
        help="comma-separated of W1,W2,W3,W4,W4T,W5,W6; default W1–W4T (W1 with --quick); "
        "W5 and W6 only when named",
    )
    p.add_argument(
        "--runs", type=int, default=3, help="interleaved runs per stack (median, min–max)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: W1 only, 2,000 messages, 1 run"
    )
    p.add_argument("--clients", type=int, default=100, help="W1/W2 clients (one user each)")
    p.add_argument("--w1-count", type=int, default=20_000)
    p.add_argument("--window", type=int, default=100, help="W1 sends in flight")
    p.add_argument("--w2-rate", type=float, default=1000.0)
    p.add_argument("--w2-seconds", type=float, default=10.0)
    p.add_argument("--w2-window", type=int, default=100, help="W2 sends in flight")
    p.add_argument("--w3-clients", type=int, default=1000)
    p.add_argument("--w3-broadcasts", type=int, default=100)
    p.add_argument("--w4-connections", type=int, default=5000)
    p.add_argument("--w5-sessions", type=int, default=5000, help="W5 sessions on node B")
    p.add_argument("--w5-messages", type=int, default=100, help="W5 messages per session")
    p.add_argument(
        "--w5-kill-at", type=float, default=0.5, help="W5: SIGKILL B once this share arrived"
    )
    p.add_argument(
        "--w5-jitter", type=float, default=1.0, help="W5: most seconds a client waits to reconnect"
    )
    p.add_argument("--w5-limit", type=float, default=120.0, help="W5: most seconds after the kill")
    p.add_argument(
        "--w5-rate", type=float, default=0.0, help="W5 sends/s (0: as fast as the window allows)"
    )
    p.add_argument("--w6-connections", type=int, default=20_000)
    p.add_argument(
        "--hiredis-path",
        type=Path,
        default=Path(tempfile.gettempdir()) / "stomp-cluster-bench-hiredis",
        help="where hiredis is installed (pip --target) for the *-hiredis stacks",
    )
    p.add_argument("--json", type=Path, help="also write every run's raw numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.w1_count = 1, 2000
        args.workloads = args.workloads or "W1"
        args.w2_seconds, args.w3_clients, args.w3_broadcasts, args.w4_connections = (
            3.0,
            200,
            20,
            500,
        )
        args.w5_sessions, args.w5_messages, args.w6_connections = 300, 20, 2000
    args.workloads = args.workloads or "W1,W2,W3,W4,W4T"
    return args


async def amain(args: argparse.Namespace) -> int:
    workloads = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = [s for s in stacks if s not in STACKS]
    if unknown:
        sys.exit(f"unknown stacks: {unknown}; known: {list(STACKS)}")
    # 20,000 client sockets here (W6) and as many in a node, which inherits this limit:
    # raise the hard limit when allowed (root), else use the hard limit we have.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 4 * args.w6_connections)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if "W6" in workloads and limit < args.w6_connections + 1000:
        # This process and the node each hold one descriptor per connection.
        args.w6_connections = limit - 1000
        print(
            f"# ulimit -n is {limit} here and cannot be raised: W6 with "
            f"{args.w6_connections} connections",
            flush=True,
        )
    work = Path(tempfile.mkdtemp(prefix="stomp-cluster-bench-"))
    redis = RedisServer()
    redis.start()
    cluster: LocalCluster | None = None
    try:
        db = prepare_database(work / "bench.sqlite3")
        users = max(args.clients, args.w5_sessions if "W5" in workloads else 0)
        tokens = create_users(db, users)
        if any(STACKS[s].cluster for s in stacks):
            cluster = LocalCluster().start()
            print(f"# Redis Cluster {cluster.nodes}", flush=True)
        ctx = Context(args, redis, db, work / "logs", tokens, cluster)
        print(
            f"# redis :{redis.port}, logs in {ctx.logs}, {args.runs} run(s) of {sorted(workloads)} "
            f"on {stacks}",
            flush=True,
        )
        results: dict[str, list[dict[str, dict[str, float]]]] = {s: [] for s in stacks}
        for run in range(args.runs):
            for name in stacks:  # interleaved: every stack once per run
                started = time.monotonic()
                try:
                    out = await measure_stack(STACKS[name], ctx, workloads)
                except Exception as exc:  # one stack failing must not hide the rest
                    print(f"# run {run + 1} {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    continue
                results[name].append(out)
                print(
                    f"# run {run + 1} {name} ({time.monotonic() - started:.0f} s): "
                    + json.dumps(
                        {w: {k: round(v, 2) for k, v in d.items()} for w, d in out.items()}
                    ),
                    flush=True,
                )
        print()
        print(table(results, workloads))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if cluster is not None:
            cluster.close()
        redis.close()
    return 0


def install_hiredis(args: argparse.Namespace) -> None:
    """Install hiredis with pip into ``--hiredis-path`` when a *-hiredis stack needs it."""
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    if (
        any(STACKS[s].hiredis for s in stacks if s in STACKS)
        and not (args.hiredis_path / "hiredis").is_dir()
    ):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(args.hiredis_path)]
            + ["hiredis"],
            check=True,
        )


def main() -> None:
    args = parse_args()
    install_hiredis(args)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
