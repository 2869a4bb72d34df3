"""Placement: which worker takes a task, and which workers a task may use.

Routing, in order: a pinned node (``node = NAME``) -> capability tags (the
task's ``requires`` must be a subset of the worker's tags; a ``dedicated``
worker takes only tasks that require one of its tags) -> least loaded
(running / slots), ties broken round-robin so equal workers share the work.

Dispatch-ahead: a worker that says it can hold ``ahead`` attempts beyond its
slots, and whose recent attempts were quick (under :data:`QUICK_S` on
average), may be sent that many more.  It starts each the moment a slot
frees, so short tasks never wait for a round trip to the master.  A worker
with a free slot always wins over one that would only queue the task.

Pure: no clock, no sockets; the scheduler owns the :class:`WorkerView` objects.
"""
from __future__ import annotations

from typing import FrozenSet, Iterable, List, Optional

__all__ = ["WorkerView", "eligible", "choose_worker", "least_loaded", "choose_for_service", "QUICK_S"]

QUICK_S = 0.1          # average attempt time under which a worker is sent work ahead


class WorkerView:
    """What placement needs to know about one worker."""

    __slots__ = ("name", "tags", "slots", "running", "dedicated", "connected",
                 "draining", "order", "last_seen", "foreign", "info", "ahead", "avg_s", "capacity")

    def __init__(self, name: str, tags: FrozenSet[str], slots: int, *,
                 dedicated: bool = False, order: int = 0, now: float = 0.0) -> None:
        self.name = name
        self.tags = tags
        self.slots = max(1, slots)
        self.running = 0
        self.dedicated = dedicated
        self.connected = True
        self.draining = False
        self.order = order
        self.last_seen = now
        self.foreign: "set[tuple[str, int]]" = set()   # attempts it runs that the master does not track
        self.info: dict = {}
        self.ahead = 0                  # attempts it can hold beyond its slots (it says so in HELLO)
        self.avg_s: Optional[float] = None   # recent attempt time, dispatch to end (moving average)
        self.capacity = self.slots      # slots, plus ``ahead`` while its attempts are quick

    def observe(self, seconds: float) -> None:
        """An attempt took ``seconds`` from dispatch to its end (or waited that long and came back)."""
        self.avg_s = seconds if self.avg_s is None else 0.7 * self.avg_s + 0.3 * seconds
        self.update_capacity()

    def handed_back(self, waited_s: float) -> None:
        """An attempt sent ahead waited ``waited_s`` without a slot: send none ahead for now."""
        self.avg_s = max(self.avg_s or 0.0, waited_s)
        self.update_capacity()

    def update_capacity(self) -> None:
        quick = self.avg_s is not None and self.avg_s < QUICK_S
        self.capacity = self.slots + (self.ahead if quick else 0)

    @property
    def busy(self) -> int:
        return self.running + len(self.foreign)

    @property
    def free(self) -> int:
        return self.capacity - self.busy

    @property
    def load(self) -> float:
        return self.busy / self.slots

    def accepting(self) -> bool:
        return self.connected and not self.draining and self.free > 0


def eligible(worker: WorkerView, requires: FrozenSet[str], node: Optional[str]) -> bool:
    """Whether ``worker`` may ever run a task with these constraints."""
    if node is not None and worker.name != node:
        return False
    if not requires <= worker.tags:
        return False
    if worker.dedicated and not (requires & worker.tags):
        return False
    return True


def choose_worker(workers: Iterable[WorkerView], requires: FrozenSet[str],
                  node: Optional[str], rr_cursor: int) -> Optional[WorkerView]:
    """The least-loaded accepting eligible worker, ties broken round-robin.

    ``rr_cursor`` is a counter the caller advances after each placement; the
    tie goes to the first tied worker at or after it in join order.
    """
    return least_loaded([w for w in workers if w.accepting()], requires, node, rr_cursor)


def least_loaded(accepting: Iterable[WorkerView], requires: FrozenSet[str],
                 node: Optional[str], rr_cursor: int) -> Optional[WorkerView]:
    """:func:`choose_worker` among workers known to be accepting work.

    The scheduler keeps the list of workers with room while it dispatches,
    so it need not ask each one again for every task it places.
    """
    best: List[WorkerView] = []
    best_load = 2.0 ** 62
    for w in accepting:
        if not eligible(w, requires, node):
            continue
        load = w.load
        if load < best_load:
            best, best_load = [w], load
        elif load == best_load:
            best.append(w)
    if not best:
        return None
    if len(best) == 1:
        return best[0]
    return min(best, key=lambda w: (w.order - rr_cursor) % (1 << 30))


def choose_for_service(workers: Iterable[WorkerView], requires: FrozenSet[str], node: Optional[str],
                       placed: "dict[str, int]", exclude: Iterable[str] = ()) -> Optional[WorkerView]:
    """Where a service goes: an eligible, connected, undrained worker not in ``exclude``
    with the fewest services (``placed``: name -> count), then the least loaded, then the oldest.

    Services take no task slots: a full worker can still run one.
    """
    skip = set(exclude)
    candidates = [w for w in workers
                  if w.connected and not w.draining and w.name not in skip and eligible(w, requires, node)]
    return min(candidates, key=lambda w: (placed.get(w.name, 0), w.load, w.order), default=None)
