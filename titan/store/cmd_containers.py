"""Set and hash commands: SADD, SREM, SMEMBERS, ..., HSET, HGET, HINCRBY, ...

What this module owns: the semantics of the two container types.  A set or
hash that loses its last member is deleted, as in Redis, so an empty
container never exists.  Writes are logged as given (HMSET and HSETNX as the
HSET they amounted to) and only when they changed something.
"""
from __future__ import annotations

from typing import Dict, List

from titan.store.command import Command, registrar
from titan.store.keyspace import Keyspace
from titan.store.reply import (
    INT64_MAX,
    INT64_MIN,
    OK,
    OVERFLOW,
    CommandError,
    ErrorReply,
    MapReply,
    Reply,
    SetReply,
    int_arg,
    parse_int,
    wrong_arity,
)

__all__ = ["TABLE"]

TABLE: Dict[bytes, Command] = {}
command = registrar(TABLE)

_SADD, _SREM, _HSET, _HDEL = b"SADD", b"SREM", b"HSET", b"HDEL"
_HASH_NOT_INTEGER = ErrorReply("ERR hash value is not an integer")

# -- sets -------------------------------------------------------------------------------


@command("sadd", -3, write=True)
def sadd(db: Keyspace, args: List[bytes]) -> Reply:
    members = db.writable_set(args[1], create=True)
    assert members is not None
    before = len(members)
    members.update(args[2:])
    added = len(members) - before
    if added:
        db.propagate([_SADD] + args[1:])
    return added


@command("srem", -3, write=True)
def srem(db: Keyspace, args: List[bytes]) -> Reply:
    key = args[1]
    members = db.writable_set(key, create=False)
    if members is None:
        return 0
    before = len(members)
    members.difference_update(args[2:])
    removed = before - len(members)
    if not members:
        db.delete(key)
    if removed:
        db.propagate([_SREM] + args[1:])
    return removed


@command("smembers", 2)
def smembers(db: Keyspace, args: List[bytes]) -> Reply:
    members = db.get_set(args[1])
    return SetReply(members or ())


@command("sismember", 3)
def sismember(db: Keyspace, args: List[bytes]) -> Reply:
    members = db.get_set(args[1])
    return 1 if members is not None and args[2] in members else 0


@command("smismember", -3)
def smismember(db: Keyspace, args: List[bytes]) -> Reply:
    members = db.get_set(args[1]) or set()
    return [1 if member in members else 0 for member in args[2:]]


@command("scard", 2)
def scard(db: Keyspace, args: List[bytes]) -> Reply:
    members = db.get_set(args[1])
    return 0 if members is None else len(members)


# -- hashes -----------------------------------------------------------------------------


def _hset(db: Keyspace, args: List[bytes], name: str) -> int:
    if len(args) % 2 == 1:
        raise CommandError(wrong_arity(name))
    fields = db.writable_hash(args[1], create=True)
    assert fields is not None
    before = len(fields)
    fields.update(zip(args[2::2], args[3::2]))
    db.propagate([_HSET] + args[1:])
    return len(fields) - before


@command("hset", -4, write=True)
def hset(db: Keyspace, args: List[bytes]) -> Reply:
    return _hset(db, args, "hset")


@command("hmset", -4, write=True)
def hmset(db: Keyspace, args: List[bytes]) -> Reply:
    _hset(db, args, "hmset")
    return OK


@command("hsetnx", 4, write=True)
def hsetnx(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1])
    if fields is not None and args[2] in fields:
        return 0
    return _hset(db, args, "hsetnx")


@command("hget", 3)
def hget(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1])
    return None if fields is None else fields.get(args[2])


@command("hmget", -3)
def hmget(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1]) or {}
    return [fields.get(name) for name in args[2:]]


@command("hdel", -3, write=True)
def hdel(db: Keyspace, args: List[bytes]) -> Reply:
    key = args[1]
    fields = db.writable_hash(key, create=False)
    if fields is None:
        return 0
    removed = sum(1 for name in args[2:] if fields.pop(name, None) is not None)
    if not fields:
        db.delete(key)
    if removed:
        db.propagate([_HDEL] + args[1:])
    return removed


@command("hgetall", 2)
def hgetall(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1]) or {}
    return MapReply(item for pair in fields.items() for item in pair)


@command("hkeys", 2)
def hkeys(db: Keyspace, args: List[bytes]) -> Reply:
    return list(db.get_hash(args[1]) or ())


@command("hvals", 2)
def hvals(db: Keyspace, args: List[bytes]) -> Reply:
    return list((db.get_hash(args[1]) or {}).values())


@command("hlen", 2)
def hlen(db: Keyspace, args: List[bytes]) -> Reply:
    return len(db.get_hash(args[1]) or ())


@command("hexists", 3)
def hexists(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1])
    return 1 if fields is not None and args[2] in fields else 0


@command("hstrlen", 3)
def hstrlen(db: Keyspace, args: List[bytes]) -> Reply:
    fields = db.get_hash(args[1]) or {}
    return len(fields.get(args[2], b""))


@command("hincrby", 4, write=True)
def hincrby(db: Keyspace, args: List[bytes]) -> Reply:
    key, name = args[1], args[2]
    delta = int_arg(args[3])
    fields = db.get_hash(key)
    raw = None if fields is None else fields.get(name)
    current = 0 if raw is None else parse_int(raw)
    if current is None:
        raise CommandError(_HASH_NOT_INTEGER)
    result = current + delta
    if result > INT64_MAX or result < INT64_MIN:
        raise CommandError(OVERFLOW)
    writable = db.writable_hash(key, create=True)
    assert writable is not None
    writable[name] = b"%d" % result
    db.propagate([b"HINCRBY", key, name, args[3]])
    return result
