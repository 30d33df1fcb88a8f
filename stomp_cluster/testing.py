"""Test helpers for projects using stomp_cluster.

:class:`StompCommunicator` is Channels' ``WebsocketCommunicator`` that speaks STOMP, so
you can test your handlers, permission hooks and signal receivers in-process::

    from stomp_cluster.testing import StompCommunicator

    async def test_echo():
        client = StompCommunicator(application, "/ws")
        await client.connect_stomp()
        await client.send_frame("SUBSCRIBE", {"id": "0", "destination": "/user/queue/echo"})
        await client.send_frame("SEND", {"destination": "/app/echo"}, "hi")
        frame = await client.receive_frame()
        assert frame.body == b"hi"
        await client.disconnect()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from channels.testing import WebsocketCommunicator

from stomp_cluster.protocol import (
    SERVER_COMMANDS,
    Command,
    Frame,
    FrameReader,
    Version,
    encode_frame,
)

__all__ = ["StompCommunicator"]

HeaderArg = Mapping[str, str] | Sequence[tuple[str, str]] | None


class StompCommunicator(WebsocketCommunicator):  # type: ignore[misc]  # channels is untyped
    """A WebSocket test client that sends and receives STOMP frames.

    Args:
        application: your ASGI application (or ``StompConsumer.as_asgi()``).
        path: the endpoint's path.
        version: the STOMP version to offer as the WebSocket subprotocol and in
            ``accept-version``.
        headers: extra handshake headers, as ``(bytes, bytes)`` pairs, e.g. a cookie.
    """

    def __init__(
        self,
        application: Any,
        path: str = "/ws",
        *,
        version: str = "1.2",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.version = Version(version)
        super().__init__(
            application, path, headers=headers, subprotocols=[self.version.subprotocol]
        )
        self.reader = FrameReader(
            max_frame_size=1 << 30,
            max_body_size=1 << 30,
            max_headers=10_000,
            max_header_length=1 << 20,
            commands=SERVER_COMMANDS,
        )
        self.closed_code: int | None = None

    async def connect_stomp(self, headers: HeaderArg = None, *, timeout: float = 3) -> Frame:
        """Open the WebSocket and CONNECT.

        Returns:
            The CONNECTED frame.

        Raises:
            AssertionError: the WebSocket was refused or the server answered ERROR.
        """
        connected, code = await self.connect(timeout)
        assert connected, f"WebSocket refused with code {code}"
        base = {"accept-version": self.version.value, "host": "localhost"}
        await self.send_frame("CONNECT", {**base, **dict(_pairs(headers))})
        frame = await self.receive_frame(timeout)
        assert frame.command is Command.CONNECTED, f"expected CONNECTED, got {frame}"
        self.reader.version = self.version
        return frame

    async def send_frame(
        self, command: str, headers: HeaderArg = None, body: bytes | str = b""
    ) -> None:
        """Send one frame as one WebSocket text message (binary if the body is not UTF-8)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        frame = Frame(Command(command), tuple(_pairs(headers)), body)
        data = encode_frame(
            frame, None if frame.command in (Command.CONNECT, Command.STOMP) else self.version
        )
        try:
            await self.send_to(text_data=data.decode("utf-8"))
        except UnicodeDecodeError:
            await self.send_to(bytes_data=data)

    async def receive_frame(self, timeout: float = 1) -> Frame:
        """Return the next frame from the server, skipping heart-beats."""
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            message = await self.receive_output(timeout)
            if message["type"] == "websocket.close":
                self.closed_code = message.get("code")
                raise AssertionError(f"socket closed (code {self.closed_code}) before a frame")
            data = message.get("bytes")
            if data is None:
                data = message.get("text", "").encode("utf-8")
            self.reader.feed(data)

    async def receive_close(self, timeout: float = 1) -> int | None:
        """Wait for the server to close the socket, skipping frames; return the code."""
        while True:
            message = await self.receive_output(timeout)
            if message["type"] == "websocket.close":
                self.closed_code = message.get("code")
                return self.closed_code


def _pairs(headers: HeaderArg) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]
