"""The tutorial's ``/app/`` handlers (step 1)."""

from stomp_cluster.handlers import HandlerError, message_mapping


@message_mapping("/chat/{room}", send_to="/topic/chat.{room}")
async def chat(request, room):
    if not request.user.is_authenticated:
        raise HandlerError("log in to chat")
    text = request.text().strip()
    if not 0 < len(text) <= 500:
        raise HandlerError("a chat message has 1 to 500 characters")
    return {"user": request.user.get_username(), "text": text}
