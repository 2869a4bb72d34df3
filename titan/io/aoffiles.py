"""The on-disk pieces of TitanStore's AOF: names, manifest, lock, scanning, OS seam.

What this module owns: everything :mod:`titan.io.aof` (the live appender)
and :mod:`titan.io.aofcheck` (the offline check) both need::

    Manifest.parse / text    appendonly.aof.manifest <-> base + incremental files
    scan_file(path, cb)      whole RESP commands in chunks -> cb; where the bytes go bad
    replayer(engine)         a scan_file callback applying commands to an engine
    DirLock                  flock on DIR/aof.lock: one process per directory
    FileOps                  the OS calls durability depends on (the seam tests replace)

The layout is exactly Redis 7's multi-part AOF, so ``redis-check-aof`` and a
stock ``redis-server`` read the same directory.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from titan.errors import TitanError
from titan.store.resp import scan_commands

__all__ = [
    "AofError", "AofCorrupt", "AofLocked", "FileOps", "DirLock", "AofInfo", "Manifest", "FileScan",
    "StopScan", "scan_file", "replayer", "read_manifest", "base_name", "incr_name",
    "AOF_DIR", "PREFIX", "MANIFEST_NAME", "LOCK_NAME", "READ_CHUNK_BYTES",
]

AOF_DIR = "appendonlydir"
PREFIX = "appendonly.aof"
MANIFEST_NAME = PREFIX + ".manifest"
LOCK_NAME = "aof.lock"
READ_CHUNK_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_LINE = 1024


# ----- errors ----------------------------------------------------------------
class AofError(TitanError):
    """Raised when the AOF directory cannot be used: bad manifest, missing file, I/O error."""


class AofCorrupt(AofError):
    """Raised by :meth:`titan.io.aof.AppendOnlyFile.load` when a file holds bytes that are not whole
    RESP commands, other than a torn tail of the last incremental file.

    ``path`` and ``offset`` say where the first bad byte is.
    """

    def __init__(self, message: str, *, path: Path, offset: int) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class AofLocked(AofError):
    """Raised when another process holds the data directory's lock."""


# ----- the OS seam -----------------------------------------------------------
class FileOps:
    """The file-system calls the durability logic makes; tests subclass it."""

    def open_append(self, path: Path) -> int:
        return os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def create_new(self, path: Path) -> int:
        """A new, empty file opened for append (a stale unreferenced one is emptied)."""
        return os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_file_atomic(self, path: Path, data: bytes) -> None:
        """temp file + fsync + rename + fsync of the directory."""
        tmp = path.with_name("temp-" + path.name)
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[self.write(fd, view):]
            self.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.fsync_dir(path.parent)

    def fork(self) -> int:
        return os.fork()

    def kill_child(self, pid: int) -> None:
        """SIGKILL child ``pid`` and reap it."""
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def wait_nohang(self, pid: int) -> Optional[int]:
        """The exit code of child ``pid`` if it has ended, else None."""
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            return None
        return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (
            os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))


# ----- the manifest ----------------------------------------------------------
@dataclass(frozen=True)
class AofInfo:
    """One manifest line: ``file NAME seq N type b|h|i``."""

    name: str
    seq: int
    kind: str

    def line(self) -> str:
        return f"file {self.name} seq {self.seq} type {self.kind}\n"


@dataclass(frozen=True)
class Manifest:
    """Which files make up the AOF: one base, then incremental files in order."""

    base: Optional[AofInfo]
    incrs: Tuple[AofInfo, ...] = ()
    history: Tuple[AofInfo, ...] = ()

    def text(self) -> str:
        infos = ([self.base] if self.base else []) + list(self.history) + list(self.incrs)
        return "".join(info.line() for info in infos)

    @property
    def files(self) -> List[AofInfo]:
        """The files to replay, in order."""
        return ([self.base] if self.base else []) + list(self.incrs)

    @classmethod
    def parse(cls, text: str, path: Path) -> "Manifest":
        base: Optional[AofInfo] = None
        incrs: List[AofInfo] = []
        history: List[AofInfo] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            info = _parse_manifest_line(line, f"{path}:{number}")
            if info.kind == "b":
                if base is not None:
                    raise AofError(f"{path}:{number}: a second base file {info.name!r} (the first is {base.name!r})")
                base = info
            elif info.kind == "i":
                if incrs and info.seq <= incrs[-1].seq:
                    raise AofError(f"{path}:{number}: incremental file {info.name!r} has seq {info.seq}, "
                                   f"not above the previous {incrs[-1].seq}")
                incrs.append(info)
            else:
                history.append(info)
        if base is None and not incrs:
            raise AofError(f"{path}: the manifest lists no files")
        return cls(base, tuple(incrs), tuple(history))


def _parse_manifest_line(line: str, where: str) -> AofInfo:
    if len(line) > MAX_MANIFEST_LINE:
        raise AofError(f"{where}: manifest line longer than {MAX_MANIFEST_LINE} bytes")
    words = line.split()
    if len(words) % 2:
        raise AofError(f"{where}: bad manifest line {line!r}: expected 'file NAME seq N type b|h|i'")
    fields = dict(zip(words[::2], words[1::2]))
    name, seq, kind = fields.get("file"), fields.get("seq"), fields.get("type")
    if not name or not seq or not seq.isdigit() or kind not in ("b", "h", "i"):
        raise AofError(f"{where}: bad manifest line {line!r}: expected 'file NAME seq N type b|h|i'")
    if "/" in name or name in (".", ".."):
        raise AofError(f"{where}: file name {name!r} is not a plain name inside {AOF_DIR}/")
    return AofInfo(name, int(seq), kind)


def base_name(seq: int) -> str:
    return f"{PREFIX}.{seq}.base.aof"


def incr_name(seq: int) -> str:
    return f"{PREFIX}.{seq}.incr.aof"


# ----- scanning files ---------------------------------------------------------
@dataclass
class FileScan:
    """What one pass over one AOF file found."""

    commands: int = 0
    good_bytes: int = 0            # offset just past the last whole command
    size: int = 0
    problem: str = ""              # "" when clean, else what is wrong
    problem_offset: int = 0        # the byte where the problem was seen
    torn: bool = False             # the problem is an incomplete command at the very end


class StopScan(Exception):
    """Raised by an ``on_commands`` callback to stop :func:`scan_file` at command ``index``."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def scan_file(path: Path, on_commands: Optional[Callable[[List[List[bytes]]], None]] = None,
              chunk_bytes: int = READ_CHUNK_BYTES) -> FileScan:
    """Read ``path`` in chunks of whole commands; ``on_commands`` sees each batch.

    Stops at the first malformed byte, or when ``on_commands`` raises
    :class:`StopScan` (then ``problem`` is its message, at that command's offset).
    """
    result = FileScan()
    with open(path, "rb") as f:
        result.size = os.fstat(f.fileno()).st_size
        carry, base = b"", 0                        # base: file offset of carry[0]
        while True:
            chunk = f.read(chunk_bytes)
            data = carry + chunk if carry else chunk
            scan = scan_commands(data, 0)
            if on_commands is not None and scan.commands:
                try:
                    on_commands(scan.commands)
                except StopScan as stop:
                    offset = base + scan_commands(data, 0, limit=stop.index).end
                    result.commands += stop.index
                    result.good_bytes, result.problem, result.problem_offset = offset, stop.message, offset
                    return result
            result.commands += len(scan.commands)
            result.good_bytes = base + scan.end
            if scan.error is not None:
                result.problem = scan.error
                result.problem_offset = base + (scan.error_offset if scan.error_offset is not None else scan.end)
                return result
            if not chunk:
                if scan.truncated:
                    result.problem, result.torn = "incomplete command at the end of the file", True
                    result.problem_offset = result.good_bytes
                return result
            carry, base = data[scan.end:], base + scan.end


# ----- the directory lock -------------------------------------------------------
class DirLock:
    """An exclusive ``flock`` on ``DIR/aof.lock``, so one process at a time uses a directory.

    The lock file holds the owner's pid, for the refusal message.  A crashed
    owner releases the lock with its last descriptor, so no stale lock stays.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; raises :class:`AofLocked` if another process holds it."""
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AofLocked(f"data directory {self.data_dir} is in use by another process (pid {holder} "
                                f"holds {self.path}); stop it or choose another directory") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AofError(f"{path} is not a text manifest") from None
    return Manifest.parse(text, path)


def replayer(engine: Any, now_ms: int) -> Callable[[List[List[bytes]]], None]:
    """An ``on_commands`` callback replaying into ``engine``; StopScan at the first rejected command.

    Uses the engine's batch ``replay_all(commands, now_ms) -> None | (index, why)``
    (one call per chunk: the per-command overhead dominates a big load), or
    ``replay(args, now_ms) -> None | why`` one by one for engines without it.
    """
    replay_all = getattr(engine, "replay_all", None)
    if replay_all is None:
        replay = engine.replay

        def replay_all(commands: List[List[bytes]], now: int) -> Optional[Tuple[int, str]]:
            for index, args in enumerate(commands):
                why = replay(args, now)
                if why:
                    return index, why
            return None

    def on_commands(commands: List[List[bytes]]) -> None:
        problem = replay_all(commands, now_ms)
        if problem is not None:
            index, why = problem
            args = commands[index]
            name = args[0].decode("utf-8", "replace") if args else "?"
            raise StopScan(index, f"command {name!r} failed: {why}")

    return on_commands
