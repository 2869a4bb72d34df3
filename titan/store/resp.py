"""RESP, the Redis wire protocol: an incremental request parser, reply encoders,
and a fast whole-buffer scanner for AOF files.

What this module owns: how commands and replies sit on a byte stream.  It is
pure: the server feeds socket bytes in and writes the encoded replies out;
the AOF code hands it file contents::

    socket bytes --> RespParser.feed() --> [[b"SET", b"k", b"v"], ...]
    reply value  --> encode_reply(reply, resp3=...) --> socket
    AOF command  --> encode_command(args) --> file
    file bytes   --> scan_commands(data) --> ScanResult(commands, end, error, ...)

A request is an array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``)
or, for telnet users, an inline line (``GET k\\r\\n``).  Limits on bulk length,
array length and inline length are checked as soon as a header is read,
before anything is buffered for it, so a hostile ``$4294967296`` costs
nothing.  Malformed input raises :class:`RespError` with Redis's wording
(``Protocol error: invalid bulk length``); the server replies with it and
closes the connection.

Speed: runs of whole commands go through :mod:`titan.store.resp_fast`
(split on CRLF, then check every ``$<n>`` against the token after it); any
command it cannot vouch for (a payload holding CRLF, a command cut by its
window, an odd header) goes through the exact header-by-header parser here.
Both accept exactly the same input.
"""
from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

from titan.errors import TitanError
from titan.store.reply import ErrorReply, MapReply, PushReply, SetReply, SimpleString
from titan.store.resp_fast import CRLF, FastPathPolicy, fast_commands

__all__ = [
    "RespError",
    "RespParser",
    "ScanResult",
    "scan_commands",
    "encode_command",
    "encode_reply",
    "DEFAULT_MAX_BULK_BYTES",
    "DEFAULT_MAX_ARRAY_LEN",
    "DEFAULT_MAX_INLINE_BYTES",
]

DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_ARRAY_LEN = 1024 * 1024
DEFAULT_MAX_INLINE_BYTES = 64 * 1024

_MAX_HEADER_BYTES = 32  # "*" or "$", up to 20 digits and a sign, CRLF: generous
_PARTIAL_HEADER = re.compile(rb"-?[0-9]*\r?\Z")



class RespError(TitanError):
    """Raised for malformed RESP input: bad header, missing CRLF, a limit exceeded.

    ``message`` is the Redis-style text (``Protocol error: ...``) to send
    back as the error reply; ``offset`` is the byte, counted in the buffer
    being parsed, where the problem was seen.
    """

    def __init__(self, message: str, *, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


# -- the exact parser: one header or one bulk at a time -------------------------


def _length(raw: bytes) -> Optional[int]:
    """A canonical non-negative decimal (no sign, no leading zero), else None."""
    if raw.isdigit() and len(raw) <= 18 and (raw[0] != 48 or len(raw) == 1):
        return int(raw)
    return None


def _char(value: int) -> str:
    return chr(value) if 32 <= value < 127 else "\\x%02x" % value


def _header_end(buf: bytes, pos: int, what: str) -> int:
    """Index of the CRLF ending the header at ``pos``, or -1 if it is not all here.

    Raises RespError when the bytes already here cannot start a valid header,
    so garbage is reported now instead of being waited on.
    """
    newline = buf.find(CRLF, pos + 1, pos + _MAX_HEADER_BYTES)
    if newline >= 0:
        return newline
    partial = buf[pos + 1 : pos + _MAX_HEADER_BYTES]
    if len(partial) >= _MAX_HEADER_BYTES - 1:
        raise RespError(f"Protocol error: too big {what} count string", offset=pos)
    if _PARTIAL_HEADER.match(partial) is None:
        kind = "multibulk" if what == "mbulk" else "bulk"
        raise RespError(f"Protocol error: invalid {kind} length", offset=pos)
    return -1


def _array_header(buf: bytes, pos: int, max_array_len: int) -> Tuple[int, int]:
    """Read ``*<n>\\r\\n`` at ``pos``: (n, position after it), or (-1, pos) if cut short.

    ``*0`` and ``*-1`` read as 0 (an empty request, skipped as Redis does).
    """
    newline = _header_end(buf, pos, "mbulk")
    if newline < 0:
        return -1, pos
    raw = buf[pos + 1 : newline]
    if raw == b"-1":
        return 0, newline + 2
    count = _length(raw)
    if count is None or count > max_array_len:
        raise RespError("Protocol error: invalid multibulk length", offset=pos)
    return count, newline + 2


def _read_bulks(
    buf: bytes, pos: int, args: List[bytes], remaining: int, max_bulk_bytes: int
) -> Tuple[int, int, int]:
    """Append up to ``remaining`` bulk strings found at ``buf[pos:]`` to ``args``.

    Returns (pos, remaining, need): when the buffer runs out first,
    ``remaining`` is still positive, ``pos`` is the start of the unread bulk
    and ``need`` the buffer length at which it could complete (0 if unknown).
    """
    size = len(buf)
    find = buf.find
    while remaining:
        if pos >= size:
            return pos, remaining, 0
        if buf[pos] != 36:  # $
            raise RespError(f"Protocol error: expected '$', got '{_char(buf[pos])}'", offset=pos)
        newline = find(CRLF, pos + 1, pos + _MAX_HEADER_BYTES)
        if newline < 0:
            _header_end(buf, pos, "bulk")  # raises on garbage, else the header is cut short
            return pos, remaining, 0
        length = _length(buf[pos + 1 : newline])
        if length is None or length > max_bulk_bytes:
            raise RespError("Protocol error: invalid bulk length", offset=pos)
        start = newline + 2
        stop = start + length
        if stop + 2 > size:
            if stop < size and buf[stop] != 13:
                raise RespError("Protocol error: expected CRLF after bulk data", offset=stop)
            return pos, remaining, stop + 2
        if buf[stop : stop + 2] != CRLF:
            raise RespError("Protocol error: expected CRLF after bulk data", offset=stop)
        args.append(buf[start:stop])
        pos = stop + 2
        remaining -= 1
    return pos, 0, 0


# -- inline commands ----------------------------------------------------------------

_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_SPACES = b" \t\r\n\v\f"


def _split_quoted(line: bytes) -> List[bytes]:
    """Split an inline request the way redis-cli quotes (Redis's ``sdssplitargs``)."""
    args: List[bytes] = []
    pos, end = 0, len(line)
    while True:
        while pos < end and line[pos] in _SPACES:
            pos += 1
        if pos >= end:
            return args
        current = bytearray()
        quote = 0
        while True:
            if pos >= end:
                if quote:
                    raise RespError("Protocol error: unbalanced quotes in request")
                break
            char = line[pos]
            if quote == 34:  # inside "..."
                if char == 92 and pos + 3 < end and line[pos + 1] == 120 and _is_hex(line[pos + 2 : pos + 4]):
                    current.append(int(line[pos + 2 : pos + 4], 16))
                    pos += 3
                elif char == 92 and pos + 1 < end:
                    pos += 1
                    current += _ESCAPES.get(line[pos], bytes([line[pos]]))
                elif char == 34:
                    pos = _after_closing_quote(line, pos, end)
                    break
                else:
                    current.append(char)
            elif quote == 39:  # inside '...'
                if char == 92 and pos + 1 < end and line[pos + 1] == 39:
                    pos += 1
                    current.append(39)
                elif char == 39:
                    pos = _after_closing_quote(line, pos, end)
                    break
                else:
                    current.append(char)
            elif char in _SPACES:
                break
            elif char in (34, 39):
                quote = char
            else:
                current.append(char)
            pos += 1
        args.append(bytes(current))


def _after_closing_quote(line: bytes, pos: int, end: int) -> int:
    """A closing quote at ``pos`` must end its argument (space or end of line follows)."""
    if pos + 1 < end and line[pos + 1] not in _SPACES:
        raise RespError("Protocol error: unbalanced quotes in request")
    return pos + 1


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _inline(buf: bytes, pos: int, max_inline_bytes: int) -> Tuple[Optional[List[bytes]], int]:
    """Read one inline request line: (args, position after it), or (None, pos) if cut short."""
    newline = buf.find(b"\n", pos, pos + max_inline_bytes + 1)
    if newline < 0:
        if len(buf) - pos > max_inline_bytes:
            raise RespError("Protocol error: too big inline request", offset=pos)
        return None, pos
    line = buf[pos:newline]
    if line.endswith(b"\r"):
        line = line[:-1]
    if b'"' in line or b"'" in line:
        return _split_quoted(line), newline + 1
    return line.split(), newline + 1


# -- the incremental request parser ---------------------------------------------------


class RespParser:
    """Incremental request parser: feed bytes, get whole commands.

    Keeps the command being read across calls (its finished arguments, how
    many are still due), so a huge request arriving in small pieces is read
    in linear time, and waits without re-parsing while a long bulk string is
    still arriving.  After a RespError the parser stays broken: the
    connection is to be closed.
    """

    def __init__(
        self,
        *,
        max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
        max_array_len: int = DEFAULT_MAX_ARRAY_LEN,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
    ) -> None:
        self.max_bulk_bytes = max_bulk_bytes
        self.max_array_len = max_array_len
        self.max_inline_bytes = max_inline_bytes
        self._chunks: List[bytes] = []
        self._buffered = 0
        self._need = 0
        self._args: List[bytes] = []
        self._remaining = 0
        self._policy = FastPathPolicy()
        self._failed: Optional[RespError] = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as commands (for per-client limits)."""
        return self._buffered + sum(len(a) for a in self._args)

    def feed(self, data: bytes) -> List[List[bytes]]:
        """Add ``data``; return every command now complete, in order."""
        if self._failed is not None:
            raise self._failed
        if data:
            self._chunks.append(bytes(data))
            self._buffered += len(data)
        if self._buffered < self._need or not self._chunks:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        commands: List[List[bytes]] = []
        try:
            pos = self._parse(buf, commands)
        except RespError as exc:
            self._failed = exc
            self._chunks, self._buffered, self._args = [], 0, []
            raise
        rest = buf[pos:] if pos else buf
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)
        return commands

    def _parse(self, buf: bytes, commands: List[List[bytes]]) -> int:
        """Parse ``buf`` into ``commands``; return how many bytes were consumed."""
        pos, size = 0, len(buf)
        self._need = 0
        while pos < size:
            if self._remaining:
                pos, self._remaining, need = _read_bulks(
                    buf, pos, self._args, self._remaining, self.max_bulk_bytes
                )
                if self._remaining:
                    self._need = need - pos if need else 0
                    return pos
                commands.append(self._args)
                self._args = []
            elif buf[pos] == 42:  # *
                new_pos = self._array(buf, pos, commands)
                if new_pos is None:
                    return pos
                pos = new_pos
            else:
                args, new_pos = _inline(buf, pos, self.max_inline_bytes)
                if args is None:
                    return pos
                if args:
                    commands.append(args)
                pos = new_pos
        return pos

    def _array(self, buf: bytes, pos: int, commands: List[List[bytes]]) -> Optional[int]:
        """Read whole commands, or start one, at ``pos``; the new position, None if cut short."""
        policy = self._policy
        if policy.should_try():
            fast = fast_commands(buf, pos, policy.window, self.max_array_len, commands)
            policy.record(fast > pos)
            if fast > pos:
                return fast
        count, new_pos = _array_header(buf, pos, self.max_array_len)
        if count < 0:
            return None
        self._args, self._remaining = [], count
        return new_pos


# -- scanning a whole AOF buffer ------------------------------------------------------


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan_commands` found.

    ``commands``: the whole commands, in order.  ``end``: the offset just
    after the last of them, where parsing stopped.  Then exactly one of:

    - clean: ``end == len(data)``, ``error`` None, ``truncated`` False;
    - torn tail: ``truncated`` True, ``error`` None: the data ends inside the
      command starting at ``end`` (a crash mid-write); truncating the file to
      ``end`` repairs it;
    - corruption: ``error`` is the reason the command starting at ``end`` is
      malformed and ``error_offset`` the byte where it was seen;
    - stopped at ``limit`` commands: ``end < len(data)``, no error, not
      truncated; call again with ``start=end``.

    Unpacks as ``commands, end, error``.
    """

    commands: List[List[bytes]]
    end: int
    error: Optional[str]
    error_offset: Optional[int] = None
    truncated: bool = False

    def __iter__(self) -> Iterator[Any]:
        return iter((self.commands, self.end, self.error))


def scan_commands(
    data: bytes,
    start: int = 0,
    *,
    limit: Optional[int] = None,
    max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
    max_array_len: int = DEFAULT_MAX_ARRAY_LEN,
) -> ScanResult:
    """Parse the RESP arrays in ``data[start:]`` (an AOF file's contents).

    Offsets in the result count from the start of ``data``.  Only arrays of
    bulk strings are accepted (no inline commands).  ``limit`` caps the
    number of commands returned, for loading a big file in slices.

    The cyclic garbage collector is paused while it runs: the millions of
    lists it builds hold no cycles, and collecting them would double the time.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _scan(data, start, limit, max_bulk_bytes, max_array_len)
    finally:
        if collecting:
            gc.enable()


def _scan(data: bytes, start: int, limit: Optional[int], max_bulk_bytes: int, max_array_len: int) -> ScanResult:
    commands: List[List[bytes]] = []
    pos, size = start, len(data)
    policy = FastPathPolicy()
    cap = limit if limit is not None else -1
    try:
        while pos < size and len(commands) != cap:
            if data[pos] != 42:  # *
                raise RespError(f"Protocol error: expected '*', got '{_char(data[pos])}'", offset=pos)
            if policy.should_try():
                wanted = cap - len(commands) if cap >= 0 else -1
                fast = fast_commands(data, pos, policy.window, max_array_len, commands, wanted)
                policy.record(fast > pos)
                if fast > pos:
                    pos = fast
                    continue
            count, body = _array_header(data, pos, max_array_len)
            if count < 0:
                return ScanResult(commands, pos, None, truncated=True)
            args: List[bytes] = []
            body, remaining, _ = _read_bulks(data, body, args, count, max_bulk_bytes)
            if remaining:
                return ScanResult(commands, pos, None, truncated=True)
            if count:
                commands.append(args)
            pos = body
    except RespError as exc:
        return ScanResult(commands, pos, exc.message, error_offset=exc.offset)
    return ScanResult(commands, pos, None)


# -- encoding -----------------------------------------------------------------------


def encode_command(args: List[bytes]) -> bytes:
    """``*N\\r\\n$len\\r\\narg\\r\\n...``: one command as written to the AOF."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(CRLF)
    return b"".join(parts)


_NIL2 = b"$-1\r\n"
_NIL3 = b"_\r\n"


def encode_reply(reply: Any, *, resp3: bool = False) -> bytes:
    """The RESP2 (or RESP3) bytes of a reply value (see :mod:`titan.store.reply`)."""
    kind = type(reply)
    if kind is bytes:
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if kind is SimpleString:
        return b"+" + reply + CRLF
    if reply is None:
        return _NIL3 if resp3 else _NIL2
    if kind is int:
        return b":%d\r\n" % reply
    parts: List[bytes] = []
    _encode(reply, resp3, parts.append)
    return b"".join(parts)


def _encode(reply: Any, resp3: bool, emit: Callable[[bytes], Any]) -> None:
    if reply is None:
        emit(_NIL3 if resp3 else _NIL2)
    elif isinstance(reply, SimpleString):
        emit(b"+" + reply.replace(b"\r", b" ").replace(b"\n", b" ") + CRLF)
    elif isinstance(reply, (bytes, bytearray, memoryview)):
        data = bytes(reply)
        emit(b"$%d\r\n" % len(data))
        emit(data)
        emit(CRLF)
    elif isinstance(reply, bool):
        emit((b"#t\r\n" if reply else b"#f\r\n") if resp3 else (b":1\r\n" if reply else b":0\r\n"))
    elif isinstance(reply, int):
        emit(b":%d\r\n" % reply)
    elif isinstance(reply, ErrorReply):
        text = reply.message.replace("\r", " ").replace("\n", " ")
        emit(b"-" + text.encode("utf-8", "surrogateescape") + CRLF)
    elif isinstance(reply, str):
        _encode(reply.encode("utf-8", "surrogateescape"), resp3, emit)
    elif isinstance(reply, float):
        _encode_float(reply, resp3, emit)
    elif isinstance(reply, dict):
        _encode_items(b"%" if resp3 else b"*", [x for pair in reply.items() for x in pair], resp3, emit, pairs=resp3)
    elif isinstance(reply, MapReply):
        _encode_items(b"%" if resp3 else b"*", reply, resp3, emit, pairs=resp3)
    elif isinstance(reply, (SetReply, set, frozenset)):
        _encode_items(b"~" if resp3 else b"*", list(reply), resp3, emit)
    elif isinstance(reply, PushReply):
        _encode_items(b">" if resp3 else b"*", reply, resp3, emit)
    elif isinstance(reply, (list, tuple)):
        _encode_items(b"*", reply, resp3, emit)
    else:
        raise TypeError(f"cannot encode {type(reply).__name__} as a RESP reply: {reply!r}")


def _encode_items(
    marker: bytes, items: Any, resp3: bool, emit: Callable[[bytes], Any], *, pairs: bool = False
) -> None:
    count = len(items) // 2 if pairs else len(items)
    emit(marker + b"%d\r\n" % count)
    for item in items:
        kind = type(item)
        if kind is bytes:
            emit(b"$%d\r\n%b\r\n" % (len(item), item))
        elif kind is int:
            emit(b":%d\r\n" % item)
        else:
            _encode(item, resp3, emit)


def _encode_float(value: float, resp3: bool, emit: Callable[[bytes], Any]) -> None:
    if value != value:
        text = b"nan"
    elif value in (float("inf"), float("-inf")):
        text = b"inf" if value > 0 else b"-inf"
    else:
        text = repr(value).encode("ascii")
    if resp3:
        emit(b"," + text + CRLF)
    else:
        emit(b"$%d\r\n%b\r\n" % (len(text), text))
