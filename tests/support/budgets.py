"""What one STOMP session holds in memory, and the budgets it must stay within.

The fuzz test (``tests/fuzz``) calls :func:`assert_within_budgets` after every step it
takes against a real :class:`~stomp_cluster.consumer.StompConsumer`. It is the one place
that says what "the session's memory stays within the configured limits" means, so a
new budget is one new line here: today the protocol's
:class:`~stomp_cluster.protocol.Limits` (subscriptions, unacknowledged messages, open
transactions and the frames each buffers, bytes of a frame not yet complete) and the
consumer's ``MAX_OUTBOX`` (frames queued for the socket), and the byte budgets: bytes
queued for the socket (``MAX_OUTBOX_BYTES``), bytes one transaction buffers
(``MAX_TRANSACTION_BYTES``) and all of them together (``MAX_BUFFERED_BYTES``).

The footprint is read from the session's internals on purpose: a client cannot see how
much the server holds for it, and a test that only looked from outside would not notice
a limit that is counted but never enforced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stomp_cluster.conf import StompSettings
from stomp_cluster.protocol import State

__all__ = ["Footprint", "assert_within_budgets", "footprint"]


@dataclass(frozen=True)
class Footprint:
    """What one session holds, counted the way its limits count it.

    Attributes:
        subscriptions: open subscriptions the protocol keeps.
        routed: subscriptions the consumer routes messages to.
        pending_acks: messages sent in client modes and not yet ACKed or NACKed.
        transactions: open transactions.
        transaction_frames: the frames the fullest open transaction buffers.
        unparsed: received bytes of a frame not yet complete.
        queued: frames queued by the protocol and not yet taken by the consumer.
        backlog: frames the consumer took and has not written to the socket yet.
        outbox_bytes: bytes of those frames, queued or taken and not yet written.
        transaction_bytes: the bytes the fullest open transaction buffers.
        buffered_bytes: the bytes all open transactions buffer.
    """

    subscriptions: int
    routed: int
    pending_acks: int
    transactions: int
    transaction_frames: int
    unparsed: int
    queued: int
    backlog: int
    outbox_bytes: int
    transaction_bytes: int
    buffered_bytes: int


def footprint(consumer: Any) -> Footprint:
    """Count what *consumer* (a ``StompConsumer``) holds now."""
    connection = consumer.connection
    client_state = connection._client_state
    transactions = client_state._transactions
    return Footprint(
        subscriptions=len(client_state.subscriptions),
        routed=len(consumer._routed),
        pending_acks=len(client_state._owners),
        transactions=len(transactions),
        transaction_frames=max((len(t) for t in transactions.values()), default=0),
        unparsed=connection._reader.buffered,
        queued=len(connection._outgoing),
        backlog=consumer._outbox.backlog,
        outbox_bytes=consumer._outbox.queued_bytes,
        transaction_bytes=max(client_state._transaction_bytes.values(), default=0),
        buffered_bytes=client_state._buffered_bytes,
    )


def assert_within_budgets(consumer: Any, settings: StompSettings) -> Footprint:
    """Fail unless *consumer* holds no more than *settings* allow; return its footprint.

    Checked between steps, once the consumer has handled what it received: within one
    step a frame may be buffered whole before it is refused.
    """
    used = footprint(consumer)
    limits = settings.limits()
    assert used.subscriptions <= limits.max_subscriptions, used
    assert used.routed <= used.subscriptions, used
    assert used.pending_acks <= limits.max_pending_acks, used
    assert used.transactions <= limits.max_transactions, used
    assert used.transaction_frames <= limits.max_transaction_frames, used
    assert used.queued + used.backlog <= settings.MAX_OUTBOX, used
    if consumer.connection.state is not State.CLOSING:
        # Input is ignored once closing; until then a partial frame is one frame at most.
        assert used.unparsed <= limits.max_frame_size, used
    assert used.transaction_bytes <= limits.max_transaction_bytes, used
    assert used.buffered_bytes <= limits.max_buffered_bytes, used
    # The outbox is checked before a frame is queued, so it may pass its budget by the
    # one frame that was let in; past that, the session is being closed.
    assert used.outbox_bytes <= settings.MAX_OUTBOX_BYTES + limits.max_frame_size, used
    return used
