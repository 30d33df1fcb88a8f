"""The destination grammar: what a STOMP destination names, parsed and built in one place.

A destination is one of four kinds, by its prefix (each prefix is a setting):

``/topic/...``, ``/queue/...`` (``BROKER_PREFIXES``)
    Broker destinations: every subscriber on every node receives what is sent there.
``/app/...`` (``APP_PREFIXES``)
    Application destinations: a SEND goes to the ``@message_mapping`` handler registered
    for the rest of the path (:mod:`stomp_cluster.handlers`), a SUBSCRIBE to the
    ``@subscribe_mapping`` one, which answers it once; nothing is routed to them.
``/presence/topic/...`` (:data:`PRESENCE_PREFIX`)
    The presence of a broker destination listed in ``PRESENCE_DESTINATIONS``: a
    subscription gets who is subscribed to ``/topic/...`` and then their joins and leaves
    (:mod:`stomp_cluster.roster`). Nobody sends to them but the server.
``/user/queue/...`` (``USER_PREFIX``)
    A user destination, as Spring resolves it: a session subscribes to
    ``/user/queue/x`` and receives what is sent to *its user* at ``/queue/x``. A sender
    names the recipient in the middle: ``/user/<username>/queue/x``.
Anything else
    Unknown: refused with an ERROR frame.

Topic histories (``HISTORY_TOPICS``) are keyed here too, so that the send path and the
recovery path agree on one key per destination.

Every function reads the settings when called, so ``override_settings`` applies.
"""

from __future__ import annotations

import enum
import fnmatch

from stomp_cluster.conf import get_settings

__all__ = [
    "PRESENCE_PREFIX",
    "Kind",
    "app_path",
    "is_broker",
    "is_user",
    "kind",
    "presence_destination",
    "presence_enabled",
    "presence_target",
    "recipient",
    "topic_history_key",
    "user_destination",
]


class Kind(enum.Enum):
    """What a destination names (see the module docstring)."""

    BROKER = "broker"
    APP = "app"
    USER = "user"
    PRESENCE = "presence"
    UNKNOWN = "unknown"


#: The prefix of presence destinations: ``/presence/topic/chat`` is the presence of
#: ``/topic/chat``. Fixed rather than a setting: clients of every project read the same.
PRESENCE_PREFIX = "/presence/"


def is_user(destination: str) -> bool:
    """Whether *destination* starts with the user prefix (``/user/``)."""
    return destination.startswith(get_settings().USER_PREFIX)


def is_broker(destination: str) -> bool:
    """Whether *destination* starts with a broker prefix (``/topic/``, ``/queue/``)."""
    return destination.startswith(get_settings().BROKER_PREFIXES)


def app_path(destination: str) -> str | None:
    """The handler path of an ``/app/`` destination (``/app/chat/x`` -> ``/chat/x``), else None."""
    for prefix in get_settings().APP_PREFIXES:
        if destination.startswith(prefix):
            return destination[len(prefix) - 1 :]
    return None


def kind(destination: str) -> Kind:
    """Classify *destination*. A user destination is USER only if what follows the
    prefix is a broker destination (``/user/queue/x``), as a subscription needs it."""
    if is_user(destination):
        return Kind.USER if is_broker(_after_user_prefix(destination)) else Kind.UNKNOWN
    if destination.startswith(PRESENCE_PREFIX):
        return Kind.PRESENCE
    if app_path(destination) is not None:
        return Kind.APP
    if is_broker(destination):
        return Kind.BROKER
    return Kind.UNKNOWN


def user_destination(destination: str) -> str:
    """The ``/user/...`` form that a client subscribes to (``/queue/x`` -> ``/user/queue/x``).

    A destination already in that form is returned as it is.
    """
    prefix = get_settings().USER_PREFIX
    if destination.startswith(prefix):
        return destination
    return prefix + destination.lstrip("/")


def recipient(destination: str) -> tuple[str, str] | None:
    """Split a client's SEND to ``/user/<username>/queue/x`` into ``(username, "/queue/x")``.

    Returns None when *destination* is not of that form: no username, or no broker
    destination after it.
    """
    if not is_user(destination):
        return None
    username, _, tail = _after_user_prefix(destination)[1:].partition("/")
    if not username or not is_broker("/" + tail):
        return None
    return username, "/" + tail


def presence_target(destination: str) -> str | None:
    """The destination whose presence *destination* names (``/presence/topic/x`` ->
    ``/topic/x``), or None when it is not a presence destination.

    Whether that presence may be watched is :func:`presence_enabled`'s answer.
    """
    if not destination.startswith(PRESENCE_PREFIX):
        return None
    return "/" + destination[len(PRESENCE_PREFIX) :]


def presence_destination(destination: str) -> str:
    """The presence destination of *destination* (``/topic/x`` -> ``/presence/topic/x``)."""
    return PRESENCE_PREFIX + destination.lstrip("/")


def presence_enabled(destination: str) -> bool:
    """Whether *destination* is a broker destination that ``PRESENCE_DESTINATIONS`` lists.

    Only those have a presence: their joins and leaves are published, and
    ``/presence/<destination>`` may be subscribed to.
    """
    patterns = get_settings().PRESENCE_DESTINATIONS
    return (
        bool(patterns)
        and is_broker(destination)
        and any(fnmatch.fnmatchcase(destination, p) for p in patterns)
    )


def topic_history_key(destination: str) -> str | None:
    """The history key of a broker destination listed in ``HISTORY_TOPICS``, else None.

    Topic histories share the user histories' store under keys no username can take
    (Django usernames cannot contain NUL).
    """
    settings = get_settings()
    patterns = settings.HISTORY_TOPICS
    if (
        settings.HISTORY_BACKEND is not None
        and patterns
        and is_broker(destination)
        and any(fnmatch.fnmatchcase(destination, p) for p in patterns)
    ):
        return "\x00topic\x00" + destination
    return None


def _after_user_prefix(destination: str) -> str:
    # "/user/queue/x" -> "/queue/x"
    return "/" + destination[len(get_settings().USER_PREFIX) :]
