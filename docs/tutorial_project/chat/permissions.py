"""The tutorial's permission hook (step 2)."""


def stomp_permission(user, action, destination):
    """Decide every SUBSCRIBE and SEND, those to /app/ handlers included."""
    if action == "send":
        # Clients publish through /app/ handlers only, which check what they send.
        return destination.startswith("/app/")
    return user.is_authenticated
