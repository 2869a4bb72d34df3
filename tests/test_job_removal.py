"""Removing registered jobs: `titan jobs rm`, REMOVE_JOB and `Client.remove_job`.

A removed job leaves `titan jobs`, its schedule stops firing (also after a
kill -9 of the master), its runs that started finish, and its name can be
registered again.  Scheduled slots come quickly from a master whose clock
runs ahead (`--clock-offset`), as in test_cron_runs, or from an in-process
master on a clock the test moves.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from conftest import Recorder, TitanProcs, run_cli, wait_until, write_job
from titan.errors import ConnectionLost, RemoteError, UnknownJob
from titan.roles.local import LocalCluster
from titan.roles.master.server import Master, MasterConfig
from titan.sdk.client import Client
from titan.wire.frames import Frame, Op

Cluster = Callable[..., LocalCluster]


def _offset_to_next_minute(lead_s: float) -> float:
    """A clock offset that puts the master ``lead_s`` seconds before a minute starts."""
    return (60.0 - time.time() % 60.0 - lead_s) % 60.0



def _runs(address: str, job: str) -> List[Dict[str, Any]]:
    """The job's runs; none for a job the master does not know (removed before it ever ran)."""
    with Client(address, token="", timeout=5.0) as c:
        try:
            return c.runs(job)
        except UnknownJob:
            return []


def _job_names(address: str) -> List[str]:
    with Client(address, token="", timeout=5.0) as c:
        return [j["name"] for j in c.jobs()]


def _lines(path: Path) -> List[str]:
    return path.read_text().split() if path.exists() else []


# ----- the CLI and the SDK -------------------------------------------------------
def test_jobs_rm_removes_each_named_job_and_names_the_unknown_one(cluster: Cluster, tmp_path: Path) -> None:
    # Given three registered jobs, one of which has run once
    local = cluster(workers=1)
    m = ("--master", local.address)
    with local.client() as c:
        assert c.submit_job({"name": "etl", "tasks": [{"name": "a", "command": ["true"]}]}).wait(timeout=30).ok
        for name in ("report", "keep"):
            c.submit_job({"name": name, "tasks": [{"name": "a", "command": ["true"]}]}, start=False)
    # When two of them and a name the master does not know are removed
    res = run_cli(*m, "jobs", "rm", "etl", "nosuch", "report")
    # Then the unknown name is an error that names it (exit 4, as for an unknown id), and the others are removed
    assert res.code == 4, res
    assert "titan: no job 'nosuch'" in res.stderr and "titan jobs" in res.stderr, res
    assert res.stdout.splitlines() == ["etl: removed", "report: removed"], res
    # And `titan jobs` lists only the job that is left
    listed = run_cli(*m, "jobs")
    assert listed.code == 0 and "keep" in listed.stdout and "etl" not in listed.stdout, listed
    assert [j["name"] for j in json.loads(run_cli(*m, "jobs", "--json").stdout)] == ["keep"]
    # And a removed job cannot be triggered (exit 4: it is not found), while its run stays listed
    res = run_cli(*m, "trigger", "etl")
    assert res.code == 4 and "no job 'etl'" in res.stderr and "titan submit FILE" in res.stderr, res
    assert "etl#1" in run_cli(*m, "runs", "etl").stdout
    res = run_cli(*m, "runs", "nosuch")         # a job that never was: not an empty list
    assert res.code == 4 and "titan: no job 'nosuch'" in res.stderr, res
    # And --json prints what was removed
    res = run_cli(*m, "jobs", "rm", "keep", "--json")
    assert res.code == 0, res
    assert json.loads(res.stdout) == [{"job": "keep", "schedule": None, "active_runs": [], "services": []}]
    assert run_cli(*m, "jobs", "--json").stdout.strip() == "[]"
    # And the SDK raises its error for an unknown job: UnknownJob, a RemoteError naming it
    with local.client() as c:
        with pytest.raises(UnknownJob, match="no job 'keep'") as err:
            c.remove_job("keep")
    assert isinstance(err.value, RemoteError) and err.value.code == "unknown_job"


def test_a_started_run_finishes_after_its_job_is_removed_and_the_name_registers_again(
        cluster: Cluster, tmp_path: Path) -> None:
    # Given a run of a job whose first task is running and waits for a file
    local = cluster(workers=1)
    started, gate = tmp_path / "started", tmp_path / "gate"
    job = write_job(tmp_path, "slow.ini", f"""
[job]
name = slow
[task:wait]
run = touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done; echo waited
[task:after]
after = wait
run = echo after
""")
    with local.client() as c:
        run = c.submit_file(job)
        wait_until(started.exists, 30, "the first task to start")
        # When the job is removed
        reply = c.remove_job("slow")
        # Then the reply says its run goes on, and the job is no longer listed
        assert reply == {"job": "slow", "schedule": None, "active_runs": ["slow#1"], "services": []}
        assert [j["name"] for j in c.jobs()] == []
        # And the run is not cancelled: it runs to completion, every task of it
        gate.touch()
        result = run.wait(timeout=30)
        assert result.state == "SUCCEEDED" and result.tasks == {"slow#1/wait": "SUCCEEDED",
                                                                "slow#1/after": "SUCCEEDED"}
        assert [(r["id"], r["state"]) for r in c.runs("slow")] == [("slow#1", "SUCCEEDED")]
        # When the same file is submitted again
        again = c.submit_file(job)
        # Then the job is registered afresh and runs, its run numbers going on from the old ones
        assert again.id == "slow#2" and again.wait(timeout=30).ok
        assert [j["name"] for j in c.jobs()] == ["slow"]


# ----- schedules -------------------------------------------------------------------
def test_a_removed_scheduled_job_does_not_fire_at_its_next_slot(titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a master whose clock is some seconds before a minute, and two jobs scheduled every minute
    ledger = tmp_path / "ledger"
    offset = _offset_to_next_minute(10.0)
    slot_at = time.time() + 10.0            # when the master's clock reaches the minute
    master = titan_procs.start_master("--clock-offset", f"{offset:.3f}")
    titan_procs.start_worker(master.address, "w1", slots=2)
    for name in ("gone", "kept"):
        job = write_job(tmp_path, f"{name}.ini", f"""
[job]
name = {name}
schedule = * * * * *
[task:work]
run = echo "$TITAN_RUN" >> {ledger}
""")
        assert run_cli("--master", master.address, "submit", job).code == 0
    # When one of them is removed before the minute starts
    res = run_cli("--master", master.address, "jobs", "rm", "gone")
    assert res.code == 0 and res.stdout.strip() == "gone: removed", res
    assert time.time() < slot_at - 0.5, "the removal came after the slot: the test ran too slowly"
    # Then at the minute the other job fires, and the removed one does not
    wait_until(lambda: any(r["state"] == "SUCCEEDED" for r in _runs(master.address, "kept")), 30,
               lambda: f"the kept job's slot to run\n{titan_procs.logs()}")
    assert _runs(master.address, "gone") == []
    assert [line.split("@")[0] for line in _lines(ledger)] == ["kept"]
    listed = run_cli("--master", master.address, "jobs").stdout
    assert "kept" in listed and "gone" not in listed


def test_a_removed_scheduled_job_stays_removed_after_a_master_kill_9(titan_procs: TitanProcs,
                                                                    tmp_path: Path) -> None:
    # Given two jobs scheduled every minute that catch up a missed slot, on a master 2 s before a minute;
    # the first one's runs wait for a file and may overlap (so nothing but its removal stops a slot)
    ledger, kept_ledger, gate = tmp_path / "ledger", tmp_path / "kept", tmp_path / "gate"
    offset = _offset_to_next_minute(2.0)
    master = titan_procs.start_master("--clock-offset", f"{offset:.3f}")
    titan_procs.start_worker(master.address, "w1", slots=4)
    titan_procs.wait_ready(master.address, ["w1"])
    jobs = {"minutely": f'echo "$TITAN_RUN" >> {ledger}; while [ ! -e {gate} ]; do sleep 0.05; done',
            "kept": f'echo "$TITAN_RUN" >> {kept_ledger}'}
    for name, command in jobs.items():
        job = write_job(tmp_path, f"{name}.ini", f"""
[job]
name = {name}
schedule = * * * * *
catchup = latest
overlap = allow
[task:work]
run = {command}
""")
        assert run_cli("--master", master.address, "submit", job).code == 0
    wait_until(lambda: _lines(ledger) and _lines(kept_ledger), 15, lambda: f"both slots to fire\n{titan_procs.logs()}")
    first = _lines(ledger)[0]
    # When the first job is removed while its slot's run is running
    res = run_cli("--master", master.address, "jobs", "rm", "minutely")
    assert res.code == 0 and "1 run(s) still going, not cancelled: " + first in res.stdout, res
    # And the master is killed and started again with its clock minutes later (slots were missed)
    titan_procs.kill(master.proc)
    master = titan_procs.start_master("--clock-offset", f"{offset + 150.0:.3f}", bind=master.address,
                                      data_dir=master.data_dir)
    # Then the job beside it catches its missed slot up at once
    wait_until(lambda: len(_runs(master.address, "kept")) >= 2, 30,
               lambda: f"the kept job's catch-up slot\n{titan_procs.logs()}", ignore=(ConnectionLost, OSError))
    # And the removed job's run that had started still runs to completion
    gate.touch()
    wait_until(lambda: [r["state"] for r in _runs(master.address, "minutely")] == ["SUCCEEDED"], 30,
               lambda: f"the removed job's run to finish\n{titan_procs.logs()}", ignore=(ConnectionLost, OSError))
    # But the removed job caught nothing up, and is not listed
    assert [r["id"] for r in _runs(master.address, "minutely")] == [first]
    assert _lines(ledger) == [first]
    assert _job_names(master.address) == ["kept"]


# ----- in-process, on a clock the test moves ---------------------------------------------
def _request(master: Master, conn: Recorder, req_id: int, opcode: int, body: Any) -> Any:
    master.on_frame(conn, Frame(opcode, 0, req_id, body))   # type: ignore[arg-type]
    master._end_of_pass()
    return conn.reply(req_id)


def _store_has(master: Master, *command: bytes) -> bool:
    return master.durable.engine.execute(list(command), int(master.clock() * 1000))[0] == 1


def test_removal_drops_the_schedule_cursor_and_record_and_a_new_registration_starts_afresh(
        tmp_path: Path) -> None:
    # Given a job scheduled every minute, registered 30 s into a minute, that catches a missed slot up
    # and may overlap its runs (so nothing but its removal stops a slot)
    now = [1_800_000_030.0]
    master = Master(MasterConfig(data_dir=tmp_path / "m"), clock=lambda: now[0])
    client = Recorder()
    job = {"name": "tick", "schedule": "* * * * *", "catchup": "latest", "overlap": "allow",
           "tasks": [{"name": "a", "command": ["true"]}]}
    assert _request(master, client, 1, Op.RUN, {"job": job, "start": False})[0] == Op.OK
    now[0] += 60.0
    master.runs.fire_due()
    assert list(master.runs.runs) == ["tick@2027-01-15T08:01Z"]
    # When it is removed (its run waits for a worker)
    opcode, body = _request(master, client, 2, Op.REMOVE_JOB, {"job": "tick"})
    # Then the reply names the run that goes on, and the schedule, the record and the cursor are gone
    assert (opcode, body) == (Op.OK, {"job": "tick", "schedule": "* * * * *",
                                      "active_runs": ["tick@2027-01-15T08:01Z"], "services": []})
    assert "tick" not in master.planner.jobs
    assert not _store_has(master, b"EXISTS", b"titan:job:tick")
    assert not _store_has(master, b"HEXISTS", b"titan:cron", b"tick")
    # And no later slot fires
    now[0] += 180.0
    master.runs.fire_due()
    assert list(master.runs.runs) == ["tick@2027-01-15T08:01Z"]
    # When it is registered again, minutes after the slot its old cursor would catch up
    assert _request(master, client, 3, Op.RUN, {"job": job, "start": False})[0] == Op.OK
    master.runs.fire_due()
    # Then it starts afresh: nothing is caught up, and the next minute fires
    assert list(master.runs.runs) == ["tick@2027-01-15T08:01Z"]
    now[0] += 60.0
    master.runs.fire_due()
    assert list(master.runs.runs) == ["tick@2027-01-15T08:01Z", "tick@2027-01-15T08:05Z"]
    # When it is removed once more, and then again
    assert _request(master, client, 4, Op.REMOVE_JOB, {"job": "tick"})[0] == Op.OK
    opcode, body = _request(master, client, 5, Op.REMOVE_JOB, {"job": "tick"})
    # Then the second time it is an unknown job
    assert opcode == Op.ERROR and body["code"] == "unknown_job" and "no job 'tick'" in body["message"]
    # And a master started again on its directory neither knows it nor has its cursor
    master.close()
    master = Master(MasterConfig(data_dir=tmp_path / "m"), clock=lambda: now[0])
    try:
        assert master.runs.jobs == {} and master.planner.jobs == {}
        assert not _store_has(master, b"HEXISTS", b"titan:cron", b"tick")
    finally:
        master.close()
