"""DAG scheduling in the pure core: dependencies, skips, cancel cascades, affinity, retry.

A fake clock drives a Scheduler; assertions read task states and actions.
"""
from __future__ import annotations

from typing import List

import pytest

from titan.core.model import SpecCache, TaskState
from titan.core.scheduler import Dispatch, Ended, Kill, Scheduler
from titan.core.state import record_from_blob, record_to_blob
from titan.testing import make_spec

S = TaskState


def dispatched(actions: List[object]) -> List[str]:
    return [a.task_id for a in actions if isinstance(a, Dispatch)]


def diamond(s: Scheduler, now: float = 0.0) -> List[object]:
    """d#1/a -> (b, c) -> d, like examples/hello.ini."""
    out = s.task_submitted("d#1/a", make_spec("true", name="a"), now, run="d#1")
    out += s.task_submitted("d#1/b", make_spec("true", name="b"), now, after=["d#1/a"], run="d#1")
    out += s.task_submitted("d#1/c", make_spec("true", name="c"), now, after=["d#1/a"], run="d#1")
    out += s.task_submitted("d#1/d", make_spec("true", name="d"), now, after=["d#1/b", "d#1/c"], run="d#1")
    return out


def test_a_diamond_runs_in_dependency_order() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    # Given a diamond, only its root is dispatched
    assert dispatched(diamond(s)) == ["d#1/a"]
    assert [s.tasks[t].state for t in ("d#1/b", "d#1/c", "d#1/d")] == [S.WAITING] * 3
    # When the root succeeds, both branches are dispatched (fan-out)
    assert sorted(dispatched(s.attempt_finished("w1", "d#1/a", 1, 0, "", 1.0))) == ["d#1/b", "d#1/c"]
    # And the join waits for both (fan-in)
    assert dispatched(s.attempt_finished("w1", "d#1/b", 1, 0, "", 2.0)) == []
    assert dispatched(s.attempt_finished("w1", "d#1/c", 1, 0, "", 3.0)) == ["d#1/d"]


def test_a_failure_skips_everything_downstream_and_nothing_else() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    diamond(s)
    s.attempt_finished("w1", "d#1/a", 1, 0, "", 1.0)
    # When one branch fails for good
    actions = s.attempt_finished("w1", "d#1/b", 1, 2, "exit code 2", 2.0)
    # Then the join is SKIPPED, naming the upstream task, and the other branch runs on
    assert Ended("d#1/d", S.SKIPPED) in actions
    assert "d#1/b FAILED" in s.tasks["d#1/d"].to_wire()["reason"]
    assert s.tasks["d#1/c"].state is S.RUNNING


def test_retrying_the_failed_task_brings_its_skipped_dependants_back() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    diamond(s)
    s.attempt_finished("w1", "d#1/a", 1, 0, "", 1.0)
    s.attempt_finished("w1", "d#1/c", 1, 0, "", 1.5)
    s.attempt_finished("w1", "d#1/b", 1, 1, "exit code 1", 2.0)
    assert s.tasks["d#1/d"].state is S.SKIPPED
    # When b is retried and succeeds, d runs after all
    assert dispatched(s.retry("d#1/b", 3.0)) == ["d#1/b"]
    assert s.tasks["d#1/d"].state is S.WAITING
    assert dispatched(s.attempt_finished("w1", "d#1/b", 2, 0, "", 4.0)) == ["d#1/d"]


def cancelled_diamond() -> Scheduler:
    """A diamond whose root was cancelled while it ran (its worker reported the kill)."""
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    diamond(s)
    s.cancel("d#1/a", 1.0)
    s.attempt_finished("w1", "d#1/a", 1, -15, "cancelled", 1.5)
    return s


def test_retrying_a_run_cancelled_midway_runs_each_task_after_what_it_waits_for() -> None:
    # Given a diamond cancelled while its root runs: the root and everything below end CANCELLED
    s = cancelled_diamond()
    assert {s.tasks[t].state for t in ("d#1/a", "d#1/b", "d#1/c", "d#1/d")} == {S.CANCELLED}
    # When every task is retried, the dependants first (an order a run retry may use)
    out = []
    for task_id in ("d#1/d", "d#1/b", "d#1/c", "d#1/a"):
        out += s.retry(task_id, 2.0)
    # Then only the root runs; the others wait for what they depend on, as in a fresh run
    assert dispatched(out) == ["d#1/a"]
    assert [s.tasks[t].state for t in ("d#1/b", "d#1/c", "d#1/d")] == [S.WAITING] * 3
    assert sorted(dispatched(s.attempt_finished("w1", "d#1/a", 2, 0, "", 3.0))) == ["d#1/b", "d#1/c"]


def test_a_retried_task_whose_dependency_failed_is_skipped_with_the_reason() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    s.task_submitted("r#1/a", make_spec("true", name="a"), 0.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 0.0, after=["r#1/a"], run="r#1")
    s.cancel("r#1/b", 0.5)                               # b cancelled while it waits
    s.attempt_finished("w1", "r#1/a", 1, 3, "exit code 3", 1.0)
    assert s.tasks["r#1/b"].state is S.CANCELLED
    # When b alone is retried: it cannot run, since a failed
    assert dispatched(s.retry("r#1/b", 2.0)) == []
    assert s.tasks["r#1/b"].state is S.SKIPPED and "r#1/a FAILED" in s.tasks["r#1/b"].note


def test_cancel_cascades_downstream_and_kills_what_runs() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 4, 0.0)
    diamond(s)
    s.attempt_finished("w1", "d#1/a", 1, 0, "", 1.0)        # b and c are running
    # When b is cancelled
    actions = s.cancel("d#1/b", 2.0)
    # Then b's process group is killed and d (downstream) is CANCELLED, not SKIPPED; c runs on
    assert Kill("w1", "d#1/b", 1, "cancelled") in actions
    assert s.tasks["d#1/d"].state is S.CANCELLED
    assert s.tasks["d#1/c"].state is S.RUNNING
    assert Ended("d#1/b", S.CANCELLED) in s.attempt_finished("w1", "d#1/b", 1, -15, "cancelled", 3.0)


def test_cancelling_the_root_cancels_the_whole_run() -> None:
    s = cancelled_diamond()
    assert {t: r.state for t, r in s.tasks.items()} == {
        "d#1/a": S.CANCELLED, "d#1/b": S.CANCELLED, "d#1/c": S.CANCELLED, "d#1/d": S.CANCELLED}


def test_affinity_runs_on_the_node_that_ran_the_anchor_even_when_others_are_idle() -> None:
    s = Scheduler()
    for name in ("w1", "w2", "w3"):
        s.worker_joined(name, [], 2, 0.0)
    first = s.task_submitted("r#1/extract", make_spec("true", name="extract"), 0.0, run="r#1")
    anchor = [a for a in first if isinstance(a, Dispatch)][0].worker
    s.task_submitted("r#1/train", make_spec("true", name="train"), 0.0, after=["r#1/extract"],
                     affinity="r#1/extract", run="r#1")
    for i in range(2):                       # higher-priority work pinned to the anchor node
        s.task_submitted(f"x#{i}", make_spec("sleep 9", name="x", node=anchor, priority=5), 0.0)
    actions = s.attempt_finished(anchor, "r#1/extract", 1, 0, "", 1.0)
    # Then train waits for the anchor node, although the other two nodes are idle
    assert "r#1/train" not in dispatched(actions)
    assert s.tasks["r#1/train"].state is S.QUEUED
    # And takes the anchor's first free slot
    started = s.attempt_finished(anchor, "x#0", 1, 0, "", 2.0)
    assert [(a.task_id, a.worker) for a in started if isinstance(a, Dispatch)] == [("r#1/train", anchor)]


def _b_waits_for_slow_after_a_ran_on_w1(s: Scheduler) -> None:
    """r#1: a (on w1, succeeded) and slow (running on w2) -> b, with affinity to a."""
    s.worker_joined("w2", [], 1, 0.0)
    s.task_submitted("r#1/a", make_spec("true", name="a", node="w1"), 0.0, run="r#1")
    s.task_submitted("r#1/slow", make_spec("sleep 9", name="slow"), 0.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 0.0, after=["r#1/a", "r#1/slow"],
                     affinity="r#1/a", run="r#1")
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 1.0)


def test_affinity_fails_when_the_anchor_node_left_and_stays_away() -> None:
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", [], 1, 0.0)
    _b_waits_for_slow_after_a_ran_on_w1(s)
    s.worker_left("w1", 2.0)                                     # the anchor node goes away
    # When b becomes ready, it waits for w1 (which may be back within the grace)
    s.attempt_finished("w2", "r#1/slow", 1, 0, "", 3.0)
    assert s.tasks["r#1/b"].state is S.QUEUED
    # Then once w1 stayed away past the grace, b fails without an attempt
    assert Ended("r#1/b", S.FAILED) in s.tick(7.0)
    assert "node w1, which ran r#1/a, is gone" in s.tasks["r#1/b"].to_wire()["reason"]


def test_after_a_restart_an_affinity_task_waits_for_its_node_to_dial_in_again() -> None:
    # Given a store where a succeeded on w1 long ago and b, its affinity dependant, is still WAITING
    # (becoming ready is not written), restored by a master starting at t=1000
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", [], 1, 0.0)
    s.task_submitted("r#1/a", make_spec("true", name="a"), 0.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 0.0, after=["r#1/a"], affinity="r#1/a", run="r#1")
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 1.0)
    stored = [record_from_blob(record_to_blob(r), SpecCache()) for r in s.tasks.values()]
    next(r for r in stored if r.id == "r#1/b").state = S.WAITING
    restarted = Scheduler(lost_grace_s=5.0)
    restarted.restore_worker("w1", [], 1, dedicated=False, last_seen=1.0)
    restarted.restore(stored, 1000.0)
    # Then b waits for w1 rather than failing at once
    assert restarted.tasks["r#1/b"].state is S.QUEUED
    assert restarted.tick(1002.0) == []
    # And runs there when w1 dials in within the grace
    actions = restarted.worker_joined("w1", [], 1, 1003.0)
    assert [(a.task_id, a.worker) for a in actions if isinstance(a, Dispatch)] == [("r#1/b", "w1")]


def test_affinity_to_a_node_the_master_no_longer_knows_fails_at_once() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 1, 0.0)
    _b_waits_for_slow_after_a_ran_on_w1(s)
    s.worker_left("w1", 2.0)
    s.worker_retired("w1")                                        # gone for good
    actions = s.attempt_finished("w2", "r#1/slow", 1, 0, "", 3.0)
    assert Ended("r#1/b", S.FAILED) in actions
    assert "node w1, which ran r#1/a, is gone" in s.tasks["r#1/b"].to_wire()["reason"]


def test_a_queued_affinity_task_fails_once_its_node_stays_away_past_the_grace() -> None:
    # Given a task pinned by affinity to w1 and queued there behind higher-priority work
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", [], 1, 0.0)
    s.worker_joined("w2", [], 1, 0.0)
    s.task_submitted("r#1/a", make_spec("true", name="a", node="w1"), 0.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 0.0, after=["r#1/a"], affinity="r#1/a", run="r#1")
    s.task_submitted("r#1/c", make_spec("true", name="c"), 0.0, after=["r#1/b"], run="r#1")
    s.task_submitted("x#1", make_spec("sleep 9", name="x", node="w1", priority=5), 0.0)
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 1.0)
    assert s.tasks["r#1/b"].state is S.QUEUED
    # When w1 goes away, b waits the grace period for it to come back
    s.worker_left("w1", 2.0)
    assert s.tick(6.5) == [] and s.tasks["r#1/b"].state is S.QUEUED
    assert s.next_deadline() == 2.0 + 5.0
    # Then once w1 has stayed away past it, b fails naming the gone node, and c is skipped
    actions = s.tick(7.0)
    assert Ended("r#1/b", S.FAILED) in actions and Ended("r#1/c", S.SKIPPED) in actions
    assert s.tasks["r#1/b"].to_wire()["reason"] == "affinity: node w1, which ran r#1/a, is gone"
    assert len(s.tasks["r#1/b"].attempts) == 0        # it never ran


def test_a_queued_affinity_task_runs_when_its_node_comes_back_within_the_grace() -> None:
    s = Scheduler(lost_grace_s=5.0)
    s.worker_joined("w1", [], 1, 0.0)
    s.task_submitted("r#1/a", make_spec("true", name="a", node="w1"), 0.0, run="r#1")
    s.task_submitted("r#1/b", make_spec("true", name="b"), 0.0, after=["r#1/a"], affinity="r#1/a", run="r#1",
                     delay_s=3.0)
    s.attempt_finished("w1", "r#1/a", 1, 0, "", 1.0)
    s.worker_left("w1", 2.0)
    # When w1 is back before the grace is over, b runs there
    s.worker_joined("w1", [], 1, 5.0)
    assert [(a.task_id, a.worker) for a in s.tick(6.5) if isinstance(a, Dispatch)] == [("r#1/b", "w1")]


def test_unknown_dependencies_are_refused() -> None:
    s = Scheduler()
    with pytest.raises(ValueError, match="unknown task"):
        s.task_submitted("r#1/b", make_spec("true"), 0.0, after=["r#1/nope"])


def test_a_fan_out_of_100_then_fan_in() -> None:
    s = Scheduler()
    s.worker_joined("w1", [], 8, 0.0)
    s.task_submitted("f#1/split", make_spec("true", name="split"), 0.0)
    mids = [f"f#1/map{i}" for i in range(100)]
    for m in mids:
        s.task_submitted(m, make_spec("true", name="map"), 0.0, after=["f#1/split"])
    s.task_submitted("f#1/reduce", make_spec("true", name="reduce"), 0.0, after=mids)
    running = dispatched(s.attempt_finished("w1", "f#1/split", 1, 0, "", 1.0))
    assert len(running) == 8
    done = 0
    while running:
        t = running.pop()
        done += 1
        running += dispatched(s.attempt_finished("w1", t, 1, 0, "", 2.0))
    assert done == 101
    assert s.tasks["f#1/reduce"].state is S.SUCCEEDED
    assert all(s.tasks[m].state is S.SUCCEEDED for m in mids)


def test_waiting_tasks_and_their_edges_survive_a_restart() -> None:
    before = Scheduler()
    before.worker_joined("w1", [], 4, 0.0)
    diamond(before)
    specs = SpecCache()
    after = Scheduler()
    after.restore([record_from_blob(record_to_blob(r), specs) for r in before.tasks.values()], 10.0)
    after.worker_joined("w1", [], 4, 10.5, running=[("d#1/a", 1)])
    assert after.tasks["d#1/d"].state is S.WAITING and after.tasks["d#1/d"].after == ("d#1/b", "d#1/c")
    assert sorted(dispatched(after.attempt_finished("w1", "d#1/a", 1, 0, "", 11.0))) == ["d#1/b", "d#1/c"]
