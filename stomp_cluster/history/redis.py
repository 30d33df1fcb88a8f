r"""Histories shared by the cluster: one Redis Stream per user.

Key layout
==========

``P`` is the ``prefix`` option (default ``stomp_cluster``) and ``{U}`` the user's hash tag:
the first 20 hex digits of the SHA-1 of the user key, in braces, as in the presence
registry. ``D`` is the same digest of a destination. ::

    P:h:{U}            stream  one entry per message: d (destination), b (body, raw bytes),
                               h (headers, JSON [[name, value], ...]); PX TTL = max_age
    P:h:{U}:pending    hash    D -> id of the first message that waited for the user on
                               that destination; same TTL as the stream
    P:h:{U}:acks       hash    D -> acknowledgement cursor (client ack modes); same TTL

Why it looks like this
======================

*A stream per user* makes Redis generate the ids, which become ``message-id`` headers:
``<ms>-<seq>`` on the server's clock, strictly increasing per stream even when the clock
goes back, so they order a user's messages whichever node sent them. Redis 7 reads a range
by id in O(log n), which is what a resume needs.

*Both keys carry the user's hash tag*, so each call is one Lua script on one Redis Cluster
slot: atomic, and one round trip. User keys and destinations are hashed into key and field
names, so ``}{``, ``*`` or a newline in them is just bytes fed to SHA-1; the destination is
stored raw only as a stream field value, where it cannot name a key, and reads compare it
byte for byte.

*Trimming is exact and done by the append script*, by age (``XTRIM MINID =``, with the
threshold taken from the new id's millisecond, so it uses the same clock as the ids) then by
count (``XTRIM MAXLEN =``). Approximate trimming (``~``) would be cheaper but removes whole
radix-tree nodes (100 entries by default), so a user's history would keep entries well past
``max_age``, and the count bound would be loose. More to the point, completeness needs the
newest removed id, and Redis 7.0 does **not** update the stream's ``max-deleted-entry-id``
when trimming (only ``XDEL`` does; measured on 7.0.15): the script looks up the last entry it
is about to remove and records it with ``XSETID ... MAXDELETEDID``. A stream that starts
records the id just before its first entry the same way, so an id from a history that
expired or was lost reads as incomplete (see :mod:`stomp_cluster.history.base`,
"Completeness"). ``XINFO STREAM`` then gives ``max-deleted-entry-id``, ``entries-added`` and
``length`` to the read script, which returns them with the entries: one atomic snapshot.

The age check reads the oldest entry first (``XRANGE - + COUNT 1``) and only then looks for
the newest entry to remove: ``XREVRANGE`` with an end before the first entry walks the whole
stream (measured: 275 µs per call at 2,500 entries, and growing), which made every append
linear in the history's length.

*Both keys expire* ``max_age`` after the user's last append: by then every entry is older
than ``max_age``, so dropping the stream changes nothing, and histories of users who are gone
do not stay in memory forever. Between appends, entries may outlive ``max_age`` by up to
``max_age`` (trimming happens on append, never on read, so reads stay read-only).

Requires Redis 7.0 or later (``XSETID ... MAXDELETEDID``, exclusive ``(`` ranges,
``XINFO STREAM``'s ``entries-added``).

Cost of each call
=================

=============  ==========================================================  =====
call           commands, all inside one script                             trips
=============  ==========================================================  =====
append         EXISTS XADD XRANGE XLEN PEXPIRE PEXPIRE, and when needed:   1
               XREVRANGE XTRIM (age), XRANGE XTRIM (count), XSETID,
               HSETNX (pending)
read           EXISTS XINFO XRANGE (more XRANGE batches when filtering)    1
take_pending   HGET, then HDEL if found                                    1
last_id        XREVRANGE + - COUNT 1                                       1
rewind_point   XREVRANGE, in batches (of 256 or more when filtering)       1
set_acked      EXISTS HGET HSET PTTL PEXPIRE                               1
acked          HGET                                                        1
=============  ==========================================================  =====

A script the server does not know yet (first use, or after a restart) costs one more trip,
once. Measured on the test machine: an append costs ~40 µs of Redis time and ~0.3 ms end to
end, flat in the history's length. A read returns at most ``limit`` entries in one reply,
packed into a single string (see ``_unpack``): 10,000 entries of 200 bytes take ~0.15 s,
most of it building the Python objects. With a destination filter the script scans the
user's later entries in batches of at least 256 until it has ``limit``, blocking Redis for
~5 µs per entry scanned (50 ms for 10,000): keep ``max_length`` moderate.

Connections
===========

Connections are :mod:`stomp_cluster.redis_connection`'s, as for the presence registry (one
client per event loop, auto-pipelining, a blocking pool of ``max_connections``,
``socket_timeout`` everywhere, RESP2, no automatic retries, Sentinel support), with one
difference: replies are not decoded, since bodies are bytes. Outages raise
:class:`~stomp_cluster.exceptions.HistoryUnavailable`, whose message starts with
``"message history unreachable: "``.

The append script is also a Lua function, :data:`APPEND_FUNCTION`, so that the transport's
one-trip send (:meth:`stomp_cluster.transport.RedisTransport.send_to_user`) appends
exactly as :meth:`RedisHistory.append` does, with :meth:`RedisHistory.keys` and
:meth:`RedisHistory.append_args` for its ``KEYS`` and ``ARGV``.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Sequence
from typing import Any

from stomp_cluster.exceptions import HistoryUnavailable
from stomp_cluster.history.base import (
    BEGINNING,
    HistoryBackend,
    HistoryEntry,
    HistoryPage,
    is_complete,
    parse_id,
    previous_id,
)
from stomp_cluster.redis_connection import (
    Call,
    Host,
    RedisConnection,
    Script,
    check_hosts_and_prefix,
    digest,
)
from stomp_cluster.typing import Headers

__all__ = ["APPEND_FUNCTION", "RedisHistory"]

_MAX_ID = (2**64 - 1, 2**64 - 1)

#: Lua source of ``append(KEYS, ARGV)``, the append script as a function, so that another
#: script can append to a history in the same round trip (the transport's one-trip send
#: does). Its parameters shadow the script's own ``KEYS`` and ``ARGV``. KEYS: the stream and
#: pending-hash keys (:meth:`RedisHistory.keys`). ARGV: max_length, max_age in ms,
#: destination, body, headers JSON, destination digest or "" (no pending mark), as
#: :meth:`RedisHistory.append_args` gives them. Returns the new entry's id.
APPEND_FUNCTION = r"""
local function append(KEYS, ARGV)
local stream = KEYS[1]
local fresh = redis.call('EXISTS', stream) == 0
local id = redis.call('XADD', stream, '*', 'd', ARGV[3], 'b', ARGV[4], 'h', ARGV[5])
local ms, seq = string.match(id, '^(%d+)-(%d+)$')
local cut = false
if fresh then
  if seq ~= '0' then
    cut = ms .. '-' .. string.format('%.0f', tonumber(seq) - 1)
  else
    cut = string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
  end
end
local floor = tonumber(ms) - tonumber(ARGV[2])
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
if tonumber(string.match(oldest, '^(%d+)-')) < floor then
  local minid = string.format('%.0f', floor) .. '-0'
  cut = redis.call('XREVRANGE', stream, '(' .. minid, '-', 'COUNT', 1)[1][1]
  redis.call('XTRIM', stream, 'MINID', '=', minid)
end
local excess = redis.call('XLEN', stream) - tonumber(ARGV[1])
if excess > 0 then
  local doomed = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
  cut = doomed[#doomed][1]
  redis.call('XTRIM', stream, 'MAXLEN', '=', ARGV[1])
end
if cut then redis.call('XSETID', stream, id, 'MAXDELETEDID', cut) end
if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[2], ARGV[6], id) end
redis.call('PEXPIRE', stream, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
end
"""

_APPEND = APPEND_FUNCTION + "return append(KEYS, ARGV)\n"

# KEYS: stream. ARGV: after, how many (0: none), destination, "1" to filter by it.
# Returns nil when the stream does not exist, else length, entries-added,
# max-deleted-entry-id, and the entries packed into one string (see _unpack).
_READ = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {0, 0, '0-0', ''}
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'length' then out[1] = info[i + 1]
  elseif k == 'entries-added' then out[2] = info[i + 1]
  elseif k == 'max-deleted-entry-id' then out[3] = info[i + 1] end
end
local want, dest, filter = tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local start, found, parts = '(' .. ARGV[1], 0, {}
while found < want do
  local count = want - found
  if filter and count < 256 then count = 256 end
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
  for _, entry in ipairs(batch) do
    local f, d, b, h = entry[2], '', '', '[]'
    for j = 1, #f, 2 do
      if f[j] == 'd' then d = f[j + 1] elseif f[j] == 'b' then b = f[j + 1]
      elseif f[j] == 'h' then h = f[j + 1] end
    end
    if not filter or d == dest then
      parts[#parts + 1] = struct.pack('>I4I4I4I4', #entry[1], #d, #h, #b)
      parts[#parts + 1] = entry[1] .. d .. h .. b
      found = found + 1
      if found >= want then break end
    end
  end
  if #batch < count then break end
  start = '(' .. batch[#batch][1]
end
out[4] = table.concat(parts)
return out
"""

# KEYS: pending. ARGV: destination hash, id, max_age ms. The pending mark that the append
# script sets when asked, set afterwards instead (the transport's cluster send learns only
# after the append whether any live node holds the user).
_MARK_PENDING = r"""
local set = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return set
"""

# KEYS: pending. ARGV: destination hash.
_TAKE_PENDING = r"""
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then redis.call('HDEL', KEYS[1], ARGV[1]) end
return id
"""

# KEYS: stream, acks. ARGV: destination hash, id "<ms>-<seq>". Moves the cursor forward
# only, and only while the history exists (it expires with it).
_SET_ACKED = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current then
  local cm, cs = string.match(current, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[2], '^(%d+)-(%d+)$')
  if tonumber(nm) < tonumber(cm) or (nm == cm and tonumber(ns) <= tonumber(cs)) then
    return 0
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], math.max(redis.call('PTTL', KEYS[1]), 1))
return 1
"""

# KEYS: stream. Only the id: XREVRANGE itself would send the newest body too.
_LAST_ID = r"""
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest == 0 then return false end
return newest[1][1]
"""

# KEYS: stream. ARGV: how many, max body bytes ('' for no limit), destination, "1" to
# filter by it. Walks back from the newest entry. Returns nil when the stream does not
# exist, else {"o", oldest entry taken} or {"n", newest id} when none is taken.
_REWIND = r"""
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not newest then return false end
local want, budget, dest, filter = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local found, used, oldest, start = 0, 0, false, '+'
while found < want do
  local count = want - found
  if filter and count < 256 then count = 256 end
  local batch = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', count)
  for _, entry in ipairs(batch) do
    local f, d, b = entry[2], '', ''
    for j = 1, #f, 2 do
      if f[j] == 'd' then d = f[j + 1] elseif f[j] == 'b' then b = f[j + 1] end
    end
    if not filter or d == dest then
      used = used + #b
      if budget and used > budget then found = want break end
      found, oldest = found + 1, entry[1]
      if found >= want then break end
    end
  end
  if #batch < count then break end
  start = '(' .. batch[#batch][1]
end
if oldest then return {'o', oldest} end
return {'n', newest[1]}
"""

_S_APPEND = Script.from_source(_APPEND)
_S_REWIND = Script.from_source(_REWIND)
_S_READ = Script.from_source(_READ)
_S_TAKE_PENDING = Script.from_source(_TAKE_PENDING)
_S_MARK_PENDING = Script.from_source(_MARK_PENDING)
_S_LAST_ID = Script.from_source(_LAST_ID)
_S_SET_ACKED = Script.from_source(_SET_ACKED)


_SIZES = struct.Struct(">IIII")
_json_decode = json.JSONDecoder().decode  # json.loads would sniff the encoding of bytes


def _unpack(packed: bytes) -> tuple[HistoryEntry, ...]:
    """Decode the read script's entries: per entry, four big-endian 32-bit lengths, then
    the id, destination, headers JSON and body.

    One string for the whole page, because redis-py's pure-Python parser spends ~10 µs per
    reply element: with four elements per entry, a 10,000-entry read took ~0.4 s; packed,
    ~0.15 s, most of it building the entries.
    """
    entries = []
    pos, end = 0, len(packed)
    while pos < end:
        n_id, n_dest, n_headers, n_body = _SIZES.unpack_from(packed, pos)
        pos += _SIZES.size
        entry_id = packed[pos : pos + n_id].decode("ascii")
        pos += n_id
        destination = packed[pos : pos + n_dest].decode()
        pos += n_dest
        headers = _json_decode(packed[pos : pos + n_headers].decode())
        pos += n_headers
        body = packed[pos : pos + n_body]
        pos += n_body
        entries.append(HistoryEntry(entry_id, destination, body, tuple((k, v) for k, v in headers)))
    return tuple(entries)


@functools.lru_cache(maxsize=1024)  # a sender's headers are mostly the same few
def _headers_json(headers: Headers) -> str:
    return json.dumps([[name, value] for name, value in headers], separators=(",", ":"))


class RedisHistory(HistoryBackend):
    """Histories in Redis: standalone, Sentinel or Redis Cluster.

    Args:
        hosts: Where Redis is, in any form :class:`~stomp_cluster.presence.redis.RedisPresence`
            accepts (URL, ``(host, port)``, connection keyword arguments, Sentinel dict;
            see :data:`~stomp_cluster.redis_connection.Host`); the first entry is used.
            ``decode_responses`` is forced off. Default ``[("localhost", 6379)]``.
        prefix: Prefix of every key; no braces. Default ``"stomp_cluster"``.
        socket_timeout: Seconds to wait for Redis (connect, reply, or a free pooled
            connection) before raising
            :class:`~stomp_cluster.exceptions.HistoryUnavailable`. Default 3.
        max_connections: Size of each event loop's connection pool. Default 50.
        max_length: See :class:`~stomp_cluster.history.base.HistoryBackend`. Default 1000.
        max_age: See :class:`~stomp_cluster.history.base.HistoryBackend`. Default 86400.
    """

    def __init__(
        self,
        *,
        hosts: Sequence[Host] = (("localhost", 6379),),
        prefix: str = "stomp_cluster",
        socket_timeout: float = 3.0,
        max_connections: int = 50,
        max_length: int = 1000,
        max_age: float = 86400.0,
        **options: Any,
    ) -> None:
        super().__init__(max_length=max_length, max_age=max_age, **options)
        check_hosts_and_prefix("RedisHistory", hosts, prefix)
        self.prefix = prefix
        self.host = hosts[0]
        self.redis = RedisConnection(
            hosts[0],
            name="message history",
            unavailable=HistoryUnavailable,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            decode_responses=False,
        )

    def keys(self, user_key: str) -> tuple[str, str]:
        """The stream and pending-hash keys of *user_key*'s history."""
        return self._keys(user_key)

    def _keys(self, user_key: str) -> tuple[str, str]:
        stream = f"{self.prefix}:h:{{{digest(user_key)}}}"
        return stream, f"{stream}:pending"

    async def _call(self, call: Call) -> Any:
        """Run one call in one round trip; outages raise HistoryUnavailable."""
        (reply,) = await self.redis.run([call])
        return reply

    def append_args(
        self, destination: str, body: bytes, headers: Headers, pending: bool
    ) -> tuple[int, int, str, bytes, str, str]:
        """``ARGV`` of :data:`APPEND_FUNCTION` for one message, shared with RedisTransport.

        Args:
            pending: set the pending mark of *destination* if none is set: the message
                waits for the user's next subscription to it (offline delivery).
        """
        return (
            self.max_length,
            self.max_age_ms,
            destination,
            bytes(body),
            _headers_json(tuple(headers)),
            digest(destination) if pending else "",
        )

    def append_call(
        self, user_key: str, destination: str, body: bytes, headers: Headers, pending: bool
    ) -> Call:
        """The script call of :meth:`append`, for a caller that pipelines it with others
        (the transport's send on a Redis Cluster; tests that append many)."""
        args = self.append_args(destination, body, headers, pending)
        return Call.lua(_S_APPEND, self._keys(user_key), *args)

    _append_call = append_call

    def mark_pending_call(self, user_key: str, destination: str, message_id: str) -> Call:
        """The call that makes *message_id* wait for *user_key*'s next subscription to
        *destination*, unless a message already waits there: what :meth:`append` does
        with ``pending=True``, as a separate call."""
        pending = self._keys(user_key)[1]
        args = (digest(destination), message_id, self.max_age_ms)
        return Call.lua(_S_MARK_PENDING, (pending,), *args)

    async def append(
        self,
        user_key: str,
        destination: str,
        body: bytes,
        headers: Headers,
        *,
        pending: bool = False,
    ) -> str:
        call = self._append_call(user_key, destination, body, headers, pending)
        reply: bytes = await self._call(call)
        return reply.decode("ascii")

    async def read(
        self,
        user_key: str,
        after: str,
        *,
        destination: str | None = None,
        limit: int = 10_000,
    ) -> HistoryPage:
        start = parse_id(after)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        # Nothing comes after the greatest id, and Redis rejects "(" before it.
        want = 0 if start == _MAX_ID else limit
        stream, _ = self._keys(user_key)
        filtered = "0" if destination is None else "1"
        call = Call.lua(_S_READ, [stream], after, want, destination or "", filtered)
        reply: list[Any] | None = await self._call(call)
        if reply is None:
            complete = is_complete(start, exists=False, length=0, added=0, max_deleted=(0, 0))
            return HistoryPage((), complete)
        length, added, max_deleted, packed = reply
        entries = _unpack(packed)
        complete = is_complete(
            start,
            exists=True,
            length=int(length),
            added=int(added),
            max_deleted=parse_id(max_deleted.decode("ascii")),
        )
        return HistoryPage(entries, complete)

    async def rewind_point(
        self,
        user_key: str,
        count: int,
        *,
        destination: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count!r}")
        stream, _ = self._keys(user_key)
        filtered = "0" if destination is None else "1"
        budget = "" if max_bytes is None else str(max_bytes)
        call = Call.lua(_S_REWIND, [stream], count, budget, destination or "", filtered)
        reply: list[bytes] | None = await self._call(call)
        if reply is None:
            return BEGINNING
        kind, entry_id = reply[0], reply[1].decode("ascii")
        return previous_id(entry_id) if kind == b"o" else entry_id

    async def take_pending(self, user_key: str, destination: str) -> str | None:
        _, pending = self._keys(user_key)
        reply: bytes | None = await self._call(
            Call.lua(_S_TAKE_PENDING, [pending], digest(destination))
        )
        return None if reply is None else reply.decode("ascii")

    async def set_acked(self, user_key: str, destination: str, message_id: str) -> None:
        parse_id(message_id)
        stream, _ = self._keys(user_key)
        await self._call(
            Call.lua(_S_SET_ACKED, [stream, f"{stream}:acks"], digest(destination), message_id)
        )

    async def acked(self, user_key: str, destination: str) -> str | None:
        stream, _ = self._keys(user_key)
        reply: bytes | None = await self._call(
            Call(("HGET", f"{stream}:acks", digest(destination)))
        )
        return None if reply is None else reply.decode("ascii")

    async def last_id(self, user_key: str) -> str | None:
        stream, _ = self._keys(user_key)
        reply: bytes | None = await self._call(Call.lua(_S_LAST_ID, [stream]))
        return None if reply is None else reply.decode("ascii")

    async def close(self) -> None:
        """Close this event loop's client and its connections."""
        await self.redis.close()
