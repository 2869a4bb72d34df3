"""Connection and server commands real clients send: PING, ECHO, SELECT,
COMMAND, CLIENT, CONFIG, INFO, TIME.

What this module owns: plausible Redis 7.2 answers to the housekeeping
traffic of redis-cli, redis-py and redis-benchmark, so the RESP server stays
thin.  None of these touch the keyspace or the AOF.  Per-connection state
(client names, protocol version, subscriptions) belongs to the server; here
``CLIENT SETNAME`` just validates and answers OK.

Unlike the data commands these need engine-wide state (configuration,
counters, the command table), so :func:`server_table` builds them around
one :class:`ServerState`.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from titan.store.command import Command, registrar
from titan.store.glob import compile_glob
from titan.store.keyspace import Keyspace
from titan.store.reply import (
    OK,
    PONG,
    CommandError,
    ErrorReply,
    MapReply,
    Reply,
    parse_int,
    text_of,
    wrong_arity,
)

__all__ = ["ServerState", "server_table", "DEFAULT_CONFIG", "REDIS_VERSION"]

REDIS_VERSION = b"7.2.0"

DEFAULT_CONFIG: Dict[bytes, bytes] = {
    b"save": b"",
    b"appendonly": b"yes",
    b"appendfsync": b"always",
    b"appenddirname": b"appendonlydir",
    b"appendfilename": b"appendonly.aof",
    b"databases": b"1",
    b"maxmemory": b"0",
    b"maxmemory-policy": b"noeviction",
    b"maxclients": b"10000",
    b"timeout": b"0",
    b"proto-max-bulk-len": b"536870912",
    b"lazyfree-lazy-expire": b"no",
}

# Settings the store takes at start only: CONFIG SET refuses them rather than
# answer OK and go on as before (appendonly and appendfsync can change at run
# time in Redis; here they are command-line options of `titan store`).
START_ONLY = frozenset({b"appendonly", b"appendfsync", b"appenddirname", b"appendfilename", b"databases"})

_CLIENT_INFO = b"id=1 addr=? laddr=? fd=0 name= db=0 flags=N cmd=client|info\n"


class ServerState:
    """What the server commands report: configuration, counters, the command table."""

    def __init__(self, config: Optional[Dict[bytes, bytes]] = None) -> None:
        self.config: Dict[bytes, bytes] = dict(DEFAULT_CONFIG)
        if config:
            self.config.update(config)
        self.commands: Dict[bytes, Command] = {}
        self.processed = 0
        self.started_ms: Optional[int] = None


def _unknown_subcommand(args: List[bytes]) -> CommandError:
    container = text_of(args[0]).upper()
    return CommandError(ErrorReply(f"ERR unknown subcommand '{text_of(args[1])}'. Try {container} HELP."))


def _need(args: List[bytes], arity: int, name: str) -> None:
    """Check a subcommand's arity (Redis style, the container name counted)."""
    argc = len(args)
    if (arity > 0 and argc != arity) or argc < -arity:
        raise CommandError(wrong_arity(name))


def server_table(state: ServerState) -> Dict[bytes, Command]:
    """The server commands, bound to ``state``."""
    table: Dict[bytes, Command] = {}
    command = registrar(table)
    for name, arity, handler in _handlers(state):
        command(name, arity)(handler)
    return table


def _handlers(state: ServerState) -> List[tuple]:
    def command_(db: Keyspace, args: List[bytes]) -> Reply:
        return _command(state, args)

    def config(db: Keyspace, args: List[bytes]) -> Reply:
        return _config(state, args)

    def info(db: Keyspace, args: List[bytes]) -> Reply:
        return _info(state, db, args)

    return [
        ("ping", -1, _ping),
        ("echo", 2, lambda db, args: args[1]),
        ("select", 2, _select),
        ("time", 1, lambda db, args: [b"%d" % (db.now_ms // 1000), b"%d" % (db.now_ms % 1000 * 1000)]),
        ("lastsave", 1, lambda db, args: db.now_ms // 1000),
        ("command", -1, command_),
        ("client", -2, _client),
        ("config", -2, config),
        ("info", -1, info),
    ]


def _ping(db: Keyspace, args: List[bytes]) -> Reply:
    if len(args) > 2:
        raise CommandError(wrong_arity("ping"))
    return args[1] if len(args) == 2 else PONG


def _select(db: Keyspace, args: List[bytes]) -> Reply:
    index = parse_int(args[1])
    if index is None or index > 2**31 - 1 or index < -(2**31):
        raise CommandError(ErrorReply("ERR value is not an integer or out of range"))
    if index != 0:
        raise CommandError(ErrorReply("ERR DB index is out of range"))
    return OK


def _command(state: ServerState, args: List[bytes]) -> Reply:
    if len(args) == 1:
        return []
    sub = args[1].upper()
    if sub == b"COUNT":
        _need(args, 2, "command|count")
        return len(state.commands)
    if sub == b"DOCS":
        return MapReply()
    if sub == b"LIST":
        return sorted(c.name.encode("ascii") for c in state.commands.values())
    if sub == b"INFO":
        return [None for _ in args[2:]]
    raise _unknown_subcommand(args)


def _client(db: Keyspace, args: List[bytes]) -> Reply:
    sub = args[1].upper()
    handler = _CLIENT_SUBCOMMANDS.get(sub)
    if handler is None:
        raise _unknown_subcommand(args)
    return handler(args)


def _client_setname(args: List[bytes]) -> Reply:
    _need(args, 3, "client|setname")
    if any(c < 33 or c > 126 for c in args[2]):
        raise CommandError(ErrorReply("ERR Client names cannot contain spaces, newlines or special characters."))
    return OK


def _client_setinfo(args: List[bytes]) -> Reply:
    _need(args, 4, "client|setinfo")
    attribute = args[2].lower()
    if attribute not in (b"lib-name", b"lib-ver"):
        raise CommandError(ErrorReply(f"ERR Unrecognized option '{text_of(args[2])}'"))
    if any(c < 33 or c > 126 for c in args[3]):
        raise CommandError(
            ErrorReply(f"ERR {attribute.decode('ascii')} cannot contain spaces, newlines or special characters.")
        )
    return OK


def _client_fixed(arity: int, name: str, reply: Reply) -> Callable[[List[bytes]], Reply]:
    def answer(args: List[bytes]) -> Reply:
        _need(args, arity, name)
        return reply

    return answer


_CLIENT_SUBCOMMANDS: Dict[bytes, Callable[[List[bytes]], Reply]] = {
    b"SETNAME": _client_setname,
    b"SETINFO": _client_setinfo,
    b"GETNAME": _client_fixed(2, "client|getname", None),
    b"ID": _client_fixed(2, "client|id", 1),
    b"INFO": _client_fixed(2, "client|info", _CLIENT_INFO),
    b"LIST": _client_fixed(-2, "client|list", _CLIENT_INFO),
    b"NO-EVICT": _client_fixed(3, "client|no-evict", OK),
    b"NO-TOUCH": _client_fixed(3, "client|no-touch", OK),
}


def _config(state: ServerState, args: List[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"GET":
        _need(args, -3, "config|get")
        patterns = [compile_glob(p.lower()) for p in args[2:]]
        reply = MapReply()
        for name, value in state.config.items():
            if any(p.match(name) for p in patterns):
                reply.extend((name, value))
        return reply
    if sub == b"SET":
        _need(args, -4, "config|set")
        return _config_set(state, args)
    if sub == b"RESETSTAT":
        _need(args, 2, "config|resetstat")
        state.processed = 0
        return OK
    if sub == b"REWRITE":
        raise CommandError(ErrorReply("ERR The server is running without a config file"))
    raise _unknown_subcommand(args)


def _config_set(state: ServerState, args: List[bytes]) -> Reply:
    if len(args) % 2:
        raise CommandError(wrong_arity("config|set"))
    pairs = list(zip(args[2::2], args[3::2]))
    for name, _ in pairs:
        if name.lower() not in state.config:
            raise CommandError(
                ErrorReply(f"ERR Unknown option or number of arguments for CONFIG SET - '{text_of(name)}'")
            )
    for name, _ in pairs:
        if name.lower() in START_ONLY:
            raise CommandError(ErrorReply(
                f"ERR CONFIG SET failed (possibly related to argument '{text_of(name)}') - "
                f"can't set immutable config: titan store takes it at start (see `titan store --help`)"))
    for name, value in pairs:
        state.config[name.lower()] = value
    return OK


def _info(state: ServerState, db: Keyspace, args: List[bytes]) -> Reply:
    wanted = {a.lower() for a in args[1:]} or {b"default"}
    everything = bool(wanted & {b"all", b"everything", b"default"})
    sections = _info_sections(state, db)
    text = "\r\n".join(
        "\r\n".join(lines) + "\r\n"
        for title, lines in sections
        if everything or title.lower().encode("ascii") in wanted
    )
    return text.encode("utf-8")


def _info_sections(state: ServerState, db: Keyspace) -> List[tuple]:
    started = state.started_ms if state.started_ms is not None else db.now_ms
    uptime_s = max(db.now_ms - started, 0) // 1000
    keyspace = ["# Keyspace"]
    if db.data:
        keyspace.append(f"db0:keys={len(db.data)},expires={len(db.expires)},avg_ttl=0")
    return [
        ("Server", [
            "# Server",
            f"redis_version:{REDIS_VERSION.decode('ascii')}",
            "redis_mode:standalone",
            "titan_store:1",
            "arch_bits:64",
            f"tcp_port:{state.config.get(b'port', b'0').decode('ascii', 'replace')}",
            f"server_time_usec:{db.now_ms * 1000}",
            f"uptime_in_seconds:{uptime_s}",
            f"uptime_in_days:{uptime_s // 86400}",
        ]),
        ("Persistence", [
            "# Persistence",
            "loading:0",
            f"aof_enabled:{1 if state.config.get(b'appendonly') == b'yes' else 0}",
        ]),
        ("Stats", [
            "# Stats",
            f"total_commands_processed:{state.processed}",
            f"expired_keys:{db.expired_count}",
        ]),
        ("Replication", ["# Replication", "role:master", "connected_slaves:0"]),
        ("Keyspace", keyspace),
    ]

