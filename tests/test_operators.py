"""What the admin and ``manage.py stomp_cluster`` share: times for people, outage messages.

Times are computed from fixed moments, never from the clock, so that no test depends on how
fast the machine runs it.
"""

from __future__ import annotations

import pytest

from stomp_cluster.exceptions import PresenceUnavailable
from stomp_cluster.operators import ago, registry_unreachable, since, utc

NOW = 1_700_000_000.0
MINUTE, HOUR, DAY = 60, 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0\xa0seconds"),
        (1, "1\xa0second"),
        (59.9, "59\xa0seconds"),
        (60, "1\xa0minute"),
        (2 * MINUTE + 5, "2\xa0minutes"),
        (3 * HOUR + 5 * MINUTE + 20, "3\xa0hours, 5\xa0minutes"),
        (2 * DAY + 3 * HOUR, "2\xa0days, 3\xa0hours"),
    ],
)
def test_since_counts_seconds_under_a_minute_then_two_units(seconds, expected):
    assert since(NOW - seconds, NOW) == expected


def test_a_moment_in_the_future_counts_as_no_time():
    # Another machine's clock may run ahead of ours.
    assert since(NOW + 5, NOW) == "0\xa0seconds"


def test_ago():
    assert ago(NOW - 4, NOW) == "4\xa0seconds ago"
    assert ago(NOW - 3 * HOUR - 5 * MINUTE, NOW) == "3\xa0hours, 5\xa0minutes ago"


def test_utc():
    assert utc(2000.0) == "1970-01-01 00:33:20"


def test_registry_unreachable_names_the_error_underneath():
    try:
        try:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390.")
        except ConnectionError as cause:
            raise PresenceUnavailable(f"presence backend unreachable: {cause}") from cause
    except PresenceUnavailable as exc:
        message = registry_unreachable(exc)
    assert message == (
        "The presence registry is unreachable (Error 111 connecting to 127.0.0.1:6390)."
    )
    assert registry_unreachable(PresenceUnavailable("down")) == (
        "The presence registry is unreachable (down)."
    )
