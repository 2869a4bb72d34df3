"""A wide DAG end to end: one task fans out to a hundred, which fan in to one; the order holds."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

from conftest import write_job
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]
WIDTH = 100


def _succeeded(task: Dict[str, Any]) -> Dict[str, Any]:
    """The attempt that succeeded (an attempt sent ahead to a busy worker may be handed back first)."""
    (attempt,) = [a for a in task["attempts"] if a["state"] == "SUCCEEDED"]
    return attempt


def test_a_fan_in_task_starts_only_after_all_hundred_fanned_out_tasks_finish(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    # Given a job: a, then m0..m99 after a, then z after every m
    local = cluster(workers=2, slots=2)
    job = write_job(tmp_path, "fan.ini", "[job]\nname = fan\n[task:a]\nrun = echo a\n" + "".join(
        f"[task:m{i}]\nafter = a\nrun = echo {i}\n" for i in range(WIDTH)) +
        "[task:z]\nafter = " + ", ".join(f"m{i}" for i in range(WIDTH)) + "\nrun = echo z\n")
    # When it runs
    with local.client() as c:
        run = c.submit_file(job)
        result = run.wait(timeout=120)
        tasks = {t["id"].rsplit("/", 1)[1]: t for t in run.tasks()}
        z_output = b"".join(c.logs(f"{run.id}/z"))
    # Then every task succeeded
    assert result.state == "SUCCEEDED", result
    assert len(tasks) == WIDTH + 2 and {t["state"] for t in tasks.values()} == {"SUCCEEDED"}
    assert z_output == b"z\n"
    a = _succeeded(tasks["a"])
    middle = [_succeeded(tasks[f"m{i}"]) for i in range(WIDTH)]
    # And every attempt of an m started after a finished, and z after every m finished (by the master's clock)
    assert min(att["started_at"] for i in range(WIDTH) for att in tasks[f"m{i}"]["attempts"]) >= a["finished_at"]
    assert min(att["started_at"] for att in tasks["z"]["attempts"]) >= max(m["finished_at"] for m in middle)
    # And the m's were spread over both workers, so the join waited on more than one of them
    assert {m["node"] for m in middle} == {"local-1", "local-2"}
