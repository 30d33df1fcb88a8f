"""STOMP over WebSocket for Django Channels, across a cluster of nodes."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
