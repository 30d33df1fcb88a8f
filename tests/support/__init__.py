"""Helpers shared by the test suite: plain modules, imported by name.

``conftest.py`` files define fixtures only; anything a test module imports lives here:

- ``procs``: our own redis-server processes (start, stop, kill, restart) on free ports.
- ``redis_cluster``: a Redis Cluster of our own (3 primaries, 3 replicas) that can lose
  a primary.
- ``backends``: Redis backends on a test server, and their key names.
- ``records``: presence records, and a fake remote node in this process's registry.
- ``counting``: what reaches Redis (MONITOR, INFO commandstats, round trips).
- ``waiting``: the one poll-until helper, sync and async, with a generous deadline.
- ``protocol``: spec-like assertions on a bare ``StompConnection``.
- ``communicator``: users, logins and assertions for in-process consumer tests.
- ``nodes``, ``cluster``: real daphne/uvicorn nodes and clusters of them; the CLI.
- ``senders``: sender processes that say what each send returned (fault tests).
- ``faults``: the census of a fault test (delivered, closed, deaf, lost unannounced).
- ``crowd``: thousands of STOMP sessions over raw WebSockets, on a loop of their own.
- ``clients``, ``stompjs``, ``http``: real STOMP clients (stomp.py, raw WebSocket,
  @stomp/stompjs under Node) and a Django test-project HTTP session.
"""

from __future__ import annotations

__all__: list[str] = []
