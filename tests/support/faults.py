"""Counting what users see after a fault: delivered, closed, open but deaf, lost unannounced.

A fault test gives every client one user queue stream (numbered messages sent by a sender
process, :mod:`tests.support.senders`) and, optionally, a topic. After the fault and once
the cluster has converged, it sends *probes* (more numbered messages to the user, more
messages to the topic): every socket still open must receive them. Then
:func:`take_census` counts, client by client:

* ``delivered``: stream and probe messages received, live and by resuming;
* ``closed``: sockets the server closed; the ERROR they got says to resume (``x-resume-from``),
  and each is resumed on a live node from the last ``message-id`` it saw, as a client
  told so would do;
* ``deaf``: sockets still open that missed a probe (must be 0);
* ``lost_announced``: acknowledged messages a client never got, where the server told it
  so (``x-recovered: false`` on a RECEIPT or MESSAGE, or a gap MESSAGE ``x-gap: true``);
* ``lost_silently``: acknowledged messages a client never got and was not told about
  (must be 0);
* ``duplicated`` and ``disordered``: clients that got a message twice, or out of order.

Sends that raised to the sender (``failed``) were announced to the caller and are not
expected anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.clients import StompPyClient
from tests.support.waiting import wait_until

__all__ = ["Census", "FaultClient", "log_count", "numbers", "take_census"]


def log_count(log: str, marker: str) -> int:
    """How many events of a node's log contain *marker*.

    A node's log has each record twice, once with a timestamp: those lines are left out.
    """
    return sum(1 for line in log.splitlines() if marker in line and not line[:4].isdigit())


def numbers(frames: Sequence[Any]) -> list[int]:
    """The numbered bodies of stream MESSAGEs (gap MESSAGEs, with empty bodies, left out)."""
    return [int(frame.body) for frame in frames if str(frame.body).strip().isdigit()]


def gap_announced(client: StompPyClient) -> bool:
    """Whether the server told *client* that it could not recover everything."""
    frames = [*client.listener.receipts, *client.listener.messages]
    return any(
        frame.headers.get("x-recovered") == "false" or frame.headers.get("x-gap") == "true"
        for frame in frames
    )


@dataclass
class FaultClient:
    """One client of a fault test: its socket, its node, and what it subscribed to."""

    client: StompPyClient
    node_id: str
    queue: str  # the user destination it subscribed to, /user/queue/...
    topic: str | None = None

    @property
    def closed(self) -> bool:
        listener = self.client.listener
        return bool(listener.errors or listener.disconnected)

    def error_message(self) -> str:
        errors = self.client.listener.errors
        return errors[0].headers.get("message", "") if errors else ""

    def stream(self) -> list[Any]:
        messages = self.client.listener.messages
        return [m for m in messages if m.headers.get("destination") == self.queue]

    def topic_bodies(self) -> set[str]:
        messages = self.client.listener.messages
        return {str(m.body) for m in messages if m.headers.get("destination") == self.topic}


@dataclass
class Census:
    """What the clients of one fault test saw; see the module documentation."""

    clients: int = 0
    delivered: int = 0
    closed: int = 0
    deaf: int = 0
    lost_announced: int = 0
    lost_silently: int = 0
    raised_to_sender: int = 0
    duplicated: list[str] = field(default_factory=list)
    disordered: list[str] = field(default_factory=list)
    close_messages: set[str] = field(default_factory=set)
    silent: dict[str, list[int]] = field(default_factory=dict)

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.clients} clients: delivered={self.delivered} "
            f"closed={self.closed} deaf={self.deaf} lost_announced={self.lost_announced} "
            f"lost_without_notice={self.lost_silently} raised_to_sender="
            f"{self.raised_to_sender} duplicated={self.duplicated} "
            f"disordered={self.disordered} close_messages={sorted(self.close_messages)} "
            f"silent={ {k: v[:10] for k, v in self.silent.items()} }"
        )


def take_census(
    clients: Sequence[FaultClient],
    *,
    expected: set[int],
    probes: set[int],
    topic_probes: set[str],
    resume: Callable[[FaultClient, str], StompPyClient],
    raised: int = 0,
    wait: float = 30.0,
) -> Census:
    """Count what each client saw (see the module documentation).

    Args:
        clients: the clients there were before the fault, all of one user.
        expected: every message acknowledged to the sender (stream and probes).
        probes: the acknowledged probe messages, sent once the cluster converged.
        topic_probes: the bodies sent to the clients' topic after convergence.
        resume: ``resume(client, cursor)`` connects a new client for *client*'s user on
            a live node, subscribes to its queue with ``x-resume-from: cursor`` and
            returns it.
        raised: how many sends raised to the sender.
        wait: seconds to wait for what must arrive, per step.
    """
    census = Census(clients=len(clients), raised_to_sender=raised)
    last = max(expected)

    def heard_or_closed(c: FaultClient) -> bool:
        return c.closed or (probes <= set(numbers(c.stream())) and topic_probes <= c.topic_bodies())

    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(map(heard_or_closed, clients)), wait, "the probes")
    for c in clients:
        seen = c.stream()
        got = numbers(seen)
        told = gap_announced(c.client)
        if c.closed:
            census.closed += 1
            census.close_messages.add(c.error_message())
            cursor = seen[-1].headers["message-id"] if seen else "0-0"
            resumed = resume(c, cursor)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: last in numbers(resumed.listener.messages), wait, "catch-up")  # noqa: B023
            got += numbers(resumed.listener.messages)
            told = told or gap_announced(resumed)
            with contextlib.suppress(Exception):
                resumed.disconnect()
        elif not heard_or_closed(c):
            census.deaf += 1
        census.delivered += len(got)
        if len(got) != len(set(got)):
            census.duplicated.append(f"{c.node_id}/{c.client.session}")
        if got != sorted(got):
            census.disordered.append(f"{c.node_id}/{c.client.session}")
        missing = sorted(expected - set(got))
        if missing and told:
            census.lost_announced += len(missing)
        elif missing:
            census.lost_silently += len(missing)
            census.silent[f"{c.node_id}/{c.client.session}"] = missing
    return census
