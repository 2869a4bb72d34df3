"""Inception scaling: when a saturated capability pool gets another worker.

The master owns the workers and the queue; the scaler owns only its memory of
its own decisions: when each pool was last helped (its cooldown) and which
children were asked for but have not registered yet (pending requests).

    master tick --(now, [PoolDemand], [WorkerInfo])--> Scaler.decide
                <-- [Fork(parent, requires, reason)]   one per child: the master asks
                                                       PARENT to fork an ephemeral child
    a child registers (parent=P) ------------------> Scaler.child_joined(P)
    master sleeps at most until <------------------- Scaler.next_deadline()

Rules:

- A pool is the tasks needing ``requires`` on any node; pinned pools never
  scale (a child has another name). A worker serves a pool by
  :func:`titan.core.placement.eligible`'s rule, if connected and not draining.
- A pool is saturated when some worker serves it and every one has
  busy >= slots; with no worker at all it cannot be helped (no parent).
- A pool gets a decision when queued > 0, its oldest task has waited
  ``wait_s``, it is saturated, and ``cooldown_s`` has passed since its last one.
- A parent serves the pool, is not itself a child, and has
  max_children > live + pending children; each child goes to the one with the
  fewest live + pending children, then by name.
- One decision forks ceil(queued / parent.slots) minus the children already
  pending for the pool, at least 1, bounded by max_children, ``max_per_host``
  and ``max_cluster`` (live children, i.e. workers with a parent, plus pending).
- A request stays pending until child_joined(parent) or ``pending_timeout_s``.

Pure: ``now`` comes in; no clock, no I/O, no randomness.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from titan.core.placement import eligible

__all__ = ["Fork", "PoolDemand", "Scaler", "ScalerConfig", "WorkerInfo"]


@dataclass(frozen=True)
class ScalerConfig:
    wait_s: float = 3.0               # queued work must have waited this long on a saturated pool
    cooldown_s: float = 10.0          # per pool: no new decision sooner than this after the last one
    max_per_host: int = 8             # live + pending children on one host (by WorkerInfo.host)
    max_cluster: int = 32             # live + pending children in the whole cluster
    pending_timeout_s: float = 30.0   # a requested child that never registered stops counting after this


@dataclass(frozen=True)
class PoolDemand:
    """The ready queued tasks of one routing class, as the master counts them."""
    requires: FrozenSet[str]          # tasks needing these tags ...
    node: Optional[str]               # ... and pinned to this node (None: any); pinned pools never scale
    queued: int                       # tasks QUEUED and ready in this class
    oldest_since: float               # when the oldest of them became ready


@dataclass(frozen=True)
class WorkerInfo:
    """What the scaler needs to know about one worker."""
    name: str
    tags: FrozenSet[str]
    slots: int
    busy: int                         # attempts running
    host: str
    max_children: int = 0             # 0: may not fork
    parent: Optional[str] = None      # set for a child worker (children never fork grandchildren)
    ephemeral: bool = False
    connected: bool = True
    draining: bool = False
    dedicated: bool = False           # takes only tasks that require one of its tags


class Fork(NamedTuple):
    """Ask worker ``parent`` to fork one ephemeral child with its own tags."""
    parent: str
    requires: FrozenSet[str]          # the pool it is for
    reason: str


class _Pending(NamedTuple):
    """A child asked of a parent that has not registered yet."""
    at: float
    requires: FrozenSet[str]
    host: str                         # the parent's host, which the child will report


class _Census:
    """Children per parent, per host and in the cluster: live ones plus pending requests."""

    def __init__(self, workers: Iterable[WorkerInfo], pending: Dict[str, List[_Pending]]) -> None:
        self.by_parent: Dict[str, int] = {}
        self.by_host: Dict[str, int] = {}
        self.total = 0
        for w in workers:
            if w.parent is not None:
                self.add(w.parent, w.host)
        for parent, entries in pending.items():
            for entry in entries:
                self.add(parent, entry.host)

    def add(self, parent: str, host: str) -> None:
        self.by_parent[parent] = self.by_parent.get(parent, 0) + 1
        self.by_host[host] = self.by_host.get(host, 0) + 1
        self.total += 1

    def room(self, parent: WorkerInfo, config: ScalerConfig) -> int:
        """How many more children ``parent`` may fork under all three bounds."""
        return min(parent.max_children - self.by_parent.get(parent.name, 0),
                   config.max_per_host - self.by_host.get(parent.host, 0),
                   config.max_cluster - self.total)


def _serving(workers: Iterable[WorkerInfo], requires: FrozenSet[str]) -> List[WorkerInfo]:
    """Connected, non-draining workers that may run tasks of the pool."""
    # eligible() reads only name, tags and dedicated, which WorkerInfo has too.
    return [w for w in workers
            if w.connected and not w.draining and eligible(w, requires, None)]  # type: ignore[arg-type]


def _tag_text(tags: FrozenSet[str]) -> str:
    return "{" + ",".join(sorted(tags)) + "}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _pool_key(pool: PoolDemand) -> Tuple[Tuple[str, ...], str]:
    return tuple(sorted(pool.requires)), pool.node or ""


class Scaler:
    """Per-pool fork decisions; the master applies them and reports children joining."""

    def __init__(self, config: ScalerConfig = ScalerConfig()) -> None:
        self.config = config
        self._pending: Dict[str, List[_Pending]] = {}        # parent -> requests, oldest first
        self._last: Dict[FrozenSet[str], float] = {}          # pool -> time of its last decision
        self._seen: Optional[Tuple[float, List[PoolDemand], List[WorkerInfo]]] = None

    # -- events ------------------------------------------------------------------

    def decide(self, now: float, pools: Iterable[PoolDemand], workers: Iterable[WorkerInfo]) -> List[Fork]:
        """The children to fork now, one Fork each, pools in tag order."""
        pool_list = sorted(pools, key=_pool_key)
        worker_list = sorted(workers, key=lambda w: w.name)
        self._forget(now)
        self._seen = (now, pool_list, worker_list)
        forks: List[Fork] = []
        for pool in pool_list:
            forks += self._decide_pool(now, pool, worker_list)
        return forks

    def child_joined(self, parent: str) -> None:
        """One child of ``parent`` registered: its oldest pending request is fulfilled."""
        entries = self._pending.get(parent)
        if not entries:
            return
        entries.remove(min(entries, key=lambda e: e.at))
        if not entries:
            del self._pending[parent]

    def next_deadline(self) -> Optional[float]:
        """The earliest ``now`` at which decide() could fork, given its last inputs; None: no such time."""
        if self._seen is None:
            return None
        seen_at, pools, workers = self._seen
        census = _Census(workers, self._pending)
        expiries = [e.at + self.config.pending_timeout_s for es in self._pending.values() for e in es]
        times: List[float] = []
        for pool in pools:
            ready = self._ready_at(pool, workers)
            if ready is None:
                continue
            if self._parents(pool.requires, workers, census):
                times.append(ready)
            elif expiries and self._may_fork(pool.requires, workers):
                times.append(max(ready, min(expiries)))      # bounds loosen only when a request expires
        return max(seen_at, min(times)) if times else None     # never before the last decide()

    # -- pieces --------------------------------------------------------------------

    def pending(self, parent: Optional[str] = None) -> int:
        """Children asked for (of ``parent``, or of anyone) that have not registered yet."""
        if parent is not None:
            return len(self._pending.get(parent, ()))
        return sum(len(es) for es in self._pending.values())

    def _forget(self, now: float) -> None:
        """Drop pending requests that timed out and cooldowns that ended."""
        cutoff = now - self.config.pending_timeout_s
        for parent in sorted(self._pending):
            kept = [e for e in self._pending[parent] if e.at > cutoff]
            if kept:
                self._pending[parent] = kept
            else:
                del self._pending[parent]
        self._last = {k: t for k, t in self._last.items() if t + self.config.cooldown_s > now}

    def _ready_at(self, pool: PoolDemand, workers: List[WorkerInfo]) -> Optional[float]:
        """When waiting and cooldown allow a decision for ``pool``; None: its state rules one out."""
        if pool.node is not None or pool.queued <= 0:
            return None
        serving = _serving(workers, pool.requires)
        if not serving or any(w.busy < w.slots for w in serving):
            return None
        ready = pool.oldest_since + self.config.wait_s
        last = self._last.get(pool.requires)
        if last is not None:
            ready = max(ready, last + self.config.cooldown_s)
        return ready

    def _may_fork(self, requires: FrozenSet[str], workers: List[WorkerInfo]) -> bool:
        """Whether some worker of the pool could ever be a parent, bounds aside."""
        return any(w.parent is None and w.max_children > 0 for w in _serving(workers, requires))

    def _parents(self, requires: FrozenSet[str], workers: List[WorkerInfo], census: _Census) -> List[WorkerInfo]:
        """Workers that may fork a child for the pool now, best first."""
        ok = [w for w in _serving(workers, requires)
              if w.parent is None and census.room(w, self.config) > 0]
        return sorted(ok, key=lambda w: (census.by_parent.get(w.name, 0), w.name))

    def _decide_pool(self, now: float, pool: PoolDemand, workers: List[WorkerInfo]) -> List[Fork]:
        ready = self._ready_at(pool, workers)
        if ready is None or ready > now:
            return []
        census = _Census(workers, self._pending)
        parents = self._parents(pool.requires, workers, census)
        if not parents:
            return []
        already = sum(1 for es in self._pending.values() for e in es if e.requires == pool.requires)
        want = max(1, math.ceil(pool.queued / max(1, parents[0].slots)) - already)
        reason = self._reason(now, pool, workers)
        forks: List[Fork] = []
        while len(forks) < want and parents:
            parent = parents[0]
            census.add(parent.name, parent.host)
            self._pending.setdefault(parent.name, []).append(_Pending(now, pool.requires, parent.host))
            forks.append(Fork(parent.name, pool.requires, reason))
            parents = self._parents(pool.requires, workers, census)
        self._last[pool.requires] = now
        return forks

    def _reason(self, now: float, pool: PoolDemand, workers: List[WorkerInfo]) -> str:
        busy = len(_serving(workers, pool.requires))
        what = f"needing {_tag_text(pool.requires)}" if pool.requires else "queued"
        return (f"{_plural(pool.queued, 'task')} {what} waited "
                f"{now - pool.oldest_since:.1f}s on {_plural(busy, 'busy worker')}")
