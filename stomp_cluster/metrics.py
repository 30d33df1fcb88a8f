"""Prometheus metrics of this process's node, for the ``metrics/`` endpoint.

What is measured
----------------
Nothing here runs on the hot path. The consumer, the node, authentication and recovery
count what happens with plain int increments into ``Node.stats`` (a
:class:`~collections.Counter` that the heartbeat also publishes to the registry), the node
keeps its subscription count, and the Redis connection layer times each pipeline into a
fixed-bucket histogram (:func:`stomp_cluster.redis_connection.round_trips`).
:class:`NodeCollector` reads all of it when Prometheus scrapes, and :func:`render` writes
it in the text format (or OpenMetrics, when the scraper asks for it) through
``prometheus_client``.

``prometheus_client`` is an optional dependency (``pip install 'stomp-cluster[metrics]'``):
it is imported inside the functions that use it, at scrape time, so the package imports
and runs without it; :func:`render` then raises :class:`MetricsUnavailable`, which the
view answers with 501.

Each process is one node, and its metrics describe that node only, as the health endpoint
does: scrape every node (Prometheus does, one target per instance), and sum across them
in queries. The node's id is the ``node`` label of ``stomp_cluster_node_info``, to join
on. A process that is not a node yet (no WebSocket accepted) reports zeros and no
``stomp_cluster_node_info``.

The metrics
-----------
Gauges: ``stomp_cluster_connections`` (open WebSockets), ``stomp_cluster_sessions``
(CONNECTed STOMP sessions), ``stomp_cluster_subscriptions``,
``stomp_cluster_node_start_time_seconds`` and ``stomp_cluster_node_info``.

Counters: ``stomp_cluster_connections_opened_total``,
``stomp_cluster_frames_received_total`` and ``stomp_cluster_frames_sent_total`` (STOMP
frames, heart-beats left out), ``stomp_cluster_received_bytes_total`` and
``stomp_cluster_sent_bytes_total`` (WebSocket payloads), ``stomp_cluster_deliveries_total``
(MESSAGE frames queued to sessions), ``stomp_cluster_delivery_failures_total`` by
``reason`` (``slow_consumer``: dropped for a session over ``MAX_OUTBOX``;
``session_gone``: addressed to a session that had left; ``send_failed``: a client's SEND
refused because the cluster could not take it), ``stomp_cluster_slow_consumer_closes_total``,
``stomp_cluster_auth_failures_total`` by ``reason`` (``bad_credentials``,
``authentication_required``), ``stomp_cluster_recovered_messages_total`` and
``stomp_cluster_redelivered_messages_total`` (history messages sent on a resume or a
reconnection, and those sent again after a NACK or an unacknowledged delivery).

Histogram: ``stomp_cluster_redis_round_trip_seconds`` by ``connection`` (``presence
backend``, ``message history``, ``transport``): each pipeline sent to Redis, from taking a
pooled connection to the parsed replies; failed round trips are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stomp_cluster import __version__
from stomp_cluster.node import Node, current_node
from stomp_cluster.redis_connection import ROUND_TRIP_BUCKETS, round_trips

if TYPE_CHECKING:
    from prometheus_client import Metric

__all__ = ["PREFIX", "MetricsUnavailable", "NodeCollector", "render"]

#: What every metric's name starts with.
PREFIX = "stomp_cluster_"

#: Counters read from ``Node.stats``: metric name (without prefix and ``_total``), help,
#: and the ``Node.stats`` key.
_COUNTERS = (
    ("connections_opened", "WebSockets accepted.", "connections_opened"),
    ("frames_received", "STOMP frames received (heart-beats left out).", "frames_in"),
    ("frames_sent", "STOMP frames sent (heart-beats left out).", "frames_out"),
    ("received_bytes", "WebSocket payload bytes received.", "bytes_in"),
    ("sent_bytes", "WebSocket payload bytes sent.", "bytes_out"),
    ("deliveries", "MESSAGE frames queued to sessions.", "delivered"),
    ("slow_consumer_closes", "Sessions closed as slow consumers.", "slow_consumer"),
    ("recovered_messages", "History messages sent to a resuming subscription.", "recovered"),
    ("redelivered_messages", "History messages sent again, marked redelivered.", "redelivered"),
)

#: Labelled counters: metric name, help, label, and label value -> ``Node.stats`` key.
_LABELLED = (
    (
        "delivery_failures",
        "Messages or SENDs that did not reach their sessions, by reason.",
        "reason",
        {
            "slow_consumer": "dropped_slow_consumer",
            "session_gone": "dropped_session_gone",
            "send_failed": "send_failed",
        },
    ),
    (
        "auth_failures",
        "CONNECT frames refused by authentication, by reason.",
        "reason",
        {
            "bad_credentials": "auth_failed_credentials",
            "authentication_required": "auth_failed_required",
        },
    ),
)


class MetricsUnavailable(Exception):
    """``prometheus_client`` is not installed: there is no metrics endpoint."""


class NodeCollector:
    """A ``prometheus_client`` collector of a node's counters, read when scraped.

    Args:
        node: the node to describe; None, the default, reads the node of the running
            event loop at each collection (``stomp_cluster.node.current_node()``).
    """

    def __init__(self, node: Node | None = None) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families listed in the module's documentation."""
        # Imported here: prometheus_client is optional, and only a scrape needs it.
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        node = self.node if self.node is not None else current_node()
        stats: Counter[str] = node.stats if node is not None else Counter()
        if node is not None:
            yield InfoMetricFamily(
                PREFIX + "node",
                "This process's node of the cluster.",
                value={"node": node.node_id, "version": __version__},
            )
            yield GaugeMetricFamily(
                PREFIX + "node_start_time_seconds",
                "When the node started, in seconds since the epoch.",
                value=node.started_at,
            )
        open_connections = stats["connections_opened"] - stats["connections_closed"]
        yield GaugeMetricFamily(PREFIX + "connections", "Open WebSockets.", value=open_connections)
        yield GaugeMetricFamily(
            PREFIX + "sessions",
            "CONNECTed STOMP sessions.",
            value=len(node.sessions) if node is not None else 0,
        )
        yield GaugeMetricFamily(
            PREFIX + "subscriptions",
            "Subscriptions of the node's sessions.",
            value=node.subscription_count if node is not None else 0,
        )
        for name, documentation, key in _COUNTERS:
            yield CounterMetricFamily(PREFIX + name, documentation, value=stats[key])
        for name, documentation, label, keys in _LABELLED:
            family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
            for value, key in keys.items():
                family.add_metric([value], stats[key])
            yield family
        histogram = HistogramMetricFamily(
            PREFIX + "redis_round_trip_seconds",
            "Round trips to Redis (one pipeline each), by connection.",
            labels=["connection"],
        )
        bounds = [repr(bound) for bound in ROUND_TRIP_BUCKETS] + ["+Inf"]
        for connection, observed in sorted(round_trips().items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, observed.counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            histogram.add_metric([connection], buckets, observed.total)
        yield histogram


def render(accept: str = "") -> tuple[bytes, str]:
    """This process's node's metrics, as the scraper's ``Accept`` header asks.

    Returns:
        The exposition and its content type: Prometheus' text format, or OpenMetrics when
        *accept* asks for ``application/openmetrics-text``.

    Raises:
        MetricsUnavailable: ``prometheus_client`` is not installed.
    """
    try:
        # Imported here: prometheus_client is optional, and only a scrape needs it.
        from prometheus_client.exposition import choose_encoder
    except ImportError as exc:
        raise MetricsUnavailable(
            "metrics need prometheus_client: pip install 'stomp-cluster[metrics]'"
        ) from exc
    encoder, content_type = choose_encoder(accept)
    return encoder(NodeCollector()), content_type
