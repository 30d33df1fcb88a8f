"""Heart-beat header parsing and interval negotiation."""

from __future__ import annotations

import pytest

from stomp_cluster.protocol import (
    MAX_HEARTBEAT,
    MalformedFrame,
    negotiate_heartbeat,
    parse_heartbeat,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,0", (0, 0)),
        ("10000,20000", (10000, 20000)),
        ("0,5000", (0, 5000)),
        (" 100 , 200 ", (100, 200)),  # more lenient than the spec: spaces are unambiguous
        (f"{MAX_HEARTBEAT},0", (MAX_HEARTBEAT, 0)),
    ],
)
def test_parse_heartbeat(value, expected):
    assert parse_heartbeat(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "100",
        "100,",
        ",100",
        "1,2,3",
        "-1,0",
        "a,b",
        "1.5,2",
        "\u0661,2",  # an Arabic-Indic digit is a digit, but not ASCII
        f"{MAX_HEARTBEAT + 1},0",
        "9" * 5000 + ",0",
    ],
)
def test_malformed_heartbeat(value):
    # "When used, the heart-beat header MUST contain two positive integers separated by
    # a comma."
    with pytest.raises(MalformedFrame) as info:
        parse_heartbeat(value)
    assert info.value.message == "invalid heart-beat header"


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        # "if <cx> is 0 (the client cannot send heart-beats) or <sy> is 0 (the server does
        # not want to receive heart-beats) then there will be none"
        ((0, 0), (10000, 10000), (0, 0)),
        ((0, 5000), (10000, 0), (10000, 0)),
        ((5000, 0), (0, 10000), (0, 10000)),
        # "otherwise, there will be heart-beats every MAX(<cx>,<sy>) milliseconds"
        ((5000, 20000), (10000, 10000), (20000, 10000)),
        ((30000, 1000), (10000, 10000), (10000, 30000)),
        ((1, 1), (1, 1), (1, 1)),
    ],
)
def test_negotiate_heartbeat(client, server, expected):
    assert negotiate_heartbeat(client, server) == expected
