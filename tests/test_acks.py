"""Results and their ACKs: a worker keeps each result until the master has stored it.

A worker numbers its results (``seq``) and sends them in that order; the
master answers one ACK per pass, ``upto`` the highest number it stored.  The
worker tests put a real worker in front of a hand-speaking master
(:class:`conftest.FakeMaster`) that ACKs when the test says so and drops the
connection in between; the master tests use a hand-speaking worker.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from conftest import FakeMaster, Raw, TitanProcs
from titan.sdk.client import Client
from titan.wire.frames import Op


def run_quick(fake: FakeMaster, *tasks: str) -> List[Dict[str, Any]]:
    """Dispatch ``true`` as each task, one after the other; return their FINISHED reports."""
    reports = []
    for task in tasks:
        fake.dispatch(task, ["true"])
        reports.append(fake.finished())
    return reports


def reconnect(fake: FakeMaster) -> Dict[str, Any]:
    """Drop the worker's connection and take the one it dials next; return its HELLO."""
    fake.sock.close()
    return fake.accept()


def test_results_not_acked_are_sent_again_after_a_reconnect_and_acked_ones_are_not(
        titan_procs: TitanProcs, fake_master: FakeMaster) -> None:
    titan_procs.start_worker(fake_master.address, "w", slots=1)
    fake_master.accept()
    # Given three results, numbered in the order they were reported
    reports = run_quick(fake_master, "t1", "t2", "t3")
    assert [(r["task"], r["seq"]) for r in reports] == [("t1", 1), ("t2", 2), ("t3", 3)]
    # When the master ACKs up to the second, then the connection drops
    fake_master.send_frame(Op.ACK, 0, {"upto": 2})
    run_quick(fake_master, "t4")        # read after the ACK: the worker has handled it
    hello = reconnect(fake_master)
    # Then the new HELLO lists the two results not yet stored, and they come again, oldest first
    assert hello["finished"] == [["t3", 1], ["t4", 1]]
    again = [fake_master.finished(), fake_master.finished()]
    assert [(r["task"], r["seq"]) for r in again] == [("t3", 3), ("t4", 4)]
    assert again[0] == reports[2]


def test_an_ack_by_name_from_an_older_master_is_understood_too(
        titan_procs: TitanProcs, fake_master: FakeMaster) -> None:
    titan_procs.start_worker(fake_master.address, "w", slots=1)
    fake_master.accept()
    run_quick(fake_master, "t1", "t2")
    fake_master.send_frame(Op.ACK, 0, {"items": 5, "upto": "x"})          # nonsense: ignored
    fake_master.send_frame(Op.ACK, 0, {"items": [["t1", 1], "junk", ["t2"], [["t2"], 1]]})
    run_quick(fake_master, "t3")
    hello = reconnect(fake_master)
    assert hello["finished"] == [["t2", 1], ["t3", 1]]


def master_with_raw_worker(procs: TitanProcs, slots: int) -> Tuple[str, Raw]:
    """A real master and a hand-speaking worker registered with it; returns (address, worker)."""
    master = procs.start_master()
    raw = Raw(master.address)
    raw.hello_as_worker("fake", slots=slots)
    return master.address, raw


def test_the_master_acks_numbered_results_by_number_and_others_by_name(titan_procs: TitanProcs) -> None:
    address, raw = master_with_raw_worker(titan_procs, slots=1)
    with Client(address, token="") as c:
        # A numbered result (seq 7), then one without a number (a worker from before numbering)
        for command, extra, state in ((["true"], {"seq": 7}, "SUCCEEDED"), (["false"], {}, "FAILED")):
            task = c.submit(command)
            frame = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
            raw.send_frame(Op.FINISHED, 0, {"task": frame.body["task"], "attempt": 1,
                                             "exit_code": 0 if state == "SUCCEEDED" else 1, **extra})
            ack = raw.read_frame_where(lambda f: f.opcode == Op.ACK)
            # Then the first is ACKed "stored up to" its number, the other by task and attempt
            assert ack.body == ({"upto": 7} if extra else {"items": [[task.id, 1]]})
            assert task.result(timeout=10).state == state
    raw.close()


def test_a_dispatch_and_a_result_leave_out_what_has_its_default(titan_procs: TitanProcs) -> None:
    address, raw = master_with_raw_worker(titan_procs, slots=2)
    with Client(address, token="") as c:
        plain = c.submit(["true"])
        custom = c.submit(["true"], kill_grace_s=1.5, timeout_s=9)
        bodies = {}
        for _ in range(2):
            frame = raw.read_frame_where(lambda f: f.opcode == Op.DISPATCH)
            bodies[frame.body["task"]] = frame.body
        # The defaults (5 s grace, no timeout, the task as its own run) are not spelled out
        assert bodies[plain.id] == {"task": plain.id, "attempt": 1, "argv": ["true"]}
        assert bodies[custom.id] == {"task": custom.id, "attempt": 1, "argv": ["true"],
                                     "kill_grace_s": 1.5, "timeout_s": 9}
        raw.send_frame(Op.OUTPUT, 0, {"task": custom.id, "attempt": 1, "stream": "err", "data": b"oops\n"})
        raw.send_frame(Op.FINISHED, 0, {"task": plain.id, "attempt": 1, "exit_code": 0, "seq": 1})
        raw.send_frame(Op.FINISHED, 0, {"task": custom.id, "attempt": 1, "exit_code": 3, "seq": 2,
                                         "reason": "exit code 3"})
        # A clean result carries no reason and no output; the SDK reads them as empty
        clean, failed = plain.result(timeout=10), custom.result(timeout=10)
        assert (clean.state, clean.reason, clean.output) == ("SUCCEEDED", "", "")
        assert (failed.state, failed.reason, failed.output) == ("FAILED", "exit code 3", "oops\n")
    raw.close()
