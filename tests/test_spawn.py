"""Starting a task's process: exactly once, and nothing leaked when it cannot start.

Each check runs in a child Python, since it changes that process's working
directory or its descriptor limit.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import child_env

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, tmp_path: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_task_starts_once_even_if_the_workers_own_directory_is_removed(tmp_path: Path) -> None:
    out = _run("""
        import os, sys
        sys.path.insert(0, os.getcwd())
        from titan.io.proc import OsProcesses
        tmp = sys.argv[1]
        home, work = os.path.join(tmp, "home"), os.path.join(tmp, "work")
        os.mkdir(home); os.mkdir(work)
        os.chdir(home)
        procs = OsProcesses()
        os.rmdir(home)                                  # the worker's directory goes away
        marks = os.path.join(tmp, "marks")
        spawned = procs.spawn(["sh", "-c", f"echo started >> {marks}"], cwd=work, env=dict(os.environ))
        os.waitpid(spawned.pid, 0)
        procs.release(spawned)
        print(open(marks).read().count("started"))
    """, tmp_path)
    assert out == "1"


def test_running_out_of_descriptors_fails_the_start_and_leaks_none(tmp_path: Path) -> None:
    out = _run("""
        import os, resource, sys
        sys.path.insert(0, os.getcwd())
        from titan.io.proc import OsProcesses
        procs = OsProcesses()
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        while True:                                     # use up all but two descriptors
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        os.close(held.pop()); os.close(held.pop())
        before = len(os.listdir("/proc/self/fd"))
        try:
            procs.spawn(["true"], cwd=sys.argv[1], env=dict(os.environ))
            print("started")
        except OSError as exc:
            print(exc.strerror, len(os.listdir("/proc/self/fd")) - before)
    """, tmp_path)
    assert out == "Too many open files 0"
