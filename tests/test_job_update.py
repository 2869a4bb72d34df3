"""A job changed while a run of it is going: the run keeps the tasks it started with."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from conftest import wait_until, write_job
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]


def _job(gate: Path, second: str, extra: str = "") -> str:
    return f"""
[job]
name = update
[task:first]
run = while [ ! -e {gate} ]; do sleep 0.05; done
[task:second]
after = first
run = echo {second}
{extra}"""


def test_submitting_a_changed_job_while_a_run_is_active_never_corrupts_that_run(cluster: Cluster,
                                                                                  tmp_path: Path) -> None:
    # Given a run whose first task waits on a gate, and whose second task prints "original-second"
    local = cluster(workers=1, slots=2)
    gate = tmp_path / "gate"
    original = write_job(tmp_path, "original.ini", _job(gate, "original-second"))
    changed = write_job(tmp_path, "changed.ini", _job(gate, "changed-second",
                                                      "[task:third]\nafter = second\nrun = echo changed-third\n"))
    with local.client() as c:
        first_run = c.submit_file(original)
        wait_until(lambda: c.status(f"{first_run.id}/first")["state"] == "RUNNING", 30, "the first task to start")
        # When the job is submitted again, changed (another second task, and a third), while run #1 waits
        second_run = c.submit_file(changed)
        assert c.status(f"{first_run.id}/first")["state"] == "RUNNING"
        gate.touch()
        first, second = first_run.wait(timeout=60), second_run.wait(timeout=60)
        first_out = b"".join(c.logs(f"{first_run.id}/second"))
        second_out = {t: b"".join(c.logs(t)) for t in second.tasks}
    # Then run #1 ran its original tasks only, and its second task printed the original text
    assert (first_run.id, second_run.id) == ("update#1", "update#2")
    assert first.state == "SUCCEEDED", first
    assert first.tasks == {"update#1/first": "SUCCEEDED", "update#1/second": "SUCCEEDED"}
    assert first_out == b"original-second\n"
    # And run #2, which the second submit started, ran the changed tasks
    assert second.state == "SUCCEEDED", second
    assert second_out == {"update#2/first": b"", "update#2/second": b"changed-second\n",
                          "update#2/third": b"changed-third\n"}
