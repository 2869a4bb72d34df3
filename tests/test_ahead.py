"""Dispatch-ahead: a worker holds attempts beyond its slots and starts them as slots free.

The worker tests put a real worker in front of a hand-speaking master
(:class:`FakeMaster`), so every DISPATCH, KILL and report is visible.  The
master tests use a hand-speaking worker (:class:`conftest.Raw`) that hands
an attempt back, and a real cluster that must never run more at once than
its slots.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Dict

from conftest import FakeMaster, Raw, TitanProcs, wait_until
from titan.sdk.client import Client
from titan.wire.frames import Op


def start_worker(procs: TitanProcs, fake: FakeMaster, *args: str) -> Dict[str, Any]:
    procs.start_worker(fake.address, "w", *args, slots=1)
    return fake.accept()


def test_a_worker_says_how_many_it_holds_ahead_three_times_its_slots_by_default(titan_procs, fake_master) -> None:
    hello = start_worker(titan_procs, fake_master)
    assert hello["slots"] == 1 and hello["ahead"] == 3


def test_attempts_sent_ahead_run_one_slot_at_a_time_in_the_order_sent(titan_procs, fake_master, tmp_path) -> None:
    start_worker(titan_procs, fake_master, "--ahead", "2")
    lock = tmp_path / "lock"
    # Each task holds a lock directory while it runs: a second one at the same time would exit 9.
    script = f"mkdir {lock} || exit 9; sleep 0.1; rmdir {lock}"
    for task in ("t1", "t2", "t3"):
        fake_master.dispatch(task, ["sh", "-c", script])
    reports = [fake_master.finished() for _ in range(3)]
    assert [(r["task"], r["exit_code"]) for r in reports] == [("t1", 0), ("t2", 0), ("t3", 0)]


def test_an_attempt_that_finds_no_slot_is_handed_back_unstarted(titan_procs, fake_master, tmp_path) -> None:
    start_worker(titan_procs, fake_master, "--ahead", "1")
    marker = tmp_path / "ran"
    fake_master.dispatch("long", ["sleep", "30"])
    fake_master.dispatch("waiting", ["touch", str(marker)])
    report = fake_master.finished()
    assert report["task"] == "waiting" and report["returned"] is True
    assert report["waited_s"] >= 0.5
    assert not marker.exists()
    fake_master.send_frame(Op.KILL, 0, {"task": "long", "attempt": 1, "reason": "test over"})
    assert fake_master.finished()["task"] == "long"


def test_a_kill_for_an_attempt_held_ahead_ends_it_before_it_starts(titan_procs, fake_master, tmp_path) -> None:
    start_worker(titan_procs, fake_master, "--ahead", "1")
    marker = tmp_path / "ran"
    fake_master.dispatch("long", ["sleep", "30"])
    fake_master.dispatch("held", ["touch", str(marker)])
    fake_master.send_frame(Op.KILL, 0, {"task": "held", "attempt": 1, "reason": "cancelled"})
    report = fake_master.finished()
    assert (report["task"], report["exit_code"], report["reason"]) == ("held", -15, "cancelled")
    fake_master.send_frame(Op.KILL, 0, {"task": "long", "attempt": 1, "reason": "test over"})
    assert fake_master.finished()["task"] == "long"
    assert not marker.exists()


def test_a_stopping_worker_hands_back_what_it_holds_at_once(titan_procs, fake_master, tmp_path) -> None:
    titan_procs.start_worker(fake_master.address, "w", "--ahead", "1", slots=1)
    worker = titan_procs.procs[-1]
    fake_master.accept()
    marker, started = tmp_path / "ran", tmp_path / "started"
    fake_master.dispatch("long", ["sh", "-c", f"touch {started}; exec sleep 30"])
    fake_master.dispatch("held", ["touch", str(marker)])
    wait_until(started.exists, message="the first attempt to start")
    worker.send_signal(signal.SIGTERM)
    reports = {r["task"]: r for r in (fake_master.finished(), fake_master.finished())}
    assert reports["held"]["returned"] is True and reports["held"]["reason"] == "the worker is stopping"
    assert reports["held"]["waited_s"] < 0.5                      # not the ordinary hand-back after 0.5 s
    assert "returned" not in reports["long"] and reports["long"]["exit_code"] != 0
    assert not marker.exists()


def test_with_ahead_0_the_worker_holds_nothing_and_says_so(titan_procs, fake_master) -> None:
    hello = start_worker(titan_procs, fake_master, "--ahead", "0")
    assert hello["ahead"] == 0


# ----- the master's side ------------------------------------------------------

def test_the_master_places_a_handed_back_attempt_again_without_using_a_retry(titan_procs) -> None:
    master = titan_procs.start_master()
    raw = Raw(master.address)
    raw.hello_as_worker("fake", slots=1, ahead=1)
    with Client(master.address, token="") as c:
        for i in range(3):                                # quick attempts: the master starts sending ahead
            task = c.submit(["true"])
            frame = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
            raw.send_frame(Op.FINISHED, 0, {"task": frame.body["task"], "attempt": 1, "exit_code": 0})
            assert task.result(timeout=10).state == "SUCCEEDED"
        running = c.submit(["true"])
        held = c.submit(["true"])
        first = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
        second = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
        assert (first.body["task"], second.body["task"]) == (running.id, held.id)
        raw.send_frame(Op.FINISHED, 0, {"task": held.id, "attempt": 1, "returned": True, "waited_s": 0.6,
                                         "exit_code": None, "reason": "no free slot"})
        wait_until(lambda: c.status(held.id)["state"] == "QUEUED", message="the handed-back task queued again")
        raw.send_frame(Op.FINISHED, 0, {"task": running.id, "attempt": 1, "exit_code": 0})
        again = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
        assert (again.body["task"], again.body["attempt"]) == (held.id, 2)
        raw.send_frame(Op.FINISHED, 0, {"task": held.id, "attempt": 2, "exit_code": 0})
        result = held.result(timeout=10)
        assert (result.state, result.attempts) == ("SUCCEEDED", 2)
        attempts = c.status(held.id)["attempts"]
        assert attempts[0]["state"] == "QUEUED" and "handed it back" in attempts[0]["reason"]
    raw.close()


def test_a_cluster_never_runs_more_at_once_than_its_slots(titan_procs, tmp_path: Path) -> None:
    master = titan_procs.start_master()
    for name in ("w1", "w2"):
        titan_procs.start_worker(master.address, name, slots=1)
    titan_procs.wait_ready(master.address, ["w1", "w2"])
    locks = tmp_path / "locks"
    locks.mkdir()
    # One lock directory per node: two attempts at once on one node would make one exit 9.
    script = f'mkdir {locks}/"$TITAN_NODE" || exit 9; rmdir {locks}/"$TITAN_NODE"'
    with Client(master.address, token="") as c:
        with c.batch():
            tasks = [c.submit(["sh", "-c", script]) for _ in range(150)]
        results = [t.result(timeout=60) for t in tasks]
        assert [r.exit_code for r in results] == [0] * 150
        nodes = {n["name"]: n for n in c.nodes()}
    assert all(n["running"] == 0 and n["ahead"] == 0 for n in nodes.values())
    assert sorted({r.node for r in results}) == ["w1", "w2"]
