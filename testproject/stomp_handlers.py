"""The demo's ``/app/...`` handlers."""

from __future__ import annotations

from stomp_cluster.handlers import StompRequest, message_mapping


@message_mapping("/echo")
async def echo(request: StompRequest) -> None:
    """Send the body back to the sending session alone, on ``/user/queue/echo``."""
    content_type = request.headers.get("content-type")
    await request.areply("/user/queue/echo", request.body, content_type=content_type)
