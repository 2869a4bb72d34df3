"""Placement: capability routing, dedicated workers, node pins, least-loaded, round-robin."""
from __future__ import annotations

from collections import Counter
from typing import List, Optional

import pytest

from titan.core.placement import WorkerView, choose_worker, eligible

NONE: frozenset = frozenset()


def worker(name: str, tags: str = "", slots: int = 4, *, running: int = 0,
           dedicated: bool = False, order: int = 0) -> WorkerView:
    w = WorkerView(name, frozenset(t for t in tags.split(",") if t), slots,
                   dedicated=dedicated, order=order)
    w.running = running
    return w


def choose(workers: List[WorkerView], requires: str = "", node: Optional[str] = None,
           cursor: int = 0) -> Optional[str]:
    chosen = choose_worker(workers, frozenset(t for t in requires.split(",") if t), node, cursor)
    return chosen.name if chosen else None


# ----- eligible -------------------------------------------------------------

@pytest.mark.parametrize("tags, requires, ok", [
    ("", "", True),
    ("gpu", "", True),
    ("gpu,highmem", "gpu", True),
    ("gpu,highmem", "gpu,highmem", True),
    ("gpu", "gpu,highmem", False),
    ("", "gpu", False),
    ("cpu", "gpu", False),
])
def test_given_tags_then_requires_must_be_a_subset(tags: str, requires: str, ok: bool) -> None:
    w = worker("w", tags)
    assert eligible(w, frozenset(t for t in requires.split(",") if t), None) is ok


@pytest.mark.parametrize("requires, ok", [("", False), ("gpu", True), ("gpu,fast", True), ("other", False)])
def test_given_a_dedicated_worker_then_it_takes_only_tasks_requiring_one_of_its_tags(
        requires: str, ok: bool) -> None:
    w = worker("w", "gpu,fast", dedicated=True)
    assert eligible(w, frozenset(t for t in requires.split(",") if t), None) is ok


def test_given_a_node_pin_then_only_that_worker_is_eligible() -> None:
    assert eligible(worker("box-1"), NONE, "box-1")
    assert not eligible(worker("box-2"), NONE, "box-1")
    # the pin does not override capabilities
    assert not eligible(worker("box-1"), frozenset({"gpu"}), "box-1")


# ----- choose_worker --------------------------------------------------------

def test_given_no_eligible_worker_then_none() -> None:
    assert choose([worker("a", "cpu")], "gpu") is None
    assert choose([], "") is None


def test_given_a_pin_then_the_pinned_worker_is_chosen_even_if_busier() -> None:
    ws = [worker("idle", order=1), worker("pinned", running=3, order=2)]
    assert choose(ws, node="pinned") == "pinned"


def test_given_full_disconnected_or_draining_workers_then_they_are_skipped() -> None:
    full = worker("full", slots=2, running=2, order=1)
    gone = worker("gone", order=2)
    gone.connected = False
    draining = worker("draining", order=3)
    draining.draining = True
    assert choose([full, gone, draining]) is None
    spare = worker("spare", running=3, order=4)
    assert choose([full, gone, draining, spare]) == "spare"


def test_given_foreign_attempts_then_they_count_as_load_and_fill_slots() -> None:
    w = worker("w", slots=1)
    w.foreign.add(("old#1", 1))
    assert (w.busy, w.free, w.accepting()) == (1, 0, False)
    assert choose([w]) is None


def test_given_different_loads_then_the_least_loaded_by_ratio_wins() -> None:
    ws = [
        worker("half", slots=2, running=1, order=1),         # 0.50
        worker("quarter", slots=8, running=2, order=2),      # 0.25
        worker("third", slots=3, running=1, order=3),        # 0.33
    ]
    assert choose(ws) == "quarter"


def test_given_a_dedicated_idle_worker_then_an_untagged_task_goes_to_a_busier_general_one() -> None:
    ws = [worker("gpu", "gpu", dedicated=True, order=1), worker("general", "gpu", running=3, order=2)]
    assert choose(ws, "") == "general"
    assert choose(ws, "gpu") == "gpu"


@pytest.mark.parametrize("cursor, expected", [(0, "a"), (1, "a"), (2, "b"), (3, "c"), (4, "a"), (99, "a")])
def test_given_tied_workers_then_the_first_at_or_after_the_cursor_wins(cursor: int, expected: str) -> None:
    ws = [worker("a", order=1), worker("b", order=2), worker("c", order=3)]
    assert choose(ws, cursor=cursor) == expected


def test_given_equal_workers_when_placing_many_tasks_round_robin_then_the_spread_is_even() -> None:
    ws = [worker(f"w{i}", slots=1000, order=i) for i in range(1, 6)]
    cursor = 0
    picks: List[str] = []
    for _ in range(500):
        w = choose_worker(ws, NONE, None, cursor)
        assert w is not None
        picks.append(w.name)
        cursor = w.order + 1     # what the scheduler does after each placement
        w.running += 1           # nothing finishes; least-loaded and the cursor agree
    counts = Counter(picks)
    assert counts == {f"w{i}": 100 for i in range(1, 6)}
    assert picks[:6] == ["w1", "w2", "w3", "w4", "w5", "w1"]


def test_given_equal_idle_workers_and_instant_completions_then_round_robin_still_rotates() -> None:
    # Loads never change (each task finishes at once), so every choice is a tie:
    # only the cursor spreads the work.
    ws = [worker(f"w{i}", order=i) for i in (3, 7, 11)]
    cursor = 0
    counts: Counter = Counter()
    for _ in range(300):
        w = choose_worker(ws, NONE, None, cursor)
        assert w is not None
        counts[w.name] += 1
        cursor = w.order + 1
    assert counts == {"w3": 100, "w7": 100, "w11": 100}


def test_worker_view_clamps_slots_to_at_least_one() -> None:
    assert WorkerView("w", NONE, 0).slots == 1
