"""Throttling of failed CONNECTs, per login and per client address, on one node.

A failed CONNECT (a wrong password or token) is counted twice: once for its ``login`` and
once for the client's address. When either count reaches its limit within
``LOGIN_FAILURE_WINDOW`` seconds (``LOGIN_FAILURES_PER_LOGIN``, 10, and
``LOGIN_FAILURES_PER_ADDRESS``, 30, by default), further CONNECTs for that login or from
that address are refused before any credential is checked, with an ERROR
``too many failed logins: retry in N s``, until the oldest counted failure leaves the
window. A successful CONNECT does not reset the counts: it would let an attacker who knows
one password reset the count for the address.

The counts are kept in this process, so each node throttles on its own: a client spread
over *n* nodes gets *n* times the limits. That is enough to stop a password-guessing loop
or a reconnect storm from eating a node's CPU (each check costs about half a second); a
cluster-wide limit belongs in front of the nodes (the load balancer). Memory is bounded:
at most ``MAX_KEYS`` logins and addresses are tracked, the oldest forgotten first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from stomp_cluster.conf import get_settings

__all__ = ["LoginThrottle", "login_throttle", "retry_message"]

#: Logins plus addresses tracked at most; past it the least recently failed are forgotten.
MAX_KEYS = 10_000


class LoginThrottle:
    """Counts failed CONNECTs by login and by address in a sliding window."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(login: str | None, address: str | None) -> list[tuple[str, int]]:
        settings = get_settings()
        keys: list[tuple[str, int]] = []
        if login and settings.LOGIN_FAILURES_PER_LOGIN:
            keys.append(("login:" + login, settings.LOGIN_FAILURES_PER_LOGIN))
        if address and settings.LOGIN_FAILURES_PER_ADDRESS:
            keys.append(("address:" + address, settings.LOGIN_FAILURES_PER_ADDRESS))
        return keys

    def retry_after(
        self, login: str | None, address: str | None, now: float | None = None
    ) -> float | None:
        """Seconds until *login* from *address* may try again, or None when it may now."""
        now = time.monotonic() if now is None else now
        window = get_settings().LOGIN_FAILURE_WINDOW
        wait: float | None = None
        with self._lock:
            for key, limit in self._keys(login, address):
                failures = self._failures.get(key)
                if failures is None:
                    continue
                while failures and failures[0] <= now - window:
                    failures.popleft()
                if len(failures) >= limit:
                    # Free again when enough of the oldest failures leave the window.
                    until = failures[len(failures) - limit] + window - now
                    wait = until if wait is None else max(wait, until)
        return wait

    def failed(self, login: str | None, address: str | None, now: float | None = None) -> None:
        """Count one failed CONNECT of *login* from *address*."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key, limit in self._keys(login, address):
                failures = self._failures.pop(key, None) or deque(maxlen=limit)
                failures.append(now)
                self._failures[key] = failures  # re-inserted: the most recent last
            while len(self._failures) > MAX_KEYS:
                del self._failures[next(iter(self._failures))]

    def reset(self) -> None:
        """Forget every failure (tests)."""
        with self._lock:
            self._failures.clear()


#: This node's throttle.
login_throttle = LoginThrottle()


def retry_message(seconds: float) -> str:
    """The ERROR message of a throttled CONNECT."""
    return f"too many failed logins: retry in {max(1, math.ceil(seconds))} s"
