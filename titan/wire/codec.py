"""The frame body encoding: a small self-describing binary format.

This module owns the translation between Python values and the bytes of a
frame body.  It is pure: no sockets, no clocks, no threads.

Every value is one type tag byte followed by its payload, big-endian::

    0x00 None          0x05 float   >d
    0x01 False         0x06 str     u32 byte length + UTF-8
    0x02 True          0x07 bytes   u32 length + raw bytes
    0x03 int   >q      0x08 list    u32 count + items
    0x04 big int       0x09 dict    u32 count + (str key, value) pairs
         u32 length + two's-complement signed big-endian bytes

Tuples encode as lists, bytearray and memoryview as bytes; decoding gives
back lists and ``bytes``.  Dict keys must be str.

Decoding trusts nothing: every length and count is checked against the bytes
that remain (and against ``max_items``) before anything is allocated, nesting
is capped at ``max_depth``, and every failure is a :class:`CodecError` whose
message names the byte offset, e.g. ``unknown type tag 0x7f at byte 12``.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, List, Tuple, Union

from titan.errors import CodecError

__all__ = [
    "TAG_NONE",
    "TAG_FALSE",
    "TAG_TRUE",
    "TAG_INT",
    "TAG_BIGINT",
    "TAG_FLOAT",
    "TAG_STR",
    "TAG_BYTES",
    "TAG_LIST",
    "TAG_DICT",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "encode",
    "decode",
]

TAG_NONE = 0x00
TAG_FALSE = 0x01
TAG_TRUE = 0x02
TAG_INT = 0x03
TAG_BIGINT = 0x04
TAG_FLOAT = 0x05
TAG_STR = 0x06
TAG_BYTES = 0x07
TAG_LIST = 0x08
TAG_DICT = 0x09

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ITEMS = 1_000_000

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_TAG_LEN = struct.Struct(">BI")  # tag + u32 length/count
_TAG_INT = struct.Struct(">Bq")
_TAG_FLOAT = struct.Struct(">Bd")
_pack_len = _TAG_LEN.pack
_pack_int = _TAG_INT.pack
_pack_float = _TAG_FLOAT.pack
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

_B_NONE = bytes([TAG_NONE])
_B_FALSE = bytes([TAG_FALSE])
_B_TRUE = bytes([TAG_TRUE])

# Encoded dict keys: protocol bodies reuse a few keys ("id", "cmd", ...) in
# every message.  Bounded, so keys taken from user data cannot grow it forever.
_KEY_CACHE: Dict[str, bytes] = {}
_KEY_CACHE_SIZE = 1024

# Smallest encoding of one dict pair (an empty str key, 5 bytes, plus a
# 1-byte value); a list item takes at least its 1-byte tag.
_MIN_PAIR_BYTES = 6

Buffer = Union[bytes, bytearray, memoryview]


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

_TOO_DEEP = "too deep"  # _EncodeFailure reason; encode() adds the limit


class _EncodeFailure(Exception):
    """Internal: carries an encode error up while containers add the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: List[str] = []


def encode(value: object, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Encode ``value`` as a frame body.

    Raises :class:`CodecError` naming the offending type or value and where it
    sits in ``value`` (e.g. ``at value['env']['A']``) for an unsupported type,
    a non-str dict key, a str that is not valid Unicode, or nesting deeper than
    ``max_depth`` containers (which also catches self-referencing containers).
    """
    parts: List[Any] = []
    try:
        if type(value) is dict:  # every protocol body: skip the generic dispatch
            _encode_dict(value, parts, max_depth)
        else:
            _encode_value(value, parts, max_depth)
    except (_EncodeFailure, UnicodeEncodeError) as exc:
        failure = _as_failure(exc)
        reason = failure.reason
        if reason == _TOO_DEEP:
            reason = f"containers nest deeper than max_depth={max_depth}"
        where = "".join(reversed(failure.path)) or " (the top-level value)"
        raise CodecError(f"cannot encode body: {reason} at value{where}") from None
    except RecursionError:
        raise CodecError(f"cannot encode body: nesting too deep for max_depth={max_depth}") from None
    return b"".join(parts)


def _encode_value(value: object, out: List[Any], depth: int) -> None:
    """Append the encoding of ``value`` to ``out``; ``depth`` is containers left.

    Exact types are tested first, most common first; a str that cannot be
    encoded raises UnicodeEncodeError, which the enclosing container turns
    into an _EncodeFailure with its path.
    """
    t = type(value)
    if t is str:
        data = value.encode("utf-8")  # type: ignore[attr-defined]
        out.append(_pack_len(TAG_STR, len(data)))
        out.append(data)
    elif t is int:
        _encode_int(value, out)  # type: ignore[arg-type]
    elif t is dict:
        _encode_dict(value, out, depth)  # type: ignore[arg-type]
    elif t is list or t is tuple:
        _encode_list(value, out, depth)  # type: ignore[arg-type]
    elif t is float:
        out.append(_pack_float(TAG_FLOAT, value))
    elif value is None:
        out.append(_B_NONE)
    elif value is True:
        out.append(_B_TRUE)
    elif value is False:
        out.append(_B_FALSE)
    elif t is bytes or t is bytearray:
        out.append(_pack_len(TAG_BYTES, len(value)))  # type: ignore[arg-type]
        out.append(value)
    else:
        _encode_other(value, out, depth)


def _encode_other(value: object, out: List[Any], depth: int) -> None:
    """Encode subclasses of the supported types (IntEnum, str enums, ...)."""
    if isinstance(value, bool):  # bool before int: bool is an int subclass
        out.append(_B_TRUE if value else _B_FALSE)
    elif isinstance(value, int):
        _encode_int(value, out)
    elif isinstance(value, float):
        out.append(_pack_float(TAG_FLOAT, value))
    elif isinstance(value, str):
        data = str.encode(value, "utf-8")
        out.append(_pack_len(TAG_STR, len(data)))
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(_pack_len(TAG_BYTES, len(data)))
        out.append(data)
    elif isinstance(value, dict):
        _encode_dict(value, out, depth)
    elif isinstance(value, (list, tuple)):
        _encode_list(value, out, depth)
    else:
        raise _EncodeFailure(f"unsupported type {type(value).__qualname__} ({_short_repr(value)})")


def _encode_int(value: int, out: List[Any]) -> None:
    if _INT64_MIN <= value <= _INT64_MAX:
        out.append(_pack_int(TAG_INT, value))
        return
    size = (value.bit_length() + 8) // 8  # +1 bit for the sign, rounded up
    out.append(_pack_len(TAG_BIGINT, size))
    out.append(int.to_bytes(value, size, "big", signed=True))


def _encode_list(value: Union[list, tuple], out: List[Any], depth: int) -> None:
    if depth <= 0:
        raise _EncodeFailure(_TOO_DEEP)
    append = out.append
    append(_pack_len(TAG_LIST, len(value)))
    depth -= 1
    item: object = None
    try:
        for item in value:
            t = type(item)
            if t is str:  # inlined: the common cases
                data = item.encode("utf-8")  # type: ignore[attr-defined]
                append(_pack_len(TAG_STR, len(data)) + data)
            elif item is None:
                append(_B_NONE)
            elif t is int:
                try:
                    append(_pack_int(TAG_INT, item))
                except struct.error:  # struct checks the 64-bit range; past it, a big int
                    _encode_int(item, out)  # type: ignore[arg-type]
            elif t is list:
                _encode_list(item, out, depth)  # type: ignore[arg-type]
            elif t is dict:
                _encode_dict(item, out, depth)  # type: ignore[arg-type]
            elif t is float:
                append(_pack_float(TAG_FLOAT, item))
            elif t is bool:
                append(_B_TRUE if item else _B_FALSE)
            elif t is bytes:
                append(_pack_len(TAG_BYTES, len(item)))  # type: ignore[arg-type]
                append(item)
            else:
                _encode_value(item, out, depth)
    except (_EncodeFailure, UnicodeEncodeError) as exc:
        failure = _as_failure(exc)
        failure.path.append(f"[{_index_of(value, item)}]")
        raise failure from None


def _encode_dict(value: dict, out: List[Any], depth: int) -> None:
    if depth <= 0:
        raise _EncodeFailure(_TOO_DEEP)
    append = out.append
    append(_pack_len(TAG_DICT, len(value)))
    depth -= 1
    cached_key = _KEY_CACHE.get
    key: object = None
    try:
        for key, item in value.items():
            # Only str keys are cached, so a hit is a str key's encoding (or that
            # of something equal to one, which encodes the same).
            append(cached_key(key) or _encode_key(key))  # type: ignore[arg-type]
            t = type(item)
            if t is str:  # inlined: the common cases
                data = item.encode("utf-8")
                append(_pack_len(TAG_STR, len(data)) + data)
            elif item is None:
                append(_B_NONE)
            elif t is int:
                try:
                    append(_pack_int(TAG_INT, item))
                except struct.error:  # struct checks the 64-bit range; past it, a big int
                    _encode_int(item, out)  # type: ignore[arg-type]
            elif t is list:
                _encode_list(item, out, depth)
            elif t is dict:
                _encode_dict(item, out, depth)
            elif t is float:
                append(_pack_float(TAG_FLOAT, item))
            elif t is bool:
                append(_B_TRUE if item else _B_FALSE)
            elif t is bytes:
                append(_pack_len(TAG_BYTES, len(item)))
                append(item)
            else:
                _encode_value(item, out, depth)
    except (_EncodeFailure, UnicodeEncodeError) as exc:
        failure = _as_failure(exc)
        failure.path.append(f"[{key!r}]")
        raise failure from None


def _encode_key(key: object) -> bytes:
    """Tag, length and UTF-8 of a dict key; remembered for the next message."""
    if not isinstance(key, str):
        raise _EncodeFailure(
            f"dict key {_short_repr(key)} has type {type(key).__qualname__}; keys must be str"
        )
    data = str.encode(key, "utf-8")
    encoded = _pack_len(TAG_STR, len(data)) + data
    if type(key) is str and len(_KEY_CACHE) < _KEY_CACHE_SIZE and len(data) <= 64:
        _KEY_CACHE[key] = encoded
    return encoded


def _as_failure(exc: Exception) -> _EncodeFailure:
    """Word a UnicodeEncodeError as an _EncodeFailure (others pass through)."""
    if isinstance(exc, _EncodeFailure):
        return exc
    assert isinstance(exc, UnicodeEncodeError)
    return _EncodeFailure(
        f"str {_short_repr(exc.object)} is not valid Unicode "
        f"({exc.reason} at character {exc.start})"
    )


def _index_of(seq: Union[list, tuple], item: object) -> int:
    """Position of ``item`` in ``seq`` by identity (error path only)."""
    for index, candidate in enumerate(seq):
        if candidate is item:
            return index
    return -1


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------

# The decoder works on one immutable ``bytes`` object: slicing bytes and
# decoding the slice measured faster than memoryview slices, and a fixed-size
# read past the end then fails inside ``unpack_from`` (struct.error) or an
# index (IndexError), which decode() reports as truncation without paying
# for an explicit bounds check on every int, float and tag.
_unpack_u32 = _U32.unpack_from
_unpack_i64 = _I64.unpack_from
_unpack_f64 = _F64.unpack_from


class _DepthExceeded(Exception):
    """Internal: a container sits deeper than max_depth; decode() words it."""

    def __init__(self, kind: str, pos: int) -> None:
        super().__init__(kind, pos)
        self.kind = kind
        self.pos = pos


def decode(
    data: Buffer,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> object:
    """Decode one frame body; the whole of ``data`` must be exactly one value.

    Raises :class:`CodecError` (message names the byte offset) for empty
    input, an unknown tag, truncated data, a length or count larger than the
    bytes left, a container with more than ``max_items`` entries, nesting
    deeper than ``max_depth``, invalid UTF-8, a non-str dict key, or bytes
    left over after the value.
    """
    if type(data) is not bytes:
        data = bytes(data)  # one copy; memoryviews of any format give raw bytes
    end = len(data)
    if end == 0:
        raise CodecError("empty body: expected a type tag at byte 0")
    try:
        if data[0] == TAG_DICT:  # every protocol body: skip the generic dispatch
            value, pos = _decode_dict(data, 0, max_depth, max_items)
        else:
            value, pos = _decode_value(data, 0, max_depth, max_items)
    except (IndexError, struct.error):
        raise CodecError(f"truncated body: a value runs past the end at byte {end}") from None
    except _DepthExceeded as exc:
        raise CodecError(
            f"{exc.kind} at byte {exc.pos} nests deeper than max_depth={max_depth}"
        ) from None
    except RecursionError:
        raise CodecError(f"nesting too deep for max_depth={max_depth}") from None
    if pos != end:
        raise CodecError(f"{end - pos} trailing bytes after the value, at byte {pos} of {end}")
    return value


def _decode_value(data: bytes, pos: int, depth: int, max_items: int) -> Tuple[object, int]:
    """Decode the value whose tag is at ``pos``; return it and the next offset."""
    tag = data[pos]
    if tag == TAG_STR:
        start = pos + 5
        stop = start + _unpack_u32(data, pos + 1)[0]
        return _str_at(data, start, stop), stop
    if tag == TAG_INT:
        return _unpack_i64(data, pos + 1)[0], pos + 9
    if tag == TAG_DICT:
        return _decode_dict(data, pos, depth, max_items)
    if tag == TAG_LIST:
        return _decode_list(data, pos, depth, max_items)
    if tag == TAG_FLOAT:
        return _unpack_f64(data, pos + 1)[0], pos + 9
    if tag == TAG_NONE:
        return None, pos + 1
    if tag == TAG_TRUE:
        return True, pos + 1
    if tag == TAG_FALSE:
        return False, pos + 1
    if tag == TAG_BYTES or tag == TAG_BIGINT:
        return _decode_sized(data, pos, tag)
    raise CodecError(f"unknown type tag 0x{tag:02x} at byte {pos}")


def _decode_sized(data: bytes, pos: int, tag: int) -> Tuple[object, int]:
    """Decode a bytes or big int value: u32 length + raw bytes."""
    start = pos + 5
    stop = start + _unpack_u32(data, pos + 1)[0]
    if tag == TAG_BYTES:
        if stop > len(data):
            raise _overrun("bytes", pos, data)
        return data[start:stop], stop
    if stop > len(data):
        raise _overrun("big int", pos, data)
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def _decode_list(data: bytes, pos: int, depth: int, max_items: int) -> Tuple[list, int]:
    if depth <= 0:
        raise _DepthExceeded("list", pos)
    count = _unpack_u32(data, pos + 1)[0]
    end = len(data)
    if count > max_items or count > end - pos - 5:  # an item is at least its 1-byte tag
        raise _bad_count("list", count, pos, max_items, end)
    depth -= 1
    cursor = pos + 5
    items = []
    append = items.append
    for _ in range(count):
        tag = data[cursor]
        if tag == TAG_STR:  # inlined: the common cases (str as in _str_at)
            start = cursor + 5
            cursor = start + _unpack_u32(data, cursor + 1)[0]
            if cursor > end:
                raise _overrun("str", start - 5, data)
            try:
                append(data[start:cursor].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise _bad_utf8(exc, start) from None
        elif tag == TAG_INT:
            append(_unpack_i64(data, cursor + 1)[0])
            cursor += 9
        elif tag == TAG_NONE:
            append(None)
            cursor += 1
        elif tag == TAG_LIST:
            item, cursor = _decode_list(data, cursor, depth, max_items)
            append(item)
        else:
            item, cursor = _decode_value(data, cursor, depth, max_items)
            append(item)
    return items, cursor


def _decode_dict(data: bytes, pos: int, depth: int, max_items: int) -> Tuple[dict, int]:
    if depth <= 0:
        raise _DepthExceeded("dict", pos)
    count = _unpack_u32(data, pos + 1)[0]
    end = len(data)
    if count > max_items or count * _MIN_PAIR_BYTES > end - pos - 5:
        raise _bad_count("dict", count, pos, max_items, end)
    depth -= 1
    cursor = pos + 5
    result = {}
    for _ in range(count):
        if data[cursor] != TAG_STR:
            raise _bad_key(data, cursor)
        start = cursor + 5
        cursor = start + _unpack_u32(data, cursor + 1)[0]
        if cursor > end:
            raise _overrun("dict key", start - 5, data)
        try:
            key = data[start:cursor].decode("utf-8")
            tag = data[cursor]
            if tag == TAG_STR:  # inlined: the common cases (str as in _str_at)
                start = cursor + 5
                cursor = start + _unpack_u32(data, cursor + 1)[0]
                if cursor > end:
                    raise _overrun("str", start - 5, data)
                result[key] = data[start:cursor].decode("utf-8")
            elif tag == TAG_INT:
                result[key] = _unpack_i64(data, cursor + 1)[0]
                cursor += 9
            elif tag == TAG_NONE:
                result[key] = None
                cursor += 1
            elif tag == TAG_FLOAT:
                result[key] = _unpack_f64(data, cursor + 1)[0]
                cursor += 9
            elif tag == TAG_LIST:
                result[key], cursor = _decode_list(data, cursor, depth, max_items)
            elif tag == TAG_DICT:
                result[key], cursor = _decode_dict(data, cursor, depth, max_items)
            else:
                result[key], cursor = _decode_value(data, cursor, depth, max_items)
        except UnicodeDecodeError as exc:
            raise _bad_utf8(exc, start) from None
    return result, cursor


def _bad_count(kind: str, count: int, pos: int, max_items: int, end: int) -> CodecError:
    """Word a container count that is over ``max_items`` or larger than the bytes left.

    The containers check their count inline, before anything is allocated, and
    call this only to describe a failure.
    """
    if count > max_items:
        return CodecError(
            f"{kind} at byte {pos} claims {count} items, more than max_items={max_items}"
        )
    left = end - pos - 5
    return CodecError(f"{kind} at byte {pos} claims {count} items but only {left} bytes remain")


def _str_at(data: bytes, start: int, stop: int) -> str:
    """Decode the UTF-8 payload ``data[start:stop]`` of a str whose tag is at start-5."""
    if stop > len(data):
        raise _overrun("str", start - 5, data)
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(exc, start) from None


def _overrun(kind: str, pos: int, data: bytes) -> CodecError:
    size = _unpack_u32(data, pos + 1)[0]
    left = len(data) - pos - 5
    return CodecError(f"{kind} at byte {pos} claims {size} bytes but only {left} remain")


def _bad_utf8(exc: UnicodeDecodeError, start: int) -> CodecError:
    return CodecError(f"invalid UTF-8 in str at byte {start + exc.start}: {exc.reason}")


def _bad_key(data: bytes, pos: int) -> CodecError:
    return CodecError(
        f"dict key at byte {pos} has type tag 0x{data[pos]:02x}; keys must be str (tag 0x06)"
    )
