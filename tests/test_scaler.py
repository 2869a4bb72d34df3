"""The inception scaler with a fake clock: waiting, saturation, parents, bounds, cooldown, pending."""
from __future__ import annotations

from typing import List, Optional

from titan.core.scaler import Fork, PoolDemand, Scaler, ScalerConfig, WorkerInfo


def tags(text: str) -> frozenset:
    return frozenset(t for t in text.split(",") if t)


def worker(name: str, tag_text: str = "", *, slots: int = 2, busy: Optional[int] = None,
           host: Optional[str] = None, max_children: int = 0, parent: Optional[str] = None,
           connected: bool = True, draining: bool = False, dedicated: bool = False) -> WorkerInfo:
    """A worker; busy by default (busy == slots), alone on host 'h-NAME' unless told."""
    return WorkerInfo(name, tags(tag_text), slots, slots if busy is None else busy,
                      host or f"h-{name}", max_children=max_children, parent=parent,
                      ephemeral=parent is not None, connected=connected, draining=draining,
                      dedicated=dedicated)


def pool(requires: str = "", *, queued: int = 1, since: float = 0.0, node: Optional[str] = None) -> PoolDemand:
    return PoolDemand(tags(requires), node, queued, since)


def parents(forks: List[Fork]) -> List[str]:
    return [f.parent for f in forks]


# ----- waiting and saturation -----------------------------------------------------

def test_given_a_saturated_pool_then_nothing_before_wait_s_and_a_fork_at_wait_s() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", max_children=4)]
    assert s.decide(2.9, [pool("gpu", since=0.0)], ws) == []
    forks = s.decide(3.0, [pool("gpu", since=0.0)], ws)
    assert forks == [Fork("p", tags("gpu"), "1 task needing {gpu} waited 3.0s on 1 busy worker")]


def test_the_reason_names_the_backlog_the_wait_and_the_busy_workers() -> None:
    s = Scaler()
    ws = [worker("a", "gpu", max_children=8), worker("b", "gpu,ssd", slots=4)]
    forks = s.decide(13.2, [pool("gpu", queued=7, since=10.0)], ws)
    assert {f.reason for f in forks} == {"7 tasks needing {gpu} waited 3.2s on 2 busy workers"}


def test_given_an_eligible_worker_with_a_free_slot_then_no_fork() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", max_children=4), worker("q", "gpu", busy=1)]
    assert s.decide(100.0, [pool("gpu")], ws) == []
    assert s.next_deadline() is None


def test_given_no_queued_task_then_no_fork() -> None:
    s = Scaler()
    assert s.decide(100.0, [pool("gpu", queued=0)], [worker("p", "gpu", max_children=4)]) == []


def test_given_no_worker_may_fork_then_no_fork() -> None:
    s = Scaler()
    ws = [worker("a", "gpu"), worker("b", "gpu")]
    assert s.decide(100.0, [pool("gpu", queued=9)], ws) == []
    assert s.next_deadline() is None


def test_given_no_worker_serves_the_pool_then_no_fork() -> None:
    # A busy cpu worker that may fork does not help gpu work.
    s = Scaler()
    assert s.decide(100.0, [pool("gpu")], [worker("c", "cpu", max_children=4)]) == []


def test_a_worker_with_other_tags_neither_serves_nor_unsaturates_the_pool() -> None:
    s = Scaler()
    ws = [worker("g", "gpu", max_children=4), worker("c", "cpu", busy=0, max_children=4)]
    assert parents(s.decide(100.0, [pool("gpu")], ws)) == ["g"]


def test_a_dedicated_worker_serves_only_pools_that_require_one_of_its_tags() -> None:
    # Untagged work: the idle dedicated gpu worker neither counts as free nor forks.
    s = Scaler()
    ws = [worker("d", "gpu", busy=0, max_children=4, dedicated=True), worker("p", "", max_children=4)]
    assert parents(s.decide(100.0, [pool("")], ws)) == ["p"]
    only_dedicated = [worker("d", "gpu", max_children=4, dedicated=True)]
    assert Scaler().decide(100.0, [pool("")], only_dedicated) == []
    assert parents(Scaler().decide(100.0, [pool("gpu")], only_dedicated)) == ["d"]


def test_a_node_pinned_pool_never_scales() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", max_children=4)]
    assert s.decide(100.0, [pool("gpu", queued=5, node="p")], ws) == []
    assert s.next_deadline() is None


def test_draining_and_disconnected_workers_are_ignored() -> None:
    # Their free slots do not count, and they are never asked to fork.
    s = Scaler()
    ws = [worker("p", "gpu", max_children=4),
          worker("d", "gpu", busy=0, max_children=4, draining=True),
          worker("x", "gpu", busy=0, max_children=4, connected=False)]
    assert parents(s.decide(100.0, [pool("gpu")], ws)) == ["p"]
    gone = [worker("d", "gpu", max_children=4, draining=True),
            worker("x", "gpu", max_children=4, connected=False)]
    assert Scaler().decide(100.0, [pool("gpu")], gone) == []


def test_a_child_is_never_chosen_as_a_parent() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", max_children=1), worker("p.1", "gpu", max_children=4, parent="p")]
    assert s.decide(100.0, [pool("gpu", queued=4)], ws) == []       # p's one child is live


# ----- how many, and from whom ------------------------------------------------------

def test_a_decision_forks_enough_children_for_the_backlog() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", slots=2, max_children=8)]
    assert parents(s.decide(3.0, [pool("gpu", queued=7)], ws)) == ["p"] * 4     # ceil(7 / 2)


def test_children_already_pending_for_the_pool_are_subtracted_but_at_least_one_is_forked() -> None:
    s = Scaler()
    ws = [worker("p", "gpu", slots=2, max_children=8)]
    assert len(s.decide(3.0, [pool("gpu", queued=7)], ws)) == 4
    assert len(s.decide(13.0, [pool("gpu", queued=11)], ws)) == 2   # ceil(11 / 2) - 4 pending
    assert len(s.decide(23.0, [pool("gpu", queued=3)], ws)) == 1    # 2 - 6 pending, at least 1


def test_children_go_to_the_parent_with_fewest_children_then_by_name() -> None:
    s = Scaler()
    ws = [worker("b", "gpu", max_children=4), worker("a", "gpu", max_children=4),
          worker("c", "gpu", max_children=4), worker("c.1", "gpu", parent="c", host="h-c")]
    forks = s.decide(3.0, [pool("gpu", queued=8)], ws)
    assert parents(forks) == ["a", "b", "a", "b"]        # c already has one child


def test_max_children_bounds_a_parent_and_the_rest_goes_to_another() -> None:
    s = Scaler()
    ws = [worker("a", "gpu", slots=1, max_children=2), worker("b", "gpu", slots=1, max_children=1)]
    assert sorted(parents(s.decide(3.0, [pool("gpu", queued=10)], ws))) == ["a", "a", "b"]
    assert s.decide(13.0, [pool("gpu", queued=10)], ws) == []       # all allowance is pending


def test_max_per_host_counts_live_and_pending_children_on_the_host() -> None:
    s = Scaler(ScalerConfig(max_per_host=3))
    ws = [worker("a", "gpu", slots=1, host="h1", max_children=4),
          worker("b", "gpu", slots=1, host="h1", max_children=4),
          worker("a.1", "gpu", slots=1, host="h1", parent="a"),
          worker("c", "gpu", slots=1, host="h2", max_children=1)]
    forks = s.decide(3.0, [pool("gpu", queued=20)], ws)
    assert sorted(parents(forks)) == ["a", "b", "c"]     # h1: 1 live + 2 new; h2: c's one allowed
    assert s.decide(13.0, [pool("gpu", queued=20)], ws) == []


def test_max_cluster_counts_every_live_child_and_every_pending_request() -> None:
    s = Scaler(ScalerConfig(max_cluster=3))
    ws = [worker("p", "gpu", slots=1, max_children=8),
          worker("c", "cpu", slots=1, max_children=8),
          worker("c.1", "cpu", slots=1, parent="c", host="h-c")]
    assert parents(s.decide(3.0, [pool("gpu", queued=10)], ws)) == ["p", "p"]     # 1 live cpu child + 2
    assert s.decide(20.0, [pool("gpu", queued=10), pool("cpu", queued=10)], ws) == []   # cluster full


def test_several_pools_are_decided_in_tag_order_against_shared_bounds() -> None:
    s = Scaler(ScalerConfig(max_cluster=2))
    ws = [worker("g", "gpu", slots=1, max_children=8), worker("c", "cpu", slots=1, max_children=8)]
    forks = s.decide(3.0, [pool("gpu", queued=1), pool("cpu", queued=5)], ws)
    assert [(f.parent, sorted(f.requires)) for f in forks] == [("c", ["cpu"]), ("c", ["cpu"])]


# ----- cooldown and pending requests --------------------------------------------------

def test_cooldown_holds_the_pool_then_a_second_decision_follows() -> None:
    s = Scaler(ScalerConfig(wait_s=3.0, cooldown_s=10.0))
    ws = [worker("p", "gpu", max_children=4)]
    assert parents(s.decide(3.0, [pool("gpu")], ws)) == ["p"]
    assert s.decide(4.0, [pool("gpu")], ws) == []
    assert s.decide(12.9, [pool("gpu")], ws) == []
    assert parents(s.decide(13.0, [pool("gpu")], ws)) == ["p"]


def test_cooldown_is_per_pool() -> None:
    s = Scaler()
    ws = [worker("g", "gpu", max_children=4), worker("c", "cpu", max_children=4)]
    assert parents(s.decide(3.0, [pool("gpu")], ws)) == ["g"]
    assert parents(s.decide(4.0, [pool("gpu"), pool("cpu", since=1.0)], ws)) == ["c"]


def test_a_pending_child_counts_until_child_joined() -> None:
    s = Scaler()
    p = worker("p", "gpu", max_children=3)
    assert len(s.decide(3.0, [pool("gpu")], [p])) == 1
    assert len(s.decide(13.0, [pool("gpu")], [p])) == 1
    # The first child registers: live, busy, and still pending until child_joined.
    ws = [p, worker("p.1", "gpu", parent="p", host="h-p")]
    assert s.decide(23.0, [pool("gpu")], ws) == []          # 1 live + 2 pending = 3
    s.child_joined("p")
    assert parents(s.decide(23.0, [pool("gpu")], ws)) == ["p"]   # 1 live + 1 pending < 3


def test_child_joined_for_a_parent_with_nothing_pending_changes_nothing() -> None:
    s = Scaler()
    s.child_joined("nobody")
    ws = [worker("p", "gpu", max_children=1)]
    assert parents(s.decide(3.0, [pool("gpu")], ws)) == ["p"]
    s.child_joined("other")
    assert s.decide(13.0, [pool("gpu")], ws) == []


def test_a_request_that_never_registers_stops_counting_after_pending_timeout_s() -> None:
    s = Scaler(ScalerConfig(pending_timeout_s=30.0))
    ws = [worker("p", "gpu", max_children=1)]
    assert parents(s.decide(3.0, [pool("gpu")], ws)) == ["p"]
    assert s.decide(13.0, [pool("gpu")], ws) == []
    assert s.decide(32.9, [pool("gpu")], ws) == []
    assert parents(s.decide(33.0, [pool("gpu")], ws)) == ["p"]


# ----- next_deadline -----------------------------------------------------------------

def test_next_deadline_is_none_before_any_input() -> None:
    assert Scaler().next_deadline() is None


def test_next_deadline_is_when_the_oldest_task_reaches_wait_s() -> None:
    s = Scaler(ScalerConfig(wait_s=3.0))
    ws = [worker("p", "gpu", max_children=4)]
    assert s.decide(1.0, [pool("gpu", since=0.5)], ws) == []
    assert s.next_deadline() == 3.5


def test_next_deadline_after_a_decision_is_the_end_of_the_cooldown() -> None:
    s = Scaler(ScalerConfig(cooldown_s=10.0))
    ws = [worker("p", "gpu", max_children=4)]
    assert len(s.decide(3.0, [pool("gpu")], ws)) == 1
    assert s.next_deadline() == 13.0


def test_next_deadline_when_bounds_block_is_the_first_pending_timeout() -> None:
    s = Scaler(ScalerConfig(cooldown_s=10.0, pending_timeout_s=30.0))
    ws = [worker("p", "gpu", max_children=1)]
    assert len(s.decide(3.0, [pool("gpu")], ws)) == 1
    assert s.decide(13.0, [pool("gpu")], ws) == []
    assert s.next_deadline() == 33.0


def test_next_deadline_moves_up_when_a_child_joins() -> None:
    # Bounds freed by child_joined: decide() may fork at once (the cooldown is over).
    s = Scaler(ScalerConfig(cooldown_s=10.0, pending_timeout_s=30.0))
    ws = [worker("p", "gpu", max_children=1)]
    assert len(s.decide(3.0, [pool("gpu")], ws)) == 1
    assert s.decide(13.0, [pool("gpu")], ws) == []
    s.child_joined("p")
    assert s.next_deadline() == 13.0


def test_next_deadline_is_the_earliest_of_several_pools() -> None:
    s = Scaler(ScalerConfig(wait_s=3.0))
    ws = [worker("g", "gpu", max_children=4), worker("c", "cpu", max_children=4)]
    assert s.decide(1.0, [pool("gpu", since=0.9), pool("cpu", since=0.2)], ws) == []
    assert s.next_deadline() == 3.2
