"""Every [task:NAME] key of a job file: what `job_to_wire` sends for it, and what a real cluster does with it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, Tuple

from conftest import write_job
from titan.core.jobfile import parse
from titan.core.runs import job_to_wire
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]

EVERY_KEY = """\
[job]
name = keys
env.STAGE = prod
env.WHO = job

[task:extract]
run = ./extract.sh "$(date +%F)"

[task:load]
run = python3 load.py --stage $STAGE
after = extract
requires = highmem, gpu
affinity = extract
files = load.py, lib/util.py
retries = 3
retry_backoff = 10s
timeout = 1h30m
priority = 5
delay = 500ms
env.WHO = load
env.ONLY_LOAD = yes

[task:report]
run = echo done
after = load
node = worker-2
"""

FILES: Dict[str, Tuple[bytes, bool]] = {"load.py": (b"print('load')\n", False),
                                       "lib/util.py": (b"#!/bin/sh\n", True)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_job_to_wire_sends_every_task_key_as_parsed() -> None:
    # Given a job file that sets every task key, and job-level env
    spec = parse(EVERY_KEY, filename="keys.ini")
    blobs: Dict[str, bytes] = {}
    # When it is put on the wire
    job = job_to_wire(spec, FILES.__getitem__, blobs)
    # Then the job's own settings are there (no schedule: defaults)
    assert (job["name"], job["schedule"], job["timezone"]) == ("keys", None, "UTC")
    assert [t["name"] for t in job["tasks"]] == ["extract", "load", "report"]
    extract, load, report = job["tasks"]
    # And a task that sets only `run` gets the defaults, and the job's env
    assert extract == {"name": "extract", "command": './extract.sh "$(date +%F)"', "after": [], "requires": [],
                       "affinity": None, "node": None, "retries": 0, "retry_backoff_s": 1.0, "timeout_s": None,
                       "priority": 0, "delay_s": 0.0, "env": {"STAGE": "prod", "WHO": "job"}, "files": None}
    # And every key of the task that sets them all arrives, durations in seconds, its env over the job's
    assert load["command"] == "python3 load.py --stage $STAGE"
    assert load["after"] == ["extract"]
    assert load["requires"] == ["gpu", "highmem"]
    assert load["affinity"] == "extract" and load["node"] is None
    assert load["files"] == {"load.py": [sha(b"print('load')\n"), False], "lib/util.py": [sha(b"#!/bin/sh\n"), True]}
    assert load["retries"] == 3 and load["retry_backoff_s"] == 10.0
    assert load["timeout_s"] == 5400.0
    assert load["priority"] == 5
    assert load["delay_s"] == 0.5
    assert load["env"] == {"STAGE": "prod", "WHO": "load", "ONLY_LOAD": "yes"}
    assert set(load) == set(extract), "a key was added or dropped on the wire"
    # And a pin travels as `node`
    assert (report["node"], report["affinity"], report["after"]) == ("worker-2", None, ["load"])
    # And the files' contents are shipped once each, by sha256
    assert blobs == {sha(data): data for data, _ in FILES.values()}


def test_priority_timeout_and_env_are_honoured_by_a_one_slot_worker(cluster: Cluster, tmp_path: Path) -> None:
    # Given one worker with one slot that takes nothing ahead, and a job whose `low` is queued
    # while `hold` runs, and whose `high` is queued only when `hold` has ended
    local = cluster(workers=1, slots=1, worker_args=("--ahead", "0"))
    order, env_out = tmp_path / "order", tmp_path / "env"
    job = write_job(tmp_path, "prio.ini", f"""
        [job]
        name = prio
        env.STAGE = prod
        env.WHO = job

        [task:hold]
        run = sleep 0.3; echo hold >> {order}

        [task:low]
        run = echo low >> {order}

        [task:high]
        after = hold
        priority = 5
        run = echo high >> {order}

        [task:envy]
        priority = -1
        env.WHO = task
        env.OWN = mine
        run = echo "$STAGE $WHO $OWN" > {env_out}

        [task:slow]
        priority = -1
        timeout = 1s
        run = sleep 30
    """)
    # When it runs
    with local.client() as c:
        run = c.submit_file(job)
        result = run.wait(timeout=60)
        slow = c.status("prio#1/slow")
    # Then `high` (priority 5) ran before `low` (priority 0), queued long before it
    assert order.read_text().split() == ["hold", "high", "low"], result
    # And the task saw the job's env with its own on top
    assert env_out.read_text().strip() == "prod task mine"
    # And the task with `timeout = 1s` was killed and failed, saying why
    assert result.tasks["prio#1/slow"] in ("FAILED", "DEAD"), result
    assert "timed out after 1s" in slow["reason"], slow
    assert {t: s for t, s in result.tasks.items() if t != "prio#1/slow"} == {
        f"prio#1/{name}": "SUCCEEDED" for name in ("hold", "low", "high", "envy")}


def test_the_ready_tasks_of_a_new_run_start_by_priority_not_by_their_order_in_the_file(
        cluster: Cluster, tmp_path: Path) -> None:
    # Given one free slot, and a job whose first task in the file has the lowest priority
    local = cluster(workers=1, slots=1, worker_args=("--ahead", "0"))
    order = tmp_path / "order"
    job = write_job(tmp_path, "first.ini", f"""
        [job]
        name = first
        [task:low]
        priority = -1000
        run = echo low >> {order}
        [task:mid]
        run = echo mid >> {order}
        [task:high]
        priority = 1000
        run = echo high >> {order}
    """)
    # When a run of it starts
    with local.client() as c:
        assert c.submit_file(job).wait(timeout=60).ok
    # Then the free slot went to the highest priority, then the next
    assert order.read_text().split() == ["high", "mid", "low"]
