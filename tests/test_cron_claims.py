"""A cron slot's claim reaches the disk before its run's work starts, and a claimed slot survives a restart.

The master runs in-process on a clock the test moves, with its connections
replaced by recorders and its AOF's file operations by a journal of writes
and fsyncs, so the order of "on disk" and "sent to a worker" can be read.
"""
from __future__ import annotations

from pathlib import Path
from datetime import datetime, timezone
from typing import Any, List, Sequence, Tuple

from conftest import Recorder
from titan.core.cron import slot_id
from titan.core.planner import Planner
from titan.io.aof import FileOps
from titan.roles.master.server import Master, MasterConfig
from titan.wire.frames import Frame, Op

BASE = 1_800_000_000.0          # 2027-01-15T08:00:00Z, a whole minute


class Journal(FileOps):
    """Real file operations that note each write and fsync in ``events``."""

    def __init__(self, events: List[Tuple[str, Any]]) -> None:
        self.events = events

    def write(self, fd: int, data: memoryview) -> int:
        self.events.append(("write", bytes(data)))
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.events.append(("fsync", None))


class WorkerConn(Recorder):
    """A worker's connection: notes each frame it is sent in ``events`` too."""

    def __init__(self, master: Master, events: List[Tuple[str, Any]]) -> None:
        super().__init__(master.loop)
        self.events = events
        self.state.role, self.state.name = "worker", "w1"

    def send(self, opcode: int, req_id: int, body: Any = None, flags: int = 0, urgent: bool = False,
             lazy: bool = False) -> None:
        self.events.append(("send", (opcode, body)))
        super().send(opcode, req_id, body, flags, urgent, lazy)


def _master(data_dir: Path, now: List[float], events: List[Tuple[str, Any]],
            running: Sequence[Tuple[str, int]] = ()) -> Tuple[Master, WorkerConn]:
    """A master on ``data_dir`` and its worker w1 (which says it still runs ``running``)."""
    master = Master(MasterConfig(data_dir=data_dir, heartbeat_timeout_s=3600.0), clock=lambda: now[0])
    master.durable.aof.ops = Journal(events)
    worker = WorkerConn(master, events)
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    master._admit_worker(worker, worker.state, {"role": "worker", "name": "w1", "slots": 2, "tags": [],
                                                "running": [list(key) for key in running]})
    master._end_of_pass()
    return master, worker


def _register(master: Master, job: dict) -> None:
    client = Recorder()
    master.on_frame(client, Frame(Op.RUN, 0, 1, {"job": job, "start": False}))   # type: ignore[arg-type]
    master._end_of_pass()
    assert client.reply(1)[0] == Op.OK, client.frames


def _pass_at(master: Master, now: List[float], when: float) -> None:
    """Move the master's clock to ``when`` and let it run its due timers and end its pass."""
    now[0] = when
    master._tick()
    master._end_of_pass()


def _dispatched(worker: Recorder) -> List[str]:
    return [body["task"] for op, _, body in worker.frames if op == Op.DISPATCH]


def test_a_slot_s_claim_and_run_are_fsynced_before_its_task_is_dispatched(tmp_path: Path) -> None:
    # Given a master with a worker and a job scheduled every minute
    now, events = [BASE + 30.0], []
    master, worker = _master(tmp_path / "m", now, events)
    try:
        _register(master, {"name": "tick", "schedule": "* * * * *",
                           "tasks": [{"name": "a", "command": ["true"]}]})
        events.clear()
        # When its next slot comes and the master's pass ends
        _pass_at(master, now, BASE + 60.0)
        # Then the task is dispatched
        assert _dispatched(worker) == ["tick@2027-01-15T08:01Z/a"]
        # But only after the write holding the claim (the cursor) and the run's task was fsynced
        sent = next(i for i, (kind, what) in enumerate(events) if kind == "send" and what[0] == Op.DISPATCH)
        wrote = next(i for i, (kind, what) in enumerate(events)
                     if kind == "write" and b"titan:cron" in what and b"tick@2027-01-15T08:01Z/a" in what)
        assert wrote < sent, events
        assert any(kind == "fsync" for kind, _ in events[wrote:sent]), events
    finally:
        master.close()


def _jittered_slot(job: str, jitter_s: float) -> float:
    """A slot (a whole minute after BASE) whose jitter is between 10 s and 40 s."""
    planner = Planner()
    planner.set_job(job, "* * * * *", jitter_s=jitter_s, now=BASE)
    for minute in range(1, 200):
        slot = BASE + 60.0 * minute
        if 10.0 < planner._jitter(planner.jobs[job], slot) < 40.0:
            return slot
    raise AssertionError("no slot with a jitter between 10 s and 40 s")


def test_a_slot_claimed_while_waiting_out_its_jitter_runs_once_after_a_restart(tmp_path: Path) -> None:
    # Given a job scheduled every minute with up to 59 s of jitter, whose slot has come
    # and waits out its jitter
    job = {"name": "tick", "schedule": "* * * * *", "jitter_s": 59.0, "catchup": "latest",
           "tasks": [{"name": "a", "command": ["true"]}]}
    slot = _jittered_slot("tick", 59.0)
    now, events = [slot - 30.0], []
    master, worker = _master(tmp_path / "m", now, events)
    try:
        _register(master, job)
        _pass_at(master, now, slot + 5.0)
        assert master.runs.runs == {} and _dispatched(worker) == []
    finally:
        master.close()
    # When the master stops before the slot's run started, and starts again after its start time
    now[0] = slot + 45.0
    master, worker = _master(tmp_path / "m", now, events)
    try:
        _pass_at(master, now, now[0])
        # Then the slot's run starts, under the slot's own name
        run_id = "tick@" + slot_id(datetime.fromtimestamp(slot, timezone.utc))
        assert list(master.runs.runs) == [run_id]
        # And only once, however often the master looks again
        _pass_at(master, now, now[0] + 10.0)
        assert list(master.runs.runs) == [run_id]
    finally:
        master.close()


def test_a_slot_queued_behind_a_running_run_runs_after_a_restart(tmp_path: Path) -> None:
    # Given a job scheduled every minute whose slots queue behind its running run
    job = {"name": "tick", "schedule": "* * * * *", "overlap": "queue", "catchup": "latest",
           "tasks": [{"name": "a", "command": ["sleep", "600"]}]}
    now, events = [BASE + 30.0], []
    master, worker = _master(tmp_path / "m", now, events)
    try:
        _register(master, job)
        _pass_at(master, now, BASE + 60.0)
        _pass_at(master, now, BASE + 120.0)        # the next slot: the first run is still going
        assert list(master.runs.runs) == ["tick@2027-01-15T08:01Z"]
    finally:
        master.close()
    # When the master stops, and starts again once the first run has ended
    now[0] = BASE + 150.0
    master, worker = _master(tmp_path / "m", now, events, running=[("tick@2027-01-15T08:01Z/a", 1)])
    try:
        master.on_frame(worker, Frame(Op.FINISHED, 0, 0, {"task": "tick@2027-01-15T08:01Z/a", "attempt": 1,
                                                            "exit_code": 0, "seq": 1}))   # type: ignore[arg-type]
        master._end_of_pass()
        _pass_at(master, now, now[0])
        # Then the queued slot's run starts
        assert "tick@2027-01-15T08:02Z" in master.runs.runs
    finally:
        master.close()
