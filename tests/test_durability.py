"""The master keeps its state in its store: a `kill -9` loses nothing it acknowledged.

Each task appends its own id to one shared file, so "ran exactly once" is
something the test can count.
"""
from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import List

from conftest import TitanProcs, wait_until
from titan.errors import ConnectionLost
from titan.sdk.client import Client

TASKS = 500


def _line_counts(path: Path) -> collections.Counter:
    text = path.read_text() if path.exists() else ""
    return collections.Counter(line for line in text.splitlines() if line)


def _all_succeeded(address: str, ids: List[str]) -> bool:
    with Client(address, token="", timeout=5.0) as c:
        states = [c.status(task_id)["state"] for task_id in ids]
    return all(s == "SUCCEEDED" for s in states)


def test_kill_9_of_the_master_in_a_500_task_run_runs_every_task_exactly_once(
        titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a master, two workers, and 500 acknowledged tasks that each append their id to a file
    ledger = tmp_path / "ledger"
    master = titan_procs.start_master()
    for name in ("w1", "w2"):
        titan_procs.start_worker(master.address, name, slots=2)
    titan_procs.wait_ready(master.address, ["w1", "w2"])
    command = f'sleep 0.04; echo "$TITAN_TASK" >> {ledger}'
    with Client(master.address, token="") as c:
        tasks = [c.submit(command, name="append") for _ in range(TASKS)]   # pipelined
        ids = [t.id for t in tasks]                                         # every one acknowledged
    assert len(set(ids)) == TASKS
    # When the master is killed with SIGKILL while the run is under way, and started again
    wait_until(lambda: sum(_line_counts(ledger).values()) >= 100, 60, "the run to get going")
    titan_procs.kill(master.proc)
    done_at_kill = sum(_line_counts(ledger).values())
    master = titan_procs.start_master(*master.args, bind=master.address, data_dir=master.data_dir)
    assert done_at_kill < TASKS - 50, "the run was nearly over at the kill; the test proves little"
    # Then every task finishes, and each ran exactly once
    wait_until(lambda: _all_succeeded(master.address, ids), 120,
               lambda: f"all tasks to succeed\n{titan_procs.logs()}", interval_s=0.5,
               ignore=(ConnectionLost, OSError))
    counts = _line_counts(ledger)
    assert sorted(counts) == sorted(ids)
    assert [task for task, n in counts.items() if n != 1] == []


def test_every_acknowledged_submission_survives_a_kill_9(titan_procs: TitanProcs) -> None:
    # Given a master with no workers, so everything it accepts stays queued
    master = titan_procs.start_master()
    acknowledged: List[str] = []

    def submit_until_killed() -> None:
        try:
            with Client(master.address, token="") as c:
                while True:
                    acknowledged.append(c.submit("true", name="keep", watch=False).id)
        except (ConnectionLost, OSError):
            return

    # When a client submits as fast as it can and the master is killed mid-stream
    submitter = threading.Thread(target=submit_until_killed)
    submitter.start()
    wait_until(lambda: len(acknowledged) >= 200, 30, "200 acknowledged submissions")
    titan_procs.kill(master.proc)
    submitter.join(30)
    master = titan_procs.start_master(*master.args, bind=master.address, data_dir=master.data_dir)
    # Then every submission that got its OK is there after the restart
    with Client(master.address, token="") as c:
        known = {t["id"] for t in c.tasks(limit=100_000)}
        missing = [task_id for task_id in acknowledged if task_id not in known]
        assert missing == []
        # and a new submission does not reuse an id
        assert c.submit("true", name="keep", watch=False).id not in acknowledged
    # And once a worker joins, they all run
    titan_procs.start_worker(master.address, "w1", slots=4)
    wait_until(lambda: _all_succeeded(master.address, acknowledged), 120,
               lambda: f"the queued tasks to run\n{titan_procs.logs()}", interval_s=0.5,
               ignore=(ConnectionLost, OSError))


def test_results_a_client_saw_are_still_known_after_a_kill_9(titan_procs: TitanProcs) -> None:
    # Given a master and a worker that have just run tasks one after another (their results'
    # ACKs wait for an fsync that may come up to 20 ms later)
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "w1", slots=1)
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        seen = [c.submit("true", name="seen").result(timeout=30).id for _ in range(20)]
        # When the master is killed right after the last result
        titan_procs.kill(master.proc)
    master = titan_procs.start_master(*master.args, bind=master.address, data_dir=master.data_dir)
    # Then the restarted master knows every task the client saw end, and how: from its
    # store, or from the worker, which kept each result until it was ACKed
    wait_until(lambda: _all_succeeded(master.address, seen), 30,
               lambda: f"the results to be known again\n{titan_procs.logs()}", interval_s=0.2,
               ignore=(ConnectionLost, OSError))
