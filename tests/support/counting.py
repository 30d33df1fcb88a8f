"""Counting what reaches Redis: commands on the wire, commands run, and round trips.

The registry, the history and the transport each claim a cost per operation (one round
trip, the same commands whatever the number of sockets). These helpers measure it on a
real redis-server rather than trusting the code's own bookkeeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

__all__ = ["command_calls", "count_round_trips", "monitor_commands"]


async def monitor_commands(url: str, operation: Callable[[], Awaitable[object]]) -> list[str]:
    """Run *operation* and return the commands clients sent meanwhile, in order.

    Uses MONITOR, which marks the commands that scripts run as coming from "lua": those are
    left out, so the list holds exactly what went over the wire. A marker sent from another
    connection after the operation tells where to stop reading.
    """
    watcher = redis.asyncio.Redis.from_url(url)
    marker_client = redis.asyncio.Redis.from_url(url)
    marker = f"end-of-operation-{uuid.uuid4()}"
    try:
        await marker_client.ping()  # connect now, so that its handshake is not counted
        async with watcher.monitor() as monitor:
            await operation()
            await marker_client.echo(marker)
            commands: list[str] = []
            while True:
                entry = await monitor.next_command()
                if marker in entry["command"]:
                    return commands
                if entry["client_type"] != "lua":
                    commands.append(entry["command"])
    finally:
        await watcher.aclose()
        await marker_client.aclose()


async def command_calls(client: redis.asyncio.Redis) -> dict[str, int]:
    """``INFO commandstats`` as ``{command: calls}`` (script-run commands included)."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def count_round_trips(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the pipelines *backend* sends: each is one write and its replies, a round trip.

    *backend* is any Redis backend (presence, history, transport): its ``redis`` connection
    is watched. Returns a list whose length grows by one per round trip (and holds each
    one's size).
    """
    trips: list[int] = []
    original = backend.redis._pipeline

    async def counting(commands):
        trips.append(len(commands))
        return await original(commands)

    monkeypatch.setattr(backend.redis, "_pipeline", counting)
    return trips
