"""Fixtures shared by the in-process tests."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers

from stomp_cluster import node as node_module
from stomp_cluster.handlers import registry


@pytest.fixture(autouse=True)
def _fresh_cluster_state():
    """Each test gets a fresh channel layer, presence backend and node."""
    channel_layers.backends.clear()
    node_module._presence.clear()
    node_module._history.clear()
    yield
    channel_layers.backends.clear()
    node_module._presence.clear()
    node_module._history.clear()


@pytest.fixture
def handlers():
    """The /app handler registry, restored after the test."""
    saved = list(registry._routes)
    yield registry
    registry._routes[:] = saved
