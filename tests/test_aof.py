"""The AOF: Redis 7 multi-part files, group commit, torn tails, corruption,
background rewrite, the directory lock, ``titan store check`` and write failures.

Most tests drive :class:`titan.io.aof.AppendOnlyFile` with the real engine;
the failure tests run a :class:`titan.roles.store.StoreServer` in this
process on 127.0.0.1:0 with a FileOps seam that fails on demand, and talk to
it over a real socket while stepping its loop.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from titan.io.aof import (
    AOF_DIR, MANIFEST_NAME, AofCorrupt, AofError, AofLocked, AppendOnlyFile, FileOps, Manifest, scan_file,
)
from titan.io.aofcheck import check
from titan.roles.store import StoreConfig, StoreServer
from titan.store.engine import Engine
from titan.store.resp import encode_command, scan_commands

NOW_MS = 1_700_000_000_000
REDIS_COMMANDS = {b"SET", b"DEL", b"INCR", b"INCRBY", b"DECRBY", b"APPEND", b"SADD", b"SREM", b"HSET", b"HDEL",
                  b"HINCRBY", b"PEXPIREAT", b"PERSIST", b"RENAME", b"FLUSHALL", b"MSET", b"SELECT", b"DECR"}


# ----- helpers ---------------------------------------------------------------
def opened(data_dir: Path, **options: Any) -> Tuple[AppendOnlyFile, Engine]:
    aof = AppendOnlyFile(data_dir, **options)
    engine = Engine()
    aof.load(engine, NOW_MS)
    return aof, engine


def run(aof: AppendOnlyFile, engine: Engine, *commands: Sequence[bytes], now_ms: int = NOW_MS) -> List[Any]:
    """Execute ``commands``, append what they propagate, flush once (one loop pass)."""
    replies = []
    for args in commands:
        reply, aof_commands = engine.execute([bytes(a) for a in args], now_ms)
        aof.append(aof_commands)
        replies.append(reply)
    assert aof.flush()
    return replies


def keyspace(engine: Engine, now_ms: int = NOW_MS) -> Dict[bytes, Tuple[str, Any, Optional[int]]]:
    """key -> (type, value, absolute expiry ms), rebuilt from engine.dump()."""
    state: Dict[bytes, Any] = {}
    for args in engine.dump(now_ms):
        name, key = args[0], args[1]
        if name == b"SET":
            state[key] = ["string", args[2], int(args[4]) if len(args) > 3 else None]
        elif name == b"SADD":
            state.setdefault(key, ["set", set(), None])[1].update(args[2:])
        elif name == b"HSET":
            entry = state.setdefault(key, ["hash", {}, None])
            entry[1].update(zip(args[2::2], args[3::2]))
        elif name == b"PEXPIREAT":
            state[key][2] = int(args[2])
        else:
            raise AssertionError(f"unexpected dump command {args!r}")
    return {k: (v[0], v[1], v[2]) for k, v in state.items()}


def incr_path(data_dir: Path, seq: int = 1) -> Path:
    return data_dir / AOF_DIR / f"appendonly.aof.{seq}.incr.aof"


def manifest_text(data_dir: Path) -> str:
    return (data_dir / AOF_DIR / MANIFEST_NAME).read_text()


SAMPLE: List[List[bytes]] = [
    [b"SET", b"greeting", b"hello"],
    [b"SET", b"session", b"abc", b"EX", b"100"],
    [b"INCR", b"counter"], [b"INCRBY", b"counter", b"41"],
    [b"APPEND", b"greeting", b" world"],
    [b"SADD", b"tags", b"a", b"b", b"c"], [b"SREM", b"tags", b"b"],
    [b"HSET", b"user:1", b"name", b"ada", b"lang", b"en"], [b"HINCRBY", b"user:1", b"visits", b"3"],
    [b"SET", b"doomed", b"x"], [b"DEL", b"doomed"],
    [b"SET", b"ttl", b"y"], [b"PEXPIRE", b"ttl", b"5000"],
    [b"SET", b"old", b"z"], [b"RENAME", b"old", b"new"],
    [b"SET", "ключ".encode(), "значение".encode()], [b"SET", b"bin", bytes(range(256))],
    [b"SET", b"crlf", b"a\r\nb\r\n"],
]


# ----- round trip and format -------------------------------------------------------
def test_round_trip_restores_the_same_keyspace(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    before = keyspace(engine)
    aof.close()

    _, reloaded = opened(tmp_path)
    assert keyspace(reloaded) == before
    assert before[b"counter"] == ("string", b"42", None)
    assert before[b"session"][2] == NOW_MS + 100_000          # EX became an absolute time


def test_files_are_redis_7_multi_part_with_absolute_expiries(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    aof.close()
    assert manifest_text(tmp_path) == ("file appendonly.aof.1.base.aof seq 1 type b\n"
                                       "file appendonly.aof.1.incr.aof seq 1 type i\n")
    scan = scan_commands(incr_path(tmp_path).read_bytes())
    assert scan.error is None and not scan.truncated
    names = {args[0].upper() for args in scan.commands}
    assert names <= REDIS_COMMANDS, names - REDIS_COMMANDS
    assert [b"SET", b"session", b"abc", b"PXAT", b"%d" % (NOW_MS + 100_000)] in scan.commands
    assert [b"PEXPIREAT", b"ttl", b"%d" % (NOW_MS + 5000)] in scan.commands


# ----- torn tails and corruption ------------------------------------------------------
def test_truncation_at_every_offset_inside_the_last_command_keeps_the_earlier_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given an AOF whose last command is SET last value PXAT ...
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    expected = keyspace(engine)
    run(aof, engine, [b"SET", b"last", b"value", b"PX", b"60000"])
    aof.close()
    path = incr_path(tmp_path)
    whole = path.read_bytes()
    start = len(whole) - len(encode_command([b"SET", b"last", b"value", b"PXAT", b"%d" % (NOW_MS + 60000)]))
    for cut in range(start + 1, len(whole)):
        # When the file ends at byte `cut`, inside that command
        path.write_bytes(whole[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="titan.io.aof"):
            loaded, reloaded = opened(tmp_path)
        loaded.close()
        # Then every earlier command is there, the torn one is not, and the file was cut back
        assert keyspace(reloaded) == expected, f"cut at {cut}"
        assert path.stat().st_size == start
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert str(path) in warning and f"byte offset {start}" in warning, warning


def test_corruption_in_the_middle_stops_loading_with_file_and_offset(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    aof.close()
    path = incr_path(tmp_path)
    data = bytearray(path.read_bytes())
    offset = len(encode_command([b"SET", b"greeting", b"hello"]))      # the second command's '*'
    data[offset:offset + 1] = b"?"
    path.write_bytes(bytes(data))

    with pytest.raises(AofCorrupt) as caught:
        opened(tmp_path)
    assert caught.value.path == path and caught.value.offset == offset
    message = str(caught.value)
    assert str(path) in message and f"byte offset {offset}" in message
    assert f"titan store check {tmp_path} --fix" in message
    assert path.read_bytes() == bytes(data), "a corrupt file must not be cut at start-up"


def test_a_torn_base_file_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    assert aof.start_rewrite(engine, NOW_MS)
    assert aof.wait_rewrite() is True
    aof.close()
    base = tmp_path / AOF_DIR / "appendonly.aof.2.base.aof"
    base.write_bytes(base.read_bytes()[:-3])
    with pytest.raises(AofCorrupt, match="appendonly.aof.2.base.aof"):
        opened(tmp_path)


def test_a_command_the_engine_rejects_names_file_and_offset(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, [b"SET", b"a", b"1"])
    aof.close()
    path = incr_path(tmp_path)
    offset = path.stat().st_size
    with open(path, "ab") as f:
        f.write(encode_command([b"NOSUCHCOMMAND", b"x"]) + encode_command([b"SET", b"b", b"2"]))
    with pytest.raises(AofCorrupt, match=f"NOSUCHCOMMAND.*byte offset {offset}"):
        opened(tmp_path)


# ----- group commit and fsync policies ----------------------------------------------------
class CountingOps(FileOps):
    """Real files; counts writes and fsyncs, and fails them on demand."""

    def __init__(self) -> None:
        self.writes = 0
        self.fsyncs = 0
        self.write_error: Optional[int] = None
        self.fsync_error: Optional[int] = None

    def write(self, fd: int, data: memoryview) -> int:
        if self.write_error is not None:
            raise OSError(self.write_error, os.strerror(self.write_error))
        self.writes += 1
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_error is not None:
            raise OSError(self.fsync_error, os.strerror(self.fsync_error))
        self.fsyncs += 1
        super().fsync(fd)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_always_is_one_write_and_one_fsync_per_pass(tmp_path: Path) -> None:
    ops = CountingOps()
    aof, engine = opened(tmp_path, ops=ops)
    writes, fsyncs = ops.writes, ops.fsyncs
    run(aof, engine, *[[b"INCR", b"n"]] * 200)                  # 200 commands, one pass
    assert (ops.writes - writes, ops.fsyncs - fsyncs) == (1, 1)
    assert aof.flush() and ops.fsyncs - fsyncs == 1              # nothing pending: no syscall


def test_everysec_fsyncs_at_most_once_a_second_and_no_never(tmp_path: Path) -> None:
    ops, clock = CountingOps(), FakeClock()
    aof, engine = opened(tmp_path / "everysec", ops=ops, fsync="everysec", clock=clock)
    base = ops.fsyncs
    for _ in range(10):
        run(aof, engine, [b"INCR", b"n"])
        clock.now += 0.25
    assert ops.fsyncs - base == 2                               # at 1.0 s and 2.0 s
    clock.now += 1.0
    assert aof.flush() and ops.fsyncs - base == 3               # idle pass still syncs the tail
    aof.close()

    ops = CountingOps()
    aof, engine = opened(tmp_path / "no", ops=ops, fsync="no", clock=clock)
    base = ops.fsyncs
    for _ in range(10):
        run(aof, engine, [b"INCR", b"n"])
        clock.now += 1.0
    assert ops.fsyncs == base and ops.writes >= 10


def test_a_failed_write_is_kept_and_retried_without_duplicates(tmp_path: Path) -> None:
    ops = CountingOps()
    aof, engine = opened(tmp_path, ops=ops)
    run(aof, engine, [b"SET", b"a", b"1"])
    ops.fsync_error = errno.EIO                                 # written, but fsync fails
    engine.execute([b"INCR", b"n"], NOW_MS)
    aof.append([[b"INCR", b"n"]])
    assert not aof.flush() and aof.broken and aof.error.errno == errno.EIO
    ops.fsync_error = None
    assert not aof.flush()                                      # a background retry waits retry_interval_s
    assert aof.flush(retry=True) and not aof.broken             # rewritten from the last good size
    aof.close()
    commands = scan_commands(incr_path(tmp_path).read_bytes()).commands
    assert commands == [[b"SET", b"a", b"1"], [b"INCR", b"n"]]


# ----- rewrite ----------------------------------------------------------------------------
def test_rewrite_under_concurrent_writes_loses_nothing(tmp_path: Path) -> None:
    # Given 20,000 keys in the AOF
    aof, engine = opened(tmp_path)
    for chunk in range(0, 20_000, 1000):
        run(aof, engine, *[[b"SET", b"k%d" % i, b"v%d" % i] for i in range(chunk, chunk + 1000)])
    # When a rewrite runs while writes keep coming
    assert aof.start_rewrite(engine, NOW_MS)
    during = 0
    deadline = time.monotonic() + 30
    while aof.poll_rewrite() is None:
        assert time.monotonic() < deadline, "the rewrite child did not finish"
        run(aof, engine, [b"INCR", b"during"], [b"SET", b"k%d" % during, b"new"], [b"SADD", b"s", b"%d" % during])
        during += 1
    run(aof, engine, [b"INCR", b"during"], [b"HSET", b"after", b"f", b"v"])
    expected = keyspace(engine)
    aof.close()
    assert during > 0, "no write happened while the child ran"
    # Then the new base plus the new incremental file hold exactly the live keyspace
    assert manifest_text(tmp_path) == ("file appendonly.aof.2.base.aof seq 1 type b\n".replace("seq 1", "seq 2")
                                       + "file appendonly.aof.2.incr.aof seq 2 type i\n")
    assert sorted(p.name for p in (tmp_path / AOF_DIR).iterdir()) == [
        "appendonly.aof.2.base.aof", "appendonly.aof.2.incr.aof", "appendonly.aof.manifest"]
    _, reloaded = opened(tmp_path)
    assert keyspace(reloaded) == expected
    assert keyspace(reloaded)[b"during"][1] == b"%d" % (during + 1)


def test_a_crash_during_rewrite_leaves_a_loadable_directory(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    assert aof.start_rewrite(engine, NOW_MS)
    run(aof, engine, [b"SET", b"after-switch", b"1"])
    # "crash" now: copy the directory as it is while the child may still be writing
    crashed = tmp_path.parent / (tmp_path.name + "-crashed")
    shutil.copytree(tmp_path, crashed, ignore=shutil.ignore_patterns("aof.lock"))
    expected = keyspace(engine)
    assert aof.wait_rewrite() is True
    aof.close()
    assert "appendonly.aof.2.incr.aof seq 2 type i" in manifest_text(crashed)
    loaded, reloaded = opened(crashed)
    assert keyspace(reloaded) == expected
    assert not list((crashed / AOF_DIR).glob("temp-*")), "leftover temp files are removed at open"
    loaded.close()


def test_close_during_a_rewrite_stops_the_child_and_keeps_everything(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *[[b"SET", b"k%d" % i, b"v" * 50] for i in range(50_000)])
    assert aof.start_rewrite(engine, NOW_MS)
    pid = aof.rewrite.pid
    run(aof, engine, [b"SET", b"after", b"1"])
    expected = keyspace(engine)
    aof.close()                                                # the child is killed and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not list((tmp_path / AOF_DIR).glob("temp-*"))
    _, reloaded = opened(tmp_path)
    assert keyspace(reloaded) == expected


class FailingForkOps(FileOps):
    """fork() yields a child that exits 1 at once, as a rewrite child that hit a full disk."""

    def fork(self) -> int:
        pid = os.fork()
        if pid == 0:
            os._exit(1)
        return pid


def test_a_failed_rewrite_keeps_the_old_files_and_loses_nothing(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    aof, engine = opened(tmp_path, ops=FailingForkOps())
    run(aof, engine, *SAMPLE)
    assert aof.start_rewrite(engine, NOW_MS)
    run(aof, engine, [b"SET", b"after", b"1"])
    with caplog.at_level(logging.ERROR, logger="titan.io.aof"):
        assert aof.wait_rewrite() is False
    assert "rewrite failed" in caplog.text
    assert not aof.rewrite_due()                               # backs off before trying again
    expected = keyspace(engine)
    aof.close()
    assert manifest_text(tmp_path).count("type i") == 2
    _, reloaded = opened(tmp_path)
    assert keyspace(reloaded) == expected


class ManifestFailOps(CountingOps):
    """Fails the fsync of the temporary manifest: a crash or full disk in the middle of the swap."""

    fail_manifest = False

    def write_file_atomic(self, path: Path, data: bytes) -> None:
        self.fsync_error = errno.EIO if self.fail_manifest else None
        try:
            super().write_file_atomic(path, data)
        finally:
            self.fsync_error = None


def test_the_manifest_swap_is_atomic(tmp_path: Path) -> None:
    ops = ManifestFailOps()
    aof, engine = opened(tmp_path, ops=ops)
    run(aof, engine, *SAMPLE)
    assert aof.start_rewrite(engine, NOW_MS)
    before = manifest_text(tmp_path)                           # old base + old incr + new incr
    ops.fail_manifest = True
    assert aof.wait_rewrite() is False                         # the new manifest could not be made durable
    assert manifest_text(tmp_path) == before
    ops.fail_manifest = False
    run(aof, engine, [b"SET", b"after", b"1"])
    expected = keyspace(engine)
    aof.close()
    loaded, reloaded = opened(tmp_path)
    assert keyspace(reloaded) == expected
    assert not list((tmp_path / AOF_DIR).glob("temp-*"))
    loaded.close()


def test_rewrite_is_due_when_incremental_files_outgrow_the_base(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path, rewrite_percentage=100, rewrite_min_bytes=4096)
    while not aof.rewrite_due():
        run(aof, engine, [b"SET", b"key", b"x" * 100])
    assert aof.size_bytes >= 4096
    assert aof.start_rewrite(engine, NOW_MS) and aof.wait_rewrite() is True
    assert not aof.rewrite_due()                               # the base is tiny, the incr empty
    aof.close()


def test_manifest_parsing_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    assert Manifest.parse("# comment\nfile a.aof seq 1 type b\nfile b.aof seq 2 type i\n", path).incrs[0].name == "b.aof"
    for text in ("file a seq x type b\n", "file a seq 1\n", "file ../x seq 1 type i\n",
                 "file a seq 2 type i\nfile b seq 1 type i\n", "", "file a seq 1 type b\nfile b seq 2 type b\n"):
        with pytest.raises(AofError):
            Manifest.parse(text, path)


def test_aof_files_without_a_manifest_are_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / AOF_DIR).mkdir()
    incr_path(tmp_path).write_bytes(encode_command([b"SET", b"precious", b"data"]))
    with pytest.raises(AofError, match="no appendonly.aof.manifest"):
        AppendOnlyFile(tmp_path).open()
    assert incr_path(tmp_path).stat().st_size > 0


# ----- the lock -----------------------------------------------------------------------------
def test_a_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    aof, _ = opened(tmp_path)
    with pytest.raises(AofLocked, match=f"{tmp_path}.*in use by another process.*pid {os.getpid()}"):
        AppendOnlyFile(tmp_path).open()
    code = ("import sys\nfrom titan.io.aof import AppendOnlyFile, AofLocked\n"
            "try:\n    AppendOnlyFile(sys.argv[1]).open()\nexcept AofLocked as e:\n    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=30, cwd=str(Path(__file__).resolve().parent.parent))
    assert proc.returncode == 3, proc.stderr
    assert "in use by another process" in proc.stdout
    aof.close()
    AppendOnlyFile(tmp_path).open()                            # released on close


# ----- titan store check ----------------------------------------------------------------------
def test_check_reports_a_torn_tail_and_fix_cuts_it(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    aof.close()
    path = incr_path(tmp_path)
    good = path.stat().st_size
    torn = b"*3\r\n$3\r\nSET\r\n$1\r\nk"
    with open(path, "ab") as f:
        f.write(torn)
    report = check(tmp_path, engine=Engine(), now_ms=NOW_MS)
    assert not report.ok and report.files[-1].status == "torn"
    assert report.files[-1].commands == len(scan_commands(path.read_bytes()[:good]).commands)
    assert str(path) in report.problems[0] and f"byte offset {good}" in report.problems[0]
    assert path.stat().st_size > good                          # without --fix nothing is cut

    fixed = check(tmp_path, fix=True, engine=Engine(), now_ms=NOW_MS)
    assert fixed.ok and path.stat().st_size == good
    assert f"cut {len(torn)} bytes" in fixed.fixed[0] and f"byte offset {good}" in fixed.fixed[0]
    assert check(tmp_path).ok


def test_check_reports_corruption_in_an_earlier_file_and_does_not_cut_it(tmp_path: Path) -> None:
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    assert aof.start_rewrite(engine, NOW_MS) and aof.wait_rewrite() is True
    run(aof, engine, [b"SET", b"later", b"1"])
    aof.close()
    base = tmp_path / AOF_DIR / "appendonly.aof.2.base.aof"
    data = bytearray(base.read_bytes())
    second = data.index(b"*", 1)                               # the second command's header
    data[second] = ord("!")
    base.write_bytes(bytes(data))
    report = check(tmp_path, fix=True)
    assert not report.ok and not report.fixed
    assert report.files[0].status == "corrupt" and report.files[1].status == "ok"
    assert "appendonly.aof.2.base.aof" in report.problems[0] and f"byte offset {second}" in report.problems[0]
    assert base.read_bytes() == bytes(data)


def test_check_cli_exit_codes_and_one_line_per_problem(tmp_path: Path) -> None:
    from conftest import run_cli
    aof, engine = opened(tmp_path)
    run(aof, engine, *SAMPLE)
    aof.close()
    assert run_cli("store", "check", str(tmp_path)).code == 0
    with open(incr_path(tmp_path), "ab") as f:
        f.write(b"*2\r\n$3\r\nGET")
    result = run_cli("store", "check", str(tmp_path))
    assert result.code == 1
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 1 and "appendonly.aof.1.incr.aof" in problems[0] and "byte offset" in problems[0]
    assert "torn" in result.stdout
    result = run_cli("store", "check", str(tmp_path), "--fix")
    assert result.code == 0 and "fixed:" in result.stdout and "cut 11 bytes" in result.stdout
    assert run_cli("store", "check", str(tmp_path)).code == 0


# ----- write failures through the server ----------------------------------------------------------
def read_reply(buf: bytes, pos: int = 0) -> Tuple[Any, int]:
    """One RESP2 reply at ``buf[pos:]``: (value, end); raises IndexError/ValueError when incomplete."""
    end = buf.index(b"\r\n", pos)
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    if kind in (b"+", b"-"):
        return (line.decode() if kind == b"+" else RuntimeError(line.decode())), end + 2
    if kind == b":":
        return int(line), end + 2
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, end + 2
        if len(buf) < end + 2 + n + 2:
            raise IndexError("incomplete")
        return buf[end + 2:end + 2 + n], end + 4 + n
    if kind == b"*":
        items, pos = [], end + 2
        for _ in range(int(line)):
            item, pos = read_reply(buf, pos)
            items.append(item)
        return items, pos
    raise ValueError(f"unexpected reply byte {kind!r}")


class InProcessStore:
    """A StoreServer on 127.0.0.1:0 stepped by the test, with one client socket."""

    def __init__(self, data_dir: Path, ops: FileOps) -> None:
        self.server = StoreServer(StoreConfig(data_dir=data_dir, bind=("127.0.0.1", 0)),
                                  aof=AppendOnlyFile(data_dir, ops=ops))
        host, port = self.server.start()
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setblocking(False)           # the test steps the server's loop between reads
        self.buf = b""

    def call(self, *commands: Sequence[bytes]) -> List[Any]:
        self.sock.sendall(b"".join(encode_command([bytes(a) for a in c]) for c in commands))
        replies: List[Any] = []
        deadline = time.monotonic() + 10
        while len(replies) < len(commands):
            assert time.monotonic() < deadline, "no reply from the in-process store"
            self.server.loop.run_once(0.01)
            try:
                self.buf += self.sock.recv(65536)
            except BlockingIOError:
                continue
            while True:
                try:
                    reply, end = read_reply(self.buf)
                except (IndexError, ValueError):
                    break
                replies.append(reply)
                self.buf = self.buf[end:]
        return replies

    def close(self) -> None:
        self.sock.close()
        self.server.close()


@pytest.fixture
def failing_store(tmp_path: Path) -> Iterator[Tuple[InProcessStore, CountingOps]]:
    ops = CountingOps()
    store = InProcessStore(tmp_path, ops)
    try:
        yield store, ops
    finally:
        store.close()


@pytest.mark.parametrize("where, code", [("write", errno.ENOSPC), ("fsync", errno.EIO)])
def test_a_failing_disk_refuses_writes_keeps_serving_reads_and_loses_nothing_acknowledged(
        tmp_path: Path, failing_store: Tuple[InProcessStore, CountingOps], where: str, code: int) -> None:
    store, ops = failing_store
    assert store.call([b"SET", b"acked", b"1"]) == ["OK"]
    # Given the disk starts failing
    setattr(ops, f"{where}_error", code)
    # When writes arrive, in one pass and afterwards
    replies = store.call([b"SET", b"lost?", b"x"], [b"GET", b"acked"], [b"INCR", b"n"])
    # Then each write is refused with Redis's MISCONF text, and the read is served
    reason = os.strerror(code)
    assert str(replies[0]) == f"MISCONF Errors writing to the AOF file: {reason}"
    assert replies[1] == b"1"
    assert str(replies[2]) == f"MISCONF Errors writing to the AOF file: {reason}"
    assert store.call([b"GET", b"acked"], [b"DBSIZE"])[0] == b"1"
    # When the disk recovers, the next write is retried and acknowledged
    setattr(ops, f"{where}_error", None)
    assert store.call([b"SET", b"after", b"2"]) == ["OK"]
    store.close()
    # Then everything acknowledged is on disk
    _, reloaded = opened(tmp_path)
    state = keyspace(reloaded)
    assert state[b"acked"][1] == b"1" and state[b"after"][1] == b"2"
    files = scan_file(incr_path(tmp_path))
    assert not files.problem
