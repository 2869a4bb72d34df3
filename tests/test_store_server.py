"""End to end: a real `titan store` subprocess on 127.0.0.1, driven over raw sockets,
and, where installed, by redis-cli, redis-py, redis-check-aof and a stock redis-server.

Every process started here runs in its own session and is reaped at teardown
(TERM to its group, then KILL), also when the test fails.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from conftest import _reap, _signal_group, child_env, dump_logs, free_port, run_cli, wait_until
from titan.io.proc import titan_command
from titan.store.resp import encode_command

START_TIMEOUT_S = 20.0


# ----- a raw RESP client ---------------------------------------------------------
class Closed(Exception):
    """The server closed the connection."""


class RespClient:
    """A blocking RESP2/RESP3 client on a raw socket, for exact assertions on the bytes."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: Any) -> Any:
        self.send(encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args]))
        return self.read()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed("connection closed by the server")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self) -> Any:
        """One reply: str for +, RuntimeError for -, int, bytes/None, list, dict (RESP3 map)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind in (b":", b"("):
            return int(rest)
        if kind == b"$":
            return None if rest == b"-1" else self._exact(int(rest))
        if kind in (b"*", b"~", b">"):
            return None if rest == b"-1" else [self.read() for _ in range(int(rest))]
        if kind == b"%":
            return {self.read(): self.read() for _ in range(int(rest))}
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        raise AssertionError(f"unexpected reply line {line!r}")

    def closed_by_server(self, timeout_s: float = 5.0) -> bool:
        """True once the server has closed (EOF or reset), reading past any pending replies."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


# ----- the store subprocess ----------------------------------------------------------
class Store:
    """One `titan store` process; restartable on the same directory."""

    def __init__(self, base: Path, data_dir: Path) -> None:
        self.base = base
        self.data_dir = data_dir
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.clients: List[RespClient] = []

    def start(self, *extra: str) -> "Store":
        addr = self.data_dir / "store.addr"
        if addr.exists():
            addr.unlink()
        with open(self.base / "store.log", "ab") as log:
            self.proc = subprocess.Popen(
                titan_command() + ["store", "--bind", "127.0.0.1:0", "--dir", str(self.data_dir), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                start_new_session=True)
        proc = self.proc
        wait_until(lambda: addr.exists() or proc.poll() is not None, START_TIMEOUT_S,
                   lambda: "the store to listen\n" + dump_logs(self.base))
        assert proc.poll() is None, f"the store exited with {proc.returncode}\n{dump_logs(self.base)}"
        self.port = int(addr.read_text().strip().rpartition(":")[2])
        return self

    def client(self) -> RespClient:
        c = RespClient(self.port)
        self.clients.append(c)
        return c

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        _signal_group(self.proc.pid, sig)
        code = self.proc.wait(15)
        for c in self.clients:
            c.close()
        self.clients.clear()
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        for c in self.clients:
            c.close()
        if self.proc is not None:
            _reap([self.proc], grace_s=5.0)


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Any]:
    made: List[Store] = []

    def make(data_dir: Optional[Path] = None) -> Store:
        s = Store(tmp_path, data_dir or tmp_path / f"data{len(made)}")
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.cleanup()


@pytest.fixture
def store(store_factory: Any) -> Store:
    return store_factory().start()


# ----- protocol --------------------------------------------------------------------
def test_pipelined_commands_are_answered_in_order(store: Store) -> None:
    c = store.client()
    commands = []
    for i in range(500):
        commands += [encode_command([b"SET", b"k%d" % i, b"v%d" % i]), encode_command([b"INCR", b"n"])]
    c.send(b"".join(commands))
    replies = [c.read() for _ in range(1000)]
    assert replies[0::2] == ["OK"] * 500
    assert replies[1::2] == list(range(1, 501))
    assert c.call("MGET", "k0", "k499", "missing") == [b"v0", b"v499", None]


def test_inline_commands(store: Store) -> None:
    c = store.client()
    c.send(b"SET greeting \"hello world\"\r\nGET greeting\r\nPING\r\nEXISTS greeting nope\n")
    assert [c.read() for _ in range(4)] == ["OK", b"hello world", "PONG", 1]


def test_unknown_command_is_an_error_not_a_disconnect(store: Store) -> None:
    c = store.client()
    reply = c.call("FOO", "x", "y")
    assert isinstance(reply, RuntimeError)
    assert str(reply) == "ERR unknown command 'FOO', with args beginning with: 'x' 'y' "
    assert c.call("PING") == "PONG"


def test_hello_3_switches_the_connection_to_resp3(store: Store) -> None:
    c = store.client()
    hello = c.call("HELLO", "3")
    assert isinstance(hello, dict)
    assert hello[b"proto"] == 3 and hello[b"version"] == b"7.2.0" and hello[b"mode"] == b"standalone"
    assert hello[b"role"] == b"master" and hello[b"modules"] == [] and isinstance(hello[b"id"], int)
    c.send(encode_command([b"GET", b"missing"]))
    assert c._line() == b"_"                                  # RESP3 null
    c.call("HSET", "h", "f", "v")
    assert c.call("HGETALL", "h") == {b"f": b"v"}             # RESP3 map
    assert isinstance(c.call("HELLO", "4"), RuntimeError)
    two = c.call("HELLO", "2")
    assert isinstance(two, list) and two[two.index(b"proto") + 1] == 2
    other = store.client()
    assert isinstance(other.call("HELLO"), list)              # RESP2 map-as-array


def test_pub_sub_pushes_and_the_subscribed_state(store: Store) -> None:
    sub, pub = store.client(), store.client()
    assert sub.call("SUBSCRIBE", "news") == [b"subscribe", b"news", 1]
    assert sub.call("PSUBSCRIBE", "n*") == [b"psubscribe", b"n*", 2]
    assert pub.call("PUBLISH", "news", "hi") == 2
    assert sub.read() == [b"message", b"news", b"hi"]
    assert sub.read() == [b"pmessage", b"n*", b"news", b"hi"]
    error = sub.call("GET", "x")
    assert str(error) == ("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                          "RESET are allowed in this context")
    assert sub.call("PING") == [b"pong", b""]
    assert sub.call("UNSUBSCRIBE") == [b"unsubscribe", b"news", 1]
    assert sub.call("PUNSUBSCRIBE") == [b"punsubscribe", b"n*", 0]
    assert sub.call("GET", "x") is None
    assert pub.call("PUBLISH", "news", "again") == 0


def test_quit_replies_then_closes(store: Store) -> None:
    c = store.client()
    assert c.call("QUIT") == "OK"
    assert c.closed_by_server()


def test_commands_sent_with_quit_after_it_are_not_run(store: Store) -> None:
    # Given a client that sends QUIT and a SET in one write (as a pipelining client may)
    c = store.client()
    c.send(encode_command([b"QUIT"]) + encode_command([b"SET", b"afterquit", b"1"]))
    # Then it gets the OK to QUIT alone, and the connection closes
    assert c.read() == "OK"
    assert c.closed_by_server()
    # And the SET after it was not run, as in Redis
    assert store.client().call("EXISTS", "afterquit") == 0


MALFORMED = {
    "bulk length larger than the data": b"*1\r\n$2\r\nPING\r\n",
    "missing CRLF after bulk": b"*1\r\n$4\r\nPINGxx*1\r\n",
    "negative multibulk count": b"*-5\r\n",
    "negative bulk length": b"*1\r\n$-3\r\n",
    "4 GiB bulk length": b"*1\r\n$4294967296\r\n",
    "non-numeric multibulk count": b"*abc\r\n",
    "binary garbage after *": b"*\x00\xff\xfe\x80garbage\r\n",
    "bulk header without $": b"*1\r\n:4\r\nPING\r\n",
    "unbalanced inline quotes": b"SET \"unclosed\r\n",
}


@pytest.mark.parametrize("payload", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_resp_gets_an_error_and_closes_only_that_client(store: Store, payload: bytes) -> None:
    bystander = store.client()
    assert bystander.call("SET", "still", "here") == "OK"
    bad = store.client()
    bad.send(payload)
    reply = bad.read()
    assert isinstance(reply, RuntimeError) and str(reply).startswith("ERR Protocol error"), reply
    assert bad.closed_by_server()
    assert bystander.call("GET", "still") == b"here"
    assert store.alive()


def test_binary_garbage_never_crashes_the_store(store: Store) -> None:
    import random
    rng = random.Random(7)
    for _ in range(20):
        c = RespClient(store.port)
        try:
            c.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) + b"\r\n")
            c.closed_by_server(timeout_s=0.2)
        except OSError:
            pass
        finally:
            c.close()
    assert store.client().call("PING") == "PONG"


# ----- durability ----------------------------------------------------------------------
def test_kill_9_loses_no_acknowledged_write(store_factory: Any) -> None:
    # Given a store with appendfsync always and clients writing in pipelined batches
    store = store_factory().start("--appendfsync", "always")
    writers = [store.client() for _ in range(4)]
    acked: List[bytes] = []
    for batch in range(10):
        for w, c in enumerate(writers):
            keys = [b"w%d:b%d:%d" % (w, batch, i) for i in range(50)]
            c.send(b"".join(encode_command([b"SET", k, k]) for k in keys) + encode_command([b"INCR", b"total"]))
        for w, c in enumerate(writers):
            replies = [c.read() for _ in range(51)]
            assert replies[:50] == ["OK"] * 50
            acked += [b"w%d:b%d:%d" % (w, batch, i) for i in range(50)]
    for c in writers:                                          # in flight, unacknowledged
        c.send(encode_command([b"SET", b"maybe", b"1"]) * 100)
    # When the store is killed with SIGKILL and started again on the same directory
    store.kill(signal.SIGKILL)
    store.start()
    # Then every acknowledged write is there
    c = store.client()
    values = c.call("MGET", *acked)
    assert values == acked
    assert c.call("GET", "total") == b"40"


def test_sigterm_flushes_and_exits_cleanly_even_with_appendfsync_no(store_factory: Any) -> None:
    store = store_factory().start("--appendfsync", "no")
    c = store.client()
    for i in range(100):
        c.call("SADD", "s", str(i))
    assert store.kill(signal.SIGTERM) == 0
    store.start()
    assert store.client().call("SCARD", "s") == 100


def test_active_expiry_deletes_keys_and_logs_the_delete(store: Store) -> None:
    c = store.client()
    assert c.call("SET", "short", "v", "PX", "100") == "OK"
    assert c.call("SET", "long", "v", "EX", "1000") == "OK"
    wait_until(lambda: c.call("DBSIZE") == 1, 5.0, "active expiry to delete 'short'")
    incr = next((store.data_dir / "appendonlydir").glob("*.incr.aof")).read_bytes()
    assert encode_command([b"DEL", b"short"]) in incr


def test_bgrewriteaof_compacts_in_the_background(store: Store) -> None:
    c = store.client()
    for i in range(50):
        c.call("INCR", "n")
    assert c.call("BGREWRITEAOF") == "Background append only file rewriting started"
    manifest = store.data_dir / "appendonlydir" / "appendonly.aof.manifest"
    wait_until(lambda: "appendonly.aof.2.base.aof" in manifest.read_text(), 10.0, "the rewrite to finish")
    assert c.call("GET", "n") == b"50"
    store.kill(signal.SIGKILL)
    store.start()
    assert store.client().call("GET", "n") == b"50"


def test_a_second_store_on_the_same_directory_is_refused(store: Store) -> None:
    result = run_cli("store", "--bind", "127.0.0.1:0", "--dir", str(store.data_dir), timeout_s=30)
    assert result.code == 1
    assert "in use by another process" in result.stderr and "Traceback" not in result.stderr


def test_a_non_loopback_bind_without_insecure_is_refused(tmp_path: Path) -> None:
    result = run_cli("store", "--bind", "0.0.0.0:0", "--dir", str(tmp_path / "d"), timeout_s=30)
    assert result.code == 2 and "no authentication" in result.stderr and "--insecure" in result.stderr


def test_corrupt_aof_stops_start_up_with_file_and_offset(store_factory: Any) -> None:
    store = store_factory().start()
    store.client().call("SET", "a", "1")
    store.client().call("SET", "b", "2")
    store.kill(signal.SIGTERM)
    incr = store.data_dir / "appendonlydir" / "appendonly.aof.1.incr.aof"
    data = bytearray(incr.read_bytes())
    data[0] = ord("#")
    incr.write_bytes(bytes(data))
    result = run_cli("store", "--bind", "127.0.0.1:0", "--dir", str(store.data_dir), timeout_s=30)
    assert result.code == 1
    assert "appendonly.aof.1.incr.aof" in result.stderr and "byte offset 0" in result.stderr
    assert "titan store check" in result.stderr


# ----- real Redis clients and servers, where installed ------------------------------------
needs_redis_cli = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")


@needs_redis_cli
def test_redis_cli_drives_the_store(store: Store) -> None:
    def cli(*args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(store.port), *args], capture_output=True, text=True,
                             timeout=30, start_new_session=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert cli("set", "greeting", "hello") == "OK"
    assert cli("get", "greeting") == "hello"
    assert cli("incr", "n") == "1"
    assert "unknown command" in cli("nosuch")
    piped = subprocess.run(["redis-cli", "-p", str(store.port)], input="SET a 1\nGET a\n", capture_output=True,
                           text=True, timeout=30, start_new_session=True)
    assert piped.stdout.split() == ["OK", "1"]


def test_redis_py_drives_the_store(store: Store) -> None:
    redis = pytest.importorskip("redis")
    r = redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=10)
    try:
        assert r.incr("n") == 1 and r.incr("n", 5) == 6
        assert r.get("n") == b"6"
        assert r.set("ü", "ñ".encode()) and r.get("ü") == "ñ".encode()
        r.sadd("s", "a", "b")
        assert r.smembers("s") == {b"a", b"b"}
        r.hset("h", mapping={"f": "1", "g": "2"})
        assert r.hgetall("h") == {b"f": b"1", b"g": b"2"}
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i)
        assert pipe.execute() == [True] * 100
        p = r.pubsub()
        p.subscribe("ch")
        assert wait_until(lambda: p.get_message(timeout=0.1), 5.0, "the subscribe confirmation")["type"] == "subscribe"
        assert r.publish("ch", "hi") == 1
        message = wait_until(lambda: p.get_message(timeout=0.1), 5.0, "the message")
        assert message["data"] == b"hi"
        p.close()
        r3 = redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=10, protocol=3)   # HELLO 3 first
        assert r3.get("n") == b"6" and r3.hgetall("h") == {b"f": b"1", b"g": b"2"}
        r3.close()
    finally:
        r.close()


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-check-aof")),
                    reason="redis-server / redis-check-aof are not installed")
def test_stock_redis_loads_titans_files(store_factory: Any, tmp_path: Path) -> None:
    # Given Titan's files after a rewrite and more writes (a base and an incremental file)
    store = store_factory().start()
    c = store.client()
    c.call("SET", "s1", "before-rewrite")
    c.call("SADD", "set", "a", "b", "c")
    c.call("HSET", "hash", "f1", "v1", "f2", "v2")
    assert c.call("BGREWRITEAOF").startswith("Background")
    manifest = store.data_dir / "appendonlydir" / "appendonly.aof.manifest"
    wait_until(lambda: "appendonly.aof.2.base.aof" in manifest.read_text(), 10.0, "the rewrite")
    c.call("SET", "ttl", "v", "EX", "1000")
    c.call("INCRBY", "counter", "7")
    c.call("APPEND", "s1", "+after")
    c.call("SREM", "set", "b")
    c.call("HINCRBY", "hash", "n", "3")
    c.call("SET", "gone", "x")
    c.call("DEL", "gone")
    store.kill(signal.SIGTERM)
    # Then redis-check-aof validates them
    check = subprocess.run(["redis-check-aof", str(manifest)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "valid" in check.stdout, check.stdout + check.stderr
    # And a stock redis-server loads them with the same values
    port = free_port()
    with open(tmp_path / "redis.log", "wb") as log:
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(store.data_dir),
             "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> Any:
            try:
                client = RespClient(port, timeout_s=2)
            except OSError:
                return None
            if client.call("PING") == "PONG":
                return client
            client.close()
            return None
        r = wait_until(ready, 20.0, lambda: "redis-server to load\n" + (tmp_path / "redis.log").read_text())
        assert r.call("GET", "s1") == b"before-rewrite+after"
        assert sorted(r.call("SMEMBERS", "set")) == [b"a", b"c"]
        assert r.call("HGETALL", "hash") == [b"f1", b"v1", b"f2", b"v2", b"n", b"3"]
        assert r.call("GET", "counter") == b"7"
        assert 990_000 < r.call("PTTL", "ttl") <= 1_000_000
        assert r.call("EXISTS", "gone") == 0
        assert r.call("DBSIZE") == 5
        r.close()
    finally:
        _reap([redis_proc], grace_s=5.0)


def test_a_subscriber_that_does_not_read_is_dropped_not_buffered_forever(store: Store) -> None:
    slow, pub = store.client(), store.client()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.call("SUBSCRIBE", "firehose") == [b"subscribe", b"firehose", 1]
    message = b"x" * (1 << 20)
    receivers = [pub.call("PUBLISH", "firehose", message) for _ in range(64)]   # 64 MiB > the 32 MiB limit
    assert receivers[0] == 1 and receivers[-1] == 0, receivers[-5:]
    assert pub.call("PING") == "PONG" and store.alive()


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")),
                    reason="redis-server / redis-cli are not installed")
def test_titan_loads_files_a_stock_redis_wrote(store_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "from-redis"
    data_dir.mkdir()
    port = free_port()
    with open(tmp_path / "redis.log", "wb") as log:
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
             "--appendonly", "yes", "--aof-use-rdb-preamble", "no", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        r = wait_until(lambda: RespClient(port, timeout_s=2), 20.0, "redis-server to listen", ignore=(OSError,))
        wait_until(lambda: r.call("PING") == "PONG", 20.0, "redis-server to answer")
        r.call("SET", "a", "1")
        r.call("SADD", "s", "x", "y")
        assert str(r.call("BGREWRITEAOF")).startswith("Background")
        wait_until(lambda: b"aof_rewrite_in_progress:0" in r.call("INFO", "persistence"), 20.0, "the rewrite")
        r.call("HSET", "h", "f", "v")
        r.call("PEXPIRE", "s", "1000000")
        r.send(encode_command([b"SHUTDOWN"]))                 # no reply: the server exits
        redis_proc.wait(20)
        r.close()
    finally:
        _reap([redis_proc], grace_s=5.0)
    store = store_factory(data_dir).start()
    c = store.client()
    assert c.call("GET", "a") == b"1" and sorted(c.call("SMEMBERS", "s")) == [b"x", b"y"]
    assert c.call("HGET", "h", "f") == b"v" and 0 < c.call("PTTL", "s") <= 1_000_000
