"""Incremental STOMP frame decoder.

:class:`FrameReader` turns a byte stream into :class:`~stomp_cluster.protocol.frames.Frame`
objects. It does no I/O: you :meth:`~FrameReader.feed` it bytes as they arrive, in chunks
of any size, and call :meth:`~FrameReader.next_frame` until it returns ``None``.

How it stays linear in the input, whatever the chunking:

* the buffer is a :class:`bytearray`; complete header lines and frames are cut from its
  front with ``del buffer[:n]``, which CPython does in constant time by moving the
  start of the array rather than copying what follows;
* while waiting for a delimiter (the end of a header line, or the NUL after a body
  without ``content-length``) we remember how far we searched and start the next
  search there;
* each search is bounded by the limits, so oversized input is refused as soon as the
  limit is passed, without waiting for the rest of the frame.

Errors are raised at the first byte at which the input is known to be wrong, so a
stream gives the same frames, and then an error of the same type, however it is cut.
"""

from __future__ import annotations

import functools
import re

from stomp_cluster.protocol.errors import (
    FrameTooLarge,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
)
from stomp_cluster.protocol.frames import (
    _UNESCAPED_COMMANDS,
    CLIENT_COMMANDS,
    Command,
    Frame,
    Version,
    _shorten,
    unescape,
)

__all__ = ["FrameReader"]


@functools.cache
def _command_table(commands: frozenset[Command]) -> tuple[dict[bytes, Command], int]:
    """The command names of *commands* as bytes, and the longest one's length (a command
    line longer than that, plus an optional CR, cannot be a known command)."""
    table = {command.value.encode(): command for command in commands}
    return table, max((len(name) for name in table), default=0)


# "The NULL octet can be optionally followed by multiple EOLs." (1.2, STOMP Frames)
# Heart-beats are such EOLs too: "if the sender has no real STOMP frame to send, it MUST
# send an end-of-line (EOL)" (1.2, Heart-beating).
# Written so that the regex engine never backtracks: "(?:\r?\n)+" is 100 times slower.
_EOLS = re.compile(rb"\n*(?:\r\n\n*)*")
# The end of a header line followed by a blank line. One search finds the first of
# either form; searching for each separately would scan the whole buffer for the form a
# client never uses, once per frame.
_BLANK_LINE = re.compile(rb"\n\r?\n")


class FrameReader:
    """Decode STOMP frames from a stream of bytes, one at a time.

    Use one reader per connection. :class:`~stomp_cluster.protocol.connection.StompConnection`
    owns one; you only need your own to parse frames outside a connection, for instance
    in tests or in a client.

    Args:
        max_frame_size: the largest frame accepted, in bytes, from the first byte of the
            command to the terminating NUL.
        max_body_size: the largest body accepted, in bytes.
        max_headers: the most header lines accepted in one frame.
        max_header_length: the longest header line accepted, in bytes, without its EOL.
        commands: the commands accepted; any other is a :class:`MalformedFrame`.

    The four limits are kept as attributes of the same names.

    Attributes:
        version: the negotiated version, which decides how header escapes are decoded.
            ``None`` (the default, before negotiation) decodes none. CONNECT, STOMP and
            CONNECTED frames are never unescaped, whatever the version.
    """

    __slots__ = (
        "_buffer",
        "_command",
        "_commands",
        "_consumed",
        "_content_length",
        "_error",
        "_headers",
        "_in_body",
        "_length",
        "_longest_command",
        "_scan",
        "_unescape",
        "max_body_size",
        "max_frame_size",
        "max_header_length",
        "max_headers",
        "version",
    )

    def __init__(
        self,
        *,
        max_frame_size: int,
        max_body_size: int,
        max_headers: int,
        max_header_length: int,
        commands: frozenset[Command] = CLIENT_COMMANDS,
    ) -> None:
        self.version: Version | None = None
        self.max_frame_size = max_frame_size
        self.max_body_size = max_body_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        # Shared by every reader with the same commands: built per reader, this table was
        # the largest object of an idle connection's protocol state (about 1 KiB of 2.9).
        self._commands, self._longest_command = _command_table(commands)
        self._buffer = bytearray()
        self._error: ProtocolError | None = None
        self._start_frame()

    def _start_frame(self) -> None:
        # Per-frame state. The buffer always starts at the first unparsed byte;
        # ``_consumed`` counts the bytes of the current frame already cut from it.
        self._consumed = 0
        self._scan = 0  # where the next search for a delimiter starts
        self._command: Command | None = None
        self._headers: list[tuple[str, str]] = []
        self._content_length: str | None = None
        self._unescape: Version | None = None
        self._in_body = False
        self._length: int | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are waiting to be parsed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes to the buffer.

        Nothing is parsed yet: call :meth:`next_frame` next, until it returns ``None``.

        Args:
            data: the bytes, in any chunking.
        """
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """Parse one frame from the buffer, if a whole one has arrived.

        Heart-beat EOLs between frames are skipped. Call it in a loop until it returns
        ``None``, then :meth:`feed` more bytes.

        Returns:
            The next frame, or ``None`` if more bytes are needed.

        Raises:
            MalformedFrame: the bytes are not a valid frame.
            FrameTooLarge: the frame or its body is over its limit. This is raised as
                soon as the limit is passed, before the rest of the frame arrives.
            LimitExceeded: too many header lines, or a header line too long.

            After an error the stream cannot be resynchronised: every later call
            raises the same exception, and the caller must close the connection.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except ProtocolError as error:
            # "if the frame included a receipt header, the ERROR frame SHOULD set the
            # receipt-id header" (1.2, ERROR): as far as we got in the frame.
            error.receipt_id = next(
                (value for name, value in self._headers if name == "receipt"), None
            )
            self._error = error
            raise

    def _next_frame(self) -> Frame | None:
        buffer = self._buffer
        while not self._in_body:
            if self._command is None:
                if buffer and buffer[0] in b"\r\n":
                    eols = _EOLS.match(buffer)
                    assert eols is not None  # the pattern matches the empty string too
                    del buffer[: eols.end()]
                    self._scan = 0
                if not self._read_command():
                    return None
            elif not self._read_head():
                return None
        return self._read_body()

    def _read_command(self) -> bool:
        """Cut the command line from the buffer; return False if it is incomplete."""
        buffer = self._buffer
        # "The frame starts with a command string terminated by an end-of-line (EOL),
        # which consists of an OPTIONAL carriage return (octet 13) followed by a REQUIRED
        # line feed (octet 10)." (1.2, STOMP Frames)
        window = self._longest_command + 2
        end = buffer.find(b"\n", self._scan, window)
        if end < 0:
            if len(buffer) < window:
                self._scan = len(buffer)
                return False
            # No known command is this long: refuse now rather than buffer garbage.
            raise MalformedFrame(
                "unknown command", f"the frame starts with {bytes(buffer[:window])!r}"
            )
        line = bytes(buffer[: end - 1 if end and buffer[end - 1] == 13 else end])
        command = self._commands.get(line)
        if command is None:
            try:
                name = line.decode()
            except UnicodeDecodeError:
                raise MalformedFrame("invalid UTF-8 in command", repr(line)) from None
            expected = ", ".join(sorted(command.value for command in self._commands.values()))
            raise MalformedFrame(f"unknown command {name!r}", f"expected one of {expected}")
        if self.version not in (None, Version.V1_0) and command not in _UNESCAPED_COMMANDS:
            self._unescape = self.version
        self._command = command
        self._cut(end + 1)
        return True

    def _read_head(self) -> bool:
        """Cut the header lines and the blank line after them; False if incomplete."""
        buffer = self._buffer
        if not buffer.startswith((b"\n", b"\r\n")):
            # Fast path: if the blank line has arrived, within the frame's budget, take
            # every line at once. The buffer starts at a line and holds no LF before
            # _scan, so the blank line cannot start earlier.
            blank = _BLANK_LINE.search(buffer, self._scan, self.max_frame_size - self._consumed)
            if blank is not None:
                head = blank.start()
                for line in bytes(buffer[:head]).split(b"\n"):
                    self._add_header(line[:-1] if line[-1:] == b"\r" else line)
                self._cut(blank.end())
                self._end_head()
                return True
        # Otherwise one line at a time, so that limits apply as bytes arrive.
        while self._read_header():
            if self._in_body:
                return True
        return False

    def _read_header(self) -> bool:
        """Cut one header line, or the blank line ending the headers; False if incomplete."""
        buffer = self._buffer
        # The LF must come within both budgets: a line of max_header_length bytes plus
        # an optional CR, and what is left of max_frame_size.
        line_budget = self.max_header_length + 2
        frame_budget = self.max_frame_size - self._consumed
        end = buffer.find(b"\n", self._scan, min(line_budget, frame_budget))
        if end < 0:
            if len(buffer) >= line_budget and line_budget <= frame_budget:
                raise self._line_too_long()
            if len(buffer) >= frame_budget:
                raise self._frame_too_large()
            self._scan = len(buffer)
            return False
        line = bytes(buffer[: end - 1 if end and buffer[end - 1] == 13 else end])
        self._cut(end + 1)
        if line:
            self._add_header(line)
        else:
            self._end_head()
        return True

    def _add_header(self, line: bytes) -> None:
        if len(line) > self.max_header_length:
            # A line of exactly max_header_length + 1 bytes and no CR ends in the window.
            raise self._line_too_long()
        if len(self._headers) >= self.max_headers:
            # "servers MAY place maximum limits on: the number of frame headers allowed in
            # a single frame" (1.2, Size Limits)
            raise LimitExceeded("headers", self.max_headers)
        # "header = header-name ":" header-value" (1.2, Augmented BNF). We split at the
        # first colon and accept further raw colons in the value, as most brokers do,
        # because 1.0 peers cannot escape them.
        if b"\0" in line:
            # A NUL ends a frame; inside a header it can only be an attempt to cut a
            # frame short in some peer's parser downstream. "header-value = *<any OCTET
            # except CR or LF or ":">" (1.2, Augmented BNF) allows it; no broker should.
            raise MalformedFrame("NUL byte in header", f"got {_shorten(repr(line))}")
        colon = line.find(b":")
        if colon < 0:
            raise MalformedFrame("header line without colon", f"got {_shorten(repr(line))}")
        if colon == 0:
            # "header-name = 1*<any OCTET except CR or LF or ":">" (1.2, Augmented BNF)
            raise MalformedFrame("empty header name", f"got {_shorten(repr(line))}")
        try:
            # "The commands and headers are encoded in UTF-8." (1.2, Value Encoding)
            name = line[:colon].decode()
            value = line[colon + 1 :].decode()
        except UnicodeDecodeError:
            raise MalformedFrame("invalid UTF-8 in header", _shorten(repr(line))) from None
        if self._unescape is not None:
            name = unescape(name, self._unescape)
            value = unescape(value, self._unescape)
        # "clients and servers MUST never trim or pad headers with spaces" (1.2, Value
        # Encoding): the value is kept exactly as received.
        self._headers.append((name, value))
        if name == "content-length" and self._content_length is None:
            self._content_length = value

    def _end_head(self) -> None:
        # "A blank line (i.e. an extra EOL) indicates the end of the headers and the
        # beginning of the body." (1.2, STOMP Frames)
        self._in_body = True
        value = self._content_length
        if value is None:
            return
        if not (value.isascii() and value.isdigit()):
            raise MalformedFrame(
                "invalid content-length header",
                f"expected a non-negative decimal integer, got {_shorten(value)!r}",
            )
        digits = value.lstrip("0") or "0"
        # Past 18 digits the number is over any sane limit; skip int()'s digit limit.
        length = int(digits) if len(digits) <= 18 else 10**18
        if length > self.max_body_size:
            # "servers MAY place maximum limits on: [...] the maximum size of a frame
            # body" (1.2, Size Limits). Refused before reading any of it.
            raise FrameTooLarge(length, self.max_body_size, what="body")
        size = self._consumed + length + 1
        if size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size)
        self._length = length

    def _read_body(self) -> Frame | None:
        buffer = self._buffer
        length = self._length
        if length is not None:
            # "If a content-length header is included, this number of octets MUST be
            # read, regardless of whether or not there are NULL octets in the body."
            if len(buffer) <= length:
                return None
            # "The frame still needs to be terminated with a NULL octet." (1.2, Header
            # content-length)
            if buffer[length] != 0:
                raise MalformedFrame(
                    "frame body not followed by NUL",
                    f"content-length is {length}, but the byte after the body is "
                    f"{bytes(buffer[length : length + 1])!r}",
                )
        else:
            # Without content-length "the first null byte encountered signals the end of
            # the frame" (1.0, SEND). The body may be at most max_body_size bytes and the
            # whole frame, NUL included, at most max_frame_size.
            body_budget = self.max_body_size + 1
            frame_budget = self.max_frame_size - self._consumed
            found = buffer.find(b"\0", self._scan, min(body_budget, frame_budget))
            if found < 0:
                # Whichever budget is smaller runs out first, however the bytes arrive.
                if len(buffer) >= body_budget and body_budget <= frame_budget:
                    raise FrameTooLarge(
                        self.max_body_size + 1, self.max_body_size, what="body", at_least=True
                    )
                if len(buffer) >= frame_budget:
                    raise self._frame_too_large()
                self._scan = len(buffer)
                return None
            length = found
        if length < 65536:
            body = bytes(buffer[:length])
        else:
            # Copy a large body once rather than twice (slice, then bytes).
            with memoryview(buffer) as view, view[:length] as body_view:
                body = bytes(body_view)
        assert self._command is not None
        frame = Frame(self._command, tuple(self._headers), body)
        del buffer[: length + 1]
        self._start_frame()
        return frame

    def _cut(self, size: int) -> None:
        """Drop ``size`` parsed bytes from the front of the buffer."""
        del self._buffer[:size]
        self._consumed += size
        self._scan = 0

    def _frame_too_large(self) -> FrameTooLarge:
        # The delimiter we wait for is not within the frame's remaining budget, and
        # every budgeted byte has arrived: the frame cannot fit.
        return FrameTooLarge(self.max_frame_size + 1, self.max_frame_size, at_least=True)

    def _line_too_long(self) -> LimitExceeded:
        # "servers MAY place maximum limits on: [...] the maximum length of header lines"
        # (1.2, Size Limits)
        return LimitExceeded(
            "header line length",
            self.max_header_length,
            message=f"header line longer than {self.max_header_length} bytes",
        )
