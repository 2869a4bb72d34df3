"""The scheduler, driven event by event with a fake clock.

Each test reads Given / When / Then: the world set up, the event fed in, and
the actions and task states a user of the master would see.
"""
from __future__ import annotations

from collections import Counter
from typing import List

import pytest

from titan.core.model import TaskState
from titan.core.scheduler import Disconnect, Dispatch, Ended, Kill, Note
from titan.errors import InvalidTransition
from titan.testing import SchedulerHarness, actions_of

S = TaskState
GRACE = 10.0
HEARTBEAT = 15.0


@pytest.fixture
def h() -> SchedulerHarness:
    return SchedulerHarness(lost_grace_s=GRACE, heartbeat_timeout_s=HEARTBEAT, max_backoff_s=300.0)


@pytest.fixture
def calm() -> SchedulerHarness:
    """Workers never time out, so next_deadline() shows only backoffs, delays and grace."""
    return SchedulerHarness(lost_grace_s=GRACE, heartbeat_timeout_s=1e9, max_backoff_s=150.0)


def dispatched(actions: list) -> List[tuple]:
    """(worker, task, attempt) of every Dispatch, in order."""
    return [(d.worker, d.task_id, d.attempt) for d in actions_of(actions, Dispatch)]


def ended(actions: list) -> List[tuple]:
    return [(e.task_id, e.state) for e in actions_of(actions, Ended)]


# ----- ordering -------------------------------------------------------------

def test_given_mixed_priorities_when_a_worker_joins_then_higher_first_and_fifo_within(h) -> None:
    for task_id, priority in [("low1", 0), ("high1", 5), ("mid", 1), ("high2", 5), ("low2", 0)]:
        assert h.submit(task_id, priority=priority) == []       # no worker yet
    acts = h.join("w", slots=10)
    assert [t for _, t, _ in dispatched(acts)] == ["high1", "high2", "mid", "low1", "low2"]


def test_given_one_slot_when_tasks_finish_then_they_run_one_at_a_time_in_priority_order(h) -> None:
    h.join("w", slots=1)
    first = dispatched(h.submit("a", priority=0))
    assert first == [("w", "a", 1)]
    for task_id, priority in [("b", 0), ("c", 3), ("d", -1), ("e", 3)]:
        assert dispatched(h.submit(task_id, priority=priority)) == []
    order = []
    running = "a"
    while running:
        acts = h.finish("w", running, 1)
        nxt = dispatched(acts)
        running = nxt[0][1] if nxt else ""
        if running:
            order.append(running)
    assert order == ["c", "e", "b", "d"]


def test_given_classes_with_different_requires_then_priority_holds_across_them(h) -> None:
    h.submit("cpu-low", priority=0)
    h.submit("gpu-high", priority=9, requires={"gpu"})
    h.submit("cpu-mid", priority=4)
    acts = h.join("g", tags=["gpu"], slots=1)
    assert dispatched(acts) == [("g", "gpu-high", 1)]
    assert dispatched(h.finish("g", "gpu-high", 1)) == [("g", "cpu-mid", 1)]


# ----- head-of-line blocking -----------------------------------------------

def test_given_a_gpu_task_first_and_only_cpu_workers_then_cpu_tasks_still_run(h) -> None:
    h.join("cpu", slots=2)
    assert dispatched(h.submit("train", requires={"gpu"}, priority=100)) == []
    acts = h.submit("a") + h.submit("b")
    assert dispatched(acts) == [("cpu", "a", 1), ("cpu", "b", 1)]
    assert h.state("train") is S.QUEUED
    # Then a gpu worker joins and takes it
    assert dispatched(h.join("gpu1", tags=["gpu"], slots=1)) == [("gpu1", "train", 1)]
    assert h.state("train") is S.RUNNING


def test_given_a_task_pinned_to_an_absent_node_then_it_waits_without_blocking(h) -> None:
    h.join("w1", slots=4)
    assert dispatched(h.submit("pinned", node="w2", priority=50)) == []
    assert dispatched(h.submit("free")) == [("w1", "free", 1)]
    assert dispatched(h.join("w2")) == [("w2", "pinned", 1)]


def test_given_a_dedicated_gpu_worker_then_it_takes_only_gpu_work(h) -> None:
    h.join("gpu", tags=["gpu"], slots=4, dedicated=True)
    assert dispatched(h.submit("plain")) == []
    assert dispatched(h.submit("train", requires={"gpu"})) == [("gpu", "train", 1)]
    assert dispatched(h.join("cpu")) == [("cpu", "plain", 1)]


def test_given_many_node_pins_over_time_then_the_sweep_keeps_a_queue_only_for_classes_with_work(h) -> None:
    # Given 100 workers that each ran one task pinned to it, 20 pins to absent nodes cancelled
    # while queued, and one task still queued for an absent node
    for i in range(100):
        h.join(f"n{i}", slots=1)
    started = [d for i in range(100) for d in actions_of(h.submit(f"t{i}", node=f"n{i}"), Dispatch)]
    for i in range(20):
        assert dispatched(h.submit(f"lost{i}", node=f"gone{i}")) == []
        h.cancel(f"lost{i}")
    assert dispatched(h.submit("waits", node="late")) == []
    for d in started:
        h.finish_dispatch(d)
    assert [h.state(f"t{i}") for i in range(100)] == [S.SUCCEEDED] * 100
    # When the retention sweep runs (it forgets no task here)
    assert h.sched.forget_finished(before=0.0) == []
    # Then one queue is left, the one with work in it (a dispatch pass scans every queue kept)
    assert len(h.sched._classes) == 1
    # And classes that come back are queued and placed as before
    assert dispatched(h.submit("again", node="n7")) == [("n7", "again", 1)]
    assert dispatched(h.submit("back", node="gone3")) == []
    assert dispatched(h.join("gone3")) == [("gone3", "back", 1)]
    assert dispatched(h.join("late")) == [("late", "waits", 1)]


# ----- slots and placement --------------------------------------------------

def test_given_limited_slots_then_never_more_dispatches_than_free_slots(h) -> None:
    h.join("a", slots=2)
    h.join("b", slots=1)
    acts = []
    for i in range(6):
        acts += h.submit(f"t{i}")
    per_worker = Counter(w for w, _, _ in dispatched(acts))
    assert per_worker == {"a": 2, "b": 1}
    assert h.sched.queued_count() == 3
    assert [w.free for w in h.sched.workers.values()] == [0, 0]
    # When one attempt ends, exactly one more task starts, on the freed worker
    first = dispatched(acts)[0]
    assert dispatched(h.finish(*first)) == [(first[0], "t3", 1)]
    assert h.sched.queued_count() == 2


def test_given_equal_workers_then_round_robin_spreads_work_evenly(h) -> None:
    for name in ("w1", "w2", "w3"):
        h.join(name, slots=1)
    placed = Counter()
    for i in range(300):
        (d,) = actions_of(h.submit(f"t{i}"), Dispatch)
        placed[d.worker] += 1
        h.finish_dispatch(d)
    assert placed == {"w1": 100, "w2": 100, "w3": 100}


def test_given_a_busier_worker_then_the_least_loaded_one_is_chosen(h) -> None:
    h.join("big", slots=4)
    h.join("small", slots=1)
    workers = [w for w, _, _ in dispatched(h.submit("a") + h.submit("b") + h.submit("c"))]
    # a -> big (tie, first in join order), b -> small (0 < 0.25), c -> big (0.25 < 1.0)
    assert workers == ["big", "small", "big"]


def test_given_a_draining_worker_then_it_gets_no_new_work(h) -> None:
    h.join("w", slots=2)
    h.sched.set_draining("w", True)
    assert dispatched(h.submit("t")) == []
    h.sched.set_draining("w", False)
    assert dispatched(h.tick()) == [("w", "t", 1)]


def test_given_a_duplicate_task_id_then_submit_refuses_it(h) -> None:
    h.submit("t")
    with pytest.raises(ValueError, match="already taken"):
        h.submit("t")


# ----- finishing --------------------------------------------------------------

def test_given_exit_0_then_succeeded_and_the_slot_goes_to_the_next_task(h) -> None:
    h.join("w", slots=1)
    h.submit("a")
    h.submit("b")
    h.clock.advance(3)
    acts = h.finish("w", "a", 1, exit_code=0)
    assert ended(acts) == [("a", S.SUCCEEDED)]
    assert dispatched(acts) == [("w", "b", 1)]
    record = h.sched.tasks["a"]
    assert (record.state, record.exit_code, record.finished_at) == (S.SUCCEEDED, 0, h.clock())
    assert record.current.state is S.SUCCEEDED


def test_given_no_retries_when_the_attempt_fails_then_failed_for_good(h) -> None:
    h.join("w")
    h.submit("t", retries=0)
    acts = h.finish("w", "t", 1, exit_code=2)
    assert ended(acts) == [("t", S.FAILED)]
    assert h.state("t") is S.FAILED and h.sched.tasks["t"].exit_code == 2
    assert dispatched(h.tick(1000)) == []


def test_given_a_signal_death_then_it_counts_as_a_failure(h) -> None:
    h.join("w")
    h.submit("t")
    assert ended(h.finish("w", "t", 1, exit_code=None, reason="killed by SIGKILL")) == [("t", S.FAILED)]
    assert h.sched.tasks["t"].current.reason == "killed by SIGKILL"


def test_given_two_retries_then_backoff_doubles_and_the_last_failure_is_dead(h) -> None:
    h.join("w", slots=1)
    h.submit("t", retries=2, retry_backoff_s=4.0)
    for attempt, backoff in [(1, 4.0), (2, 8.0)]:
        failed_at = h.clock()
        acts = h.finish("w", "t", attempt, exit_code=1)
        assert ended(acts) == [] and dispatched(acts) == []
        assert any(f"retry {attempt}/2 in {backoff:g}s" in n.message for n in actions_of(acts, Note))
        assert h.state("t") is S.QUEUED
        assert h.sched.next_deadline() == failed_at + backoff
        # When: just before ready_at, then: nothing runs
        assert dispatched(h.tick_at(failed_at + backoff - 0.01)) == []
        # When: at ready_at, then: the next attempt runs
        assert dispatched(h.tick_at(failed_at + backoff)) == [("w", "t", attempt + 1)]
    acts = h.finish("w", "t", 3, exit_code=1)
    assert ended(acts) == [("t", S.DEAD)]
    assert h.state("t") is S.DEAD
    assert [a.state for a in h.sched.tasks["t"].attempts] == [S.FAILED] * 3


def test_given_a_huge_backoff_then_it_is_capped_at_max_backoff(calm) -> None:
    h = calm
    h.join("w")
    h.submit("t", retries=3, retry_backoff_s=100.0)
    waits = []
    for attempt in (1, 2, 3):
        t0 = h.clock()
        h.finish("w", "t", attempt, exit_code=1)
        waits.append(h.sched.next_deadline() - t0)
        h.tick_at(h.sched.next_deadline())
    assert waits == [100.0, 150.0, 150.0]


def test_given_a_backoff_longer_than_the_cap_then_it_is_kept_as_set(calm) -> None:
    # max_backoff_s is 150 here: a backoff of 600 s stays 600 s, and does not grow
    h = calm
    h.join("w")
    h.submit("t", retries=2, retry_backoff_s=600.0)
    waits = []
    for attempt in (1, 2):
        t0 = h.clock()
        h.finish("w", "t", attempt, exit_code=1)
        waits.append(h.sched.next_deadline() - t0)
        h.tick_at(h.sched.next_deadline())
    assert waits == [600.0, 600.0]


def test_given_a_delayed_submit_then_it_waits_for_its_delay(calm) -> None:
    h = calm
    h.join("w")
    t0 = h.clock()
    assert dispatched(h.submit("t", delay_s=30)) == []
    assert h.sched.next_deadline() == t0 + 30
    assert dispatched(h.tick(29.9)) == []
    assert dispatched(h.tick(0.1)) == [("w", "t", 1)]


# ----- retry ------------------------------------------------------------------

def _end_in(h: SchedulerHarness, task_id: str, state: TaskState) -> None:
    h.submit(task_id, retries=1 if state is S.DEAD else 0, retry_backoff_s=0)
    if state is S.CANCELLED:
        h.cancel(task_id)
    else:
        h.join("w")
        h.finish("w", task_id, 1, exit_code=1)
        if state is S.DEAD:
            h.finish("w", task_id, 2, exit_code=1)
    assert h.state(task_id) is state


@pytest.mark.parametrize("state", [S.DEAD, S.FAILED, S.CANCELLED])
def test_given_an_ended_task_when_retried_then_it_is_queued_and_runs_again(h, state) -> None:
    _end_in(h, "t", state)
    h.join("w")
    attempts_before = len(h.sched.tasks["t"].attempts)
    acts = h.retry("t")
    assert dispatched(acts) == [("w", "t", attempts_before + 1)]
    assert h.state("t") is S.RUNNING and h.sched.tasks["t"].finished_at is None
    assert ended(h.finish("w", "t", attempts_before + 1, exit_code=0)) == [("t", S.SUCCEEDED)]


def test_given_a_queued_task_when_retried_then_invalid_transition(h) -> None:
    h.submit("t")
    with pytest.raises(InvalidTransition, match="QUEUED"):
        h.retry("t")
    assert h.state("t") is S.QUEUED


def test_given_a_running_task_when_retried_then_invalid_transition_and_no_second_run(h) -> None:
    h.join("w", slots=2)
    h.submit("t")
    with pytest.raises(InvalidTransition, match="RUNNING"):
        h.retry("t")
    assert h.state("t") is S.RUNNING
    assert dispatched(h.tick()) == []
    assert len(h.sched.tasks["t"].attempts) == 1


def test_given_a_succeeded_task_when_retried_then_invalid_transition(h) -> None:
    h.join("w")
    h.submit("t")
    h.finish("w", "t", 1)
    with pytest.raises(InvalidTransition, match="SUCCEEDED"):
        h.retry("t")


def test_given_a_dead_task_when_retried_then_it_gets_its_retries_again(h) -> None:
    h.join("w")
    h.submit("t", retries=1, retry_backoff_s=2.0)
    h.finish("w", "t", 1, exit_code=1)
    h.tick(2)
    assert ended(h.finish("w", "t", 2, exit_code=1)) == [("t", S.DEAD)]
    h.retry("t")
    # When the manual retry fails once, then the spec's one retry applies again
    acts = h.finish("w", "t", 3, exit_code=1)
    assert ended(acts) == [] and h.state("t") is S.QUEUED
    assert h.sched.next_deadline() == h.clock() + 2.0
    h.tick(2)
    assert ended(h.finish("w", "t", 4, exit_code=1)) == [("t", S.DEAD)]


# ----- cancel -----------------------------------------------------------------

def test_given_a_queued_task_when_cancelled_then_it_ends_at_once_and_never_runs(h) -> None:
    h.submit("t")
    assert h.cancel("t") == [Ended("t", S.CANCELLED)]
    assert h.state("t") is S.CANCELLED
    assert dispatched(h.join("w", slots=4)) == []
    assert dispatched(h.tick(100)) == []


def test_given_a_task_waiting_for_backoff_when_cancelled_then_it_never_runs(h) -> None:
    h.join("w")
    h.submit("t", retries=3, retry_backoff_s=5)
    h.finish("w", "t", 1, exit_code=1)
    assert ended(h.cancel("t")) == [("t", S.CANCELLED)]
    assert dispatched(h.tick(60)) == []


def test_given_a_running_task_when_cancelled_then_kill_then_cancelled_on_finish(h) -> None:
    h.join("w", slots=1)
    h.submit("t", retries=5)
    h.submit("next")
    acts = h.cancel("t")
    assert acts == [Kill("w", "t", 1, "cancelled")]
    assert h.state("t") is S.RUNNING
    acts = h.finish("w", "t", 1, exit_code=-15, reason="SIGTERM")
    assert ended(acts) == [("t", S.CANCELLED)]
    assert dispatched(acts) == [("w", "next", 1)]        # slot freed, no retry used
    assert h.sched.tasks["t"].current.state is S.CANCELLED


def test_given_an_ended_task_when_cancelled_then_nothing_happens(h) -> None:
    h.join("w")
    h.submit("t")
    h.finish("w", "t", 1)
    assert h.cancel("t") == []
    assert h.state("t") is S.SUCCEEDED


# ----- stale and misdirected reports -------------------------------------------

def test_given_a_finish_from_the_wrong_worker_then_it_is_ignored(h) -> None:
    h.join("w1")
    h.join("w2")
    h.submit("t")
    (d,) = [x for x in h.actions if isinstance(x, Dispatch)]
    other = "w2" if d.worker == "w1" else "w1"
    acts = h.finish(other, "t", 1, exit_code=0)
    assert ended(acts) == [] and h.state("t") is S.RUNNING
    assert ended(h.finish(d.worker, "t", 1, exit_code=0)) == [("t", S.SUCCEEDED)]


def test_given_a_finish_for_an_old_attempt_then_it_is_ignored(h) -> None:
    h.join("w")
    h.submit("t", retries=1, retry_backoff_s=0)
    h.finish("w", "t", 1, exit_code=1)
    assert h.sched.tasks["t"].current.number == 2 and h.state("t") is S.RUNNING
    acts = h.finish("w", "t", 1, exit_code=0)
    assert ended(acts) == [] and h.state("t") is S.RUNNING
    assert h.sched.workers["w"].running == 1


def test_given_a_finish_for_an_unknown_task_then_it_is_ignored(h) -> None:
    h.join("w")
    assert h.finish("w", "nope", 1) == []


# ----- lost workers -----------------------------------------------------------

def test_given_a_lost_worker_then_its_task_waits_the_grace_then_is_requeued(h) -> None:
    h.join("w1", slots=1)
    h.submit("t", retries=0)
    left_at = h.clock()
    acts = h.leave("w1")
    assert any("within 10s" in n.message for n in actions_of(acts, Note))
    assert h.state("t") is S.RUNNING
    assert h.sched.next_deadline() == left_at + GRACE
    assert h.tick_at(left_at + GRACE - 0.01) == []
    assert h.state("t") is S.RUNNING
    # When the grace is over, then it is QUEUED again (no worker to take it yet)
    acts = h.tick_at(left_at + GRACE)
    assert dispatched(acts) == [] and ended(acts) == []
    assert h.state("t") is S.QUEUED
    assert h.sched.tasks["t"].attempts[0].reason == "worker w1 lost"
    # Then another worker takes it as attempt 2; retries=0 was not used up
    assert dispatched(h.join("w2")) == [("w2", "t", 2)]
    assert ended(h.finish("w2", "t", 2, exit_code=0)) == [("t", S.SUCCEEDED)]


def test_given_another_worker_when_the_grace_ends_then_the_task_moves_there(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.join("w2", slots=1)
    h.leave("w1")
    assert dispatched(h.tick(GRACE)) == [("w2", "t", 2)]


def test_given_a_rejoin_within_grace_reporting_the_attempt_then_it_is_adopted(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.submit("queued")
    h.leave("w1")
    h.clock.advance(GRACE / 2)
    acts = h.join("w1", slots=1, running=[("t", 1)])
    assert dispatched(acts) == [] and actions_of(acts, Kill) == []
    assert any("adopted" in n.message for n in actions_of(acts, Note))
    assert h.state("t") is S.RUNNING and h.running_on("w1") == ["t"]
    # Then the grace no longer matters
    assert dispatched(h.tick(GRACE * 3 / 4)) == [] and h.state("t") is S.RUNNING
    acts = h.finish("w1", "t", 1, exit_code=0)
    assert ended(acts) == [("t", S.SUCCEEDED)]
    assert dispatched(acts) == [("w1", "queued", 1)]
    assert len(h.sched.tasks["t"].attempts) == 1


def test_given_a_rejoin_that_does_not_report_the_attempt_then_it_is_requeued_at_once(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.leave("w1")
    h.clock.advance(1)
    acts = h.join("w1", slots=1, running=[])
    assert any("re-queued" in n.message for n in actions_of(acts, Note))
    assert dispatched(acts) == [("w1", "t", 2)]
    assert h.sched.next_deadline() == h.clock() + HEARTBEAT   # no lost grace pending


def test_given_a_stale_running_report_then_kill_and_the_slot_stays_taken_until_finished(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.leave("w1")
    h.join("w2", slots=1)
    assert dispatched(h.tick(GRACE)) == [("w2", "t", 2)]
    h.submit("u")                                   # nobody is free for it yet
    # When w1 comes back still running attempt 1
    acts = h.join("w1", slots=1, running=[("t", 1)])
    assert actions_of(acts, Kill) == [Kill("w1", "t", 1, "stale attempt: it runs elsewhere now")]
    assert dispatched(acts) == []                   # w1's only slot holds the stale attempt
    assert h.sched.workers["w1"].free == 0
    # Then its FINISHED frees the slot without touching attempt 2
    acts = h.finish("w1", "t", 1, exit_code=-9)
    assert ended(acts) == [] and h.state("t") is S.RUNNING and h.sched.tasks["t"].node == "w2"
    assert dispatched(acts) == [("w1", "u", 1)]


def test_given_finished_reports_on_rejoin_then_they_are_adopted_not_killed(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.leave("w1")
    acts = h.join("w1", slots=1, finished=[("t", 1)])
    assert actions_of(acts, Kill) == [] and dispatched(acts) == []
    assert h.state("t") is S.RUNNING
    assert ended(h.finish("w1", "t", 1, exit_code=0)) == [("t", S.SUCCEEDED)]


def test_given_a_stale_finished_report_then_no_kill_and_no_slot_held(h) -> None:
    h.join("w1", slots=1)
    h.submit("t")
    h.leave("w1")
    h.join("w2", slots=1)
    h.tick(GRACE)
    h.submit("u")
    acts = h.join("w1", slots=1, finished=[("t", 1)])
    assert actions_of(acts, Kill) == []
    assert dispatched(acts) == [("w1", "u", 1)]
    assert h.finish("w1", "t", 1, exit_code=0) == [] and h.sched.tasks["t"].node == "w2"


def test_given_a_lost_worker_when_its_task_is_cancelled_then_it_ends_and_a_late_report_is_killed(h) -> None:
    h.join("w1")
    h.submit("t")
    h.leave("w1")
    assert ended(h.cancel("t")) == [("t", S.CANCELLED)]
    assert h.sched.next_deadline() is None
    acts = h.join("w1", running=[("t", 1)])
    assert [k.task_id for k in actions_of(acts, Kill)] == ["t"]
    assert h.state("t") is S.CANCELLED


def test_given_a_cancel_in_flight_when_the_worker_rejoins_with_the_attempt_then_kill_is_sent_again(h) -> None:
    h.join("w1")
    h.submit("t")
    assert actions_of(h.cancel("t"), Kill) == [Kill("w1", "t", 1, "cancelled")]
    h.leave("w1")                                   # the KILL may have died with the connection
    acts = h.join("w1", running=[("t", 1)])
    assert [(k.worker, k.task_id, k.attempt) for k in actions_of(acts, Kill)] == [("w1", "t", 1)]
    assert ended(h.finish("w1", "t", 1, exit_code=-15)) == [("t", S.CANCELLED)]


# ----- heartbeats and deadlines ---------------------------------------------------

def test_given_a_silent_worker_then_disconnect_at_the_deadline_then_the_grace_logic(h) -> None:
    t0 = h.clock()
    h.join("w1", slots=1)
    h.submit("t")
    h.clock.advance(5)
    h.heartbeat("w1")
    assert h.sched.next_deadline() == t0 + 5 + HEARTBEAT
    assert h.tick_at(t0 + 5 + HEARTBEAT - 0.01) == []
    acts = h.tick_at(h.sched.next_deadline())
    assert actions_of(acts, Disconnect) and actions_of(acts, Disconnect)[0].worker == "w1"
    assert not h.sched.workers["w1"].connected and h.state("t") is S.RUNNING
    lost_at = h.clock()
    assert h.sched.next_deadline() == lost_at + GRACE
    # A second tick does not disconnect it again
    assert actions_of(h.tick(1), Disconnect) == []
    h.join("w2")
    assert dispatched(h.tick_at(lost_at + GRACE)) == [("w2", "t", 2)]


def test_given_nothing_then_no_deadline(h) -> None:
    assert h.sched.next_deadline() is None
    h.submit("t")
    assert h.sched.next_deadline() is None          # queued work needs an event, not time


def test_next_deadline_is_the_earliest_of_heartbeat_backoff_and_grace(h) -> None:
    t0 = h.clock()
    h.join("w1")
    assert h.sched.next_deadline() == t0 + HEARTBEAT
    h.submit("later", delay_s=3)
    assert h.sched.next_deadline() == t0 + 3
    h.tick(3)
    h.heartbeat("w1")                                # last_seen = t0 + 3
    assert h.sched.next_deadline() == t0 + 3 + HEARTBEAT
    h.clock.advance(1)
    h.leave("w1")
    assert h.sched.next_deadline() == t0 + 4 + GRACE  # no live worker left to expire


def test_given_a_delay_cancelled_and_retried_then_the_old_delay_does_not_skip_a_backoff(calm) -> None:
    h = calm
    # A stale delayed-heap entry must not release a task that is waiting out a retry backoff.
    t0 = h.clock()
    h.join("w")
    h.submit("t", delay_s=10, retries=1, retry_backoff_s=100.0)
    h.clock.advance(1)
    h.cancel("t")
    assert dispatched(h.retry("t")) == [("w", "t", 1)]
    h.finish("w", "t", 1, exit_code=1)             # backoff: ready at t0 + 101
    assert dispatched(h.tick_at(t0 + 10)) == []
    assert h.state("t") is S.QUEUED
    assert dispatched(h.tick_at(t0 + 101)) == [("w", "t", 2)]


# ----- dispatch-ahead ---------------------------------------------------------

def quick_history(h: SchedulerHarness, worker: str, count: int = 3) -> None:
    """Run ``count`` 10 ms attempts on ``worker`` (alone in the cluster), so it counts as quick."""
    for i in range(count):
        d = dispatched(h.submit(f"warm-{worker}-{i}"))
        assert d == [(worker, f"warm-{worker}-{i}", 1)]
        h.clock.advance(0.01)
        h.finish(worker, f"warm-{worker}-{i}", 1)


def test_given_a_new_worker_that_can_hold_more_then_it_gets_only_its_slots_until_it_proves_quick(h) -> None:
    h.join("w", slots=1, ahead=2)
    acts = [a for i in range(5) for a in h.submit(f"t{i}")]
    assert dispatched(acts) == [("w", "t0", 1)]                 # no history yet: one slot, no more
    h.clock.advance(0.01)
    acts = h.finish("w", "t0", 1)
    assert dispatched(acts) == [("w", "t1", 1), ("w", "t2", 1), ("w", "t3", 1)]   # quick: slot + 2 ahead
    assert h.sched.saturated()                                    # t4 waits for capacity


def test_given_slow_attempts_then_nothing_is_sent_ahead(h) -> None:
    h.join("w", slots=1, ahead=2)
    h.submit("slow")
    h.clock.advance(5.0)                                        # well over QUICK_S
    acts = h.finish("w", "slow", 1) + h.submit("a") + h.submit("b")
    assert dispatched(acts) == [("w", "a", 1)]


def test_given_a_free_slot_elsewhere_then_it_wins_over_queueing_on_a_quick_busy_worker(h) -> None:
    h.join("quick", slots=1, ahead=2)
    quick_history(h, "quick")
    h.join("idle", slots=1)
    acts = h.submit("a") + h.submit("b") + h.submit("c")
    first, second, third = dispatched(acts)
    assert {first[0], second[0]} == {"quick", "idle"}       # a and b: one free slot each
    assert third == ("quick", "c", 1)                       # only c is sent ahead


def test_given_an_attempt_handed_back_then_it_is_placed_again_without_using_a_retry(h) -> None:
    h.join("w", slots=1, ahead=1)
    quick_history(h, "w")
    assert dispatched(h.submit("long") + h.submit("next")) == [("w", "long", 1), ("w", "next", 1)]
    h.clock.advance(0.5)
    acts = h.hand_back("w", "next", 1, waited_s=0.5)
    assert h.state("next") is S.QUEUED
    record = h.sched.tasks["next"]
    assert record.attempts[0].state is S.QUEUED and "handed it back" in record.attempts[0].reason
    assert dispatched(acts) == []                  # w is no longer quick: its one slot is taken
    h.join("other", slots=1)
    h.tick()
    assert ("other", "next", 2) in dispatched(h.actions)
    h.finish("other", "next", 2, exit_code=1)
    assert h.state("next") is S.FAILED             # retries=0: the hand-back did not count as a try


def test_given_a_hand_back_for_an_attempt_it_does_not_hold_then_it_is_ignored(h) -> None:
    h.join("w", slots=1)
    h.submit("a")
    assert h.hand_back("other", "a", 1, waited_s=1.0) == []
    assert h.hand_back("w", "a", 7, waited_s=1.0) == []
    assert h.state("a") is S.RUNNING


def test_given_the_queue_drains_then_saturated_clears(h) -> None:
    h.join("w", slots=1)
    h.submit("a")
    h.submit("b")
    assert h.sched.saturated()
    h.finish("w", "a", 1)
    assert not h.sched.saturated()                  # b took the slot; nothing waits
