"""TitanStore's engine: runs Redis commands on an in-memory keyspace and says
what each one must append to the AOF.

What this module owns: dispatch (name, arity, unknown commands), the split
between live execution and AOF replay, active expiry and the rewrite dump.
The command families live in the ``cmd_*`` modules, the data in
:mod:`titan.store.keyspace`.  The engine is pure: the server passes the time
in and does all I/O::

    server --execute(args, now_ms)--> Engine --> (reply, [aof command, ...])
      |                                               |
      +-- writes the AOF commands, fsyncs, then sends the reply
    AOF loader --replay(args, now_ms)--> Engine (no lazy expiry while loading)
    timer --active_expire(now_ms)--> [[b"DEL", key], ...] (to the AOF too)
    rewrite --dump(now_ms)--> SET / SADD / HSET / PEXPIREAT commands

AOF commands are real Redis 7 commands with absolute expiry times, so the
files load in a stock redis-server; replaying them into a fresh engine
rebuilds the same keyspace.  A command also returns the ``DEL`` of every key
it found expired (lazy expiry), even a read or a failed command.
"""
from __future__ import annotations

import gc
from collections import deque
from typing import Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple

from titan.store import cmd_containers, cmd_keys, cmd_strings
from titan.store.cmd_server import ServerState, server_table
from titan.store.command import Command
from titan.store.keyspace import Keyspace, Snapshot, Value
from titan.store.reply import (
    CommandError,
    ErrorReply,
    MapReply,
    PushReply,
    Reply,
    SetReply,
    SimpleString,
    text_of,
    wrong_arity,
)

__all__ = [
    "Engine",
    "Reply",
    "SimpleString",
    "ErrorReply",
    "MapReply",
    "SetReply",
    "PushReply",
    "DATA_COMMANDS",
]

DATA_COMMANDS: Dict[bytes, Command] = {**cmd_strings.TABLE, **cmd_keys.TABLE, **cmd_containers.TABLE}

_SET, _SADD, _HSET, _PXAT, _PEXPIREAT, _DEL = b"SET", b"SADD", b"HSET", b"PXAT", b"PEXPIREAT", b"DEL"
_REPLAY_NOOPS = frozenset({b"MULTI", b"EXEC"})
# put_string's AOF records: what encode_command makes of SET key value [PXAT ms], in one step
_AOF_SET = b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_AOF_SET_PXAT = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$4\r\nPXAT\r\n$%d\r\n%b\r\n"
DUMP_BATCH = 64  # members or fields per SADD / HSET in a dump, as Redis's rewrite


class Engine:
    """One TitanStore database: execute commands, replay the AOF, expire, dump.

    ``config`` seeds what ``CONFIG GET`` reports (``appendonly``,
    ``appendfsync``, ``port`` ...); the server may update ``engine.config``.
    """

    WRITE_COMMANDS: FrozenSet[bytes] = frozenset(n for n, c in DATA_COMMANDS.items() if c.write)
    READ_COMMANDS: FrozenSet[bytes] = frozenset(n for n, c in DATA_COMMANDS.items() if not c.write)

    def __init__(self, *, config: Optional[Dict[bytes, bytes]] = None) -> None:
        self._db = Keyspace()
        self.server = ServerState(config)
        table = dict(DATA_COMMANDS)
        table.update(server_table(self.server))
        self._table = table
        self._replayable = {name: c for name, c in table.items() if c.write}
        self.server.commands = table

    @property
    def config(self) -> Dict[bytes, bytes]:
        """Name -> value as ``CONFIG GET`` reports them (lower-case names)."""
        return self.server.config

    @property
    def commands(self) -> FrozenSet[bytes]:
        """Upper-case names of every command execute() knows."""
        return frozenset(self._table)

    # -- running commands ---------------------------------------------------------

    def execute(self, args: List[bytes], now_ms: int) -> Tuple[Reply, List[List[bytes]]]:
        """Run one command; return its reply and the commands to append to the AOF.

        ``args[0]`` is the command name in any case.  The AOF list is empty
        for reads, failures and writes that changed nothing, except for the
        ``DEL`` of keys found expired on the way.
        """
        if not args:
            return ErrorReply("ERR empty command"), []
        spec = self._table.get(args[0].upper())
        if spec is None:
            return _unknown_command(args), []
        arity = spec.arity
        if (arity > 0 and len(args) != arity) or len(args) < -arity:
            return wrong_arity(spec.name), []
        db = self._db
        db.now_ms = now_ms
        prop: List[List[bytes]] = []
        db.prop = prop
        server = self.server
        server.processed += 1
        if server.started_ms is None:
            server.started_ms = now_ms
        try:
            reply = spec.handler(db, args)
        except CommandError as exc:
            reply = exc.reply
        return reply, prop

    def replay(self, args: List[bytes], now_ms: int) -> Optional[str]:
        """Apply one command read from an AOF; None, or why it is not acceptable there.

        Only write commands are accepted (plus ``SELECT 0``, ``MULTI`` and
        ``EXEC``, which Redis's own files contain).  Keys are not expired
        while replaying.  A well-formed write that fails (WRONGTYPE ...)
        changes nothing and is not reported, as Redis ignores it when loading.
        """
        problem = self.replay_all([args], now_ms)
        return None if problem is None else problem[1]

    def replay_all(self, commands: Iterable[List[bytes]], now_ms: int) -> Optional[Tuple[int, str]]:
        """replay() for many commands at once, faster; stops at the first unacceptable one.

        Returns None, or (its index in ``commands``, why): the commands
        before it have been applied.  The cyclic garbage collector is paused
        meanwhile: replay makes no cycles, and scanning millions of live
        objects again and again would double the load time.
        """
        db = self._db
        db.now_ms, db.prop, db.loading = now_ms, deque(maxlen=0), True  # a sink: replay logs nothing
        table = self._replayable
        collecting = gc.isenabled()
        gc.disable()
        try:
            for index, args in enumerate(commands):
                spec = table.get(args[0]) if args else None
                if spec is None:
                    spec = table.get(args[0].upper()) if args else None
                    if spec is None:
                        problem = _not_replayable(self._table, args)
                        if problem is not None:
                            return index, problem
                        continue
                arity = spec.arity
                if (arity > 0 and len(args) != arity) or len(args) < -arity:
                    return index, wrong_arity(spec.name).message[4:]
                try:
                    spec.handler(db, args)
                except CommandError:
                    pass
        finally:
            db.loading = False
            db.prop = []
            if collecting:
                gc.enable()
        return None

    def put_string(self, key: bytes, value: bytes, expire_at_ms: Optional[int], now_ms: int) -> bytes:
        """``SET key value [PXAT expire_at_ms]`` for the engine's owner; returns its AOF bytes.

        What :meth:`execute` does with that command, without looking it up,
        parsing its options or building a reply: the master writes two task
        records per task this way.
        """
        db = self._db
        db.now_ms = now_ms
        db.set_string(key, value)
        if expire_at_ms is None:
            return _AOF_SET % (len(key), key, len(value), value)
        db.set_expire(key, expire_at_ms)
        when = b"%d" % expire_at_ms
        return _AOF_SET_PXAT % (len(key), key, len(value), value, len(when), when)

    # -- expiry -------------------------------------------------------------------

    def active_expire(self, now_ms: int, max_keys: int = 20) -> List[List[bytes]]:
        """Delete up to ``max_keys`` keys whose TTL passed, earliest first.

        Returns their ``DEL`` commands for the AOF.  Call again while it
        returns ``max_keys`` commands; :meth:`next_expiry_ms` says when next.
        """
        return [[_DEL, key] for key in self._db.pop_expired(now_ms, max_keys)]

    def next_expiry_ms(self) -> Optional[int]:
        """The first time (ms) at which active_expire() has work, or None."""
        return self._db.next_expiry_ms()

    # -- whole keyspace -------------------------------------------------------------

    def dbsize(self) -> int:
        """Number of keys, counting expired ones not yet deleted (as DBSIZE)."""
        return len(self._db.data)

    def dump(self, now_ms: int) -> Iterator[List[bytes]]:
        """Commands that rebuild the keyspace as it is now (for an AOF rewrite).

        The snapshot is taken by this call; the iterator may be consumed
        bit by bit while commands keep executing, and still yields the
        keyspace of the moment of the call (sets and hashes changed later
        are copied on write).  Keys already expired at ``now_ms`` are left out.
        """
        keys, values, expires, mark = self._db.snapshot()
        return _dump(keys, values, expires, now_ms, mark)


def _dump(
    keys: List[bytes], values: List[Value], expires: Dict[bytes, int], now_ms: int, mark: Snapshot
) -> Iterator[List[bytes]]:
    try:
        for key, value in zip(keys, values):
            when = expires.get(key)
            if when is not None and now_ms > when:
                continue
            if type(value) is bytes:
                if when is None:
                    yield [_SET, key, value]
                else:
                    yield [_SET, key, value, _PXAT, b"%d" % when]
                continue
            yield from _container_commands(key, value)
            mark.shared.discard(id(value))
            if when is not None:
                yield [_PEXPIREAT, key, b"%d" % when]
    finally:
        mark.shared.clear()


def _container_commands(key: bytes, value: Value) -> Iterator[List[bytes]]:
    if type(value) is set:
        members: List[bytes] = list(value)  # type: ignore[arg-type]
        for start in range(0, len(members), DUMP_BATCH):
            yield [_SADD, key] + members[start : start + DUMP_BATCH]
        return
    items: List[bytes] = [item for pair in value.items() for item in pair]  # type: ignore[union-attr]
    for start in range(0, len(items), 2 * DUMP_BATCH):
        yield [_HSET, key] + items[start : start + 2 * DUMP_BATCH]


def _not_replayable(table: Dict[bytes, Command], args: List[bytes]) -> Optional[str]:
    """Why ``args`` (not a write command) cannot be in an AOF; None for harmless ones."""
    if not args:
        return "empty command"
    name = args[0].upper()
    if name in _REPLAY_NOOPS:
        return None
    if name == b"SELECT":
        return None if args[1:] == [b"0"] else f"only database 0 exists, got {_argv(args)}"
    if name in table:
        return f"{text_of(args[0])!r} is not a write command"
    return f"unknown command {_argv(args)}"


def _argv(args: List[bytes]) -> str:
    return " ".join(repr(text_of(a, 64)) for a in args[:3]) + (" ..." if len(args) > 3 else "")


def _unknown_command(args: List[bytes]) -> ErrorReply:
    """Redis 7's text: the name and up to 128 bytes of quoted arguments."""
    quoted: List[str] = []
    used = 0
    for arg in args[1:]:
        if used >= 128:
            break
        piece = arg[: 128 - used]
        quoted.append(f"'{text_of(piece, len(piece))}' ")
        used += len(piece) + 3
    return ErrorReply(f"ERR unknown command '{text_of(args[0])}', with args beginning with: {''.join(quoted)}")

