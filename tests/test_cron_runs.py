"""Scheduled jobs on a real master: a slot fires without waiting a wall-clock minute, and once.

`titan jobs` shows when a scheduled job fires next, in its time zone.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List

from conftest import TitanProcs, run_cli, wait_until, write_job
from titan.core.cron import parse
from titan.errors import ConnectionLost
from titan.sdk.client import Client


def _offset_to_next_minute(lead_s: float) -> float:
    """A clock offset that puts the master ``lead_s`` seconds before a minute starts."""
    return (60.0 - time.time() % 60.0 - lead_s) % 60.0


def _runs(address: str) -> List[dict]:
    with Client(address, token="", timeout=5.0) as c:
        return c.runs("minutely")


def test_a_scheduled_slot_runs_once_even_when_the_master_is_killed_during_it(
        titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a master whose clock is 2 s before a minute, and a job scheduled every minute
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    offset = _offset_to_next_minute(2.0)
    master = titan_procs.start_master("--clock-offset", f"{offset:.3f}")
    titan_procs.start_worker(master.address, "w1", slots=2)
    titan_procs.wait_ready(master.address, ["w1"])
    job = tmp_path / "minutely.ini"
    job.write_text(f"""
[job]
name = minutely
schedule = * * * * *
overlap = skip
[task:work]
run = echo "$TITAN_RUN" >> {ledger}; while [ ! -e {gate} ]; do sleep 0.05; done
""")
    res = run_cli("--master", master.address, "submit", str(job))
    assert res.code == 0 and "runs on its schedule" in res.stdout, res
    # When the minute starts, a run named after its slot starts
    wait_until(lambda: ledger.exists(), 15, lambda: f"the slot to fire\n{titan_procs.logs()}")
    slot_run = ledger.read_text().split()[0]
    assert slot_run.startswith("minutely@") and slot_run.endswith("Z")
    # And when the master is killed in the middle of that run and started again
    titan_procs.kill(master.proc)
    master = titan_procs.start_master("--clock-offset", f"{offset:.3f}", bind=master.address,
                                      data_dir=master.data_dir)
    gate.touch()
    # Then the run completes and the slot ran exactly once
    wait_until(lambda: any(r["id"] == slot_run and r["state"] == "SUCCEEDED" for r in _runs(master.address)),
               30, lambda: f"the slot's run to finish\n{titan_procs.logs()}", ignore=(ConnectionLost, OSError))
    assert ledger.read_text().split().count(slot_run) == 1
    listed = run_cli("--master", master.address, "jobs").stdout
    assert "minutely" in listed and "* * * * * UTC" in listed


def test_jobs_shows_a_scheduled_jobs_next_fire_time_in_its_time_zone(titan_procs: TitanProcs,
                                                                     tmp_path: Path) -> None:
    # Given a master whose clock reads Saturday 2030-03-30 12:00 UTC, the day before Berlin moves to summer time
    master_now = datetime(2030, 3, 30, 12, tzinfo=timezone.utc).timestamp()
    offset = master_now - time.time()
    master = titan_procs.start_master(f"--clock-offset={offset:.3f}")
    job = write_job(tmp_path, "berlin.ini", """
[job]
name = berlin
schedule = 0 4 * * *
timezone = Europe/Berlin
[task:work]
run = true
""")
    # When a job that fires at 04:00 Berlin time is registered
    assert run_cli("--master", master.address, "submit", job).code == 0
    res = run_cli("--master", master.address, "jobs", "--json")
    # Then its next fire time is Sunday 04:00 in Berlin, already on summer time (02:00 UTC)
    assert res.code == 0, res
    (row,) = json.loads(res.stdout)
    assert row["name"] == "berlin" and row["schedule"] == "0 4 * * *", row
    assert row["timezone"] == "Europe/Berlin", row
    assert row["next"] == "2030-03-31T04:00:00+02:00", row
    assert row["next"] == parse("0 4 * * *").next_after(
        datetime.fromtimestamp(master_now, timezone.utc), "Europe/Berlin").isoformat()
    # And the table shows the schedule with its time zone, and the same next fire time
    table = run_cli("--master", master.address, "jobs").stdout
    assert "0 4 * * * Europe/Berlin" in table and "2030-03-31T04:00:00+02:00" in table, table
