"""String commands: SET and its variants, GET, MGET, MSET, counters, APPEND.

What this module owns: the string family's semantics, Redis 7 replies and
errors, and what each command writes to the AOF.  Expiries go to the AOF as
absolute times (``SET k v PXAT <ms>``); SET's NX/XX/GET and the SETNX/SETEX/
GETSET spellings become the plain ``SET`` they amounted to; counters and
APPEND are deterministic and are logged as given.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from titan.store.command import Command, registrar
from titan.store.keyspace import Keyspace
from titan.store.reply import (
    INT64_MAX,
    INT64_MIN,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    SYNTAX_ERROR,
    CommandError,
    ErrorReply,
    Reply,
    int_arg,
    parse_int,
    wrong_arity,
)

__all__ = ["TABLE", "expire_arg", "store_string"]

TABLE: Dict[bytes, Command] = {}
command = registrar(TABLE)

MAX_STRING_BYTES = 512 * 1024 * 1024

_SET, _DEL, _PXAT, _KEEPTTL = b"SET", b"DEL", b"PXAT", b"KEEPTTL"
_EX, _PX, _EXAT = b"EX", b"PX", b"EXAT"
_SECONDS = (_EX, _EXAT)
_RELATIVE = (_EX, _PX)
_EXPIRE_OPTIONS = (_EX, _PX, _EXAT, _PXAT)


def invalid_expire(name: str) -> CommandError:
    """``ERR invalid expire time in 'set' command``."""
    return CommandError(ErrorReply(f"ERR invalid expire time in '{name}' command"))


def expire_arg(db: Keyspace, raw: bytes, unit: bytes, name: str) -> int:
    """The absolute expiry in ms for ``EX``/``PX``/``EXAT``/``PXAT`` ``raw`` (SET's rules).

    Must be positive; relative units are added to now.
    """
    value = int_arg(raw)
    if value <= 0 or (unit in _SECONDS and value > INT64_MAX // 1000):
        raise invalid_expire(name)
    if unit in _SECONDS:
        value *= 1000
    if unit in _RELATIVE:
        value += db.now_ms
    if value > INT64_MAX:
        raise invalid_expire(name)
    return value


class _SetOptions:
    __slots__ = ("nx", "xx", "get", "keep_ttl", "unit", "expire")

    def __init__(self) -> None:
        self.nx = self.xx = self.get = self.keep_ttl = False
        self.unit: Optional[bytes] = None
        self.expire: Optional[bytes] = None


def _set_options(args: List[bytes]) -> _SetOptions:
    """Parse SET's options after key and value; ``ERR syntax error`` on conflicts."""
    opts = _SetOptions()
    index, count = 3, len(args)
    while index < count:
        option = args[index].upper()
        if option == b"NX" and not opts.xx:
            opts.nx = True
        elif option == b"XX" and not opts.nx:
            opts.xx = True
        elif option == b"GET":
            opts.get = True
        elif option == _KEEPTTL and opts.unit is None:
            opts.keep_ttl = True
        elif (
            option in _EXPIRE_OPTIONS
            and not opts.keep_ttl
            and opts.unit in (None, option)
            and index + 1 < count
        ):
            opts.unit, opts.expire = option, args[index + 1]
            index += 1
        else:
            raise CommandError(SYNTAX_ERROR)
        index += 1
    return opts


def store_string(db: Keyspace, key: bytes, value: bytes, when: Optional[int], *, keep_ttl: bool = False) -> None:
    """Set ``key`` and its expiry (absolute ms), and log the equivalent plain SET."""
    db.set_string(key, value, keep_ttl=keep_ttl)
    if when is not None:
        db.set_expire(key, when)
        db.propagate([_SET, key, value, _PXAT, b"%d" % when])
    elif keep_ttl:
        db.propagate([_SET, key, value, _KEEPTTL])
    else:
        db.propagate([_SET, key, value])


@command("set", -3, write=True)
def set_(db: Keyspace, args: List[bytes]) -> Reply:
    if len(args) == 3:  # the common case: SET key value
        db.set_string(args[1], args[2])
        db.prop.append([_SET, args[1], args[2]])
        return OK
    opts = _set_options(args)
    when = expire_arg(db, opts.expire, opts.unit, "set") if opts.expire is not None else None
    key = args[1]
    old = db.get_string(key) if opts.get else None
    found = db.lookup(key) is not None
    if (opts.nx and found) or (opts.xx and not found):
        return old
    store_string(db, key, args[2], when, keep_ttl=opts.keep_ttl)
    return old if opts.get else OK


@command("setnx", 3, write=True)
def setnx(db: Keyspace, args: List[bytes]) -> Reply:
    if db.lookup(args[1]) is not None:
        return 0
    store_string(db, args[1], args[2], None)
    return 1


def _setex(db: Keyspace, args: List[bytes], unit: bytes, name: str) -> Reply:
    when = expire_arg(db, args[2], unit, name)
    store_string(db, args[1], args[3], when)
    return OK


@command("setex", 4, write=True)
def setex(db: Keyspace, args: List[bytes]) -> Reply:
    return _setex(db, args, _EX, "setex")


@command("psetex", 4, write=True)
def psetex(db: Keyspace, args: List[bytes]) -> Reply:
    return _setex(db, args, _PX, "psetex")


@command("get", 2)
def get(db: Keyspace, args: List[bytes]) -> Reply:
    return db.get_string(args[1])


@command("getset", 3, write=True)
def getset(db: Keyspace, args: List[bytes]) -> Reply:
    old = db.get_string(args[1])
    store_string(db, args[1], args[2], None)
    return old


@command("getdel", 2, write=True)
def getdel(db: Keyspace, args: List[bytes]) -> Reply:
    value = db.get_string(args[1])
    if value is not None:
        db.delete(args[1])
        db.propagate([_DEL, args[1]])
    return value


@command("mget", -2)
def mget(db: Keyspace, args: List[bytes]) -> Reply:
    replies: List[Reply] = []
    for key in args[1:]:
        value = db.lookup(key)
        replies.append(value if type(value) is bytes else None)
    return replies


def _pairs(args: List[bytes], name: str) -> List[Tuple[bytes, bytes]]:
    if len(args) % 2 == 0:
        raise CommandError(wrong_arity(name))
    return list(zip(args[1::2], args[2::2]))


@command("mset", -3, write=True)
def mset(db: Keyspace, args: List[bytes]) -> Reply:
    pairs = _pairs(args, "mset")
    for key, value in pairs:
        db.set_string(key, value)
    db.propagate([b"MSET"] + args[1:])
    return OK


@command("msetnx", -3, write=True)
def msetnx(db: Keyspace, args: List[bytes]) -> Reply:
    pairs = _pairs(args, "msetnx")
    if any(db.lookup(key) is not None for key, _ in pairs):
        return 0
    for key, value in pairs:
        db.set_string(key, value)
    db.propagate([b"MSET"] + args[1:])
    return 1


def _incr(db: Keyspace, args: List[bytes], delta: int) -> Reply:
    key = args[1]
    value = db.get_string(key)
    current = 0 if value is None else parse_int(value)
    if current is None:
        raise CommandError(NOT_INTEGER)
    result = current + delta
    if result > INT64_MAX or result < INT64_MIN:
        raise CommandError(OVERFLOW)
    db.set_string(key, b"%d" % result, keep_ttl=True)
    db.propagate([args[0].upper()] + args[1:])
    return result


@command("incr", 2, write=True)
def incr(db: Keyspace, args: List[bytes]) -> Reply:
    return _incr(db, args, 1)


@command("decr", 2, write=True)
def decr(db: Keyspace, args: List[bytes]) -> Reply:
    return _incr(db, args, -1)


@command("incrby", 3, write=True)
def incrby(db: Keyspace, args: List[bytes]) -> Reply:
    return _incr(db, args, int_arg(args[2]))


@command("decrby", 3, write=True)
def decrby(db: Keyspace, args: List[bytes]) -> Reply:
    delta = int_arg(args[2])
    if delta == INT64_MIN:
        raise CommandError(ErrorReply("ERR decrement would overflow"))
    return _incr(db, args, -delta)


@command("append", 3, write=True)
def append(db: Keyspace, args: List[bytes]) -> Reply:
    key = args[1]
    value = db.get_string(key)
    if value is None:
        value = args[2]
    else:
        if len(value) + len(args[2]) > MAX_STRING_BYTES:
            raise CommandError(ErrorReply("ERR string exceeds maximum allowed size (proto-max-bulk-len)"))
        value += args[2]
    db.set_string(key, value, keep_ttl=True)
    db.propagate([b"APPEND", key, args[2]])
    return len(value)


@command("strlen", 2)
def strlen(db: Keyspace, args: List[bytes]) -> Reply:
    value = db.get_string(args[1])
    return 0 if value is None else len(value)
