"""Helpers for client presence tests: read presence MESSAGEs the way a client would."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["event_of", "members_of", "sessions_of"]


def members_of(frame: Any) -> list[dict[str, Any]]:
    """The ``members`` list of a presence MESSAGE's JSON body."""
    body = frame.body if isinstance(frame.body, bytes) else frame.body.encode()
    members: list[dict[str, Any]] = json.loads(body)["members"]
    return members


def sessions_of(frame: Any) -> set[str]:
    """The session ids a presence MESSAGE lists."""
    return {member["session"] for member in members_of(frame)}


def event_of(frame: Any) -> str | None:
    """What a presence MESSAGE is: ``snapshot``, ``join`` or ``leave``."""
    value: str | None = frame.get("x-presence")
    return value
