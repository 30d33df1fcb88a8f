"""The python-socketio baseline: ``AsyncServer`` + ``AsyncRedisManager``, served by uvicorn.

A client connects to ``/socket.io/?EIO=4&transport=websocket&user=NAME[&topic=1]``; on
connect it enters the room ``user.NAME`` (and ``topic.bench``) and gets a ``ready``
event. The sender emits ``bench`` events to rooms through a write-only
``AsyncRedisManager``, as a web worker would.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

import socketio

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"], channel="bench"),
    cors_allowed_origins="*",
)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    await sio.enter_room(sid, f"user.{query.get('user', ['anonymous'])[0]}")
    if query.get("topic"):
        await sio.enter_room(sid, "topic.bench")
    await sio.emit("ready", to=sid)


application = socketio.ASGIApp(sio)
