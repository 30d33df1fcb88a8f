"""Helpers for in-process consumer tests driven by a :class:`StompCommunicator`.

Users are made in the test database and log in with a signed connection token, as the
demo project's pages do.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from stomp_cluster import connection_token
from stomp_cluster.protocol import Command
from stomp_cluster.testing import StompCommunicator
from testproject.asgi import application

__all__ = ["assert_error_and_close", "login_headers", "make_user"]


async def make_user(name: str) -> Any:
    """Create user *name* (password ``pw``) in the test database."""
    model = get_user_model()
    return await database_sync_to_async(model.objects.create_user)(name, password="pw")


async def login_headers(name: str) -> dict[str, str]:
    """Create user *name*; return CONNECT headers that log in as that user."""
    user = await make_user(name)
    token = await sync_to_async(connection_token)(user)
    return {"login": name, "passcode": token}


async def assert_error_and_close(c: StompCommunicator, message_part: str) -> None:
    """The next frame is an ERROR whose ``message`` contains *message_part*, then a close.

    The in-process twin of ``tests.support.protocol.assert_error_and_close``, which
    checks a bare protocol object instead of a consumer.
    """
    frame = await c.receive_frame()
    assert frame.command is Command.ERROR
    assert message_part in (frame.get("message") or ""), frame
    assert await c.receive_close() == 1000


async def connected_client(
    version: str = "1.2", headers: dict[str, str] | None = None, **kwargs: Any
) -> StompCommunicator:
    """A StompCommunicator on the test project's application, CONNECTED."""
    communicator = StompCommunicator(application, "/ws", version=version, **kwargs)
    await communicator.connect_stomp(headers)
    return communicator
