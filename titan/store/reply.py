"""Reply values of TitanStore commands, and the errors commands answer with.

What this module owns: the small value types a command returns, which
:func:`titan.store.resp.encode_reply` turns into RESP2 or RESP3 bytes::

    None          nil                 ($-1 / _)
    int, bool     integer             (: / #t #f in RESP3)
    bytes         bulk string         ($)
    SimpleString  status reply        (+OK)
    ErrorReply    error reply         (-ERR ...)
    list          array               (*), items are replies, None = nil
    MapReply      flat [k, v, k, v]   (* in RESP2, % in RESP3)
    SetReply      array               (* in RESP2, ~ in RESP3)
    PushReply     array               (* in RESP2, > in RESP3: pub/sub)

It also owns the Redis 7 error texts shared by several command families,
the strict integer parser Redis uses for arguments and values, and
:class:`CommandError`, the exception a command raises to answer with an
error before it has changed anything.
"""
from __future__ import annotations

from typing import Optional, Union

from titan.errors import TitanError

__all__ = [
    "SimpleString",
    "ErrorReply",
    "MapReply",
    "SetReply",
    "PushReply",
    "Reply",
    "CommandError",
    "OK",
    "PONG",
    "WRONGTYPE",
    "NOT_INTEGER",
    "SYNTAX_ERROR",
    "OVERFLOW",
    "INT64_MIN",
    "INT64_MAX",
    "parse_int",
    "int_arg",
    "wrong_arity",
    "text_of",
]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class SimpleString(bytes):
    """A status reply such as ``+OK``: bytes that encode with ``+``, not ``$``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SimpleString({bytes(self)!r})"


class ErrorReply:
    """An error reply; ``message`` is the text after the ``-`` (``ERR syntax error``).

    A value, not an exception: commands return it like any other reply.
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorReply) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"ErrorReply({self.message!r})"


class MapReply(list):
    """A map as a flat ``[key, value, key, value, ...]`` list (HGETALL, CONFIG GET)."""

    __slots__ = ()


class SetReply(list):
    """An unordered collection of replies (SMEMBERS); a set type in RESP3."""

    __slots__ = ()


class PushReply(list):
    """An out-of-band message (pub/sub); a push type in RESP3."""

    __slots__ = ()


Reply = Union[None, int, bytes, SimpleString, ErrorReply, list]


class CommandError(TitanError):
    """Raised inside a command to answer with ``reply``; never leaves the engine.

    Commands raise it only before they change the keyspace, so the engine can
    return ``reply`` as the command's whole effect.
    """

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


OK = SimpleString(b"OK")
PONG = SimpleString(b"PONG")
WRONGTYPE = ErrorReply("WRONGTYPE Operation against a key holding the wrong kind of value")
NOT_INTEGER = ErrorReply("ERR value is not an integer or out of range")
SYNTAX_ERROR = ErrorReply("ERR syntax error")
OVERFLOW = ErrorReply("ERR increment or decrement would overflow")


def parse_int(raw: bytes) -> Optional[int]:
    """``raw`` as a signed 64-bit integer by Redis's strict rules, else None.

    Base 10 only: no sign but a leading ``-``, no leading zeros, no spaces,
    no ``-0`` (Redis's ``string2ll``).
    """
    size = len(raw)
    if size == 0 or size > 20:
        return None
    if raw.isdigit():
        if raw[0] == 48 and size > 1:  # b"0"
            return None
    elif not (raw[0] == 45 and size > 1 and raw[1] != 48 and raw[1:].isdigit()):  # b"-"
        return None
    value = int(raw)
    if value < INT64_MIN or value > INT64_MAX:
        return None
    return value


def int_arg(raw: bytes) -> int:
    """An integer argument; raises CommandError ``ERR value is not an integer ...``."""
    value = parse_int(raw)
    if value is None:
        raise CommandError(NOT_INTEGER)
    return value


def wrong_arity(name: str) -> ErrorReply:
    """``ERR wrong number of arguments for 'get' command``; ``name`` is lower case."""
    return ErrorReply(f"ERR wrong number of arguments for '{name}' command")


def text_of(raw: bytes, limit: int = 128) -> str:
    """Up to ``limit`` bytes of a client's argument, for an error message.

    Undecodable bytes survive (surrogateescape, which encode_reply reverses)
    and CR/LF become spaces, as Redis does, so the reply stays one line.
    """
    text = raw[:limit].decode("utf-8", "surrogateescape")
    return text.replace("\r", " ").replace("\n", " ")

