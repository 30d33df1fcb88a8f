"""The backend factory: this process's presence, history and transport, built from settings.

Each backend is chosen by a dotted path in ``STOMP_CLUSTER`` (``PRESENCE_BACKEND``,
``HISTORY_BACKEND``, ``TRANSPORT_BACKEND``) and built once per process with its options,
as Django builds cache backends from ``CACHES``. What those are is settled by
``stomp_cluster.conf``: with ``REDIS`` set, the keys left out name the Redis backends
and their ``hosts`` is ``[REDIS]``, and ``StompSettings.backend_options()`` gives each
backend's keyword arguments, so that the factory and the system check build a backend
the same way.
Everything that needs a backend asks here — the node, the send helpers, the queries, the
admin and the CLI — so none of them needs the runtime node to reach the registry.

Instances are cached by class and options, so that settings changed in a test get a new
one; :func:`reset` forgets them all (tests call it between cases). The last answer is
also kept with the settings object it came from: the send path asks for three backends
per message, and the settings object only changes with the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from stomp_cluster.conf import StompSettings, get_settings

if TYPE_CHECKING:
    from stomp_cluster.history.base import HistoryBackend
    from stomp_cluster.presence.base import PresenceBackend
    from stomp_cluster.transport import NodeTransport

__all__ = ["get_history", "get_presence", "get_transport", "reset"]


class _Cache:
    """Backends of one kind by class and options; the last one with its settings."""

    def __init__(self) -> None:
        self.built: dict[str, Any] = {}
        self.last: tuple[StompSettings, Any] | None = None

    def get(self, settings: StompSettings, path: str, options: Callable[[], dict[str, Any]]) -> Any:
        last = self.last
        if last is not None and last[0] is settings:
            return last[1]
        kwargs = options()
        key = f"{path}:{sorted(kwargs.items())!r}"
        backend = self.built.get(key)
        if backend is None:
            backend = self.built[key] = import_string(path)(**kwargs)
        self.last = (settings, backend)
        return backend

    def clear(self) -> None:
        self.built.clear()
        self.last = None


_presence = _Cache()
_history = _Cache()
_transport = _Cache()


def get_presence() -> PresenceBackend:
    """Return this process's presence backend, built from settings on first use."""
    s = get_settings()
    backend: PresenceBackend = _presence.get(
        s, s.PRESENCE_BACKEND, lambda: s.backend_options("PRESENCE_BACKEND")
    )
    return backend


def get_transport() -> NodeTransport:
    """Return this process's node transport, built from settings on first use."""
    s = get_settings()
    transport: NodeTransport = _transport.get(
        s, s.TRANSPORT_BACKEND, lambda: s.backend_options("TRANSPORT_BACKEND")
    )
    return transport


def get_history() -> HistoryBackend | None:
    """Return this process's message history backend, or None when history is off."""
    s = get_settings()
    if s.HISTORY_BACKEND is None:
        return None
    backend: HistoryBackend = _history.get(
        s, s.HISTORY_BACKEND, lambda: s.backend_options("HISTORY_BACKEND")
    )
    return backend


def reset() -> None:
    """Forget every backend built so far; the next call builds them from settings again.

    For tests, between cases: a backend holds connections of the event loop it was
    first used on. It closes nothing (the loop that owns those connections may be gone).
    """
    for cache in (_presence, _history, _transport):
        cache.clear()
