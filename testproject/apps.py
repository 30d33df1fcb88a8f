"""The test project's app: records STOMP signals to a file when asked.

With ``STOMP_SIGNAL_LOG=/path`` in the environment, every ``stomp_*`` signal this node
fires is appended to that file as one JSON line. The cluster tests read it to check,
across processes, that ``stomp_disconnected`` fires exactly once per session.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.apps import AppConfig


class TestprojectConfig(AppConfig):
    name = "testproject"

    def ready(self) -> None:
        path = os.environ.get("STOMP_SIGNAL_LOG")
        if not path:
            return
        from stomp_cluster import signals

        def recorder(name: str) -> Any:
            def receiver(sender: Any, **kwargs: Any) -> None:
                line = {
                    "signal": name,
                    "node": kwargs.get("node_id"),
                    "session": kwargs.get("session_id"),
                    "username": kwargs.get("username"),
                    "reason": kwargs.get("reason"),
                    "destination": kwargs.get("destination"),
                    "pid": os.getpid(),
                }
                with open(path, "a", encoding="utf-8") as log:
                    log.write(json.dumps(line) + "\n")

            return receiver

        self._receivers = []
        for name in (
            "stomp_connected",
            "stomp_subscribed",
            "stomp_unsubscribed",
            "stomp_disconnected",
        ):
            receiver = recorder(name)
            self._receivers.append(receiver)  # signals hold weak references
            getattr(signals, name).connect(receiver, dispatch_uid=f"testproject.{name}")
