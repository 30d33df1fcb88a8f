"""The sending side of a benchmark: one process, like a web worker on node A.

Run by ``benchmarks/run.py`` with the environment of a node (``REDIS_URL``,
``DJANGO_SETTINGS_MODULE``). It waits for a line on stdin ("go"), so that Django's start-up
is not counted, then sends COUNT messages and prints one JSON line with what happened.

Bodies are ``"<seq> <time.time()>"``: the load generator computes latency from the
timestamp and loss from the sequence numbers.

Modes:

* ``user``: our ``asend_to_user(user, "/queue/bench", body)``, users round-robin.
* ``topic``: our ``asend_to_destination("/topic/bench", body)``.
* ``group-user`` / ``group-topic``: the Channels baseline, ``group_send`` to the group
  ``user.<name>`` or ``topic.bench``.
* ``sio-user`` / ``sio-topic``: the python-socketio baseline, a write-only
  ``AsyncRedisManager.emit`` to the room ``user.<name>`` or ``topic.bench``.

``--window`` bounds the sends in flight; ``--rate`` (messages/s) makes the loop open:
each send starts on schedule unless the window is full, and its body carries the
scheduled time, so waiting for the window counts as latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _hiredis() -> bool:
    """Whether redis-py parses replies with hiredis in this process."""
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


async def _main(args: argparse.Namespace) -> dict[str, object]:
    users = [u for u in args.users.split(",") if u] if args.users else []
    if args.mode.startswith("sio-"):
        import socketio

        manager = socketio.AsyncRedisManager(
            os.environ["REDIS_URL"], channel="bench", write_only=True
        )
        room_of = (
            (lambda n: f"user.{users[n % len(users)]}")
            if args.mode == "sio-user"
            else (lambda n: "topic.bench")
        )

        async def send(n: int, body: str) -> None:
            await manager.emit("bench", body, room=room_of(n))

    else:
        import django

        django.setup()
        from channels.layers import get_channel_layer

        layer = get_channel_layer()

    if args.mode.startswith("sio-"):
        pass  # send() is defined above
    elif args.mode == "user":
        from stomp_cluster import asend_to_user

        async def send(n: int, body: str) -> object:
            return await asend_to_user(users[n % len(users)], "/queue/bench", body)

    elif args.mode == "topic":
        from stomp_cluster import asend_to_destination

        async def send(n: int, body: str) -> object:
            return await asend_to_destination("/topic/bench", body)

    elif args.mode == "group-user":

        async def send(n: int, body: str) -> None:
            await layer.group_send(
                f"user.{users[n % len(users)]}", {"type": "bench.message", "text": body}
            )

    else:

        async def send(n: int, body: str) -> None:
            await layer.group_send("topic.bench", {"type": "bench.message", "text": body})

    # Warm the connection pools (and our node table) before the clock starts.
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    window = asyncio.Semaphore(args.window)
    failures: dict[str, int] = {}
    samples: dict[str, str] = {}
    late = 0
    missed = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, stamp: float) -> None:
        nonlocal missed
        try:
            delivery = await send(n, f"{n} {stamp:.6f}")
            # Stored in the history but not pushed to some node (its inbox full, or the
            # node dead): its clients recover it only by resuming.
            if getattr(delivery, "missed_nodes", 0):
                missed += 1
        except Exception as exc:  # counted and reported, not raised
            name = type(exc).__name__
            failures[name] = failures.get(name, 0) + 1
            samples.setdefault(name, str(exc)[:300])
        finally:
            window.release()

    cpu0 = _cpu_seconds()
    t0 = time.time()
    start = time.monotonic()
    deadline = start + args.max_seconds
    sent = 0
    for n in range(args.count):
        if args.rate:
            delay = start + n / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1
        if time.monotonic() > deadline:
            break
        await window.acquire()
        # Open loop: stamp the scheduled time, so that time spent waiting for the window
        # counts as latency (no coordinated omission).
        stamp = t0 + n / args.rate if args.rate else time.time()
        task = asyncio.create_task(one(n, stamp))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.wait(set(tasks), timeout=max(1.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - start
    return {
        "sent": sent,
        "failed": sum(failures.values()),
        "failures": failures,
        "failure_samples": samples,
        "late": late,
        "missed_nodes": missed,
        "t0": t0,
        "elapsed": elapsed,
        "send_rate": sent / elapsed if elapsed else 0.0,
        "cpu": _cpu_seconds() - cpu0,
        "hiredis": _hiredis(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("user", "topic", "group-user", "group-topic", "sio-user", "sio-topic"),
        required=True,
    )
    parser.add_argument("--users", default="", help="comma-separated usernames")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
