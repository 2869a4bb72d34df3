"""``titan store``: the TitanStore engine served over RESP on one selectors loop.

What this role owns: the listening socket, the clients' connection state
(protocol version, subscriptions, name), the pass hook that makes replies
wait for the AOF, and the timers for active expiry and AOF rewrites::

    client bytes -> RespConnection -> StoreServer.on_commands
                      |  connection commands (HELLO, SUBSCRIBE, QUIT, ...) here
                      |  everything else -> Engine.execute(args, now_ms)
                      |                       -> (reply, aof commands)
                      |  AppendOnlyFile.append(aof commands); reply staged
    end of pass:  aof.flush()  -> ok:     staged replies released
                               -> failed: write replies become -MISCONF
                  loop.flush_dirty() -> one send() per client

The engine, the RESP codec and pub/sub registry are pure (``titan.store``);
the AOF files are ``titan.io.aof``.  A bad request gets an error reply; a
malformed byte stream closes that client alone.
"""
from __future__ import annotations

import gc
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from titan.errors import UsageError
from titan.io.aof import AppendOnlyFile, LoadReport
from titan.io.loop import Listener, Loop, Timer, format_address, is_loopback
from titan.io.respconn import RespConnection, RespHandler
from titan.store.engine import Engine
from titan.store.pubsub import PubSub
from titan.store.reply import ErrorReply, MapReply, SimpleString
from titan.store.resp import DEFAULT_MAX_BULK_BYTES, RespParser, encode_reply

__all__ = ["StoreConfig", "StoreServer", "check_exposure", "wall_ms"]

logger = logging.getLogger(__name__)

REDIS_VERSION = b"7.2.0"
SUBSCRIBED_ALLOWED = frozenset({b"SUBSCRIBE", b"UNSUBSCRIBE", b"PSUBSCRIBE", b"PUNSUBSCRIBE", b"SSUBSCRIBE",
                                b"SUNSUBSCRIBE", b"PING", b"QUIT", b"RESET"})
EXPIRE_BATCH_KEYS = 500
REWRITE_CHECK_S = 0.1


def wall_ms() -> int:
    """Wall-clock milliseconds: TTLs in the AOF are absolute (PXAT, PEXPIREAT)."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StoreConfig:
    """Everything ``titan store`` can be told."""

    data_dir: Path
    bind: Tuple[str, int] = ("127.0.0.1", 6380)
    appendfsync: str = "always"
    insecure: bool = False
    max_clients: int = 10000
    rewrite_percentage: int = 100
    rewrite_min_bytes: int = 64 * 1024 * 1024
    max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES
    max_out_bytes: int = 1024 * 1024 * 1024            # a client's queued replies (reading pauses at 4 MiB)
    max_subscriber_out_bytes: int = 32 * 1024 * 1024   # a subscriber that does not read (Redis: pubsub 32mb)


def check_exposure(config: StoreConfig) -> None:
    """The store has no authentication: refuse a non-loopback bind unless --insecure."""
    if config.insecure:
        return
    host = config.bind[0]
    if not is_loopback(host):
        raise UsageError(f"refusing to serve the store on {host}: it has no authentication; bind a loopback "
                         f"address, or pass --insecure if this network is trusted")


class Client:
    """Per-connection state."""

    __slots__ = ("id", "conn", "resp3", "name")

    def __init__(self, client_id: int, conn: RespConnection) -> None:
        self.id = client_id
        self.conn = conn
        self.resp3 = False
        self.name = b""


Special = Callable[["StoreServer", Client, List[bytes]], Any]


class StoreServer(RespHandler):
    """One loop, one engine, one AOF, many clients."""

    def __init__(self, config: StoreConfig, *, aof: Optional[AppendOnlyFile] = None,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        check_exposure(config)
        self.config = config
        self.clock_ms = clock_ms
        self.loop = Loop()
        self.engine = Engine(config={b"appendfsync": config.appendfsync.encode(),
                                     b"port": str(config.bind[1]).encode()})
        self.pubsub = PubSub()
        self.aof = aof or AppendOnlyFile(config.data_dir, fsync=config.appendfsync,
                                         rewrite_percentage=config.rewrite_percentage,
                                         rewrite_min_bytes=config.rewrite_min_bytes)
        self.clients: Dict[int, Client] = {}
        self.staged: "set[RespConnection]" = set()
        self.listener: Optional[Listener] = None
        self._ids = itertools.count(1)
        self._retried = False                    # a broken AOF was retried in this pass
        self._expire_timer: Optional[Timer] = None
        self._expire_at_ms: Optional[int] = None
        self.loop.add_pass_hook(self._end_of_pass)

    # ----- lifecycle -----------------------------------------------------
    def start(self) -> Tuple[str, int]:
        """Lock and load the AOF, then listen; returns the bound address."""
        started = time.monotonic()
        self.aof.open()
        report: LoadReport = self.aof.load(self.engine, self.clock_ms())
        logger.info("loaded %d keys from %d commands in %d files in %.3fs", self.engine.dbsize(),
                    report.commands, report.files, time.monotonic() - started)
        try:
            self.listener = Listener.bind(self.loop, self.config.bind, self._accept)
        except OSError as exc:
            self.aof.close()
            raise UsageError(f"cannot listen on {format_address(self.config.bind)}: {exc.strerror or exc}") from None
        address = self.listener.address
        addr_file = self.config.data_dir / "store.addr"
        tmp = addr_file.with_suffix(".tmp")
        tmp.write_text(format_address(address) + "\n")
        os.replace(tmp, addr_file)
        self.loop.call_later(REWRITE_CHECK_S, self._rewrite_tick)
        self._schedule_expiry()
        logger.info("titan store listening on %s (data in %s, appendfsync %s)", format_address(address),
                    self.config.data_dir, self.config.appendfsync)
        return address

    def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT or SHUTDOWN; then a final flush and fsync."""
        gc.freeze()            # the loaded keyspace is long-lived: keep it out of collections (and fork copies)
        try:
            self.loop.run_until_signalled()
        finally:
            self.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.conn.close("store shutting down")
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.aof.close()
        logger.info("titan store stopped")

    def _accept(self, sock: socket.socket) -> None:
        if len(self.clients) >= self.config.max_clients:
            try:
                sock.send(b"-ERR max number of clients reached\r\n")
            except OSError:
                pass
            sock.close()
            return
        parser = RespParser(max_bulk_bytes=self.config.max_bulk_bytes)
        conn = RespConnection(self.loop, sock, self, parser, self.staged, max_out_bytes=self.config.max_out_bytes)
        client = Client(next(self._ids), conn)
        conn.state = client
        self.clients[client.id] = client

    # ----- the pass hook: group commit -------------------------------------
    def _end_of_pass(self) -> None:
        self._retried = False
        failure: Optional[bytes] = None
        if not self.aof.flush():
            failure = encode_reply(self._misconf())
        staged = list(self.staged)          # commit() may close a client, which leaves the set
        self.staged.clear()
        for conn in staged:
            conn.commit(failure)
        self._schedule_expiry()

    def _misconf(self) -> ErrorReply:
        error = self.aof.error
        reason = (error.strerror or str(error)) if error is not None else "unknown error"
        return ErrorReply(f"MISCONF Errors writing to the AOF file: {reason}")

    # ----- commands --------------------------------------------------------
    def on_commands(self, conn: RespConnection, commands: List[List[bytes]]) -> None:
        client: Client = conn.state
        now_ms = self.clock_ms()
        for args in commands:
            if conn.closing:            # e.g. after QUIT: what came with it is not run (as in Redis)
                return
            self._dispatch(client, args, now_ms)

    def _dispatch(self, client: Client, args: List[bytes], now_ms: int) -> None:
        conn = client.conn
        name = args[0].upper()
        if not client.resp3 and name not in SUBSCRIBED_ALLOWED and self.pubsub.count(client.id):
            conn.reply(encode_reply(ErrorReply(
                f"ERR Can't execute '{_lower(name)}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / "
                f"QUIT / RESET are allowed in this context")))
            return
        special = SPECIAL.get(name)
        if special is not None:
            reply = special(self, client, args)
            if reply is not None:
                conn.reply(encode_reply(reply, resp3=client.resp3))
            return
        write = name in self.engine.WRITE_COMMANDS
        if write and not self._aof_writable():
            conn.reply(encode_reply(self._misconf()))
            return
        reply, aof_commands = self.engine.execute(args, now_ms)
        if aof_commands:                 # a read may propagate too: the DEL of a key it found expired
            self.aof.append(aof_commands)
        conn.reply(encode_reply(reply, resp3=client.resp3), durable=write and bool(aof_commands))

    def _aof_writable(self) -> bool:
        """False while the AOF is failing; retries the failed write at most once per pass."""
        if not self.aof.broken:
            return True
        if not self._retried:
            self._retried = True
            return self.aof.flush(retry=True)
        return False

    # ----- connection commands ---------------------------------------------
    def cmd_hello(self, client: Client, args: List[bytes]) -> Any:
        if len(args) > 1:
            version = args[1]
            if version not in (b"2", b"3"):
                return ErrorReply("NOPROTO unsupported protocol version")
            rest = args[2:]
            while rest:
                option = rest[0].upper()
                if option == b"AUTH" and len(rest) >= 3:
                    rest = rest[3:]
                elif option == b"SETNAME" and len(rest) >= 2:
                    client.name, rest = rest[1], rest[2:]
                else:
                    return ErrorReply(f"ERR Syntax error in HELLO option '{_lower(rest[0])}'")
            client.resp3 = version == b"3"
        return MapReply([b"server", b"redis", b"version", REDIS_VERSION, b"proto", 3 if client.resp3 else 2,
                         b"id", client.id, b"mode", b"standalone", b"role", b"master", b"modules", []])

    def cmd_quit(self, client: Client, args: List[bytes]) -> Any:
        client.conn.reply(b"+OK\r\n")
        client.conn.close_after_flush("client sent QUIT")
        return None

    def cmd_reset(self, client: Client, args: List[bytes]) -> Any:
        self.pubsub.drop(client.id)
        client.resp3, client.name = False, b""
        client.conn.max_out_bytes = self.config.max_out_bytes
        return SimpleString(b"RESET")

    def cmd_ping(self, client: Client, args: List[bytes]) -> Any:
        if len(args) > 2:
            return _arity("ping")
        if not client.resp3 and self.pubsub.count(client.id):
            return [b"pong", args[1] if len(args) > 1 else b""]
        return args[1] if len(args) > 1 else SimpleString(b"PONG")

    def cmd_client(self, client: Client, args: List[bytes]) -> Any:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"ID" and len(args) == 2:
            return client.id
        if sub == b"GETNAME" and len(args) == 2:
            return client.name or None
        if sub == b"SETNAME" and len(args) == 3:
            if any(c <= 32 or c >= 127 for c in args[2]):
                return ErrorReply("ERR Client names cannot contain spaces, newlines or special characters.")
            client.name = args[2]
            return SimpleString(b"OK")
        reply, _ = self.engine.execute(args, self.clock_ms())
        return reply

    def cmd_bgrewriteaof(self, client: Client, args: List[bytes]) -> Any:
        if len(args) != 1:
            return _arity("bgrewriteaof")
        if self.aof.rewrite is not None:
            return ErrorReply("ERR Background append only file rewriting already in progress")
        if self.aof.broken or not self.aof.start_rewrite(self.engine, self.clock_ms()):
            return self._misconf() if self.aof.broken else ErrorReply("ERR Can't start the AOF rewrite")
        return SimpleString(b"Background append only file rewriting started")

    def cmd_auth(self, client: Client, args: List[bytes]) -> Any:
        """No passwords in this store: Redis's answers for a default user without one."""
        if len(args) == 2:
            return ErrorReply("ERR AUTH <password> called without any password configured for the default "
                              "user. Are you sure your configuration is correct?")
        if len(args) == 3:
            return SimpleString(b"OK") if args[1] == b"default" else ErrorReply(
                "WRONGPASS invalid username-password pair or user is disabled.")
        return _arity("auth")

    def cmd_shutdown(self, client: Client, args: List[bytes]) -> Any:
        logger.info("SHUTDOWN from client %d (%s)", client.id, client.conn.peer)
        self.loop.stop()
        client.conn.close_after_flush("SHUTDOWN")
        return None

    # ----- pub/sub ---------------------------------------------------------
    def cmd_subscribe(self, client: Client, args: List[bytes]) -> Any:
        if len(args) < 2:
            return _arity("subscribe")
        self._push_all(client, self.pubsub.subscribe(client.id, args[1:]))
        return None

    def cmd_psubscribe(self, client: Client, args: List[bytes]) -> Any:
        if len(args) < 2:
            return _arity("psubscribe")
        self._push_all(client, self.pubsub.psubscribe(client.id, args[1:]))
        return None

    def cmd_unsubscribe(self, client: Client, args: List[bytes]) -> Any:
        self._push_all(client, self.pubsub.unsubscribe(client.id, args[1:]))
        return None

    def cmd_punsubscribe(self, client: Client, args: List[bytes]) -> Any:
        self._push_all(client, self.pubsub.punsubscribe(client.id, args[1:]))
        return None

    def cmd_publish(self, client: Client, args: List[bytes]) -> Any:
        if len(args) != 3:
            return _arity("publish")
        receivers, deliveries = self.pubsub.publish(args[1], args[2])
        for subscriber_id, message in deliveries:
            target = self.clients.get(subscriber_id)
            if target is not None:
                self._push(target, message)
        return receivers

    def _push_all(self, client: Client, replies: List[Any]) -> None:
        for reply in replies:
            self._push(client, reply)
        subscribed = self.pubsub.count(client.id) > 0
        client.conn.max_out_bytes = (self.config.max_subscriber_out_bytes if subscribed
                                     else self.config.max_out_bytes)

    def _push(self, client: Client, message: Any) -> None:
        client.conn.reply(encode_reply(message, resp3=client.resp3))

    def on_close(self, conn: RespConnection, reason: str) -> None:
        client: Optional[Client] = conn.state
        if client is None:
            return
        self.pubsub.drop(client.id)
        self.clients.pop(client.id, None)
        self.staged.discard(conn)

    # ----- timers ----------------------------------------------------------
    def _schedule_expiry(self) -> None:
        """Keep one timer at the engine's next expiry time."""
        due = self.engine.next_expiry_ms()
        if due is None or (self._expire_at_ms is not None and self._expire_at_ms <= due):
            return
        if self._expire_timer is not None:
            self._expire_timer.cancel()
        self._expire_at_ms = due
        delay_s = max(0.0, (due - self.clock_ms()) / 1000.0) + 0.001
        self._expire_timer = self.loop.call_later(delay_s, self._expire_tick)

    def _expire_tick(self) -> None:
        self._expire_timer, self._expire_at_ms = None, None
        if self.aof.broken and not self.aof.flush(retry=True):
            self._expire_at_ms = self.clock_ms() + 1000            # retry once the AOF works again
            self._expire_timer = self.loop.call_later(1.0, self._expire_tick)
            return
        commands = self.engine.active_expire(self.clock_ms(), EXPIRE_BATCH_KEYS)
        if commands:
            self.aof.append(commands)

    def _rewrite_tick(self) -> None:
        try:
            self.aof.poll_rewrite()
            if self.aof.rewrite_due():
                self.aof.start_rewrite(self.engine, self.clock_ms())
        finally:
            self.loop.call_later(REWRITE_CHECK_S, self._rewrite_tick)


def _lower(name: bytes) -> str:
    return name.decode("utf-8", "replace").lower()


def _arity(name: str) -> ErrorReply:
    return ErrorReply(f"ERR wrong number of arguments for '{name}' command")


SPECIAL: Dict[bytes, Special] = {
    b"HELLO": StoreServer.cmd_hello, b"QUIT": StoreServer.cmd_quit, b"RESET": StoreServer.cmd_reset,
    b"PING": StoreServer.cmd_ping, b"CLIENT": StoreServer.cmd_client,
    b"BGREWRITEAOF": StoreServer.cmd_bgrewriteaof, b"SHUTDOWN": StoreServer.cmd_shutdown,
    b"AUTH": StoreServer.cmd_auth,
    b"SUBSCRIBE": StoreServer.cmd_subscribe, b"PSUBSCRIBE": StoreServer.cmd_psubscribe,
    b"UNSUBSCRIBE": StoreServer.cmd_unsubscribe, b"PUNSUBSCRIBE": StoreServer.cmd_punsubscribe,
    b"PUBLISH": StoreServer.cmd_publish,
}
