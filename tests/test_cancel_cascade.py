"""Cancelling one task of a run, end to end: its dependants are cancelled, the rest of the run goes on."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from conftest import child_env, cli_argv, pid_gone, run_cli, wait_until, write_job
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]


@pytest.fixture
def strays() -> Iterator[List[int]]:
    """Pids a test expects the runtime to kill; any still alive at teardown is killed here."""
    pids: List[int] = []
    yield pids
    for pid in pids:
        if not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_cancelling_one_task_of_a_run_cascades_downstream_and_spares_the_rest(
        cluster: Cluster, tmp_path: Path, strays: List[int]) -> None:
    # Given a run: top (which leaves an orphaned sleep in its process group) -> mid -> leaf,
    # and an unrelated task, other, that waits on a gate
    local = cluster(workers=1, slots=2)
    orphan_file, gate = tmp_path / "orphan", tmp_path / "gate"
    job = write_job(tmp_path, "cascade.ini", f"""
[job]
name = cascade
[task:top]
run = (sleep 300 & echo $! > {orphan_file}); exec sleep 300
[task:mid]
after = top
run = echo mid
[task:leaf]
after = mid
run = echo leaf
[task:other]
run = while [ ! -e {gate} ]; do sleep 0.05; done; echo other
""")
    with local.client() as c:
        run = c.submit_file(job)
        wait_until(lambda: orphan_file.exists() and orphan_file.read_text().strip(), 30, "top to start")
        wait_until(lambda: c.status(f"{run.id}/other")["state"] == "RUNNING", 30, "other to start")
        orphan = int(orphan_file.read_text())
        strays.append(orphan)
        # When top alone is cancelled from the CLI
        res = run_cli("--master", local.address, "cancel", f"{run.id}/top")
        assert res.code == 0, res
        assert res.stdout.strip() == f"{run.id}/top: cancelling (its process group is being killed)", res
        # Then top, and everything after it, is cancelled, and top's whole process group dies
        wait_until(lambda: c.status(f"{run.id}/top")["state"] == "CANCELLED", 30, "top to be cancelled")
        states = {t["id"]: t["state"] for t in run.tasks()}
        assert states == {"cascade#1/top": "CANCELLED", "cascade#1/mid": "CANCELLED",
                          "cascade#1/leaf": "CANCELLED", "cascade#1/other": "RUNNING"}
        assert c.status(run.id)["state"] == "RUNNING"
        wait_until(lambda: pid_gone(orphan), 10, "top's orphaned sleep to die")
        # And other is untouched: it finishes once its gate opens
        gate.touch()
        result = run.wait(timeout=30)
        assert b"".join(c.logs(f"{run.id}/other")) == b"other\n"
    assert result.tasks["cascade#1/other"] == "SUCCEEDED"
    assert result.state == "CANCELLED", result


def test_submit_wait_exits_1_when_its_run_is_cancelled_from_another_terminal(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    # Given `titan submit FILE --wait` following a run whose first task is running
    local = cluster(workers=1)
    started = tmp_path / "started"
    job = write_job(tmp_path, "long.ini", f"""
[job]
name = long
[task:work]
run = touch {started}; exec sleep 300
[task:after]
after = work
run = echo never
""")
    waiter = subprocess.Popen(cli_argv("--master", local.address, "submit", job, "--wait"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=child_env(), start_new_session=True)
    try:
        wait_until(lambda: started.exists() or waiter.poll() is not None, 30, "the run's first task to start")
        assert waiter.poll() is None, waiter.communicate()
        # When the run is cancelled from another terminal
        res = run_cli("--master", local.address, "cancel", "long#1")
        # Then cancel says what became of the run, and exits 0
        assert res.code == 0, res
        assert res.stdout == "long#1: cancelling (its process group is being killed)\n", res
        # And the waiting submit ends with the run CANCELLED and exit code 1 (the run did not succeed)
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.communicate()
    assert waiter.returncode == 1, (out, err)
    assert out.decode().strip() == "long#1  CANCELLED", (out, err)
    assert "long#1/work  CANCELLED" in err.decode() and "long#1/after  CANCELLED" in err.decode(), err
    res = run_cli("--master", local.address, "cancel", "long#1")
    assert (res.code, res.stdout) == (0, "long#1: CANCELLED\n"), res
