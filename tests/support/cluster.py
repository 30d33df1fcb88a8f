"""Clusters of real ASGI nodes for tests: start them on demand, stop them all at the end.

A :class:`ClusterFactory` starts :class:`~tests.support.nodes.AsgiNode` processes that
share one redis-server and one SQLite database. Every node started and not yet stopped is
listed in :data:`live_nodes`, so that a failing test's report can carry each node's log
tail (:func:`node_log_sections`) and so that two clusters alive at once on one Redis
never share a node id.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.clients import unique
from tests.support.nodes import AsgiNode
from tests.support.procs import RedisServer

__all__ = [
    "ClusterFactory",
    "live_nodes",
    "node_ids",
    "node_log_sections",
    "topic_pair",
    "user_queue_pair",
]

# Nodes started and not yet stopped, for the failure report and for fresh node ids.
live_nodes: list[AsgiNode] = []


def node_ids() -> Iterator[str]:
    """node-a, node-b, ... skipping ids of nodes alive in another cluster on our Redis."""
    for suffix in ("", *map(str, range(2, 100))):
        for letter in string.ascii_lowercase:
            node_id = f"node-{letter}{suffix}"
            if all(node.node_id != node_id for node in live_nodes):
                yield node_id


def node_log_sections(lines: int = 40) -> list[tuple[str, str]]:
    """``(title, text)`` report sections with the log tail of every live node."""
    return [
        (
            f"{node.node_id} ({node.server}, port {node.port}) log tail",
            f"{node.log_path}\n{node.log_tail(lines)}",
        )
        for node in list(live_nodes)
    ]


class ClusterFactory:
    """Starts nodes on demand and stops all of them at teardown."""

    def __init__(self, redis_server: RedisServer, db_path: Path, log_dir: Path) -> None:
        self.redis_server = redis_server
        self.db_path = db_path
        self.log_dir = log_dir
        self.nodes: list[AsgiNode] = []
        self._ids = node_ids()

    def __call__(
        self,
        count: int | None = None,
        *,
        server: str = "daphne",
        servers: Sequence[str] | None = None,
        redis: bool = True,
        node_ttl: float | None = None,
        env: dict[str, str] | None = None,
    ) -> list[AsgiNode]:
        """Start *count* nodes (2 by default) of kind *server*, or one of each *servers*.

        Nodes boot in parallel; this returns when all of them accept connections.
        """
        if servers is None:
            servers = [server] * (2 if count is None else count)
        elif count is not None and count != len(servers):
            raise ValueError("count and servers disagree")
        started = [
            AsgiNode(
                next(self._ids),
                db_path=self.db_path,
                redis_url=self.redis_server.url if redis else None,
                server=kind,
                node_ttl=node_ttl,
                env=env,
                log_dir=self.log_dir,
            )
            for kind in servers
        ]
        for node in started:
            self.nodes.append(node)
            live_nodes.append(node)
            node.spawn()  # boot in parallel
        for node in started:
            node.wait_ready()
        return started

    def stop_all(self) -> None:
        """Stop every node this factory started."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.terminate()
            with contextlib.suppress(ValueError):
                live_nodes.remove(node)
        self.nodes.clear()


def topic_pair(
    two_nodes: Sequence[AsgiNode],
    client: Callable[..., Any],
    name: str,
    *,
    sender: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Any, Any, str]:
    """``receiver, sender, dest``: the usual cast of a delivery test across two nodes.

    bob on the second node, subscribed to a new topic named after *name* (its RECEIPT
    awaited, so that what is sent next reaches him), and alice on the first node to send
    to it. *client* is a test's client factory (stomp.py or stompjs); *options* go to
    bob's client, *sender* to alice's.
    """
    dest = f"/topic/{unique(name)}"
    receiver, alice, _ = _pair(two_nodes, client, dest, {}, sender, options)
    return receiver, alice, dest


def user_queue_pair(
    two_nodes: Sequence[AsgiNode], client: Callable[..., Any], name: str, **subscription: Any
) -> tuple[Any, Any, str, str]:
    """``bob, alice, dest, sub_id``: bob on the second node subscribed to a user queue of
    his own (``/user/queue/<name>-...``), and alice on the first node, who sends to it at
    *dest* (``/user/bob/queue/<name>-...``). *subscription* goes to bob's ``subscribe()``
    (``ack="client"`` for stomp.py, ``headers={"ack": "client"}`` for stompjs)."""
    queue = f"/queue/{unique(name)}"
    bob, alice, sub_id = _pair(two_nodes, client, f"/user{queue}", subscription, None, {})
    return bob, alice, f"/user/bob{queue}", sub_id


def _pair(
    two_nodes: Sequence[AsgiNode],
    client: Callable[..., Any],
    subscribe_to: str,
    subscription: dict[str, Any],
    sender: dict[str, Any] | None,
    options: dict[str, Any],
) -> tuple[Any, Any, str]:
    node_a, node_b = two_nodes
    receiver = client(node_b, user="bob", **options)
    sub_id = receiver.subscribe(subscribe_to, receipt="r", **subscription)
    return receiver, client(node_a, user="alice", **(sender or {})), sub_id
