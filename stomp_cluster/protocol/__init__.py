"""The STOMP 1.0, 1.1 and 1.2 server protocol, without I/O.

Bytes go in through :meth:`StompConnection.receive_data`, typed events come out of
:meth:`StompConnection.events_received`, and the bytes to write come out of
:meth:`StompConnection.data_to_send`. This package uses only the standard library: no
asyncio, Django, Channels or clock, so it can be tested with literal bytes and reused
with any transport.

This package is the public face of the protocol: import from ``stomp_cluster.protocol``,
not from its modules, which only define the names. Each module's ``__all__`` lists what
the other protocol modules may use; what is re-exported here is what code outside the
package may use.

The modules, from the bottom up::

    errors        the ProtocolError family and InvalidState
    frames        versions, commands, Frame, escaping, and the encoders (encode_frame,
                  PreparedMessage, MessageEncoder)
    events        the events a connection produces, Subscription, Limits
    reader        FrameReader: bytes to frames
    heartbeat     heart-beat header parsing and negotiation
    client_state  what one client has open: subscriptions, pending acks, transactions
    connection    StompConnection, the state machine that ties them together

Imports are eager: the package is small and pure, so laziness would buy nothing.
"""

from __future__ import annotations

from stomp_cluster.protocol.connection import State, StompConnection
from stomp_cluster.protocol.errors import (
    FrameTooLarge,
    InvalidState,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    StompClusterError,
    UnsupportedVersion,
)
from stomp_cluster.protocol.events import (
    AckMode,
    AckRequested,
    ConnectRequested,
    DisconnectRequested,
    Event,
    Limits,
    NackRequested,
    ProtocolFailed,
    ReceiptRequested,
    SendRequested,
    SubscribeRequested,
    Subscription,
    UnsubscribeRequested,
)
from stomp_cluster.protocol.frames import (
    CLIENT_COMMANDS,
    RESERVED_MESSAGE_HEADERS,
    SERVER_COMMANDS,
    SUPPORTED_VERSIONS,
    Command,
    Frame,
    MessageEncoder,
    PreparedMessage,
    Version,
    encode_frame,
    escape,
    unescape,
)
from stomp_cluster.protocol.heartbeat import MAX_HEARTBEAT, negotiate_heartbeat, parse_heartbeat
from stomp_cluster.protocol.reader import FrameReader

__all__ = [
    "CLIENT_COMMANDS",
    "MAX_HEARTBEAT",
    "RESERVED_MESSAGE_HEADERS",
    "SERVER_COMMANDS",
    "SUPPORTED_VERSIONS",
    "AckMode",
    "AckRequested",
    "Command",
    "ConnectRequested",
    "DisconnectRequested",
    "Event",
    "Frame",
    "FrameReader",
    "FrameTooLarge",
    "InvalidState",
    "LimitExceeded",
    "Limits",
    "MalformedFrame",
    "MessageEncoder",
    "NackRequested",
    "PreparedMessage",
    "ProtocolError",
    "ProtocolFailed",
    "ReceiptRequested",
    "SendRequested",
    "State",
    "StompClusterError",
    "StompConnection",
    "SubscribeRequested",
    "Subscription",
    "UnsubscribeRequested",
    "UnsupportedVersion",
    "Version",
    "encode_frame",
    "escape",
    "negotiate_heartbeat",
    "parse_heartbeat",
    "unescape",
]
