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
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

__all__ = ["Spawned", "OsProcesses", "titan_command", "titan_env", "process_start_time"]


class Spawned:
    """A started process: its pid (= process group id) and its pipes."""

    __slots__ = ("popen", "pid", "stdout_fd", "stderr_fd", "pidfd")

    def __init__(self, popen: "subprocess.Popen[bytes]", pidfd: Optional[int]) -> None:
        self.popen = popen
        self.pid = popen.pid
        assert popen.stdout is not None and popen.stderr is not None
        self.stdout_fd = popen.stdout.fileno()
        self.stderr_fd = popen.stderr.fileno()
        self.pidfd = pidfd


class OsProcesses:
    """Real processes (the seam tests replace)."""

    def spawn(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> Spawned:
        """Start ``argv`` in its own session with piped, non-blocking output.

        Raises OSError (for example FileNotFoundError) if it cannot start.
        """
        popen = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        assert popen.stdout is not None and popen.stderr is not None
        os.set_blocking(popen.stdout.fileno(), False)
        os.set_blocking(popen.stderr.fileno(), False)
        return Spawned(popen, _pidfd(popen.pid))

    def kill_group(self, pgid: int, sig: int) -> bool:
        """Signal every process in group ``pgid``; False if none is left."""
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False

    def poll(self, spawned: Spawned) -> Optional[int]:
        """The exit status once the process has exited (negative: signal)."""
        return spawned.popen.poll()

    def read(self, fd: int, max_bytes: int = 65536) -> Optional[bytes]:
        """Read what is there: bytes, b"" at end of file, None if nothing yet."""
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
        for stream in (spawned.popen.stdout, spawned.popen.stderr):
            if stream is not None:
                stream.close()
        if spawned.pidfd is not None:
            os.close(spawned.pidfd)
            spawned.pidfd = None


def _pidfd(pid: int) -> Optional[int]:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


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
