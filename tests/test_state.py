"""The master's records in the store: they read back exactly, and a restart resumes them."""
from __future__ import annotations

import random

import pytest

from titan.core.model import Attempt, SpecCache, TaskRecord, TaskState
from titan.core.scheduler import Dispatch, Ended, Kill, Scheduler
from titan.core.state import (COUNTERS_KEY, needs_saving, record_from_blob, record_row, record_to_blob, save_counters,
                              task_key, task_write)
from titan.wire.codec import encode
from titan.testing import make_spec


def _finished_scheduler() -> Scheduler:
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", ["gpu"], 2, 100.0)
    s.task_submitted("a#1", make_spec("echo a", name="a", requires={"gpu"}, retries=2), 100.0)
    s.task_submitted("b#1", make_spec(["sleep", "9"], name="b", priority=3), 100.0)
    s.task_submitted("c#1", make_spec("true", name="c"), 100.0)
    s.attempt_finished("w1", "a#1", 1, 1, "exit code 1", 101.0)      # a fails once, re-queued after backoff
    return s


def test_a_record_reads_back_exactly() -> None:
    # Given records in every kind of state
    s = _finished_scheduler()
    specs = SpecCache()
    for record in s.tasks.values():
        # When one is written as a blob and read back
        back = record_from_blob(record_to_blob(record), specs)
        # Then every field a user or the scheduler relies on is the same
        assert back.to_wire() == record.to_wire()
        assert (back.seq, back.ready_at, back.retry_base, back.spec) == \
               (record.seq, record.ready_at, record.retry_base, record.spec)


def _random_record(rng: random.Random, specs: SpecCache, n: int) -> TaskRecord:
    def time_value() -> object:          # mostly float seconds; now and then an int, as a caller may pass
        return rng.uniform(0, 2e9) if rng.random() < 0.93 else rng.randrange(10**9)

    def text() -> str:
        return rng.choice(["", "w1", "gpu-node-é", "ü" * rng.randrange(1, 40), "x" * rng.randrange(200, 70000)])
    spec = specs.get({"command": rng.choice([["true"], "echo hi", ["sh", "-c", "exit 3"]]),
                      "name": rng.choice(["t", "etl", "load.2"])})
    record = TaskRecord(f"{spec.name}#{n}", spec, rng.randrange(2**63), time_value())   # type: ignore[arg-type]
    record.state = rng.choice(list(TaskState))
    record.ready_at = time_value()                                                       # type: ignore[assignment]
    record.finished_at = rng.choice([None, time_value()])                                # type: ignore[assignment]
    record.cancel_requested = rng.random() < 0.3
    record.retry_base = rng.choice([0, 0, 2, 2, 2, 2**70])
    record.after = tuple(f"dep#{i}{text()}" for i in range(rng.randrange(3)))
    record.affinity, record.run, record.pin = (rng.choice([None, text()]) for _ in range(3))
    record.note = text()
    record.delay_s = rng.choice([0.0, 1.5, 30, 0])                                      # type: ignore[assignment]
    for number in range(1, rng.randrange(4) + 1):
        attempt = Attempt(number, text(), time_value())                                  # type: ignore[arg-type]
        attempt.finished_at = rng.choice([None, time_value()])                           # type: ignore[assignment]
        attempt.exit_code = rng.choice([None, 0, 1, -9, 255])
        attempt.reason, attempt.state = text(), rng.choice(list(TaskState))
        attempt.log_bytes = rng.randrange(10**9)
        record.add_attempt(attempt)
    return record


@pytest.mark.parametrize("seed", range(5))
def test_a_blob_is_exactly_the_codec_encoding_of_the_record_row(seed: int) -> None:
    # Given records with every field varied (ints where times usually are floats, a retry base past 64 bits)
    rng, specs = random.Random(seed), SpecCache()
    for n in range(200):
        record = _random_record(rng, specs, n)
        # Then the blob written directly is byte for byte the generic encoding, and reads back
        blob = record_to_blob(record)
        assert blob == encode(record_row(record))
        assert record_from_blob(blob, specs).to_wire() == record.to_wire()


def test_a_finished_tasks_record_expires_at_an_absolute_time_and_counters_are_a_plain_hset() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 1, 10.0)
    s.task_submitted("t#1", make_spec("true", name="t"), 10.0)
    s.attempt_finished("w1", "t#1", 1, 0, "", 12.5)
    record = s.tasks["t#1"]
    key, blob, expire_at_ms = task_write(record, terminal=True, retention_s=60.0)
    assert (key, blob, expire_at_ms) == (task_key("t#1"), record_to_blob(record), 72500)   # ended at 12.5 s + 60 s
    assert task_write(record, terminal=False, retention_s=60.0)[2] is None
    assert save_counters({"t": 4, "a": 1}) == [b"HSET", COUNTERS_KEY, b"a", b"1", b"t", b"4"]


def test_a_restarted_scheduler_requeues_in_order_and_waits_for_running_attempts() -> None:
    # Given a scheduler whose tasks were persisted mid-flight: c and b running on w1, a queued
    before = _finished_scheduler()
    assert before.tasks["b#1"].state is TaskState.RUNNING
    specs = SpecCache()
    saved = [record_to_blob(r) for r in before.tasks.values()]
    # When a new scheduler restores them (the master restarted at t=200)
    after = Scheduler(lost_grace_s=5.0)
    after.restore([record_from_blob(b, specs) for b in saved], 200.0)
    # Then nothing is dispatched twice: w1 returns reporting b and c still running
    actions = after.worker_joined("w1", ["gpu"], 2, 201.0, running=[("b#1", 1), ("c#1", 1)])
    assert not [a for a in actions if isinstance(a, (Dispatch, Kill))]
    assert after.tasks["b#1"].state is TaskState.RUNNING
    # And their results are accepted as usual
    ended = after.attempt_finished("w1", "c#1", 1, 0, "", 202.0)
    assert Ended("c#1", TaskState.SUCCEEDED) in ended
    # And the queued task a (its retry backoff over) takes the freed slot, as attempt 2
    dispatched = [a for a in ended if isinstance(a, Dispatch)]
    assert [(d.task_id, d.attempt) for d in dispatched] == [("a#1", 2)]


def test_a_running_attempt_whose_worker_never_returns_runs_again_after_the_grace() -> None:
    before = _finished_scheduler()
    specs = SpecCache()
    after = Scheduler(lost_grace_s=5.0)
    after.restore([record_from_blob(record_to_blob(r), specs) for r in before.tasks.values()], 200.0)
    after.worker_joined("w2", ["gpu"], 4, 200.5)
    assert not [a for a in after.tick(204.0) if isinstance(a, Dispatch) and a.task_id == "b#1"]
    again = [a for a in after.tick(205.1) if isinstance(a, Dispatch)]
    assert ("b#1", 2, "w2") in [(d.task_id, d.attempt, d.worker) for d in again]
    # and the re-queue used no retry: b still has its full retries (none) and is not FAILED
    assert after.tasks["b#1"].state is TaskState.RUNNING


def _restored_with_a_queued_task() -> Scheduler:
    """A master restarted while task q#1 was QUEUED in its store and w1 was known."""
    before = Scheduler()
    before.task_submitted("q#1", make_spec("sleep 1", name="q"), 10.0)     # no worker yet: QUEUED
    specs = SpecCache()
    after = Scheduler(lost_grace_s=5.0)
    after.restore_worker("w1", [], 1, dedicated=False, last_seen=10.0)
    after.restore([record_from_blob(record_to_blob(r), specs) for r in before.tasks.values()], 20.0)
    after.hold_dispatch(25.0)
    return after


def test_after_a_restart_nothing_is_dispatched_until_known_workers_report() -> None:
    # Given a restart with a QUEUED task and a known worker w1 not back yet
    s = _restored_with_a_queued_task()
    # When another worker joins, the task still waits: w1 may be running it already
    assert not [a for a in s.worker_joined("w2", [], 1, 20.5) if isinstance(a, Dispatch)]
    # When w1 comes back reporting attempt 1 of it (dispatched just before the crash, never persisted)
    actions = s.worker_joined("w1", [], 1, 21.0, running=[("q#1", 1)])
    # Then that attempt is adopted, not killed, and nothing is started twice
    assert not [a for a in actions if isinstance(a, (Dispatch, Kill))]
    record = s.tasks["q#1"]
    assert (record.state, record.node, len(record.attempts)) == (TaskState.RUNNING, "w1", 1)
    assert Ended("q#1", TaskState.SUCCEEDED) in s.attempt_finished("w1", "q#1", 1, 0, "", 22.0)


def test_the_dispatch_hold_ends_when_its_grace_runs_out() -> None:
    s = _restored_with_a_queued_task()
    s.worker_joined("w2", [], 1, 20.5)
    assert s.next_deadline() is not None and s.next_deadline() <= 25.0
    assert not [a for a in s.tick(24.9) if isinstance(a, Dispatch)]
    started = [a for a in s.tick(25.0) if isinstance(a, Dispatch)]
    assert [(d.task_id, d.attempt, d.worker) for d in started] == [("q#1", 1, "w2")]


_STORE: dict = {}    # task id -> the blob last written, as the master's persist pass would


def _stored(s: Scheduler) -> list:
    """What the store holds: each record as of its last write that ``needs_saving`` allowed."""
    return list(_STORE.values())


def _persist(s: Scheduler) -> None:
    for task_id in sorted(s.dirty):
        record = s.tasks[task_id]
        if needs_saving(record):
            task_write(record, terminal=False, retention_s=60.0)    # marks it saved
            _STORE[task_id] = record_to_blob(record)
    s.dirty.clear()


def test_becoming_ready_and_being_dispatched_write_nothing_and_a_restart_works_them_out() -> None:
    _STORE.clear()
    # Given a -> b, stored as each change was persisted
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", [], 1, 10.0)
    s.task_submitted("r#1/a", make_spec("true", name="a"), 10.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 10.0, after=["r#1/a"], run="r#1")
    _persist(s)
    written = dict(_STORE)
    # When a succeeds, b becomes QUEUED then RUNNING on w1: only a's end is written
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 11.0)
    assert s.tasks["r#1/b"].state is TaskState.RUNNING
    _persist(s)
    assert _STORE["r#1/b"] == written["r#1/b"]               # b is still WAITING in the store
    assert _STORE["r#1/a"] != written["r#1/a"]
    # And a master restarted now finds b ready, and adopts the attempt w1 reports instead of running it again
    specs = SpecCache()
    after = Scheduler(lost_grace_s=5.0)
    after.restore_worker("w1", [], 1, dedicated=False, last_seen=11.0)
    after.restore([record_from_blob(b, specs) for b in _stored(s)], 20.0)
    after.hold_dispatch(25.0)
    assert after.tasks["r#1/b"].state is TaskState.QUEUED
    actions = after.worker_joined("w1", [], 1, 21.0, running=[("r#1/b", 1)])
    assert not [a for a in actions if isinstance(a, (Dispatch, Kill))]
    assert after.tasks["r#1/b"].state is TaskState.RUNNING and len(after.tasks["r#1/b"].attempts) == 1


def test_a_restart_queues_a_stored_waiting_task_whose_dependencies_succeeded() -> None:
    _STORE.clear()
    s = Scheduler()
    s.worker_joined("w1", [], 1, 10.0)
    s.task_submitted("r#1/a", make_spec("true", name="a"), 10.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 10.0, after=["r#1/a"], run="r#1")
    _persist(s)                                  # b stored as WAITING
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 11.0)
    _persist(s)                                  # a's success stored; b (QUEUED, RUNNING) not
    assert record_from_blob(_STORE["r#1/b"], SpecCache()).state is TaskState.WAITING
    after = Scheduler(lost_grace_s=5.0)
    after.restore([record_from_blob(b, SpecCache()) for b in _stored(s)], 20.0)
    dispatched = [a for a in after.worker_joined("w3", [], 1, 21.0) if isinstance(a, Dispatch)]
    assert [(d.task_id, d.attempt) for d in dispatched] == [("r#1/b", 1)]
