"""Channel-layer group names for destinations and users.

Channels requires group names of ASCII letters, digits, ``-``, ``_`` and ``.``, under
100 characters, so arbitrary STOMP destinations and user ids are hashed into them. The
hash also keeps hostile strings (``*``, newlines, braces) away from Redis key names.
"""

from __future__ import annotations

import hashlib

__all__ = ["destination_group", "user_group"]


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def destination_group(destination: str) -> str:
    """Group of the nodes holding a subscription to *destination*."""
    return f"stomp.d.{_digest(destination)}"


def user_group(user_key: str) -> str:
    """Group of the nodes holding a ``/user/`` subscription of the user *user_key*."""
    return f"stomp.u.{_digest(user_key)}"
