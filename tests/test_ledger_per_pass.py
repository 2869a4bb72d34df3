"""The worker's process ledger writes once per loop pass, and a kill -9 after a pass loses nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import child_env, pid_gone, wait_until
from titan.io.loop import Loop
from titan.io.reaper import ProcessLedger
from titan.roles.worker.server import Worker, WorkerConfig


def test_the_starts_and_ends_of_one_pass_reach_the_file_in_one_write_at_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a ledger written once per pass of a loop, with a group that has ended
    loop = Loop()
    ledger = ProcessLedger(tmp_path)
    ledger.lock()
    ledger.write_per_pass(loop)
    log = tmp_path / "procs.log"
    ledger.record(100, "old#1", 1, start=4)
    loop.run_once(0)
    ledger.forget(100)
    writes: List[int] = []          # the size of each write syscall from here on
    real_write = os.write

    def counted_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counted_write)
    seen_mid_pass: List[str] = []

    def start_three() -> None:
        for pid in (101, 102, 103):
            ledger.record(pid, f"t{pid}#1", 1, start=5)
        seen_mid_pass.append(log.read_text())

    # When a pass starts three groups
    loop.call_later(0, start_three)
    loop.run_once(0)
    # Then nothing was written during the pass, and one write at its end holds the end and the starts
    assert seen_mid_pass == ["+ 100 4 old#1 1\n"]
    new = "- 100\n+ 101 5 t101#1 1\n+ 102 5 t102#1 1\n+ 103 5 t103#1 1\n"
    assert log.read_text() == "+ 100 4 old#1 1\n" + new
    assert writes == [len(new)]
    # ... and a pass with nothing new writes nothing
    loop.run_once(0)
    assert writes == [len(new)]
    ledger.close()
    loop.close()


def test_a_ledger_closed_mid_pass_writes_what_it_noted(tmp_path: Path) -> None:
    loop = Loop()
    ledger = ProcessLedger(tmp_path)
    ledger.lock()
    ledger.write_per_pass(loop)
    ledger.record(101, "a#1", 1, start=5)
    ledger.record(102, "b#1", 1, start=6)
    ledger.forget(101)
    ledger.close()                  # a worker stopping: no pass end comes
    loop.close()
    assert (tmp_path / "procs.log").read_text() == "+ 101 5 a#1 1\n+ 102 6 b#1 1\n- 101\n"


def test_a_full_disk_only_warns_once_and_the_ledger_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # Given a ledger written once per pass, on a disk that refuses writes
    loop = Loop()
    ledger = ProcessLedger(tmp_path)
    ledger.lock()
    ledger.write_per_pass(loop)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    # When two passes start a group each
    for pid in (101, 102):
        ledger.record(pid, f"t{pid}#1", 1, start=5)
        loop.run_once(0)
    # Then the worker goes on, warned once
    assert [r.message for r in caplog.records].count(
        f"cannot write {tmp_path / 'procs.log'} (No space left on device): "
        "a worker killed now could not stop every task it ran") == 1
    # ... and once the disk has room again, the next pass writes
    monkeypatch.setattr(os, "write", real_write)
    ledger.record(103, "t103#1", 1, start=5)
    loop.run_once(0)
    assert (tmp_path / "procs.log").read_text() == "+ 103 5 t103#1 1\n"
    ledger.close()
    loop.close()


# A process that starts three real process groups in one loop pass, prints
# their pids and what the ledger file held mid-pass, and then SIGKILLs itself
# right after the pass: the next life must find all three.
_KILLED_AFTER_A_PASS = """
import os, signal, subprocess, sys
from pathlib import Path
from titan.io.loop import Loop
from titan.io.proc import boot_ticks
from titan.io.reaper import ProcessLedger

data = Path(sys.argv[1])
loop = Loop()
ledger = ProcessLedger(data)
ledger.lock()
ledger.write_per_pass(loop)

def start_three():
    for n in range(3):
        ticks = boot_ticks()
        child = subprocess.Popen(["sleep", "300"], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ledger.record(child.pid, f"t{n}#1", 1, ticks)
        print(child.pid)
    print(len((data / "procs.log").read_bytes()) if (data / "procs.log").exists() else 0, flush=True)

loop.call_later(0, start_three)
loop.run_once(0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_killed_right_after_a_pass_leaves_every_group_of_that_pass_on_file(tmp_path: Path) -> None:
    # Given a process that starts three groups in one pass and is killed with SIGKILL right after it
    proc = subprocess.run([sys.executable, "-c", _KILLED_AFTER_A_PASS, str(tmp_path)], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    *pids, size_mid_pass = [int(word) for word in proc.stdout.split()]
    try:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert len(pids) == 3 and size_mid_pass == 0        # nothing written until the pass ended
        assert not any(pid_gone(pid) for pid in pids), "the groups died with their parent; nothing to reap"
        # When the next life opens the ledger
        ledger = ProcessLedger(tmp_path)
        ledger.lock()
        done = ledger.reap()
        ledger.close()
        # Then it kills all three groups
        assert len(done) == 3 and all(line.startswith("killed 1 process(es)") for line in done), done
        wait_until(lambda: all(pid_gone(pid) for pid in pids), 10, "the leftover groups to die")
    finally:
        for pid in pids:
            if not pid_gone(pid):
                os.killpg(pid, signal.SIGKILL)


def test_an_ended_group_leaves_the_ledger_before_the_next_attempt_is_recorded(tmp_path: Path) -> None:
    """The next attempt may get the reaped leader's pid: its "+" must come after the "-"."""
    worker = Worker(WorkerConfig(master=("127.0.0.1", 9), name="w", data_dir=tmp_path / "w", slots=1))
    try:
        # Given a worker with one slot, a quick attempt running and a second one waiting for the slot
        for task in ("first", "second"):
            worker._dispatched({"task": task, "attempt": 1, "argv": ["true"]})
        assert list(worker.ahead) == [("second", 1)]
        # When the first ends and the second starts in its place
        wait_until(lambda: worker.loop.run_once(0.05) or not worker.jobs and not worker.ahead, 10,
                   "both attempts to end")
        # Then the ledger notes the first group's end before the second group's start
        lines = (tmp_path / "w" / "procs.log").read_text().splitlines()
        first, second = (line.split()[1] for line in lines if line.startswith("+"))
        assert lines.index(f"- {first}") < lines.index(next(line for line in lines if line.startswith(f"+ {second} ")))
    finally:
        worker.ledger.close()
        worker.loop.close()
