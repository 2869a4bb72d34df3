"""TitanStore engine: Redis 7 semantics per command, expiry with a fake clock,
the AOF commands each command propagates, replay, dump and SCAN.

Every test drives a real Engine through ``Session``, which keeps the fake
``now_ms`` and collects what the engine says to append to the AOF, so a test
can assert on the reply a client would see and on the file a restart would
replay.
"""
from __future__ import annotations

import random
from typing import Dict, List, Optional, Tuple, Union

import pytest

from titan.store.engine import Engine
from titan.store.reply import ErrorReply, MapReply, SetReply, SimpleString

T0 = 1_700_000_000_000  # a fixed "now" in ms
OK = SimpleString(b"OK")
WRONGTYPE = ErrorReply("WRONGTYPE Operation against a key holding the wrong kind of value")
NOT_INT = ErrorReply("ERR value is not an integer or out of range")
SYNTAX = ErrorReply("ERR syntax error")

Arg = Union[bytes, str, int]

# Redis 7 arities of every command the engine may write to the AOF.
REDIS_ARITY = {
    b"SET": -3, b"DEL": -2, b"PEXPIREAT": -3, b"PERSIST": 2, b"MSET": -3, b"INCR": 2,
    b"DECR": 2, b"INCRBY": 3, b"DECRBY": 3, b"APPEND": 3, b"SADD": -3, b"SREM": -3,
    b"HSET": -4, b"HDEL": -3, b"HINCRBY": 4, b"RENAME": 3, b"FLUSHALL": -1, b"FLUSHDB": -1,
}


def b(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


class Session:
    """An engine, a fake clock and the AOF it has produced so far."""

    def __init__(self, now_ms: int = T0) -> None:
        self.engine = Engine()
        self.now = now_ms
        self.aof: List[List[bytes]] = []
        self.last_prop: List[List[bytes]] = []

    def __call__(self, *args: Arg) -> object:
        reply, prop = self.engine.execute([b(a) for a in args], self.now)
        self.last_prop = prop
        self.aof.extend(prop)
        return reply

    def advance(self, ms: int) -> None:
        self.now += ms


def keyspace(engine: Engine, now_ms: int) -> Dict[bytes, Tuple[str, object, Optional[int]]]:
    """The keyspace as key -> (type, value, expiry), read through dump()."""
    state: Dict[bytes, list] = {}
    for cmd in engine.dump(now_ms):
        name, key = cmd[0], cmd[1]
        if name == b"SET":
            when = int(cmd[4]) if len(cmd) == 5 else None
            assert len(cmd) in (3, 5) and (len(cmd) == 3 or cmd[3] == b"PXAT")
            state[key] = ["string", cmd[2], when]
        elif name == b"SADD":
            assert len(cmd) <= 2 + 64
            state.setdefault(key, ["set", set(), None])[1].update(cmd[2:])
        elif name == b"HSET":
            assert len(cmd) <= 2 + 128
            state.setdefault(key, ["hash", {}, None])[1].update(zip(cmd[2::2], cmd[3::2]))
        elif name == b"PEXPIREAT":
            state[key][2] = int(cmd[2])
        else:
            raise AssertionError(f"unexpected dump command {cmd!r}")
    return {k: (v[0], v[1], v[2]) for k, v in state.items()}


def replayed(aof: List[List[bytes]], now_ms: int) -> Engine:
    fresh = Engine()
    for cmd in aof:
        assert fresh.replay(cmd, now_ms) is None, cmd
    return fresh


@pytest.fixture
def s() -> Session:
    return Session()


# -- strings ---------------------------------------------------------------------------


def test_set_get_round_trips_binary_and_non_ascii(s: Session) -> None:
    key, value = "ключ🔑".encode(), b"\x00\xff\r\n" + "värde".encode()
    assert s("SET", key, value) == OK
    assert s("GET", key) == value
    assert s("GET", "missing") is None
    assert s.last_prop == []
    assert s("set", key, b"") == OK  # command names are case-insensitive
    assert s("GET", key) == b""


def test_set_nx_xx_and_get(s: Session) -> None:
    assert s("SET", "k", "v1", "NX") == OK
    assert s("SET", "k", "v2", "NX") is None
    assert s.last_prop == []
    assert s("SET", "other", "x", "XX") is None
    assert s("SET", "k", "v3", "XX", "GET") == b"v1"
    assert s.last_prop == [[b"SET", b"k", b"v3"]]  # GET dropped from the AOF
    assert s("SET", "new", "v", "get") is None
    assert s("SET", "k", "v4", "NX", "GET") == b"v3"  # NX fails, old value still returned
    assert s("GET", "k") == b"v3"


def test_set_get_on_wrong_type_changes_nothing(s: Session) -> None:
    s("SADD", "set", "m")
    assert s("SET", "set", "v", "GET") == WRONGTYPE
    assert s.last_prop == []
    assert s("TYPE", "set") == SimpleString(b"set")
    assert s("SET", "set", "v") == OK  # plain SET overwrites any type
    assert s("TYPE", "set") == SimpleString(b"string")


@pytest.mark.parametrize(
    "args, error",
    [
        (("NX", "XX"), SYNTAX),
        (("EX", "10", "KEEPTTL"), SYNTAX),
        (("KEEPTTL", "PX", "10"), SYNTAX),
        (("EX", "10", "PX", "10"), SYNTAX),
        (("EX",), SYNTAX),
        (("BOGUS",), SYNTAX),
        (("EX", "abc"), NOT_INT),
        (("EX", "+5"), NOT_INT),
        (("EX", "0"), ErrorReply("ERR invalid expire time in 'set' command")),
        (("PX", "-5"), ErrorReply("ERR invalid expire time in 'set' command")),
        (("EX", str(2**62)), ErrorReply("ERR invalid expire time in 'set' command")),
        (("PX", str(2**63 - 10)), ErrorReply("ERR invalid expire time in 'set' command")),
        (("EX", str(2**63)), NOT_INT),
    ],
)
def test_set_option_errors(s: Session, args: Tuple[str, ...], error: ErrorReply) -> None:
    assert s("SET", "k", "v", *args) == error
    assert s("EXISTS", "k") == 0
    assert s.aof == []


def test_set_expiry_options_are_logged_as_absolute_pxat(s: Session) -> None:
    s("SET", "a", "1", "EX", "10")
    s("SET", "b", "2", "px", "1500")
    s("SET", "c", "3", "EXAT", str(T0 // 1000 + 100))
    s("SET", "d", "4", "PXAT", str(T0 + 7))
    s("SETEX", "e", "5", "x")
    s("PSETEX", "f", "6", "y")
    assert s.aof == [
        [b"SET", b"a", b"1", b"PXAT", b"%d" % (T0 + 10_000)],
        [b"SET", b"b", b"2", b"PXAT", b"%d" % (T0 + 1500)],
        [b"SET", b"c", b"3", b"PXAT", b"%d" % (T0 // 1000 * 1000 + 100_000)],
        [b"SET", b"d", b"4", b"PXAT", b"%d" % (T0 + 7)],
        [b"SET", b"e", b"x", b"PXAT", b"%d" % (T0 + 5000)],
        [b"SET", b"f", b"y", b"PXAT", b"%d" % (T0 + 6)],
    ]
    assert s("PTTL", "b") == 1500
    assert s("SETEX", "g", "0", "v") == ErrorReply("ERR invalid expire time in 'setex' command")


@pytest.mark.parametrize("expire_at", [None, T0 + 60_000])
def test_put_string_is_set_without_the_parsing(expire_at: Optional[int]) -> None:
    # Given two engines with a key that has a TTL, and one without
    from titan.store.resp import encode_command
    by_command, by_put = Engine(), Engine()
    for engine in (by_command, by_put):
        engine.execute([b"SET", b"old", b"x", b"PX", b"5000"], T0)
    # When one SETs through execute() and the other through put_string()
    command = [b"SET", b"old", b"\x00new\xff"] + ([b"PXAT", b"%d" % expire_at] if expire_at else [])
    _, logged = by_command.execute(command, T0 + 1)
    put = by_put.put_string(b"old", b"\x00new\xff", expire_at, T0 + 1)
    # Then the AOF record is byte for byte the same, and so is what a client reads back
    assert put == b"".join(encode_command(c) for c in logged)
    for read in ([b"GET", b"old"], [b"PTTL", b"old"], [b"DBSIZE"]):
        assert by_put.execute(read, T0 + 2)[0] == by_command.execute(read, T0 + 2)[0]


def test_set_clears_ttl_unless_keepttl(s: Session) -> None:
    s("SET", "k", "v", "EX", "100")
    s("SET", "k", "v2", "KEEPTTL")
    assert s.last_prop == [[b"SET", b"k", b"v2", b"KEEPTTL"]]
    assert s("TTL", "k") == 100
    s("SET", "k", "v3")
    assert s("TTL", "k") == -1
    s("SET", "k", "v", "EX", "100")
    s("GETSET", "k", "v4")
    assert s("TTL", "k") == -1


def test_mget_mset_msetnx(s: Session) -> None:
    s("SADD", "set", "m")
    assert s("MSET", "a", "1", "b", "2") == OK
    assert s.last_prop == [[b"MSET", b"a", b"1", b"b", b"2"]]
    assert s("MGET", "a", "missing", "set", "b") == [b"1", None, None, b"2"]
    assert s("MSET", "a", "1", "b") == ErrorReply("ERR wrong number of arguments for 'mset' command")
    assert s("MSETNX", "a", "x", "c", "3") == 0
    assert s("MSETNX", "c", "3", "d", "4") == 1
    assert s("MGET", "a", "c", "d") == [b"1", b"3", b"4"]


def test_del_and_exists_count(s: Session) -> None:
    s("MSET", "a", "1", "b", "2")
    assert s("EXISTS", "a", "a", "b", "nope") == 3
    assert s("DEL", "a", "nope", "a") == 1
    assert s.last_prop == [[b"DEL", b"a"]]
    assert s("DEL", "nope") == 0
    assert s.last_prop == []
    assert s("UNLINK", "b") == 1


def test_incr_family(s: Session) -> None:
    assert s("INCR", "n") == 1
    assert s("INCRBY", "n", "41") == 42
    assert s("DECR", "n") == 41
    assert s("DECRBY", "n", "-9") == 50
    assert s("GET", "n") == b"50"
    assert s.aof[-1] == [b"DECRBY", b"n", b"-9"]
    assert s("INCRBY", "n", "1.5") == NOT_INT
    assert s("INCRBY", "n", "") == NOT_INT


@pytest.mark.parametrize("value", [b"abc", b"+1", b" 1", b"1 ", b"01", b"-0", b"1e3", b"", b"99999999999999999999"])
def test_incr_rejects_values_redis_would_not_parse(s: Session, value: bytes) -> None:
    s("SET", "n", value)
    assert s("INCR", "n") == NOT_INT
    assert s("GET", "n") == value
    assert s.last_prop == []


def test_incr_overflow_and_wrong_type(s: Session) -> None:
    s("SET", "n", str(2**63 - 1))
    assert s("INCR", "n") == ErrorReply("ERR increment or decrement would overflow")
    s("SET", "m", str(-(2**63)))
    assert s("DECR", "m") == ErrorReply("ERR increment or decrement would overflow")
    assert s("DECRBY", "x", str(-(2**63))) == ErrorReply("ERR decrement would overflow")
    assert s("INCRBY", "x", str(2**63)) == NOT_INT
    s("HSET", "h", "f", "1")
    assert s("INCR", "h") == WRONGTYPE


def test_incr_keeps_ttl(s: Session) -> None:
    s("SET", "n", "1", "EX", "50")
    s("INCR", "n")
    assert s("TTL", "n") == 50


def test_append_strlen_getdel_setnx(s: Session) -> None:
    assert s("APPEND", "k", "ab") == 2
    assert s("APPEND", "k", "cd") == 4
    assert s("STRLEN", "k") == 4
    assert s("STRLEN", "nope") == 0
    assert s("GETDEL", "k") == b"abcd"
    assert s.last_prop == [[b"DEL", b"k"]]
    assert s("GETDEL", "k") is None
    assert s("SETNX", "k", "1") == 1
    assert s("SETNX", "k", "2") == 0
    assert s("GET", "k") == b"1"
    s("SADD", "set", "m")
    assert s("APPEND", "set", "x") == WRONGTYPE
    assert s("STRLEN", "set") == WRONGTYPE
    assert s("GET", "set") == WRONGTYPE


# -- expiry -----------------------------------------------------------------------------


def test_expire_family_logs_pexpireat_absolute(s: Session) -> None:
    s("MSET", "a", "1", "b", "2", "c", "3", "d", "4")
    assert s("EXPIRE", "a", "10") == 1
    assert s("PEXPIRE", "b", "2500") == 1
    assert s("EXPIREAT", "c", str(T0 // 1000 + 60)) == 1
    assert s("PEXPIREAT", "d", str(T0 + 99)) == 1
    assert s.aof[-4:] == [
        [b"PEXPIREAT", b"a", b"%d" % (T0 + 10_000)],
        [b"PEXPIREAT", b"b", b"%d" % (T0 + 2500)],
        [b"PEXPIREAT", b"c", b"%d" % (T0 // 1000 * 1000 + 60_000)],
        [b"PEXPIREAT", b"d", b"%d" % (T0 + 99)],
    ]
    assert s("EXPIRE", "missing", "10") == 0
    assert s.last_prop == []


def test_expire_in_the_past_deletes_and_logs_del(s: Session) -> None:
    s("SET", "k", "v")
    assert s("EXPIRE", "k", "-1") == 1
    assert s.last_prop == [[b"DEL", b"k"]]
    assert s("EXISTS", "k") == 0
    s("SET", "k", "v")
    assert s("PEXPIREAT", "k", str(T0)) == 1  # "now" counts as past
    assert s("EXISTS", "k") == 0


def test_expire_conditions(s: Session) -> None:
    s("SET", "k", "v")
    assert s("EXPIRE", "k", "100", "XX") == 0
    assert s("EXPIRE", "k", "100", "GT") == 0  # no TTL counts as infinite
    assert s("EXPIRE", "k", "100", "LT") == 1
    assert s("EXPIRE", "k", "200", "NX") == 0
    assert s("EXPIRE", "k", "50", "gt") == 0
    assert s("EXPIRE", "k", "200", "GT") == 1
    assert s("EXPIRE", "k", "300", "LT", "XX") == 0
    assert s("TTL", "k") == 200
    assert s("EXPIRE", "k", "1", "NX", "XX") == ErrorReply(
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert s("EXPIRE", "k", "1", "GT", "LT") == ErrorReply("ERR GT and LT options at the same time are not compatible")
    assert s("EXPIRE", "k", "1", "XY") == ErrorReply("ERR Unsupported option XY")
    assert s("EXPIRE", "k", str(2**62)) == ErrorReply("ERR invalid expire time in 'expire' command")
    assert s("PEXPIRE", "k", str(2**63 - 1)) == ErrorReply("ERR invalid expire time in 'pexpire' command")
    assert s("EXPIRE", "k", "ten") == NOT_INT


def test_ttl_pttl_persist_expiretime(s: Session) -> None:
    assert s("TTL", "missing") == -2
    assert s("PTTL", "missing") == -2
    s("SET", "k", "v")
    assert s("TTL", "k") == -1
    assert s("PERSIST", "k") == 0
    s("PEXPIRE", "k", "10499")
    assert s("TTL", "k") == 10  # rounded as Redis: (ms + 500) / 1000
    assert s("PTTL", "k") == 10499
    assert s("PEXPIRETIME", "k") == T0 + 10499
    assert s("EXPIRETIME", "k") == (T0 + 10499 + 500) // 1000
    assert s("PERSIST", "k") == 1
    assert s.last_prop == [[b"PERSIST", b"k"]]
    assert s("TTL", "k") == -1


@pytest.mark.parametrize(
    "command, missing_reply",
    [(("GET", "k"), None), (("EXISTS", "k"), 0), (("TYPE", "k"), SimpleString(b"none")), (("TTL", "k"), -2),
     (("STRLEN", "k"), 0), (("APPEND", "k", "x"), 1), (("INCR", "k"), 1), (("SETNX", "k", "y"), 1)],
)
def test_lazy_expiry_on_access_logs_del(s: Session, command: Tuple[str, ...], missing_reply: object) -> None:
    s("SET", "k", "5", "PX", "100")
    s.advance(100)
    assert s("PTTL", "k") == 0  # alive until now > expiry, as Redis
    assert s.last_prop == []
    s.advance(1)
    assert s(*command) == missing_reply
    assert s.last_prop[0] == [b"DEL", b"k"]
    assert s.engine.dbsize() == (1 if command[0] in ("APPEND", "INCR", "SETNX") else 0)


def test_set_on_expired_key_needs_no_del(s: Session) -> None:
    s("SET", "k", "v", "PX", "10")
    s.advance(50)
    assert s("SET", "k", "w") == OK
    assert s("TTL", "k") == -1
    assert replayed(s.aof, s.now).dbsize() == 1


def test_active_expiry_returns_dels_earliest_first(s: Session) -> None:
    for i in range(30):
        s("SET", f"k{i}", "v", "PX", str(100 + i))
    s("SET", "forever", "v")
    s("SET", "k0", "renewed")  # clears k0's TTL: its heap entry is stale now
    assert s.engine.next_expiry_ms() == T0 + 101 + 1
    assert s.engine.active_expire(T0 + 100) == []
    first = s.engine.active_expire(T0 + 200, max_keys=20)
    assert first == [[b"DEL", b"k%d" % i] for i in range(1, 21)]
    rest = s.engine.active_expire(T0 + 200, max_keys=20)
    assert rest == [[b"DEL", b"k%d" % i] for i in range(21, 30)]
    assert s.engine.next_expiry_ms() is None
    assert s.engine.dbsize() == 2


def test_active_expiry_skips_persisted_and_deleted_keys(s: Session) -> None:
    s("SET", "a", "v", "PX", "10")
    s("SET", "b", "v", "PX", "10")
    s("SET", "c", "v", "PX", "10")
    s("PERSIST", "a")
    s("DEL", "b")
    s("PEXPIRE", "c", "1000")
    assert s.engine.active_expire(T0 + 500) == []
    assert s.engine.next_expiry_ms() == T0 + 1001


# -- generic key commands ----------------------------------------------------------------


def test_type_keys_dbsize_flushall(s: Session) -> None:
    s("SET", "str", "v")
    s("SADD", "set", "m")
    s("HSET", "hash", "f", "v")
    s("SET", "gone", "v", "PX", "1")
    assert [s("TYPE", k) for k in ("str", "set", "hash", "nope")] == [
        SimpleString(b"string"), SimpleString(b"set"), SimpleString(b"hash"), SimpleString(b"none")
    ]
    s.advance(5)
    assert s("DBSIZE") == 4  # counts the expired key not yet deleted, as Redis
    assert sorted(s("KEYS", "*")) == [b"hash", b"set", b"str"]
    assert sorted(s("KEYS", "s*")) == [b"set", b"str"]
    assert s("KEYS", "h?sh") == [b"hash"]
    assert s("FLUSHALL") == OK
    assert s.last_prop == [[b"FLUSHALL"]]
    assert s("DBSIZE") == 0
    assert s("FLUSHALL", "LAZY") == SYNTAX


def test_rename_moves_value_and_ttl(s: Session) -> None:
    s("SET", "a", "1", "EX", "100")
    s("SET", "b", "old")
    assert s("RENAME", "a", "b") == OK
    assert s.last_prop == [[b"RENAME", b"a", b"b"]]
    assert s("GET", "b") == b"1"
    assert s("TTL", "b") == 100
    assert s("EXISTS", "a") == 0
    assert s("RENAME", "a", "c") == ErrorReply("ERR no such key")
    assert s("RENAME", "b", "b") == OK
    s("SET", "c", "x")
    assert s("RENAMENX", "b", "c") == 0
    assert s("RENAMENX", "b", "d") == 1
    assert s("GET", "d") == b"1"


def scan_all(s: Session, *options: str, mutate=None) -> List[bytes]:
    seen: List[bytes] = []
    cursor = b"0"
    rounds = 0
    while True:
        reply = s("SCAN", cursor, *options)
        cursor, keys = reply
        seen.extend(keys)
        rounds += 1
        if mutate is not None:
            mutate(rounds)
        if cursor == b"0":
            return seen


def test_scan_returns_every_key(s: Session) -> None:
    for i in range(1000):
        s("SET", f"key:{i}", "v")
    s("SADD", "set:1", "m")
    seen = scan_all(s, "COUNT", "7")
    assert set(seen) == {b"key:%d" % i for i in range(1000)} | {b"set:1"}
    assert set(scan_all(s, "MATCH", "set:*")) == {b"set:1"}
    assert set(scan_all(s, "TYPE", "set", "COUNT", "100")) == {b"set:1"}
    assert s("SCAN", "abc") == ErrorReply("ERR invalid cursor")
    assert s("SCAN", "0", "COUNT", "0") == SYNTAX
    assert s("SCAN", "0", "COUNT") == SYNTAX
    assert s("SCAN", "0", "TYPE", "blob") == ErrorReply("ERR unknown type name 'blob'")


def test_scan_survives_churn_and_compaction(s: Session) -> None:
    """Keys present for the whole scan come back, while others come and go."""
    stable = {b"stable:%d" % i for i in range(500)}
    for key in stable:
        s("SET", key, "v")
    churn = iter(range(10**9))

    def create_and_delete(count: int) -> None:
        for _ in range(count):
            n = next(churn)
            s("SET", f"temp:{n}", "v")
            s("DEL", f"temp:{n - 20}")

    def mutate(round_: int) -> None:
        # a burst big enough to compact the index mid-scan, then light churn
        create_and_delete(6000 if round_ in (5, 30) else 3)

    seen = scan_all(s, "COUNT", "20", mutate=mutate)
    assert stable <= set(seen)
    assert s.engine._db.index._generation >= 2, "the test should have compacted the index twice"


def test_scan_skips_expired_keys(s: Session) -> None:
    s("SET", "a", "v", "PX", "5")
    s("SET", "b", "v")
    s.advance(10)
    assert scan_all(s) == [b"b"]


# -- sets and hashes ----------------------------------------------------------------------


def test_set_commands(s: Session) -> None:
    assert s("SADD", "s", "a", "b", "a") == 2
    assert s("SADD", "s", "a") == 0
    assert s.last_prop == []
    assert sorted(s("SMEMBERS", "s")) == [b"a", b"b"]
    assert isinstance(s("SMEMBERS", "s"), SetReply)
    assert s("SMEMBERS", "nope") == []
    assert s("SISMEMBER", "s", "a") == 1
    assert s("SISMEMBER", "s", "z") == 0
    assert s("SMISMEMBER", "s", "a", "z") == [1, 0]
    assert s("SCARD", "s") == 2
    assert s("SREM", "s", "a", "z") == 1
    assert s.last_prop == [[b"SREM", b"s", b"a", b"z"]]
    assert s("SREM", "s", "b") == 1
    assert s("EXISTS", "s") == 0  # an emptied set is deleted
    s("SET", "str", "v")
    for command in (("SADD", "str", "m"), ("SREM", "str", "m"), ("SMEMBERS", "str"), ("SCARD", "str")):
        assert s(*command) == WRONGTYPE


def test_hash_commands(s: Session) -> None:
    assert s("HSET", "h", "a", "1", "b", "2") == 2
    assert s("HSET", "h", "a", "9", "c", "3") == 1
    assert s("HSET", "h", "a") == ErrorReply("ERR wrong number of arguments for 'hset' command")
    assert s("HSET", "h", "a", "1", "b") == ErrorReply("ERR wrong number of arguments for 'hset' command")
    assert s("HGET", "h", "a") == b"9"
    assert s("HGET", "h", "z") is None
    assert s("HMGET", "h", "a", "z", "c") == [b"9", None, b"3"]
    assert s("HLEN", "h") == 3
    assert s("HEXISTS", "h", "b") == 1
    reply = s("HGETALL", "h")
    assert isinstance(reply, MapReply)
    assert dict(zip(reply[::2], reply[1::2])) == {b"a": b"9", b"b": b"2", b"c": b"3"}
    assert s("HSETNX", "h", "a", "x") == 0
    assert s("HSETNX", "h", "d", "4") == 1
    assert s.last_prop == [[b"HSET", b"h", b"d", b"4"]]
    assert s("HDEL", "h", "a", "z") == 1
    assert s("HDEL", "h", "b", "c", "d") == 3
    assert s("EXISTS", "h") == 0
    assert s("HGETALL", "h") == []


def test_hincrby(s: Session) -> None:
    assert s("HINCRBY", "h", "n", "5") == 5
    assert s("HINCRBY", "h", "n", "-7") == -2
    s("HSET", "h", "text", "abc")
    assert s("HINCRBY", "h", "text", "1") == ErrorReply("ERR hash value is not an integer")
    assert s("HINCRBY", "h", "n", "x") == NOT_INT
    s("HSET", "h", "big", str(2**63 - 1))
    assert s("HINCRBY", "h", "big", "1") == ErrorReply("ERR increment or decrement would overflow")
    assert s("HINCRBY", "fresh", "text", "x") == NOT_INT
    assert s("EXISTS", "fresh") == 0
    s("SET", "str", "v")
    assert s("HINCRBY", "str", "f", "1") == WRONGTYPE


# -- connection and server trivia -----------------------------------------------------------


def test_connection_commands(s: Session) -> None:
    assert s("PING") == SimpleString(b"PONG")
    assert s("PING", "hi") == b"hi"
    assert s("PING", "a", "b") == ErrorReply("ERR wrong number of arguments for 'ping' command")
    assert s("ECHO", "x") == b"x"
    assert s("SELECT", "0") == OK
    assert s("SELECT", "1") == ErrorReply("ERR DB index is out of range")
    assert s("SELECT", "x") == NOT_INT
    assert s("TIME") == [b"%d" % (T0 // 1000), b"%d" % (T0 % 1000 * 1000)]
    assert s.aof == []


def test_what_clients_send_first(s: Session) -> None:
    assert s("COMMAND", "DOCS") == []
    assert isinstance(s("COMMAND", "COUNT"), int) and s("COMMAND", "COUNT") > 40
    assert s("COMMAND") == []
    assert s("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == OK
    assert s("CLIENT", "SETINFO", "lib-ver", "5.0.0") == OK
    assert s("CLIENT", "SETINFO", "color", "red") == ErrorReply("ERR Unrecognized option 'color'")
    assert s("CLIENT", "SETNAME", "worker-1") == OK
    assert s("CLIENT", "SETNAME", "a b") == ErrorReply(
        "ERR Client names cannot contain spaces, newlines or special characters."
    )
    assert s("CLIENT", "GETNAME") is None
    assert isinstance(s("CLIENT", "ID"), int)
    assert s("CLIENT", "NOPE") == ErrorReply("ERR unknown subcommand 'NOPE'. Try CLIENT HELP.")
    assert s("CLIENT", "SETNAME") == ErrorReply("ERR wrong number of arguments for 'client|setname' command")
    assert s("CONFIG", "GET", "save") == [b"save", b""]
    assert s("CONFIG", "GET", "appendonly") == [b"appendonly", b"yes"]
    assert s("CONFIG", "GET", "nothing-like-this") == []
    assert len(s("CONFIG", "GET", "*")) >= 10
    assert s("CONFIG", "GET") == ErrorReply("ERR wrong number of arguments for 'config|get' command")
    assert s("CONFIG", "SET", "maxmemory", "1") == OK
    assert s("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"1"]
    # what the store takes at start only is refused, not answered OK and ignored (nothing of the call is set)
    refused = s("CONFIG", "SET", "maxmemory", "2", "appendonly", "no")
    assert isinstance(refused, ErrorReply) and "'appendonly'" in refused.message and "immutable" in refused.message
    assert s("CONFIG", "GET", "a*only") == [b"appendonly", b"yes"]
    assert s("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"1"]
    assert isinstance(s("CONFIG", "SET", "appendfsync", "no"), ErrorReply)
    assert s("CONFIG", "FOO") == ErrorReply("ERR unknown subcommand 'FOO'. Try CONFIG HELP.")
    configured = Engine(config={b"appendfsync": b"everysec", b"port": b"6380"})
    assert configured.execute([b"CONFIG", b"GET", b"appendfsync"], T0)[0] == [b"appendfsync", b"everysec"]
    assert b"tcp_port:6380" in configured.execute([b"INFO", b"server"], T0)[0]


def test_info(s: Session) -> None:
    s("SET", "k", "v", "EX", "10")
    text = s("INFO")
    assert isinstance(text, bytes)
    assert text.startswith(b"# Server\r\nredis_version:7.2.0\r\n")
    assert b"# Keyspace\r\ndb0:keys=1,expires=1,avg_ttl=0\r\n" in text
    assert s("INFO", "keyspace").startswith(b"# Keyspace\r\n")
    assert b"# Server" not in s("INFO", "keyspace")


def test_unknown_command_and_arity_errors(s: Session) -> None:
    assert s("FOO", "a", "b") == ErrorReply("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
    assert s("foo") == ErrorReply("ERR unknown command 'foo', with args beginning with: ")
    long_reply = s("FOO", "x" * 200, "y")
    assert long_reply == ErrorReply("ERR unknown command 'FOO', with args beginning with: '" + "x" * 128 + "' ")
    assert s("FOO", "a\r\nb").message.endswith("'a  b' ")  # no CR/LF in an error line
    assert s("GET") == ErrorReply("ERR wrong number of arguments for 'get' command")
    assert s("get", "a", "b") == ErrorReply("ERR wrong number of arguments for 'get' command")
    assert s("HSET", "h", "f") == ErrorReply("ERR wrong number of arguments for 'hset' command")
    assert s.aof == []


# -- AOF replay and dump ---------------------------------------------------------------------


def test_replay_rejects_what_an_aof_cannot_hold() -> None:
    engine = Engine()
    assert engine.replay([b"GET", b"k"], T0) == "'GET' is not a write command"
    assert engine.replay([b"NOPE", b"k"], T0) == "unknown command 'NOPE' 'k'"
    assert engine.replay([b"SET", b"k"], T0) == "wrong number of arguments for 'set' command"
    assert engine.replay([b"SELECT", b"3"], T0) is not None
    assert engine.replay([b"SELECT", b"0"], T0) is None
    assert engine.replay([b"MULTI"], T0) is None
    assert engine.replay([b"EXEC"], T0) is None
    assert engine.dbsize() == 0


def test_replay_all_stops_at_the_first_unacceptable_command() -> None:
    engine = Engine()
    commands = [[b"SET", b"a", b"1"], [b"select", b"0"], [b"INCR", b"a"], [b"GET", b"a"], [b"SET", b"b", b"2"]]
    assert engine.replay_all(commands, T0) == (3, "'GET' is not a write command")
    assert keyspace(engine, T0) == {b"a": ("string", b"2", None)}
    assert engine.replay_all([[b"SADD", b"s", b"x"], []], T0) == (1, "empty command")
    assert engine.replay_all(iter([[b"HSET", b"h", b"f", b"v"]]), T0) is None
    assert engine.dbsize() == 3


def test_replay_does_not_expire_while_loading() -> None:
    """An APPEND logged before the key's expiry must find the key on replay."""
    s = Session()
    s("SET", "k", "a", "PX", "100")
    s("APPEND", "k", "b")
    s("SADD", "s", "x")
    s("PEXPIRE", "s", "100")
    s("SADD", "s", "y")
    later = s.now + 10_000
    fresh = replayed(s.aof, later)
    assert fresh.dbsize() == 2
    assert keyspace(fresh, s.now) == keyspace(s.engine, s.now)
    assert fresh.active_expire(later) == [[b"DEL", b"k"], [b"DEL", b"s"]]


def test_replay_applies_stock_redis_spellings() -> None:
    engine = Engine()
    for cmd in ([b"SELECT", b"0"], [b"SET", b"a", b"1", b"EX", b"10"], [b"EXPIRE", b"a", b"20"],
                [b"HMSET", b"h", b"f", b"v"], [b"SETEX", b"b", b"5", b"v"], [b"INCRBY", b"n", b"3"]):
        assert engine.replay(cmd, T0) is None
    assert keyspace(engine, T0) == {
        b"a": ("string", b"1", T0 + 20_000),
        b"h": ("hash", {b"f": b"v"}, None),
        b"b": ("string", b"v", T0 + 5000),
        b"n": ("string", b"3", None),
    }


def test_replaying_the_aof_rebuilds_the_keyspace(s: Session) -> None:
    s("SET", "a", "1", "EX", "100")
    s("SET", "b", "2", "GET")
    s("INCR", "c")
    s("HSET", "h", "f", "v", "g", "w")
    s("HDEL", "h", "g")
    s("SADD", "s", "x", "y")
    s("SREM", "s", "x")
    s("EXPIRE", "s", "500")
    s("RENAME", "a", "a2")
    s("SET", "gone", "v", "PX", "10")
    s.advance(20)
    s("GET", "gone")
    s("PERSIST", "s")
    for cmd in s.aof:
        assert cmd[0] in Engine.WRITE_COMMANDS
        arity = REDIS_ARITY[cmd[0]]
        assert len(cmd) == arity if arity > 0 else len(cmd) >= -arity
    assert keyspace(replayed(s.aof, s.now), s.now) == keyspace(s.engine, s.now)


def test_dump_of_a_large_keyspace_replays_to_the_same_keyspace(s: Session) -> None:
    for i in range(2000):
        s("SET", f"str:{i}", f"value:{i}")
    for i in range(20):
        s("SADD", f"set:{i}", *[f"m{j}" for j in range(150)])
        s("HSET", f"hash:{i}", *[x for j in range(130) for x in (f"f{j}", f"v{j}")])
        s("PEXPIRE", f"hash:{i}", str(10_000 + i))
    s("SET", "soon", "v", "PX", "1")
    s.advance(2)
    dump = list(s.engine.dump(s.now))
    assert all(len(cmd) <= 2 + 128 for cmd in dump)
    assert not any(cmd[1] == b"soon" for cmd in dump)
    fresh = replayed(dump, s.now)
    assert keyspace(fresh, s.now) == keyspace(s.engine, s.now)
    assert fresh.dbsize() == 2040


def test_dump_is_a_snapshot_of_the_moment_it_was_called(s: Session) -> None:
    s("SADD", "set", "a", "b")
    s("HSET", "hash", "f", "1")
    s("SET", "str", "v")
    s("SADD", "other", "z")
    before = keyspace(s.engine, s.now)
    dump = s.engine.dump(s.now)
    first = next(dump)
    s("SADD", "set", "c")
    s("SREM", "other", "z")
    s("HINCRBY", "hash", "f", "5")
    s("DEL", "str")
    s("RENAME", "set", "moved")
    s("SADD", "moved", "d")
    s("SET", "new", "v")
    state = keyspace(replayed([first] + list(dump), s.now), s.now)
    assert state == before
    assert s("SMEMBERS", "moved") and sorted(s("SMEMBERS", "moved")) == [b"a", b"b", b"c", b"d"]
    assert s("HGET", "hash", "f") == b"6"


# -- randomized differential test --------------------------------------------------------------


def random_command(rng: random.Random, now: int) -> List[Arg]:
    key = f"k{rng.randrange(12)}"
    other = f"k{rng.randrange(12)}"
    value = rng.choice(["v", "1", "-3", "", "x" * 5, "ü", str(rng.randrange(100))])
    member = f"m{rng.randrange(6)}"
    choices: List[List[Arg]] = [
        ["SET", key, value],
        ["SET", key, value, "PX", rng.randrange(1, 400)],
        ["SET", key, value, "EX", 1, "GET"],
        ["SET", key, value, "NX"],
        ["SET", key, value, "XX", "KEEPTTL"],
        ["SET", key, value, "PXAT", now + rng.randrange(-100, 300)],
        ["GET", key],
        ["MSET", key, value, other, value],
        ["DEL", key, other],
        ["EXISTS", key],
        ["INCR", key],
        ["INCRBY", key, rng.randrange(-5, 5)],
        ["DECR", key],
        ["APPEND", key, value],
        ["GETDEL", key],
        ["SETNX", key, value],
        ["EXPIRE", key, rng.randrange(-1, 3)],
        ["PEXPIRE", key, rng.randrange(1, 300), rng.choice(["NX", "XX", "GT", "LT"])],
        ["PEXPIREAT", key, now + rng.randrange(-50, 300)],
        ["PERSIST", key],
        ["TTL", key],
        ["RENAME", key, other],
        ["SADD", key, member, f"m{rng.randrange(6)}"],
        ["SREM", key, member],
        ["SMEMBERS", key],
        ["HSET", key, member, value],
        ["HDEL", key, member],
        ["HINCRBY", key, member, rng.randrange(-3, 3)],
        ["HSETNX", key, member, value],
        ["TYPE", key],
    ]
    if rng.random() < 0.01:
        return ["FLUSHALL"]
    return rng.choice(choices)


@pytest.mark.parametrize("seed", range(6))
def test_random_commands_replay_to_the_same_keyspace(seed: int) -> None:
    rng = random.Random(seed)
    s = Session()
    for step in range(1500):
        s(*random_command(rng, s.now))
        s.advance(rng.choice([0, 0, 1, 7, 40]))
        if step % 50 == 0:
            s.aof.extend(s.engine.active_expire(s.now, max_keys=3))
    for cmd in s.aof:
        arity = REDIS_ARITY[cmd[0]]
        assert len(cmd) == arity if arity > 0 else len(cmd) >= -arity, cmd
    fresh = replayed(s.aof, s.now)
    assert keyspace(fresh, s.now) == keyspace(s.engine, s.now)
    # and the dump, replayed, is the same keyspace again
    assert keyspace(replayed(list(s.engine.dump(s.now)), s.now), s.now) == keyspace(s.engine, s.now)
