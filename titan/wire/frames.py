"""TITAN_PROTO framing: the 12-byte header, opcodes, and an incremental decoder.

This module owns how frames sit on a byte stream.  It is pure: it never
touches a socket.  The event loop reads bytes and feeds them in; complete
frames come out::

    socket bytes --> FrameDecoder.feed() --> [Frame, ...] --> role handler
    role reply   --> pack(opcode, req_id, body) --> socket

Every frame is a header followed by a body encoded by :mod:`titan.wire.codec`::

    version u8 | opcode u8 | flags u16 | request id u32 | body length u32 | body

The decoder checks the version and the body length as soon as the 12 header
bytes are in, before it buffers the body, so a hostile length cannot make it
allocate.  It does not judge opcodes: the role answers an unknown opcode
itself (ERROR ``unknown_opcode``) and keeps the connection.
"""
from __future__ import annotations

import enum
import struct
from typing import List, NamedTuple, Optional

from titan.errors import CodecError, ProtocolError
from titan.wire.codec import DEFAULT_MAX_DEPTH, decode, encode

__all__ = [
    "PROTOCOL_VERSION",
    "HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "FLAG_MORE",
    "Op",
    "Frame",
    "pack",
    "FrameDecoder",
    "error_body",
]

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">BBHII")  # version, opcode, flags, request id, body length
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_HEADER_BYTES = HEADER.size
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

FLAG_MORE = 0x0001  # more EVENT frames follow on this request id

_U8_MAX = 0xFF
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


class Op(enum.IntEnum):
    """Frame opcodes.  0x01-0x09 any peer, 0x10-0x1f and 0x30-0x3f client->master, 0x20-0x2f master<->worker."""

    HELLO = 0x01
    CHALLENGE = 0x02
    AUTH = 0x03
    WELCOME = 0x04
    OK = 0x05
    ERROR = 0x06
    EVENT = 0x07
    PING = 0x08
    PONG = 0x09
    SUBMIT = 0x10
    STATUS = 0x11
    CANCEL = 0x12
    NODES = 0x13
    LOGS = 0x14
    WAIT = 0x15
    TASKS = 0x16
    RETRY = 0x18
    RUN = 0x19
    TRIGGER = 0x1A
    RUNS = 0x1B
    JOBS = 0x1C
    DRAIN = 0x1D
    REMOVE_JOB = 0x1E
    HEARTBEAT = 0x20
    DISPATCH = 0x21
    OUTPUT = 0x22
    FINISHED = 0x23
    KILL = 0x24
    ACK = 0x25
    RUN_DONE = 0x27
    FETCH = 0x28
    SVC_START = 0x29
    SVC_STOP = 0x2A
    SVC_STATE = 0x2B
    SPAWN = 0x2C
    RETIRE = 0x2D
    KV = 0x30
    SUBSCRIBE = 0x31
    DEPLOY = 0x32
    SERVICES = 0x33
    SERVICE_CTL = 0x34


class Frame(NamedTuple):
    """One decoded frame; ``opcode`` is a plain int (compare it with :class:`Op`)."""

    opcode: int
    flags: int
    req_id: int
    body: object


def pack(
    opcode: int,
    req_id: int,
    body: object = None,
    flags: int = 0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> bytes:
    """Return the bytes of one frame: header + ``encode(body)``.

    Raises :class:`CodecError` if ``body`` cannot be encoded,
    :class:`ProtocolError` ``frame_too_large`` if the encoded body exceeds
    ``max_body_bytes``, and ValueError if opcode, flags or req_id do not fit
    their header fields.
    """
    data = encode(body)
    size = len(data)
    if size > max_body_bytes:
        raise ProtocolError(
            "frame_too_large",
            f"frame body of {size} bytes exceeds the {max_body_bytes}-byte limit "
            f"(opcode 0x{opcode:02x}, request {req_id})",
            req_id=req_id,
        )
    try:
        return _pack_header(PROTOCOL_VERSION, opcode, flags, req_id, size) + data
    except struct.error:
        _check_field("opcode", opcode, _U8_MAX)
        _check_field("flags", flags, _U16_MAX)
        _check_field("request id", req_id, _U32_MAX)
        raise


def _check_field(name: str, value: int, maximum: int) -> None:
    """Raise ValueError naming ``name`` if ``value`` is not an int in 0..maximum."""
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} {value!r} does not fit its header field (0..{maximum})")


def error_body(code: str, message: str) -> dict:
    """The body of an ERROR frame: ``{"code": code, "message": message}``."""
    return {"code": code, "message": message}


# Frame(...) runs a Python-level __new__; tuple.__new__ builds the same named
# tuple without it (two per task on the master).
_new_tuple = tuple.__new__


class FrameDecoder:
    """Turns a byte stream, split anywhere, into :class:`Frame` objects.

    ``feed()`` returns every frame the bytes complete, in order.  Any split of
    the stream (even one byte at a time) yields the same frames.  A chunk that
    starts on a frame boundary (the usual read) is parsed in place; bytes of
    an unfinished frame wait in a bytearray, which is parsed only once it
    holds the whole frame, so a frame split into many reads costs linear time.

    A malformed frame raises :class:`ProtocolError` (``bad_version``,
    ``frame_too_large``, or ``bad_body`` as a :class:`CodecError` carrying the
    frame's request id).  The stream cannot be resynchronised after that, so
    the decoder is then unusable: every later ``feed()`` raises the same
    error, and the caller should answer ERROR and close the connection.
    Frames completed earlier in the same ``feed()`` call as the bad one are
    dropped with it.
    """

    def __init__(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._max_depth = max_depth
        self._buf = bytearray()  # the start of an unfinished frame
        self._need = 0  # bytes _buf must hold before there is something to parse
        self._error: Optional[ProtocolError] = None
        # True when part of a frame is buffered (EOF now would cut a frame).  An
        # attribute feed() keeps, not a property: the loop reads it on every read.
        self.mid_frame = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[Frame]:
        """Add ``data`` from the stream; return the frames it completes."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []  # a header or body still arriving: nothing to copy yet
            data = bytes(buf)
            del buf[:]
        frames: List[Frame] = []
        try:
            pos = self._parse(data, frames)
        except ProtocolError as exc:
            self._error = exc
            buf += data  # what a failed feed() leaves buffered: all of it
            self.mid_frame = len(buf) > 0
            raise
        if pos < len(data):
            buf += data[pos:] if pos else data
            self.mid_frame = True
        else:
            self.mid_frame = False
        return frames

    def _parse(self, data: bytes, frames: List[Frame]) -> int:
        """Append every complete frame in ``data`` to ``frames``; return bytes used.

        Sets ``_need`` to the size of the unfinished frame at the returned offset.
        """
        pos = 0
        end = len(data)
        append = frames.append
        while end - pos >= _HEADER_BYTES:
            version, opcode, flags, req_id, body_len = _unpack_header(data, pos)
            if version != PROTOCOL_VERSION or body_len > self._max_body_bytes:
                raise self._bad_header(version, opcode, req_id, body_len)  # before any body is kept
            body_start = pos + _HEADER_BYTES
            body_end = body_start + body_len
            if body_end > end:
                self._need = body_end - pos
                return pos
            try:
                body = decode(data[body_start:body_end], max_depth=self._max_depth)
            except CodecError as exc:
                raise _bad_body(exc, opcode, req_id) from None
            append(_new_tuple(Frame, (opcode, flags, req_id, body)))
            pos = body_end
        self._need = _HEADER_BYTES
        return pos

    def _bad_header(self, version: int, opcode: int, req_id: int, body_len: int) -> ProtocolError:
        """The error for a header with another version or a body over the limit."""
        if version != PROTOCOL_VERSION:
            return ProtocolError(
                "bad_version",
                f"protocol version {version} is not supported "
                f"(this peer speaks {PROTOCOL_VERSION})",
            )  # req_id stays 0: another version may lay the header out differently
        return ProtocolError(
            "frame_too_large",
            f"frame body of {body_len} bytes exceeds the "
            f"{self._max_body_bytes}-byte limit (opcode 0x{opcode:02x}, request {req_id})",
            req_id=req_id,
        )


def _bad_body(exc: CodecError, opcode: int, req_id: int) -> CodecError:
    """A body's CodecError, reworded to name its frame and carry its request id."""
    return CodecError(
        f"bad body in frame opcode 0x{opcode:02x}, request {req_id}: {exc.message}",
        req_id=req_id,
    )
