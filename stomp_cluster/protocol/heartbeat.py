"""Heart-beat arithmetic: parse the ``heart-beat`` header and negotiate intervals.

Only the maths lives here. Time belongs to the consumer: it reads
:attr:`StompConnection.heartbeat_intervals
<stomp_cluster.protocol.connection.StompConnection.heartbeat_intervals>` after
``accept_connect()`` and runs the timers, calling ``send_heartbeat()`` when the outgoing
interval passes without a frame, and closing the connection when nothing has been
received for the incoming interval plus a margin.

The header's two numbers, as 1.2 "Heart-beating" defines them for ``heart-beat:<x>,<y>``:
``x`` is what the sender of the frame can do ("the smallest number of milliseconds
between heart-beats that it can guarantee") and ``y`` what it would like to get ("the
desired number of milliseconds between heart-beats"); 0 means none.
"""

from __future__ import annotations

from stomp_cluster.protocol.errors import MalformedFrame

__all__ = ["MAX_HEARTBEAT", "negotiate_heartbeat", "parse_heartbeat"]

#: The largest interval accepted in a ``heart-beat`` header, in milliseconds (about 24
#: days, the largest signed 32-bit integer, as Java clients use). The spec sets no bound;
#: we set one so that a peer cannot hand the consumer's timers an absurd number.
MAX_HEARTBEAT = 2**31 - 1


def parse_heartbeat(value: str) -> tuple[int, int]:
    """Parse a ``heart-beat`` header value such as ``"10000,10000"``.

    Use it on the CONNECT frame's header; a missing header means ``(0, 0)``.

    Args:
        value: the header value.

    Returns:
        The two numbers ``(x, y)`` in milliseconds.

    Raises:
        MalformedFrame: unless the value is two non-negative decimal integers, each at
            most :data:`MAX_HEARTBEAT`, separated by a comma.
    """
    # "When used, the heart-beat header MUST contain two positive integers separated by
    # a comma." (1.2, Heart-beating) "Positive" includes 0, which the next sentences use.
    # We accept spaces around each number, more leniently than the spec, because they
    # are unambiguous and some 1.1 clients pad.
    parts = value.split(",")
    if len(parts) == 2:
        first, second = (part.strip(" ") for part in parts)
        if _is_interval(first) and _is_interval(second):
            return int(first), int(second)
    raise MalformedFrame(
        "invalid heart-beat header",
        f"expected two non-negative integers up to {MAX_HEARTBEAT} separated by a comma, "
        f"got {value[:64]!r}",
    )


def _is_interval(text: str) -> bool:
    # At most 10 digits: int() never sees a huge string, and the bound is exact below.
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_HEARTBEAT


def negotiate_heartbeat(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """Work out the heart-beat intervals of a connection, as the server sees them.

    Args:
        client: ``(cx, cy)`` from the CONNECT frame's ``heart-beat`` header.
        server: ``(sx, sy)``, what this server offers in CONNECTED.

    Returns:
        ``(outgoing, incoming)`` in milliseconds, 0 meaning none: the server must send
        something at least every ``outgoing`` ms, and may consider the connection dead
        after ``incoming`` ms (plus a margin) without receiving anything.
    """
    cx, cy = client
    sx, sy = server
    # "In the other direction, <sx> and <cy> are used the same way." (1.2, Heart-beating)
    outgoing = 0 if sx == 0 or cy == 0 else max(sx, cy)
    # "if <cx> is 0 (the client cannot send heart-beats) or <sy> is 0 (the server does not
    # want to receive heart-beats) then there will be none; otherwise, there will be
    # heart-beats every MAX(<cx>,<sy>) milliseconds" (1.2, Heart-beating)
    incoming = 0 if cx == 0 or sy == 0 else max(cx, sy)
    return outgoing, incoming
