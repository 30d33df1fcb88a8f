"""Waiting for state that has no event to await: one poll helper, sync and async.

Prefer an event wherever there is one (a frame, a receipt, a close, a marker message sent
after what a test must not see). Some state has none: a registry entry that a sweep
removes, a counter a background task bumps. For those, poll with these helpers.

Deadlines are generous (30 s by default) because the suite runs on loaded two-core
machines where a node may be descheduled for seconds. A condition that holds returns at
once, so a long deadline costs a passing test nothing; it only decides how long a
failing one takes to say so. A test that must show something happens *in time* asserts
its own bound separately, with a margin it can meet honestly.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEFAULT_TIMEOUT", "await_until", "wait_until"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


def wait_until(
    check: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """Call *check* until it returns something truthy, and return that.

    Raises:
        AssertionError: *timeout* seconds passed first; the message names *what*.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_until(
    check: Callable[[], T | Awaitable[T]],
    within: float = DEFAULT_TIMEOUT,
    what: str = "the condition",
    interval: float = 0.005,
) -> T:
    """:func:`wait_until` for async tests: sleeps with ``asyncio.sleep`` between checks,
    so the tasks being waited for run meanwhile. *check* may be a coroutine function
    (``lambda: backend.lost_nodes()``). *within* is the deadline in seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        result: T = await outcome if inspect.isawaitable(outcome) else outcome
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)
