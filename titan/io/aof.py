"""TitanStore's append-only file, in Redis 7's multi-part layout.

What this module owns: the live use of ``DIR/appendonlydir/`` (loading,
appending, fsync, rewriting), under the lock ``DIR/aof.lock``.  The layout
is exactly Redis 7's, so ``redis-check-aof`` validates it and a stock
``redis-server`` started on ``DIR`` loads it (names, manifest, scanning and
the lock are in :mod:`titan.io.aoffiles`)::

    DIR/appendonlydir/appendonly.aof.manifest     which files, in which order
    DIR/appendonlydir/appendonly.aof.3.base.aof   the keyspace at the last rewrite
    DIR/appendonlydir/appendonly.aof.5.incr.aof   every write since (RESP commands)

The flow of a write, once per loop pass (group commit)::

    engine.execute -> append(commands)        buffered in memory
    loop pass hook -> flush()                 one write(), one fsync (policy always)
                   -> replies sent            only after flush() said the data is safe

A rewrite (compaction) never stalls the loop::

    start_rewrite:  flush, open incr N+1, manifest = old base + old incrs + incr N+1,
                    fork: the child writes temp-rewriteaof-bg-PID.aof from engine.dump()
    poll_rewrite:   (timer) waitpid(WNOHANG); on success rename the temp file to
                    base M+1, manifest = base M+1 + incr N+1 (temp + fsync + rename
                    + fsync dir), then delete the files no longer referenced

Every OS call the durability logic depends on goes through
:class:`~titan.io.aoffiles.FileOps`, the seam tests replace to simulate a
full disk or a failing fsync.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence

from titan.io.aoffiles import (
    AOF_DIR, LOCK_NAME, MANIFEST_NAME, PREFIX, AofCorrupt, AofError, AofInfo, AofLocked, DirLock, FileOps, FileScan,
    Manifest, StopScan, base_name, incr_name, read_manifest, replayer, scan_file,
)
from titan.store.resp import encode_command

__all__ = [
    "AppendOnlyFile", "LoadReport", "RewriteJob", "FSYNC_POLICIES",
    # re-exported from titan.io.aoffiles, so callers need one import
    "AofError", "AofCorrupt", "AofLocked", "DirLock", "FileOps", "AofInfo", "Manifest", "FileScan",
    "StopScan", "scan_file", "read_manifest", "replayer", "AOF_DIR", "MANIFEST_NAME", "LOCK_NAME",
]

logger = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "everysec", "no")
CHILD_WRITE_BYTES = 4 * 1024 * 1024


# ----- the append-only file -----------------------------------------------------
@dataclass
class RewriteJob:
    """A background rewrite in flight: the forked child and the files it replaces."""

    pid: int
    temp_path: Path
    new_incr: AofInfo
    replaced: List[AofInfo]
    started: float


@dataclass
class LoadReport:
    """What :meth:`AppendOnlyFile.load` replayed."""

    files: int = 0
    commands: int = 0
    truncated: List[str] = field(default_factory=list)


class AppendOnlyFile:
    """Durable storage of an engine's writes in ``DIR/appendonlydir/``.

    Use: ``open()`` (lock, read or create the manifest), ``load(engine, now_ms)``,
    then per loop pass ``append(...)`` as commands run and ``flush()`` before
    replies go out; from a timer ``poll_rewrite()``, and ``start_rewrite()``
    when ``rewrite_due()`` (or on demand); ``close()`` at the end.
    """

    def __init__(self, data_dir: Path, *, fsync: str = "always", rewrite_percentage: int = 100,
                 rewrite_min_bytes: int = 64 * 1024 * 1024, rewrite_retry_s: float = 60.0,
                 retry_interval_s: float = 1.0,
                 ops: Optional[FileOps] = None, clock: Callable[[], float] = time.monotonic) -> None:
        if fsync not in FSYNC_POLICIES:
            raise AofError(f"bad fsync policy {fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        self.data_dir = Path(data_dir)
        self.aof_dir = self.data_dir / AOF_DIR
        self.manifest_path = self.aof_dir / MANIFEST_NAME
        self.fsync_policy = fsync
        self.rewrite_percentage = rewrite_percentage
        self.rewrite_min_bytes = rewrite_min_bytes
        self.rewrite_retry_s = rewrite_retry_s
        self.retry_interval_s = retry_interval_s
        self.ops = ops or FileOps()
        self.clock = clock
        self.manifest = Manifest(None)
        self.error: Optional[OSError] = None        # the last write/fsync failure, until one succeeds
        self.rewrite: Optional[RewriteJob] = None
        self.rewrites_done = 0
        self.lock = DirLock(self.data_dir)
        self._fd: Optional[int] = None              # the last incremental file, opened for append
        self._pending = bytearray()                 # appended, not yet durable
        self._written = 0                           # bytes of _pending already written to _fd
        self._durable = 0                           # size of the incr file known to be on disk
        self._failed = False                        # the incr file's tail past _durable is suspect
        self._failed_at = 0.0
        self._last_fsync = clock()
        self._base_bytes = 0
        self._old_incr_bytes = 0                    # incr files before the current one
        self._next_rewrite_at = 0.0
        self._syncing = 0                           # bytes of _pending an async fsync is making durable
        self.appended_total = 0                     # bytes ever appended since open (a position)
        self.durable_total = 0                      # of those, bytes known to be on disk

    # ----- open and load -------------------------------------------------
    def open(self) -> None:
        """Lock the directory and read the manifest (creating an empty AOF if there is none)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        self.aof_dir.mkdir(exist_ok=True)
        self._remove_temp_files()
        if self.manifest_path.exists():
            self.manifest = read_manifest(self.manifest_path)
            self._drop_history()
            for info in self.manifest.files:
                if not (self.aof_dir / info.name).is_file():
                    raise AofError(f"{self.manifest_path} lists {info.name!r}, which is missing from {self.aof_dir}")
                if info.kind == "b" and not info.name.endswith(".aof"):
                    raise AofError(f"{self.aof_dir / info.name} is an RDB base file; titan reads only AOF: "
                                   f"in redis run CONFIG SET aof-use-rdb-preamble no, then BGREWRITEAOF")
        elif any(self.aof_dir.glob(PREFIX + ".*")):
            raise AofError(f"{self.aof_dir} holds AOF files but no {MANIFEST_NAME}: refusing to start empty "
                           f"over them; restore the manifest, or move the files away")
        else:
            self._create_empty()

    def _drop_history(self) -> None:
        """Delete the files a Redis-written manifest keeps as history (Redis deletes them too)."""
        old = self.manifest
        if not old.history:
            return
        self._write_manifest(Manifest(old.base, old.incrs))
        for info in old.history:
            logger.info("deleting %s, a history file of an earlier rewrite", info.name)
            _unlink(self.aof_dir / info.name)

    def _remove_temp_files(self) -> None:
        for path in self.aof_dir.glob("temp-*"):
            logger.info("removing %s left by an interrupted rewrite", path)
            path.unlink()

    def _create_empty(self) -> None:
        base, incr = AofInfo(base_name(1), 1, "b"), AofInfo(incr_name(1), 1, "i")
        for info in (base, incr):
            self.ops.close(self.ops.create_new(self.aof_dir / info.name))
        self.ops.fsync_dir(self.aof_dir)
        self._write_manifest(Manifest(base, (incr,)))

    def load(self, engine: Any, now_ms: int) -> LoadReport:
        """Replay the base file, then each incremental file, into ``engine``.

        A torn tail of the last incremental file is cut off (with a warning);
        any other bad byte raises :class:`AofCorrupt`.
        """
        if not self.lock.held:
            self.open()
        report = LoadReport()
        files = self.manifest.files
        collecting = gc.isenabled()
        gc.disable()                  # millions of new containers would trigger full collections
        try:
            for index, info in enumerate(files):
                last = index == len(files) - 1 and info.kind == "i"
                report.commands += self._load_file(info, engine, now_ms, last, report)
                report.files += 1
        finally:
            if collecting:
                gc.enable()
        self._base_bytes = self._size_of(self.manifest.base)
        self._open_last_incr()
        return report

    def _load_file(self, info: AofInfo, engine: Any, now_ms: int, last: bool, report: LoadReport) -> int:
        path = self.aof_dir / info.name
        result = scan_file(path, replayer(engine, now_ms))
        if not result.problem:
            return result.commands
        if last and result.torn:
            logger.warning("%s: torn tail: the last command is incomplete; truncating the file at byte "
                           "offset %d (from %d bytes), keeping %d whole commands", path, result.good_bytes,
                           result.size, result.commands)
            os.truncate(str(path), result.good_bytes)
            report.truncated.append(f"{path} at byte offset {result.good_bytes}")
            return result.commands
        what = "a torn (incomplete) command" if result.torn else result.problem
        raise AofCorrupt(f"{path}: {what} at byte offset {result.problem_offset} (after {result.commands} "
                         f"whole commands): run `titan store check {self.data_dir} --fix` to see and repair it",
                         path=path, offset=result.problem_offset)

    def _size_of(self, info: Optional[AofInfo]) -> int:
        if info is None:
            return 0
        try:
            return (self.aof_dir / info.name).stat().st_size
        except FileNotFoundError:
            return 0

    def _open_last_incr(self) -> None:
        incrs = self.manifest.incrs
        if not incrs:                                         # a manifest with a base only
            seq = max([i.seq for i in self.manifest.history if i.kind == "i"] + [0]) + 1
            info = AofInfo(incr_name(seq), seq, "i")
            self._fd = self.ops.create_new(self.aof_dir / info.name)
            self.ops.fsync_dir(self.aof_dir)
            self._write_manifest(Manifest(self.manifest.base, (info,)))
            incrs = self.manifest.incrs
        else:
            self._fd = self.ops.open_append(self.aof_dir / incrs[-1].name)
        self._durable = os.fstat(self._fd).st_size
        self._old_incr_bytes = sum(self._size_of(i) for i in incrs[:-1])

    def _write_manifest(self, manifest: Manifest) -> None:
        self.ops.write_file_atomic(self.manifest_path, manifest.text().encode())
        self.manifest = manifest

    # ----- appending -------------------------------------------------------
    @property
    def broken(self) -> bool:
        """True while the last write or fsync failed and has not been retried successfully."""
        return self.error is not None

    @property
    def pending_bytes(self) -> int:
        return len(self._pending) - self._written

    def append(self, commands: Iterable[Sequence[bytes]]) -> None:
        """Buffer ``commands``; they reach the file at the next :meth:`flush`."""
        pending = self._pending
        before = len(pending)
        for args in commands:
            pending += encode_command(args)  # type: ignore[arg-type]
        self.appended_total += len(pending) - before

    def append_encoded(self, data: bytes) -> None:
        """Buffer commands already in RESP form (see :meth:`titan.store.engine.Engine.put_string`)."""
        self._pending += data
        self.appended_total += len(data)

    @property
    def syncing(self) -> bool:
        """True while an fsync started by :meth:`flush_async` has not reported back."""
        return self._syncing > 0

    def flush_async(self, request_fsync: Callable[[int], None]) -> bool:
        """Write what is buffered; under policy ``always``, have it fsynced off the loop.

        ``request_fsync(fd)`` hands the descriptor to a :class:`titan.io.syncer.Syncer`,
        whose completion must be passed to :meth:`sync_done`; then
        :attr:`durable_total` says how far the data is safe.  While an fsync
        runs, new data is written and waits for the next one (group commit).
        Other policies flush inline.  Returns False when writing failed.
        """
        if self.fsync_policy != "always":
            ok = self.flush()
            if ok:
                self.durable_total = self.appended_total
            return ok
        if self._syncing:
            return True            # sync_done starts the next fsync, covering what came meanwhile
        if self._fd is None:
            raise AofError("the AOF is not open")
        if not self._pending and not self._failed:
            return True
        if self._failed and self.clock() - self._failed_at < self.retry_interval_s:
            return False
        try:
            if self._failed:
                self.ops.truncate(self._fd, self._durable)
                self._written = 0
            self._write_pending()
        except OSError as exc:
            self._fail(exc)
            return False
        if self._written:
            self._syncing = self._written
            request_fsync(self._fd)
        return True

    def sync_done(self, error: Optional[OSError], request_fsync: Callable[[int], None]) -> None:
        """An fsync from :meth:`flush_async` finished; start the next one if data waits."""
        done, self._syncing = self._syncing, 0
        if error is not None:
            self._fail(error)
            return
        self._durable += done
        del self._pending[:done]
        self._written -= done
        self.durable_total += done
        self._last_fsync = self.clock()
        if self.error is not None:
            logger.warning("writing the AOF %s works again", self._current_path())
        self._failed, self.error = False, None
        if self._pending:
            self.flush_async(request_fsync)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            logger.error("writing the AOF %s failed: %s; refusing writes until it works again",
                         self._current_path(), exc.strerror or exc)
        # a copy without the traceback, which would pin a view of the buffer
        self._failed, self.error = True, OSError(exc.errno, exc.strerror or str(exc))
        self._failed_at = self.clock()

    def flush(self, *, force_fsync: bool = False, retry: bool = False) -> bool:
        """Write what :meth:`append` buffered, and fsync as the policy says.

        Returns True when every appended command is as durable as the policy
        promises; False (and sets :attr:`error`) when a write or fsync failed.
        The data is kept: after a failure, the next call with ``retry`` (a
        client wants to write) or the first one ``retry_interval_s`` later
        tries again.
        """
        if self._fd is None:
            raise AofError("the AOF is not open")
        if self._syncing:
            raise AofError("flush() while an fsync from flush_async() is still running")
        if not self._pending and not self._failed:
            return True
        if self._failed and not (retry or force_fsync) and self.clock() - self._failed_at < self.retry_interval_s:
            return False
        try:
            if self._failed:                       # the tail is suspect: rewrite it from the last good size
                self.ops.truncate(self._fd, self._durable)
                self._written = 0
            self._write_pending()
            self._sync_if_due(force_fsync)
        except OSError as exc:
            self._fail(exc)
            return False
        if self.error is not None:
            logger.warning("writing the AOF %s works again", self._current_path())
        self._failed, self.error = False, None
        return True

    def write_ahead(self) -> bool:
        """Write what is buffered to the file now and leave its fsync to the next flush.

        The commands then survive the process being killed; they are durable
        (:attr:`durable_total`) only after that flush.  Returns False when
        writing failed (:attr:`error` says why; the next flush retries).
        """
        if self._fd is None:
            raise AofError("the AOF is not open")
        if self._failed:
            return False
        if self._syncing:
            return True            # sync_done writes it, before the next fsync
        try:
            self._write_pending()
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def _write_pending(self) -> None:
        while self._written < len(self._pending):
            with memoryview(self._pending) as view:
                n = self.ops.write(self._fd, view[self._written:])  # type: ignore[arg-type]
            self._written += n

    def _sync_if_due(self, force: bool) -> None:
        policy = self.fsync_policy
        now = self.clock()
        if policy == "always" or force or (policy == "everysec" and now - self._last_fsync >= 1.0):
            if self._written:
                self.ops.fsync(self._fd)  # type: ignore[arg-type]
            self._last_fsync = now
        elif policy == "everysec":
            return                                  # keep the unsynced bytes for a retry after a failed fsync
        self._durable += self._written
        self.durable_total += self._written
        del self._pending[:self._written]
        self._written = 0

    def _current_path(self) -> Path:
        return self.aof_dir / (self.manifest.incrs[-1].name if self.manifest.incrs else "?")

    @property
    def size_bytes(self) -> int:
        return self._base_bytes + self._old_incr_bytes + self._durable + self._written

    # ----- rewriting -------------------------------------------------------
    def rewrite_due(self) -> bool:
        """True when the incremental files have outgrown the base (Redis's auto-aof-rewrite rule)."""
        if self.rewrite is not None or self.broken or self.clock() < self._next_rewrite_at:
            return False
        incr = self.size_bytes - self._base_bytes
        return self.size_bytes >= self.rewrite_min_bytes and incr * 100 >= max(self._base_bytes, 1) * \
            self.rewrite_percentage

    def start_rewrite(self, engine: Any, now_ms: int) -> bool:
        """Switch appends to a fresh incremental file and fork a child to write the new base.

        Returns False when a rewrite is already running or the AOF is failing.
        """
        if self.rewrite is not None or not self.flush(force_fsync=True):
            return False
        old = self.manifest
        seq = max([i.seq for i in old.incrs + old.history] + [0]) + 1
        new_incr = AofInfo(incr_name(seq), seq, "i")
        fd = self.ops.create_new(self.aof_dir / new_incr.name)
        try:
            self.ops.fsync_dir(self.aof_dir)
            self._write_manifest(Manifest(old.base, old.incrs + (new_incr,)))
        except OSError:
            self.ops.close(fd)
            raise
        self._old_incr_bytes += self._durable
        self.ops.close(self._fd)  # type: ignore[arg-type]
        self._fd, self._durable, self._written = fd, 0, 0
        temp = self.aof_dir / f"temp-rewriteaof-bg-{os.getpid()}-{seq}.aof"
        pid = self.ops.fork()
        if pid == 0:                                   # the child: never returns
            _child_rewrite(engine, now_ms, temp)
        replaced = ([old.base] if old.base else []) + list(old.incrs)
        self.rewrite = RewriteJob(pid, temp, new_incr, replaced, self.clock())
        logger.info("background AOF rewrite started by child %d (%d bytes of incremental files)",
                    pid, self._old_incr_bytes)
        return True

    def poll_rewrite(self) -> Optional[bool]:
        """Finish a rewrite whose child has exited; None while it runs (or none runs)."""
        job = self.rewrite
        if job is None:
            return None
        code = self.ops.wait_nohang(job.pid)
        if code is None:
            return None
        self.rewrite = None
        if code != 0 or not job.temp_path.exists():
            logger.error("background AOF rewrite failed (child %d exited with %s); keeping the old files, "
                         "retrying in %gs", job.pid, code, self.rewrite_retry_s)
            _unlink(job.temp_path)
            self._next_rewrite_at = self.clock() + self.rewrite_retry_s
            return False
        try:
            self._install_rewrite(job)
        except OSError as exc:
            logger.error("installing the rewritten AOF failed: %s; keeping the old files", exc)
            _unlink(job.temp_path)
            self._next_rewrite_at = self.clock() + self.rewrite_retry_s
            return False
        self.rewrites_done += 1
        return True

    def _install_rewrite(self, job: RewriteJob) -> None:
        old = self.manifest
        seq = (old.base.seq if old.base else 0) + 1
        base = AofInfo(base_name(seq), seq, "b")
        os.replace(job.temp_path, self.aof_dir / base.name)
        self.ops.fsync_dir(self.aof_dir)
        keep = tuple(i for i in old.incrs if i.seq >= job.new_incr.seq)
        self._write_manifest(Manifest(base, keep))
        for info in job.replaced:
            if info.name != base.name:
                _unlink(self.aof_dir / info.name)
        self._base_bytes = self._size_of(base)
        self._old_incr_bytes = sum(self._size_of(i) for i in keep[:-1])
        logger.info("background AOF rewrite done: new base %s (%d bytes), %d old files deleted, %.2fs",
                    base.name, self._base_bytes, len(job.replaced), self.clock() - job.started)

    def wait_rewrite(self, timeout_s: float = 60.0) -> Optional[bool]:
        """Block until a running rewrite ends (for shutdown and tests); its outcome."""
        deadline = self.clock() + timeout_s
        while self.rewrite is not None and self.clock() < deadline:
            outcome = self.poll_rewrite()
            if outcome is not None:
                return outcome
            time.sleep(0.005)
        return None

    # ----- closing ---------------------------------------------------------
    def close(self) -> None:
        """Final flush and fsync; stop a running rewrite (its files stay consistent); release the lock."""
        if self._fd is not None:
            if not self.flush(force_fsync=True):
                logger.error("the last %d bytes of the AOF could not be written: %s", len(self._pending),
                             self.error)
            if self.rewrite is not None:
                self._abort_rewrite()
            self.ops.close(self._fd)
            self._fd = None
        self.lock.release()

    def _abort_rewrite(self) -> None:
        """Kill the rewrite child; the manifest already lists the old files plus the new incr file."""
        job, self.rewrite = self.rewrite, None
        if job is None:
            return
        logger.info("stopping the background AOF rewrite (child %d) to shut down", job.pid)
        self.ops.kill_child(job.pid)
        _unlink(job.temp_path)

    def __enter__(self) -> "AppendOnlyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_rewrite(engine: Any, now_ms: int, temp: Path) -> None:
    """In the forked child: write ``engine``'s keyspace to ``temp``, fsync, exit 0 (1 on failure)."""
    code = 1
    try:
        gc.disable()                                   # touching every object would copy every page
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        fd = os.open(str(temp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _close_fds_except(fd)
        chunks: List[bytes] = []
        size = 0
        for args in engine.dump(now_ms):
            data = encode_command(args)
            chunks.append(data)
            size += len(data)
            if size >= CHILD_WRITE_BYTES:
                _write_all(fd, b"".join(chunks))
                chunks, size = [], 0
        _write_all(fd, b"".join(chunks))
        os.fsync(fd)
        os.close(fd)
        code = 0
    except BaseException as exc:  # the child must always reach os._exit
        try:
            os.write(2, f"titan: AOF rewrite child failed: {exc!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _close_fds_except(keep: int) -> None:
    """Close inherited descriptors (sockets, the lock, the selector) above stderr, but ``keep``."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        return
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
