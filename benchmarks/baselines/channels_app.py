"""The Channels baseline: a plain JSON-free text consumer with one group per user.

``ws://HOST:PORT/ws?user=NAME&topic=1`` joins the group ``user.NAME`` (and
``topic.bench`` with ``topic=1``); a ``bench.message`` event is written to the socket as
is. This is what a project does without stomp_cluster: ``group_send`` per user, one
channel-layer message per socket.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.baselines.settings")
_http = get_asgi_application()


class BenchConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.joined = [f"user.{query.get('user', ['anonymous'])[0]}"]
        if query.get("topic"):
            self.joined.append("topic.bench")
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send(text_data="ready")

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def bench_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "http": _http,
        "websocket": URLRouter([path("ws", BenchConsumer.as_asgi())]),
    }
)
