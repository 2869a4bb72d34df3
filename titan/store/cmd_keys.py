"""Generic key commands: DEL, EXISTS, TYPE, the EXPIRE family, TTL, PERSIST,
KEYS, SCAN, DBSIZE, FLUSHALL, RENAME.

What this module owns: commands that work on any type of key, their Redis 7
replies and errors, and their AOF form: every EXPIRE variant becomes
``PEXPIREAT key <absolute ms>``, or ``DEL key`` when the time is already
past; DEL logs only the keys it removed.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from titan.store.command import Command, registrar
from titan.store.glob import compile_glob
from titan.store.keyspace import Keyspace, type_name
from titan.store.reply import (
    INT64_MAX,
    OK,
    SYNTAX_ERROR,
    CommandError,
    ErrorReply,
    Reply,
    SimpleString,
    int_arg,
    text_of,
)

__all__ = ["TABLE"]

TABLE: Dict[bytes, Command] = {}
command = registrar(TABLE)

_DEL, _PEXPIREAT, _PERSIST = b"DEL", b"PEXPIREAT", b"PERSIST"
_SECONDS_MAX = INT64_MAX // 1000
_SECONDS_MIN = -(INT64_MAX // 1000)  # C division truncates toward zero
_U64_MAX = (1 << 64) - 1
_TYPES = (b"string", b"list", b"set", b"zset", b"hash", b"stream")


@command("del", -2, write=True)
def del_(db: Keyspace, args: List[bytes]) -> Reply:
    removed = [key for key in args[1:] if db.lookup(key) is not None and db.delete(key)]
    if removed:
        db.propagate([_DEL] + removed)
    return len(removed)


@command("unlink", -2, write=True)
def unlink(db: Keyspace, args: List[bytes]) -> Reply:
    return del_(db, args)


@command("exists", -2)
def exists(db: Keyspace, args: List[bytes]) -> Reply:
    return sum(1 for key in args[1:] if db.lookup(key) is not None)


@command("touch", -2)
def touch(db: Keyspace, args: List[bytes]) -> Reply:
    return exists(db, args)


@command("type", 2)
def type_(db: Keyspace, args: List[bytes]) -> Reply:
    value = db.lookup(args[1])
    return SimpleString(b"none" if value is None else type_name(value))


# -- expiry -------------------------------------------------------------------------


def _expire_flags(options: List[bytes]) -> str:
    """Parse EXPIRE's NX/XX/GT/LT into a string of their letters' initials."""
    seen = set()
    for raw in options:
        option = raw.upper()
        if option not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(ErrorReply(f"ERR Unsupported option {text_of(raw)}"))
        seen.add(option)
    if b"NX" in seen and len(seen) > 1:
        raise CommandError(ErrorReply("ERR NX and XX, GT or LT options at the same time are not compatible"))
    if b"GT" in seen and b"LT" in seen:
        raise CommandError(ErrorReply("ERR GT and LT options at the same time are not compatible"))
    return "".join(sorted(o.decode("ascii")[0] for o in seen))


def _expire_allowed(flags: str, when: int, current: Optional[int]) -> bool:
    """NX/XX/GT/LT against the current expiry; no TTL counts as infinite."""
    if "N" in flags and current is not None:
        return False
    if "X" in flags and current is None:
        return False
    if "G" in flags and (current is None or when <= current):
        return False
    if "L" in flags and current is not None and when >= current:
        return False
    return True


def _expire(db: Keyspace, args: List[bytes], name: str, *, seconds: bool, absolute: bool) -> Reply:
    flags = _expire_flags(args[3:])
    when = int_arg(args[2])
    invalid = CommandError(ErrorReply(f"ERR invalid expire time in '{name}' command"))
    if seconds:
        if when > _SECONDS_MAX or when < _SECONDS_MIN:
            raise invalid
        when *= 1000
    base = 0 if absolute else db.now_ms
    if when > INT64_MAX - base:
        raise invalid
    when += base
    key = args[1]
    if db.lookup(key) is None:
        return 0
    if flags and not _expire_allowed(flags, when, db.expire_of(key)):
        return 0
    if when <= db.now_ms and not db.loading:
        db.delete(key)
        db.propagate([_DEL, key])
        return 1
    db.set_expire(key, when)
    db.propagate([_PEXPIREAT, key, b"%d" % when])
    return 1


@command("expire", -3, write=True)
def expire(db: Keyspace, args: List[bytes]) -> Reply:
    return _expire(db, args, "expire", seconds=True, absolute=False)


@command("pexpire", -3, write=True)
def pexpire(db: Keyspace, args: List[bytes]) -> Reply:
    return _expire(db, args, "pexpire", seconds=False, absolute=False)


@command("expireat", -3, write=True)
def expireat(db: Keyspace, args: List[bytes]) -> Reply:
    return _expire(db, args, "expireat", seconds=True, absolute=True)


@command("pexpireat", -3, write=True)
def pexpireat(db: Keyspace, args: List[bytes]) -> Reply:
    return _expire(db, args, "pexpireat", seconds=False, absolute=True)


def _ttl(db: Keyspace, key: bytes, *, millis: bool, absolute: bool) -> Reply:
    """-2 for a missing key, -1 without TTL, else the time left (or the expiry itself)."""
    if db.lookup(key) is None:
        return -2
    when = db.expire_of(key)
    if when is None:
        return -1
    left = max(when if absolute else when - db.now_ms, 0)
    return left if millis else (left + 500) // 1000


@command("ttl", 2)
def ttl(db: Keyspace, args: List[bytes]) -> Reply:
    return _ttl(db, args[1], millis=False, absolute=False)


@command("pttl", 2)
def pttl(db: Keyspace, args: List[bytes]) -> Reply:
    return _ttl(db, args[1], millis=True, absolute=False)


@command("expiretime", 2)
def expiretime(db: Keyspace, args: List[bytes]) -> Reply:
    return _ttl(db, args[1], millis=False, absolute=True)


@command("pexpiretime", 2)
def pexpiretime(db: Keyspace, args: List[bytes]) -> Reply:
    return _ttl(db, args[1], millis=True, absolute=True)


@command("persist", 2, write=True)
def persist(db: Keyspace, args: List[bytes]) -> Reply:
    key = args[1]
    if db.lookup(key) is None or not db.persist(key):
        return 0
    db.propagate([_PERSIST, key])
    return 1


# -- listing keys ---------------------------------------------------------------------


@command("keys", 2)
def keys(db: Keyspace, args: List[bytes]) -> Reply:
    pattern = compile_glob(args[1])
    if pattern.matches_everything():
        return list(db.live_keys())
    return [key for key in db.live_keys() if pattern.match(key)]


def _cursor(raw: bytes) -> int:
    if raw.isdigit() and len(raw) <= 20:
        value = int(raw)
        if value <= _U64_MAX:
            return value
    raise CommandError(ErrorReply("ERR invalid cursor"))


@command("scan", -2)
def scan(db: Keyspace, args: List[bytes]) -> Reply:
    cursor = _cursor(args[1])
    count, pattern, wanted = 10, None, None
    index = 2
    while index < len(args):
        if index + 1 >= len(args):
            raise CommandError(SYNTAX_ERROR)
        option, value = args[index].upper(), args[index + 1]
        if option == b"COUNT":
            count = int_arg(value)
            if count < 1:
                raise CommandError(SYNTAX_ERROR)
        elif option == b"MATCH":
            pattern = compile_glob(value)
        elif option == b"TYPE":
            wanted = value.lower()
            if wanted not in _TYPES:
                raise CommandError(ErrorReply(f"ERR unknown type name '{text_of(value)}'"))
        else:
            raise CommandError(SYNTAX_ERROR)
        index += 2
    following, found = db.index.scan(cursor, count, db.data)
    found = [key for key in found if not db.is_expired(key)]
    if pattern is not None and not pattern.matches_everything():
        found = [key for key in found if pattern.match(key)]
    if wanted is not None:
        found = [key for key in found if type_name(db.data[key]) == wanted]
    return [b"%d" % following, found]


@command("dbsize", 1)
def dbsize(db: Keyspace, args: List[bytes]) -> Reply:
    return len(db.data)


def _flush(db: Keyspace, args: List[bytes], name: bytes) -> Reply:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"SYNC", b"ASYNC")):
        raise CommandError(SYNTAX_ERROR)
    db.clear()
    db.propagate([name])
    return OK


@command("flushall", -1, write=True)
def flushall(db: Keyspace, args: List[bytes]) -> Reply:
    return _flush(db, args, b"FLUSHALL")


@command("flushdb", -1, write=True)
def flushdb(db: Keyspace, args: List[bytes]) -> Reply:
    return _flush(db, args, b"FLUSHDB")


# -- renaming -------------------------------------------------------------------------


def _rename(db: Keyspace, args: List[bytes], *, nx: bool) -> Reply:
    src, dst = args[1], args[2]
    if db.lookup(src) is None:
        raise CommandError(ErrorReply("ERR no such key"))
    if src == dst:
        return 0 if nx else OK
    if db.lookup(dst) is not None and nx:
        return 0
    db.rename(src, dst)
    db.propagate([b"RENAME", src, dst])
    return 1 if nx else OK


@command("rename", 3, write=True)
def rename(db: Keyspace, args: List[bytes]) -> Reply:
    return _rename(db, args, nx=False)


@command("renamenx", 3, write=True)
def renamenx(db: Keyspace, args: List[bytes]) -> Reply:
    return _rename(db, args, nx=True)

