"""Zombie reaping: a worker's record of the process groups it starts, and the cleanup of a past life's.

    DATA/worker.lock     held (flock) for the worker's life: one worker per data directory
    DATA/procs.log       "+ PGID START_TICKS TASK ATTEMPT" when an attempt starts, "- PGID" when it ends

A worker killed with SIGKILL leaves its tasks' process groups running.  When
a worker starts on the same data directory it reads the records and kills
those groups, checking each leader's start time, so a pid the system has
since given to another process is never hit.

The worker's ledger writes once per pass of its event loop, not once per
attempt (a syscall per task adds up at thousands of tasks a second):

    pass: reads, timers ──record / forget──▶ lines kept in memory
          end of pass (pass hook) ──flush──▶ one os.write of all of them
          select: the worker sleeps only with every started group in the file

The file lives in the page cache once written, so it survives the worker's
death (not a power loss, which ends the groups too).  A SIGKILL landing
mid-pass loses the lines of that pass alone: the groups started since the
pass began go unrecorded (their pids are in no file yet) and are left
running, as are groups whose lines a refused write dropped (the worker warns
and goes on: its tasks matter more than this record).  A ledger not tied to
a loop writes each start at once.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from titan.errors import TitanError
from titan.io.proc import process_start_time

if TYPE_CHECKING:
    from titan.io.loop import Loop

__all__ = ["DataDirLocked", "ProcessLedger", "START_SLACK_TICKS"]

# A recorded start time is taken just before the spawn, so the real one is
# the same tick or a little later.  A pid reused within this window would
# need the whole pid space to wrap around in it.
START_SLACK_TICKS = 100

logger = logging.getLogger(__name__)


class DataDirLocked(TitanError):
    """Raised when another worker already uses the data directory."""


class ProcessLedger:
    """Locks a worker's data directory and records its attempts' process groups.

    The record is an append-only file: a line per start, and a line per end
    that rides along with the next write.  Lines are written at each start,
    or, after :meth:`write_per_pass`, together at the end of each loop pass;
    :meth:`close` writes what is left.  Past ``compact_bytes`` it is
    rewritten with the groups still running, so a long-lived worker's file
    stays small.  :meth:`reap` replays it, kills what a previous life left,
    and empties it.
    """

    def __init__(self, data_dir: Path, *, compact_bytes: int = 1 << 20) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "procs.log"
        self.compact_bytes = compact_bytes      # past this size the file is rewritten with the live groups only
        self._lock_fd: Optional[int] = None
        self._fd: Optional[int] = None
        self._size = 0
        self._live: Dict[int, str] = {}         # pgid -> its "+" line, for compaction
        self._pending: List[str] = []           # lines noted, not written yet, in order
        self._per_pass = False                  # written by a loop's pass hook (see write_per_pass)

    def lock(self) -> None:
        """Take the directory for this worker, or raise DataDirLocked."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "worker.lock"
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirLocked(f"data directory {self.data_dir} is in use by another worker (pid {holder}); "
                                f"stop it or start this one with another --data") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    _failing = False    # the last write failed (full disk, ...)

    def write_per_pass(self, loop: Loop) -> None:
        """Write once at the end of each of ``loop``'s passes instead of at each start."""
        self._per_pass = True
        loop.add_pass_hook(self.flush)

    def flush(self) -> None:
        """Append the lines noted since the last flush, or warn that the disk refused them.

        A full disk must not stop the worker: its tasks run on, and what is
        not written costs only the reaping of those groups after a kill -9.
        """
        if not self._pending:
            return
        data = "".join(self._pending).encode()
        self._pending.clear()
        try:
            if self._fd is None:
                self._fd = self._open(self.path)
                self._size = os.fstat(self._fd).st_size
            self._size += os.write(self._fd, data)
            if self._size > self.compact_bytes:
                self._compact()
        except OSError as exc:
            if not self._failing:       # once per spell of failures, not once per pass
                logger.warning("cannot write %s (%s): a worker killed now could not stop every task it ran",
                               self.path, exc.strerror or exc)
            self._failing = True
            return
        self._failing = False

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _compact(self) -> None:
        """Rewrite the file with the groups still running (atomically: a crash leaves the old or the new)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = "".join(self._live.values()).encode()
        fd = self._open(tmp)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, data)
            os.replace(tmp, self.path)
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._size = fd, len(data)

    def record(self, pgid: int, task: str, attempt: int, start: Optional[int] = None) -> None:
        """Note a new group; ``start`` is :func:`boot_ticks` taken just before it was spawned.

        Reading the start time from ``/proc`` instead would wait on the child's
        exec and cost hundreds of microseconds per task on a busy host.
        """
        if start is None:
            start = process_start_time(pgid)
        line = f"+ {pgid} {start if start is not None else -1} {task} {attempt}\n"
        self._live[pgid] = line
        self._pending.append(line)
        if not self._per_pass:          # no pass end to wait for: written now
            self.flush()

    def forget(self, pgid: int) -> None:
        """Note that a group ended.  Written with the next record, or by :meth:`flush`: a "+"
        line whose "-" is lost only makes a restart check a pid that is gone (or reused)."""
        self._live.pop(pgid, None)
        self._pending.append(f"- {pgid}\n")

    def reap(self) -> List[str]:
        """Kill the groups a previous life left running; return what was done, one line each."""
        done = []
        for pgid, (start, task) in sorted(self._left_running().items()):
            killed = _kill_group(pgid, start)
            if killed:
                done.append(f"killed {killed} process(es) of {task} (process group {pgid})")
            elif process_start_time(pgid) is not None:
                done.append(f"left pid {pgid} alone: it is not {task}'s process any more (pid reused)")
        for line in done:
            logger.warning("reaping: %s", line)
        if self.path.exists():
            os.truncate(str(self.path), 0)
        return done

    def _left_running(self) -> Dict[int, Tuple[int, str]]:
        live: Dict[int, Tuple[int, str]] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return live
        for line in lines:
            parts = line.split()
            try:
                if parts[0] == "+" and len(parts) >= 4:
                    live[int(parts[1])] = (int(parts[2]), parts[3])
                elif parts[0] == "-" and len(parts) >= 2:
                    live.pop(int(parts[1]), None)
            except (ValueError, IndexError):
                continue             # a torn last line: its attempt had barely started
        return live

    def close(self) -> None:
        self.flush()
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


def _members(pgid: int, since: int) -> List[int]:
    """Live processes of group ``pgid`` started at or after ``since`` (clock ticks)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and int(fields[19]) >= since and fields[0] != "Z":
            out.append(int(name))
    return out


def _kill_group(pgid: int, start: int) -> int:
    """SIGKILL the group if its leader is ours (same start time) or gone; count its members."""
    leader_start = process_start_time(pgid)
    if leader_start is not None and not 0 <= leader_start - start <= START_SLACK_TICKS:
        return 0                        # the pid now belongs to someone else
    members = _members(pgid, start)
    if not members:
        return 0
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return 0
    return len(members)
