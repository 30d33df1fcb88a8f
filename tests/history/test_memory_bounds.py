"""MemoryHistory is bounded: in histories, and in cursors per history (issue #12, item 6)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from stomp_cluster.history.memory import MemoryHistory


async def test_the_number_of_histories_is_bounded():
    history = MemoryHistory(max_keys=3)
    for name in ("a", "b", "c", "d"):
        await history.append(name, "/queue/x", b"x", ())
    assert await history.last_id("a") is None  # the least recently appended went
    assert all([await history.last_id(name) for name in ("b", "c", "d")])


async def test_pending_and_acked_cursors_per_history_are_bounded():
    history = MemoryHistory(max_length=5)
    for i in range(50):
        entry = await history.append("u", f"/queue/q{i}", b"x", (), pending=True)
        await history.set_acked("u", f"/queue/q{i}", entry)
    stored = history._histories["u"]
    assert len(stored.pending) == 5 and len(stored.acked) == 5
    assert await history.take_pending("u", "/queue/q49") is not None
    assert await history.take_pending("u", "/queue/q0") is None


def test_max_keys_must_be_a_positive_integer():
    with pytest.raises(ImproperlyConfigured, match="max_keys"):
        MemoryHistory(max_keys=0)
