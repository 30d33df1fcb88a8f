"""Send COUNT numbered messages to a user (or a topic), as fast as the send helper accepts.

Used by the fault tests (a node is killed mid-stream, a client stops reading) and handy
to watch recovery in the demo: ``manage.py stream_to_user alice 1000``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser

from stomp_cluster import asend_to_destination, asend_to_user
from stomp_cluster.exceptions import DeliveryFailed


class Command(BaseCommand):
    help = "Send COUNT messages whose bodies are 0..COUNT-1 to USER on /queue/stream."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username, or a broker destination with --topic")
        parser.add_argument("count", type=int)
        parser.add_argument("--destination", default="/queue/stream")
        parser.add_argument("--rate", type=float, default=0, help="messages/s (0: no limit)")
        parser.add_argument("--topic", action="store_true", help="USER is a broker destination")
        parser.add_argument("--size", type=int, default=0, help="pad bodies to this many bytes")
        parser.add_argument(
            "--report",
            action="store_true",
            help="print 'acknowledged N' or 'failed N <why>' for each send",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        async_to_sync(self._stream)(options)

    async def _stream(self, options: dict[str, Any]) -> None:
        interval = 1 / options["rate"] if options["rate"] else 0
        started = time.monotonic()
        failed = 0
        for n in range(options["count"]):
            body = str(n).ljust(options["size"])
            try:
                if options["topic"]:
                    await asend_to_destination(options["user"], body)
                else:
                    await asend_to_user(options["user"], options["destination"], body)
            except DeliveryFailed as exc:
                # Refused before it was stored (history or registry down): not
                # acknowledged. A stored message that missed a node does not raise.
                failed += 1
                if options["report"]:
                    self.stdout.write(f"failed {n} {exc}".replace("\n", " "))
            else:
                if options["report"]:
                    self.stdout.write(f"acknowledged {n}")
            if interval:
                await asyncio.sleep(max(0.0, started + (n + 1) * interval - time.monotonic()))
        self.stdout.write(f"sent {options['count']} messages ({failed} not routed live)")
