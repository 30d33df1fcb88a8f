"""What one client has open: subscriptions, unacknowledged messages and transactions.

:class:`~stomp_cluster.protocol.connection.StompConnection` parses frames, checks their
headers and decides what to answer; its :class:`ClientState` keeps what those frames
open and close, enforces the per-connection limits on it, and raises a
:class:`ProtocolError` when a frame names something that does not exist.

The name is deliberate: "session" already means the STOMP session (the ``session``
header of CONNECTED, one record in the presence registry) and Django's HTTP session, so
the protocol's bookkeeping of one connection is called its client state.

Each unacknowledged message has an *ack value*, unique within the connection: the 1.2
MESSAGE ``ack`` header. It is the message id, unless the caller of ``send_message()``
reused the id of a message still pending; then a suffix makes it unique. Messages are
also kept per subscription, oldest first, since a ``client`` acknowledgment is
cumulative.

Every lookup an ACK or NACK makes is a dictionary lookup, in every version: STOMP 1.2
names the ack value; 1.0 and 1.1 name the message id (1.1 with the subscription), found
through an index from message id to the subscriptions and ack values that carry it. A
scan over the pending messages would let ten thousand ACKs in one WebSocket message
cost seconds of the node's loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stomp_cluster.protocol.errors import LimitExceeded, ProtocolError
from stomp_cluster.protocol.events import (
    AckMode,
    AckRequested,
    Event,
    Limits,
    NackRequested,
    SendRequested,
    Subscription,
)
from stomp_cluster.protocol.frames import Command, Frame, Version, _shorten
from stomp_cluster.typing import SubscriptionId

__all__ = ["ClientState", "PendingAck"]


@dataclass(frozen=True, slots=True)
class PendingAck:
    """An ACK or NACK frame and the pending message it names."""

    frame: Frame
    subscription_id: SubscriptionId
    ack_value: str


class ClientState:
    """What one client has open on its connection, with the limits on it.

    Args:
        limits: the connection's limits.

    Attributes:
        subscriptions: the open subscriptions by id.
    """

    __slots__ = (
        "_buffered_bytes",
        "_by_message_id",
        "_counter",
        "_owners",
        "_pending",
        "_transaction_bytes",
        "_transactions",
        "limits",
        "subscriptions",
    )

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.subscriptions: dict[SubscriptionId, Subscription] = {}
        # Unacknowledged messages: subscription id by ack value, oldest first; and per
        # subscription, message id by ack value, oldest first.
        self._owners: dict[str, SubscriptionId] = {}
        self._pending: dict[SubscriptionId, OrderedDict[str, str]] = {}
        # The 1.0/1.1 index: message id -> subscription id -> its ack values, oldest
        # first (more than one only when a caller reused a pending message's id).
        self._by_message_id: dict[str, dict[SubscriptionId, list[str]]] = {}
        self._counter = 0
        self._transactions: dict[str, list[SendRequested | PendingAck]] = {}
        # Bytes held by each open transaction, and by all of them together: counts of
        # frames alone let 16 transactions of 1,000 frames of 1 MiB hold 15.6 GiB.
        self._transaction_bytes: dict[str, int] = {}
        self._buffered_bytes = 0

    # Subscriptions.

    def subscribe(self, subscription: Subscription) -> None:
        """Open a subscription.

        Raises:
            ProtocolError: its id is in use.
            LimitExceeded: too many subscriptions.
        """
        if subscription.id in self.subscriptions:
            # "Within the same connection, different subscriptions MUST use different
            # subscription identifiers." (1.2, SUBSCRIBE id Header)
            raise ProtocolError(f"subscription id {_shorten(subscription.id)!r} already in use")
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise LimitExceeded("subscriptions", self.limits.max_subscriptions)
        self.subscriptions[subscription.id] = subscription
        if subscription.ack is not AckMode.AUTO:
            self._pending[subscription.id] = OrderedDict()

    def unsubscribe(
        self, *, subscription_id: str | None = None, destination: str = ""
    ) -> Subscription:
        """Close a subscription, found by id or else by destination, and its pending acks.

        Raises:
            ProtocolError: no such subscription.
        """
        if subscription_id is not None:
            # "This header MUST match the subscription identifier of an existing
            # subscription." (1.2, UNSUBSCRIBE)
            subscription = self.subscriptions.get(SubscriptionId(subscription_id))
            what = f"subscription id {_shorten(subscription_id)!r}"
        else:
            subscription = next(
                (s for s in self.subscriptions.values() if s.destination == destination), None
            )
            what = f"subscription to {_shorten(destination)!r}"
        if subscription is None:
            raise ProtocolError(f"unknown {what}")
        del self.subscriptions[subscription.id]
        pending: Mapping[str, str] = self._pending.pop(subscription.id, {})
        for ack_value, message_id in pending.items():
            del self._owners[ack_value]
            self._unindex(subscription.id, ack_value, message_id)
        return subscription

    # Unacknowledged messages.

    def add_message(self, subscription: Subscription, message_id: str) -> str | None:
        """Record a MESSAGE about to be sent; return its ack value if it needs one.

        Raises:
            LimitExceeded: too many unacknowledged messages.
        """
        if subscription.ack is AckMode.AUTO:
            return None
        limit = self.limits.max_pending_acks
        if len(self._owners) >= limit:
            message = f"too many unacknowledged messages: limit is {limit}"
            raise LimitExceeded("pending acks", limit, message=message)
        ack_value = message_id
        while ack_value in self._owners:
            self._counter += 1
            ack_value = f"{message_id}-{self._counter}"
        self._owners[ack_value] = subscription.id
        self._pending[subscription.id][ack_value] = message_id
        by_subscription = self._by_message_id.setdefault(message_id, {})
        by_subscription.setdefault(subscription.id, []).append(ack_value)
        return ack_value

    def _unindex(self, subscription_id: SubscriptionId, ack_value: str, message_id: str) -> None:
        by_subscription = self._by_message_id[message_id]
        values = by_subscription[subscription_id]
        values.remove(ack_value)
        if not values:
            del by_subscription[subscription_id]
            if not by_subscription:
                del self._by_message_id[message_id]

    def find_pending(self, frame: Frame, version: Version | None) -> PendingAck:
        """Find the pending message an ACK or NACK frame names.

        Args:
            frame: the ACK or NACK, whose required headers the caller checked.
            version: the negotiated version, which decides the headers used.

        Raises:
            ProtocolError: the message is unknown, or already acknowledged.
        """
        if version is Version.V1_2:
            # "The ACK frame MUST include an id header matching the ack header of the
            # MESSAGE being acknowledged." (1.2, ACK)
            key = frame.get("id") or ""
            owner = self._owners.get(key)
            if owner is not None:
                return PendingAck(frame, owner, key)
        else:
            # 1.1: "message-id, which MUST contain a value matching the message-id for the
            # MESSAGE being acknowledged and subscription"; 1.0 has no subscription.
            key = frame.get("message-id") or ""
            wanted = frame.get("subscription")
            by_subscription = self._by_message_id.get(key, {})
            candidates: Iterable[tuple[SubscriptionId, list[str]]]
            if wanted is None:
                candidates = by_subscription.items()
            else:
                values = by_subscription.get(SubscriptionId(wanted))
                candidates = () if values is None else ((SubscriptionId(wanted), values),)
            for subscription_id, values in candidates:
                # The ack value equal to the id first; else the oldest reuse of the id.
                ack_value = key if key in values else values[0]
                return PendingAck(frame, subscription_id, ack_value)
        raise ProtocolError(f"{frame.command.value} for unknown message id {_shorten(key)!r}")

    def acknowledge(
        self, ack: PendingAck, transaction: str | None = None
    ) -> AckRequested | NackRequested:
        """Forget the messages an ACK or NACK covers, and return its event."""
        pending = self._pending[ack.subscription_id]
        subscription = self.subscriptions[ack.subscription_id]
        if subscription.ack is AckMode.CLIENT_INDIVIDUAL:
            # "an ACK or NACK frame for a subsequent message MUST NOT cause a previous
            # message to get acknowledged" (1.2, SUBSCRIBE ack Header)
            del self._owners[ack.ack_value]
            message_ids = [pending.pop(ack.ack_value)]
            self._unindex(ack.subscription_id, ack.ack_value, message_ids[0])
        else:
            # "This means the acknowledgment operates on the message specified in the ACK
            # frame and all messages sent to the subscription before the ACK'ed message."
            # (1.2, SUBSCRIBE ack Header)
            message_ids = []
            key = None
            while key != ack.ack_value:
                key, message_id = pending.popitem(last=False)
                del self._owners[key]
                self._unindex(ack.subscription_id, key, message_id)
                message_ids.append(message_id)
        event = AckRequested if ack.frame.command is Command.ACK else NackRequested
        return event(subscription, tuple(message_ids), transaction, ack.frame)

    # Transactions.

    def begin(self, transaction: str) -> None:
        """Open a transaction.

        Raises:
            ProtocolError: it is already open.
            LimitExceeded: too many transactions.
        """
        if transaction in self._transactions:
            # "Within the same connection, different transactions MUST use different
            # transaction identifiers." (1.2, BEGIN)
            raise ProtocolError(f"transaction {_shorten(transaction)!r} already started")
        if len(self._transactions) >= self.limits.max_transactions:
            raise LimitExceeded("transactions", self.limits.max_transactions)
        self._transactions[transaction] = []
        self._transaction_bytes[transaction] = 0

    def buffer(self, transaction: str, item: SendRequested | PendingAck) -> None:
        """Hold a SEND event, or an ACK or NACK, until the transaction commits.

        Raises:
            ProtocolError: no such transaction.
            LimitExceeded: too many frames in the transaction, or too many bytes in it
                or in all the open transactions together.
        """
        buffered = self._transaction(transaction)
        limit = self.limits.max_transaction_frames
        if len(buffered) >= limit:
            message = f"too many frames in transaction: limit is {limit}"
            raise LimitExceeded("transaction frames", limit, message=message)
        size = _size(item.frame)
        held = self._transaction_bytes[transaction] + size
        limit = self.limits.max_transaction_bytes
        if held > limit:
            message = f"too many bytes in transaction: limit is {limit}"
            raise LimitExceeded("transaction bytes", limit, message=message)
        limit = self.limits.max_buffered_bytes
        if self._buffered_bytes + size > limit:
            message = f"too many bytes in open transactions: limit is {limit}"
            raise LimitExceeded("buffered bytes", limit, message=message)
        buffered.append(item)
        self._transaction_bytes[transaction] = held
        self._buffered_bytes += size

    def commit(self, transaction: str) -> list[Event]:
        """Close a transaction and return its events, in order.

        Raises:
            ProtocolError: no such transaction, or one of its ACKs or NACKs names a
                message settled (or unsubscribed from) since. Then nothing is applied.
        """
        buffered = self._transaction(transaction)
        # "any messages sent or acknowledged during a transaction will be processed
        # atomically" (1.2, BEGIN): check every ACK before settling any.
        # Settled so far: ack values (client-individual), and for each cumulative
        # subscription the position of its newest ACK among its pending messages, which
        # are numbered once per COMMIT, not once per ACK.
        settled: set[str] = set()
        reach: dict[SubscriptionId, int] = {}
        positions: dict[SubscriptionId, dict[str, int]] = {}
        for item in buffered:
            if isinstance(item, PendingAck):
                value, subscription_id = item.ack_value, item.subscription_id
                stale = value in settled or self._owners.get(value) != subscription_id
                if not stale and self.subscriptions[subscription_id].ack is AckMode.CLIENT:
                    where = positions.get(subscription_id)
                    if where is None:
                        pending = self._pending[subscription_id]
                        where = positions[subscription_id] = {k: i for i, k in enumerate(pending)}
                    stale = where[value] <= reach.get(subscription_id, -1)
                    reach[subscription_id] = where[value]
                else:
                    settled.add(value)
                if stale:
                    raise ProtocolError(
                        f"{item.frame.command.value} for unknown message id {_shorten(value)!r}",
                        "The message was acknowledged, or unsubscribed from, before COMMIT.",
                    )
        self._close(transaction)
        return [
            self.acknowledge(item, transaction) if isinstance(item, PendingAck) else item
            for item in buffered
        ]

    def abort(self, transaction: str) -> None:
        """Close a transaction and drop what it buffered.

        Raises:
            ProtocolError: no such transaction.
        """
        self._transaction(transaction)
        self._close(transaction)

    def abort_all(self) -> None:
        """Drop every open transaction, as DISCONNECT and errors do."""
        self._transactions.clear()
        self._transaction_bytes.clear()
        self._buffered_bytes = 0

    def _close(self, transaction: str) -> None:
        del self._transactions[transaction]
        self._buffered_bytes -= self._transaction_bytes.pop(transaction)

    def _transaction(self, transaction: str) -> list[SendRequested | PendingAck]:
        try:
            return self._transactions[transaction]
        except KeyError:
            raise ProtocolError(f"unknown transaction {_shorten(transaction)!r}") from None


def _size(frame: Frame) -> int:
    """About the bytes *frame* takes on the wire: what buffering it holds."""
    return (
        len(frame.command.value)
        + len(frame.body)
        + sum(len(name) + len(value) + 2 for name, value in frame.headers)
        + 3
    )
