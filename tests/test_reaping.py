"""Zombie reaping: a worker cleans up the process groups a previous life left, and only those."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from conftest import TitanProcs, child_env, cli_argv, pid_gone, wait_until
from titan.sdk.client import Client


def test_a_restarted_worker_kills_what_its_killed_predecessor_left_running(
        titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a worker running `sh -c 'sleep 300 & sleep 300'` with its data in w1/
    master = titan_procs.start_master()
    worker = titan_procs.start_worker(master.address, "w1", slots=1)
    titan_procs.wait_ready(master.address, ["w1"])
    pids = tmp_path / "pids"
    with Client(master.address, token="") as c:
        c.submit(f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; sleep 300", watch=False)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 20, "the task to start")
    left = [int(p) for p in pids.read_text().split()]
    # (The worker writes the record just after the spawn returns: on a busy host the task can
    # already have written its pids by then, and a kill in between would leave nothing to reap.)
    ledger = titan_procs.base_dir / "w1" / "procs.log"
    wait_until(lambda: ledger.exists() and f"+ {left[1]} " in ledger.read_text(), 10, "the worker to record the task")
    # When the worker is killed with SIGKILL (its task's processes live on) ...
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert not any(pid_gone(p) for p in left), "the task died with its worker; nothing to reap"
    # ... and a worker starts again on the same data directory
    titan_procs.start_worker(master.address, "w1", slots=1)
    # Then the leftover processes are killed, and the worker says so in its log
    wait_until(lambda: all(pid_gone(p) for p in left), 20, lambda: f"the leftovers to die\n{titan_procs.logs()}")
    wait_until(lambda: "reaping: killed" in (tmp_path / "procs" / "w1.log").read_text(), 10, "the reaping log line")


def test_a_recorded_pid_that_now_belongs_to_another_process_is_left_alone(titan_procs: TitanProcs,
                                                                        tmp_path: Path) -> None:
    # Given a record of a process group whose pid is now some other, unrelated process
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        data = titan_procs.base_dir / "w1"
        data.mkdir(parents=True)
        (data / "procs.log").write_text(f"+ {bystander.pid} 1 old-task#1 1\n")   # start time 1: not it
        # When a worker starts on that directory
        master = titan_procs.start_master()
        titan_procs.start_worker(master.address, "w1", slots=1)
        titan_procs.wait_ready(master.address, ["w1"])
        # Then the unrelated process is still alive
        assert bystander.poll() is None
        assert "left pid" in (titan_procs.base_dir / "w1.log").read_text()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_second_worker_on_the_same_data_directory_is_refused(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "w1", slots=1)
    titan_procs.wait_ready(master.address, ["w1"])
    proc = subprocess.run(cli_argv("worker", "--master", master.address, "--name", "w2",
                                   "--data", str(titan_procs.base_dir / "w1")),
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "is in use by another worker" in proc.stderr and "Traceback" not in proc.stderr


def test_the_ledger_writes_an_end_with_the_next_start_or_at_the_end_of_the_pass(tmp_path: Path) -> None:
    from titan.io.reaper import ProcessLedger
    ledger = ProcessLedger(tmp_path)
    ledger.lock()
    log = tmp_path / "procs.log"
    ledger.record(101, "a#1", 1, start=5)
    ledger.forget(101)
    assert log.read_text() == "+ 101 5 a#1 1\n"                 # the end waits for company
    ledger.record(102, "b#1", 1, start=6)
    assert log.read_text() == "+ 101 5 a#1 1\n- 101\n+ 102 6 b#1 1\n"
    ledger.forget(102)
    ledger.flush()                                                # the worker's loop does this every pass
    assert log.read_text().endswith("+ 102 6 b#1 1\n- 102\n")
    ledger.close()
    again = ProcessLedger(tmp_path)
    again.lock()
    assert again.reap() == []                                     # both ended: nothing to kill
    again.close()


def test_the_ledger_stays_small_however_many_groups_come_and_go(tmp_path: Path) -> None:
    from titan.io.reaper import ProcessLedger
    ledger = ProcessLedger(tmp_path, compact_bytes=4096)
    ledger.lock()
    ledger.record(7, "service@web", 1, start=3)               # one group that lives throughout
    for pid in range(1000, 6000):
        ledger.record(pid, f"t#{pid}", 1, start=5)
        ledger.forget(pid)
    ledger.record(99, "last#1", 1, start=9)                  # and one still running at the end
    ledger.flush()
    log = tmp_path / "procs.log"
    assert log.stat().st_size < 4096 + 100                    # 5,000 starts and ends: ~150 KiB uncompacted
    assert set(ledger._left_running()) == {7, 99}
    ledger.close()
    assert not (tmp_path / "procs.log.tmp").exists()
