"""The demo's ``/app/...`` handlers, a port of a typical Spring chat controller.

* ``SEND /app/echo``: the body back to the sending session alone, on ``/user/queue/echo``.
* ``SEND /app/chat``: the message, returned, reaches every subscriber of ``/topic/chat``
  (``@SendTo`` by default); an empty or overlong one is refused on ``/user/queue/errors``.
* ``SEND /app/note``: the note, returned, reaches every session of the sender that
  subscribes to ``/user/queue/notes``, on every node (``@SendToUser``).
* ``SUBSCRIBE /app/whoami``: answered once, to that subscription, with who you are.
* ``SEND /app/fail``: always refused, with ``nope``, on ``/user/queue/errors``.
"""

from __future__ import annotations

from typing import Any

from stomp_cluster.handlers import HandlerError, StompRequest, message_mapping, subscribe_mapping

#: The longest chat message the demo accepts, in characters.
MAX_CHAT_LENGTH = 500


@message_mapping("/echo")
async def echo(request: StompRequest) -> None:
    """Send the body back to the sending session alone, on ``/user/queue/echo``."""
    content_type = request.headers.get("content-type")
    await request.areply("/user/queue/echo", request.body, content_type=content_type)


@message_mapping("/chat")
async def chat(request: StompRequest) -> str:
    """Return the message: it goes to ``/topic/chat``, with the sender in ``x-sender``."""
    text = request.text().strip()
    if not text:
        raise HandlerError("empty message")
    if len(text) > MAX_CHAT_LENGTH:
        raise HandlerError(f"message of {len(text)} characters, the limit is {MAX_CHAT_LENGTH}")
    return text


@message_mapping("/note", send_to_user="/queue/notes")
async def note(request: StompRequest) -> str:
    """A note to yourself: to all your sessions (the sending one alone if anonymous)."""
    return request.text()


@subscribe_mapping("/whoami")
def whoami(request: StompRequest) -> dict[str, Any]:
    """Say, once, who the subscriber is (sync: it runs on the handlers pool)."""
    user = request.user
    return {
        "username": user.get_username(),
        "authenticated": user.is_authenticated,
        "session": request.session_id,
    }


@message_mapping("/fail")
async def fail(request: StompRequest) -> None:
    """Refuse every message: the sender sees ``nope`` on ``/user/queue/errors``."""
    raise HandlerError("nope")
