"""The operating-system seam for task processes: spawn, signal, reap.

Every attempt runs in a new session, so its process id is also the id of a
process group holding the whole tree it starts; signals go to that group so
grandchildren die with their parent.  On Linux a pidfd tells the event loop
when the process exits; elsewhere the caller polls.

:class:`OsProcesses` is the one real implementation; ``titan.testing`` ships
a hand-written fake with the same methods.
"""
from __future__ import annotations

import errno
import os
import signal
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["Spawned", "OsProcesses", "titan_command", "titan_env", "process_start_time"]


class Spawned:
    """A started process: its pid (= process group id) and its pipes."""

    __slots__ = ("pid", "stdout_fd", "stderr_fd", "pidfd", "returncode")

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int, pidfd: Optional[int]) -> None:
        self.pid = pid
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.pidfd = pidfd
        self.returncode: Optional[int] = None


class OsProcesses:
    """Real processes (the seam tests replace).

    Spawning uses ``posix_spawn`` (a vfork under the hood: cheap even from a
    large parent) with ``setsid``; the working directory is set by a brief
    ``chdir`` around the call, which is safe because each role runs its loop
    on one thread.  Every signal starts at its default action: Python ignores
    SIGPIPE and SIGXFSZ, and an ignored signal would stay ignored across the
    exec (``yes | head -1`` would complain of a broken pipe instead of
    ending quietly, as it does from a shell).
    """

    def __init__(self) -> None:
        # The directory to come back to after a spawn: held open, so that coming
        # back works even if it is removed meanwhile.
        self.home_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Built once, not per spawn (and here, not at import: only POSIX systems spawn).
        self._stdin_devnull = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        self._exited_unreaped = os.WEXITED | os.WNOHANG | os.WNOWAIT      # waitid flags of has_exited

    def spawn(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> Spawned:
        """Start ``argv`` in its own session with piped, non-blocking output.

        Raises OSError (for example FileNotFoundError) if it cannot start.
        """
        path = env.get("PATH", os.defpath)
        try:
            return self._spawn(_resolve(argv[0], path), argv, cwd, env)
        except FileNotFoundError:
            if _FOUND.pop((argv[0], path), None) is None:
                raise
            return self._spawn(_resolve(argv[0], path), argv, cwd, env)   # the cached path went away

    def _spawn(self, program: str, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> Spawned:
        out_r, out_w = os.pipe()
        try:
            err_r, err_w = os.pipe()
        except OSError:                 # out of descriptors: give back the first pair
            os.close(out_r)
            os.close(out_w)
            raise
        actions = [self._stdin_devnull, (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            os.chdir(cwd)
            try:
                pid = os.posix_spawn(program, list(argv), env, file_actions=actions, setsid=True,
                                     setsigdef=_ALL_SIGNALS)
            finally:
                os.fchdir(self.home_fd)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        # The read ends stay blocking: the loop reads them only when they are
        # readable.  ``read_available`` switches them to non-blocking first.
        return Spawned(pid, out_r, err_r, None)

    def kill_group(self, pgid: int, sig: int) -> bool:
        """Signal every process in group ``pgid``; False if none is left."""
        try:
            os.killpg(pgid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def has_exited(self, spawned: Spawned) -> bool:
        """True once the process has exited; it stays unreaped (its group id stays reserved)."""
        if spawned.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, spawned.pid, self._exited_unreaped) is not None
        except ChildProcessError:
            return True

    def watch_exit(self, spawned: Spawned) -> Optional[int]:
        """A pidfd that turns readable when the process exits (None where there is none)."""
        if spawned.pidfd is None:
            spawned.pidfd = _pidfd(spawned.pid)
        return spawned.pidfd

    def poll(self, spawned: Spawned) -> Optional[int]:
        """Reap the process if it has exited: its exit status (negative: signal)."""
        if spawned.returncode is None:
            try:
                pid, status = os.waitpid(spawned.pid, os.WNOHANG)
            except ChildProcessError:
                spawned.returncode = -signal.SIGKILL
                return spawned.returncode
            if pid:
                spawned.returncode = os.waitstatus_to_exitcode(status)
        return spawned.returncode

    def read_available(self, fd: int, max_bytes: int = 65536) -> Optional[bytes]:
        """Like :meth:`read`, but never blocks, whatever the loop said about ``fd``."""
        os.set_blocking(fd, False)
        return self.read(fd, max_bytes)

    def read(self, fd: int, max_bytes: int = 65536) -> Optional[bytes]:
        """Read what is there: bytes, b"" at end of file, None if nothing yet.

        Call it when the loop reports ``fd`` readable (or use read_available).
        """
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    def release(self, spawned: Spawned) -> None:
        """Close the pipes and the pidfd of a finished process."""
        fds = [spawned.stdout_fd, spawned.stderr_fd]
        if spawned.pidfd is not None:       # only where its exit had to be watched on its own
            fds.append(spawned.pidfd)
            spawned.pidfd = None
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        spawned.stdout_fd = spawned.stderr_fd = -1


_FOUND: Dict[Tuple[str, str], str] = {}
_ALL_SIGNALS = signal.valid_signals()


def _resolve(program: str, path: str) -> str:
    """Find ``program`` on ``path`` the way execvp would (the task's PATH).

    Hits are remembered (``spawn`` forgets one that fails); a miss is looked
    up again every time, so a program installed later is found.
    """
    if "/" in program:
        return program
    key = (program, path)
    found = _FOUND.get(key)
    if found is not None:
        return found
    found = shutil.which(program, path=path)
    if found is None:
        _FOUND.pop(key, None)
        raise FileNotFoundError(errno.ENOENT, "not found on PATH", program)
    if len(_FOUND) < 1024:
        _FOUND[key] = found
    return found


def _pidfd(pid: int) -> Optional[int]:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _clock_ticks_per_s() -> Optional[int]:
    try:
        return os.sysconf("SC_CLK_TCK") if hasattr(time, "CLOCK_BOOTTIME") else None
    except (OSError, ValueError):
        return None


_TICKS_PER_S = _clock_ticks_per_s()


def boot_ticks() -> Optional[int]:
    """Now, in the clock ticks since boot that ``/proc/PID/stat`` counts start times in (Linux)."""
    if _TICKS_PER_S is None:
        return None
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS_PER_S)


def process_start_time(pid: int) -> Optional[int]:
    """The start time of ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def titan_command() -> List[str]:
    """argv that starts this same Titan (checkout, installed package or zipapp)."""
    return [sys.executable, "-m", "titan"]


def titan_env(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment in which :func:`titan_command` finds this Titan's code."""
    env = dict(os.environ if base is None else base)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parts = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


KILL_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "INT": signal.SIGINT}
