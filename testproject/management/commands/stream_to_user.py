"""Send COUNT numbered messages to a user, as fast as the send helper accepts them.

Used by the fault tests (a node is killed mid-stream) and handy to watch recovery in the
demo: ``manage.py stream_to_user alice 1000``.
"""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser

from stomp_cluster import asend_to_user


class Command(BaseCommand):
    help = "Send COUNT messages whose bodies are 0..COUNT-1 to USER on /queue/stream."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user")
        parser.add_argument("count", type=int)
        parser.add_argument("--destination", default="/queue/stream")
        parser.add_argument(
            "--rate", type=float, default=0, help="messages per second (0: no limit)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        async_to_sync(self._stream)(options)

    async def _stream(self, options: dict[str, Any]) -> None:
        import asyncio

        from stomp_cluster.exceptions import DeliveryFailed

        interval = 1 / options["rate"] if options["rate"] else 0
        started = time.monotonic()
        failed = 0
        for n in range(options["count"]):
            try:
                await asend_to_user(options["user"], options["destination"], str(n))
            except DeliveryFailed:
                # Already in the user's history: a client recovers it on reconnecting.
                failed += 1
            if interval:
                await asyncio.sleep(max(0.0, started + (n + 1) * interval - time.monotonic()))
        self.stdout.write(f"sent {options['count']} messages ({failed} not routed live)")
