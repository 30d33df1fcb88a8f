"""signals.fire(): what receivers get and how their failures are reported.

With one async receiver (the presence registry's own, in most projects) fire() awaits it
directly rather than through Signal.asend_robust; both ways must look the same.
"""

from __future__ import annotations

import logging

import pytest
from django.dispatch import Signal

from stomp_cluster import signals
from stomp_cluster.consumer import StompConsumer

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def signal() -> Signal:
    return Signal()  # a fresh one: the app's receivers are not connected to it


async def test_a_lone_async_receiver_gets_the_signal_sender_and_kwargs(signal):
    calls = []

    async def receiver(**kwargs):
        calls.append(kwargs)

    signal.connect(receiver)
    await signals.fire(signal, session_id="s1", reason="client")
    assert calls == [
        {"signal": signal, "sender": StompConsumer, "session_id": "s1", "reason": "client"}
    ]


@pytest.mark.parametrize("kinds", [["async"], ["sync"], ["async", "sync"], ["async", "async"]])
async def test_a_failing_receiver_is_logged_and_the_others_still_run(signal, caplog, kinds):
    ran = []

    def make(kind: str, index: int):
        if kind == "async":

            async def receiver(**kwargs):
                ran.append(index)
                raise ValueError(f"receiver {index} bug")

        else:

            def receiver(**kwargs):
                ran.append(index)
                raise ValueError(f"receiver {index} bug")

        return receiver

    receivers = [make(kind, i) for i, kind in enumerate(kinds)]
    for receiver in receivers:
        signal.connect(receiver)
    with caplog.at_level(logging.ERROR, logger="stomp_cluster.signals"):
        await signals.fire(signal, session_id="s1")  # raises nothing

    assert sorted(ran) == list(range(len(kinds)))
    ours = [r for r in caplog.records if r.name == "stomp_cluster.signals"]
    assert len(ours) == len(kinds)
    assert all(r.levelno == logging.ERROR and r.exc_info for r in ours)
    assert {str(r.exc_info[1]) for r in ours} == {f"receiver {i} bug" for i in range(len(kinds))}


async def test_no_receiver_is_fine(signal):
    await signals.fire(signal, session_id="s1")
