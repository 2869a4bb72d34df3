"""Scheduled jobs on a real master: a slot fires without waiting a wall-clock minute, and once."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List

from conftest import TitanProcs, run_cli, wait_until
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
