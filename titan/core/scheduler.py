"""The scheduler: the master's decisions, as a pure state machine.

The master's event loop feeds it events, each with ``now`` (seconds since the
epoch), and carries out the actions it returns::

    task_submitted / worker_joined / worker_left / heartbeat
    attempt_finished / cancel / retry / tick(now)
            |
            v
        Scheduler  --->  [Dispatch, Kill, Ended, Disconnect, Note]
            |
        next_deadline()  -> when tick() next has something to do

Queued tasks wait in one heap per routing class (same ``requires`` and
``node``), ordered ``(-priority, seq)``: higher priority first, first-in
first-out within a priority.  A dispatch pass looks only at the head of each
class, so a task no worker can take now never blocks one that can.  A class
with nothing queued keeps its heap until the periodic sweep (forget_finished)
drops it.
"""
from __future__ import annotations

import heapq
from typing import Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from titan.core.model import Attempt, TaskRecord, TaskSpec, TaskState, TERMINAL, transition
from titan.core.placement import WorkerView, eligible, least_loaded
from titan.errors import InvalidTransition

__all__ = ["Scheduler", "Dispatch", "Kill", "Ended", "Disconnect", "Note", "Action"]

S = TaskState
RETRYABLE = frozenset({S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED})
ClassKey = Tuple[FrozenSet[str], Optional[str]]


class Dispatch(NamedTuple):
    """Send attempt ``attempt`` of ``task_id`` to ``worker``."""
    worker: str
    task_id: str
    attempt: int
    spec: TaskSpec


class Kill(NamedTuple):
    """Ask ``worker`` to kill the process group of that attempt."""
    worker: str
    task_id: str
    attempt: int
    reason: str


class Ended(NamedTuple):
    """``task_id`` reached a terminal state; tell whoever waits on it."""
    task_id: str
    state: TaskState


class Disconnect(NamedTuple):
    """Close the connection of ``worker`` (it stopped heartbeating)."""
    worker: str
    reason: str


class Note(NamedTuple):
    """Something worth a line in the master's log."""
    message: str


Action = object


class Scheduler:
    """Owns tasks, workers and the queue; never touches a socket or a clock."""

    def __init__(self, *, lost_grace_s: float = 10.0, heartbeat_timeout_s: float = 15.0,
                 max_backoff_s: float = 300.0) -> None:
        self.lost_grace_s = lost_grace_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_backoff_s = max_backoff_s
        self.tasks: Dict[str, TaskRecord] = {}
        self.workers: Dict[str, WorkerView] = {}
        self._classes: Dict[ClassKey, list] = {}
        self._delayed: list = []          # (ready_at, seq, task_id)
        self._seq = 0
        self._rr = 0
        self._worker_order = 0
        self._lost: Dict[str, float] = {}  # task_id -> when its worker was lost
        self.dirty: "set[str]" = set()      # ids of tasks changed since the owner last persisted them
        self._hold_until = 0.0              # see hold_dispatch
        self._dependants: Dict[str, List[str]] = {}   # task id -> ids of tasks waiting for it
        self._cancelling: "set[str]" = set()          # a cancel cascade in progress
        self._awaiting: "set[str]" = set()
        self.workers_dirty: "set[str]" = set()
        self._left_at: Dict[str, float] = {}     # worker -> when its connection went (until it is back)
        self._full = False                  # the last dispatch pass found no worker with room

    def _move(self, record: TaskRecord, new: TaskState) -> TaskState:
        """Every state change goes through here, so the owner can persist it."""
        self.dirty.add(record.id)
        return transition(record, new)

    # ----- persistence ---------------------------------------------------
    def restore(self, records: Iterable[TaskRecord], now: float) -> None:
        """Take back tasks read from durable storage after a restart.

        QUEUED tasks queue again in their original order, and so do WAITING
        ones whose dependencies all succeeded; RUNNING ones wait
        ``lost_grace_s`` for their worker to come back and report them.
        """
        for name, w in self.workers.items():
            if not w.connected:
                self._left_at.setdefault(name, now)     # restored: away (for the grace) since this start
        for record in sorted(records, key=lambda r: r.seq):
            self.tasks[record.id] = record
            self._seq = max(self._seq, record.seq)
            for dep in record.after:
                self._dependants.setdefault(dep, []).append(record.id)
            if record.state is S.QUEUED:
                self._enqueue(record, record.ready_at, now)
            elif record.state is S.RUNNING:
                self._lost[record.id] = now
        for record in sorted(self.tasks.values(), key=lambda r: r.seq):
            # WAITING -> QUEUED is not written (see state.needs_saving): work it out again
            if record.state is S.WAITING and all(dep in self.tasks for dep in record.after):
                self._consider(record, now)

    def hold_dispatch(self, until: float) -> None:
        """After a restart: dispatch nothing until the restored workers are back (or ``until``).

        A worker may still run attempts the store never recorded; waiting
        for its report keeps them from being started a second time.
        """
        self._hold_until = until
        self._awaiting = {name for name, w in self.workers.items() if not w.connected}
        if not self._awaiting:
            self._hold_until = 0.0

    def restore_worker(self, name: str, tags: Iterable[str], slots: int, *, dedicated: bool,
                       last_seen: float, info: Optional[dict] = None) -> None:
        """Remember a worker known before a restart; it counts as lost until it dials in."""
        self._worker_order += 1
        w = self.workers[name] = WorkerView(name, frozenset(tags), slots, dedicated=dedicated,
                                            order=self._worker_order, now=last_seen)
        w.connected = False
        w.info = dict(info or {})

    def forget_finished(self, before: float) -> List[TaskRecord]:
        """Drop terminal tasks that finished before ``before``; return their records.

        A task that one still to end waits for (``after``) or runs next to
        (``affinity``) is kept: its state decides what that one does.  The
        queues of routing classes with nothing queued go too.
        """
        needed = {ref for r in self.tasks.values() if r.state not in TERMINAL
                  for ref in (r.after + ((r.affinity,) if r.affinity else ()))}
        gone = [r for r in self.tasks.values() if r.state in TERMINAL and r.finished_at is not None
                and r.finished_at < before and r.id not in needed]
        for record in gone:
            del self.tasks[record.id]
            self._dependants.pop(record.id, None)
        self._drop_empty_classes()
        return gone

    def _drop_empty_classes(self) -> None:
        """Forget the heap of each routing class with nothing queued; one that comes back gets a new one.

        Every distinct ``requires`` and ``node`` (pin) seen leaves a heap
        behind, which each dispatch pass scans.  Pruning them here, in the
        periodic sweep, keeps the dispatch path as it is.
        """
        for key in [key for key, heap in self._classes.items() if self._head(heap) is None]:
            del self._classes[key]

    # ----- queries -------------------------------------------------------
    def queued_count(self) -> int:
        return sum(1 for r in self.tasks.values() if r.state is S.QUEUED)

    def saturated(self) -> bool:
        """Work waits in the queue because every connected worker is full."""
        return self._full and any(w.connected for w in self.workers.values()) and \
            any(self._head(heap) is not None for heap in self._classes.values())

    def next_deadline(self) -> Optional[float]:
        """The earliest ``now`` at which :meth:`tick` has work to do."""
        times: List[float] = []
        if self._delayed:
            times.append(self._delayed[0][0])
        if self._lost:
            times.append(min(self._lost.values()) + self.lost_grace_s)
        if self._hold_until:
            times.append(self._hold_until)
        live = [w.last_seen for w in self.workers.values() if w.connected]
        if live:
            times.append(min(live) + self.heartbeat_timeout_s)
        times += [self._gone_at(node) + self.lost_grace_s for node, _ in self._waiting_for_away_nodes()]
        return min(times) if times else None

    def _gone_at(self, node: str) -> float:
        """When ``node`` left (or, after a restart, when it was last heard from)."""
        left = self._left_at.get(node)
        if left is not None:
            return left
        w = self.workers.get(node)
        return w.last_seen if w is not None else 0.0

    def _waiting_for_away_nodes(self) -> Iterator[Tuple[str, TaskRecord]]:
        """(node, task) for each QUEUED task pinned by ``affinity`` to a node that is not connected."""
        for (_, node), heap in self._classes.items():
            w = self.workers.get(node) if node is not None else None
            if node is None or not heap or (w is not None and w.connected):
                continue
            for _, gen, task_id in heap:
                record = self.tasks.get(task_id)
                if record is not None and record.state is S.QUEUED and record.qgen == gen and record.pin == node:
                    yield node, record

    def _fail_affinity_to_gone_nodes(self, now: float) -> List[Action]:
        """A QUEUED task whose affinity node has been away ``lost_grace_s`` fails: it can never run."""
        actions: List[Action] = []
        for node, record in list(self._waiting_for_away_nodes()):
            if now >= self._gone_at(node) + self.lost_grace_s:
                record.note = f"affinity: node {node}, which ran {record.affinity}, is gone"
                actions += self._finish(record, S.FAILED, now)
        return actions

    # ----- tasks ---------------------------------------------------------
    def task_submitted(self, task_id: str, spec: TaskSpec, now: float, *, delay_s: float = 0.0,
                       after: Iterable[str] = (), affinity: Optional[str] = None,
                       run: Optional[str] = None, dispatch: bool = True) -> List[Action]:
        """A new task: QUEUED (after ``delay_s``) once every task in ``after`` succeeded.

        Until then it is WAITING; if one of them fails for good it is SKIPPED.
        ``affinity`` names a task (one of ``after``'s ancestors) whose node it must run on.
        ``dispatch=False`` only queues it: the caller adding several at once (a run's tasks)
        calls :meth:`dispatch` after the last, so the highest priority among them goes first.
        """
        if task_id in self.tasks:
            raise ValueError(f"task id {task_id!r} is already taken")
        deps = tuple(after)
        self._seq += 1
        record = TaskRecord(task_id, spec, self._seq, now)
        if not deps and not affinity:              # the common case: QUEUED at once
            record.run, record.delay_s = run, delay_s
            self.tasks[task_id] = record
            self.dirty.add(task_id)
            self._enqueue(record, now + delay_s, now)
            return self._dispatch(now) if dispatch else []
        missing = [d for d in deps + ((affinity,) if affinity else ()) if d not in self.tasks]
        if missing:
            self._seq -= 1
            raise ValueError(f"task {task_id!r} depends on unknown task(s): {', '.join(missing)}")
        record.after, record.affinity, record.run, record.delay_s = deps, affinity, run, delay_s
        record.state = S.WAITING
        self.tasks[task_id] = record
        self.dirty.add(task_id)
        for dep in deps:
            self._dependants.setdefault(dep, []).append(task_id)
        actions = self._consider(record, now)
        if record.state is S.WAITING or not dispatch:      # nothing new to place (a run's tasks mostly start so)
            return actions
        return actions + self._dispatch(now)

    def dispatch(self, now: float) -> List[Action]:
        """Place what is queued and can run (after ``task_submitted(..., dispatch=False)``)."""
        return self._dispatch(now)

    def _consider(self, record: TaskRecord, now: float) -> List[Action]:
        """A WAITING task: queue it, skip it, or leave it waiting, by its dependencies.

        Dependencies are checked last first: in a fan-in they end roughly in
        order, so a join of N tasks costs O(1) per ending, not O(N).
        """
        tasks = self.tasks
        for dep in reversed(record.after):
            state = tasks[dep].state
            if state is S.SUCCEEDED:
                continue
            if state not in TERMINAL:
                return []                   # still waiting (a failure elsewhere is seen when this ends)
            record.note = f"upstream task {dep} {state.value}"
            return self._finish(record, S.CANCELLED if record.id in self._cancelling else S.SKIPPED, now)
        if record.affinity:
            anchor = self.tasks[record.affinity]
            node = anchor.node
            if node is None or node not in self.workers:      # unknown or retired: it will not come back
                record.note = f"affinity: node {node or '?'}, which ran {anchor.id}, is gone"
                return self._finish(record, S.FAILED, now)
            record.pin = node      # a node away for now has the lost grace to come back (see tick)
        self._move(record, S.QUEUED)   # WAITING -> QUEUED
        self._enqueue(record, now + record.delay_s, now)
        return []

    def _settle(self, record: TaskRecord, now: float) -> List[Action]:
        """``record`` ended for good: wake or skip the tasks that wait for it."""
        actions: List[Action] = []
        failed = record.state is not S.SUCCEEDED
        for child_id in self._dependants.get(record.id, ()):
            child = self.tasks.get(child_id)
            if child is None or child.state is not S.WAITING:
                continue
            if failed:                      # one dependency failed for good: no need to look further
                child.note = f"upstream task {record.id} {record.state.value}"
                actions += self._finish(child, S.CANCELLED if child_id in self._cancelling else S.SKIPPED, now)
            else:
                actions += self._consider(child, now)
        return actions

    def cancel(self, task_id: str, now: float) -> List[Action]:
        """Cancel a task and everything downstream of it.

        QUEUED and WAITING tasks end now; RUNNING ones get a Kill and end
        CANCELLED when their worker reports the exit.
        """
        downstream = self._downstream(task_id)
        self._cancelling.update(downstream)
        try:
            actions: List[Action] = []
            for tid in sorted(downstream, key=lambda t: -self.tasks[t].seq) + [task_id]:
                actions += self._cancel_one(tid, now)
            return actions
        finally:
            self._cancelling.difference_update(downstream)

    def _downstream(self, task_id: str) -> List[str]:
        seen: "set[str]" = set()
        stack = list(self._dependants.get(task_id, ()))
        while stack:
            tid = stack.pop()
            if tid not in seen and tid in self.tasks:
                seen.add(tid)
                stack += self._dependants.get(tid, ())
        return list(seen)

    def _cancel_one(self, task_id: str, now: float) -> List[Action]:
        record = self.tasks[task_id]
        if record.state in TERMINAL:
            return []
        if record.state is not S.RUNNING:
            return self._finish(record, S.CANCELLED, now)
        record.cancel_requested = True
        self.dirty.add(task_id)
        attempt = record.current
        assert attempt is not None
        if task_id in self._lost:          # its worker is gone; nothing to kill
            return self._end_lost_attempt(record, now, "cancelled")
        return [Kill(attempt.worker, task_id, attempt.number, "cancelled")]

    def retry(self, task_id: str, now: float) -> List[Action]:
        """Re-queue a FAILED, DEAD, CANCELLED or SKIPPED task.

        A cancelled task whose dependencies have not all succeeded (a run
        cancelled before they ended) waits for them again instead.
        """
        record = self.tasks[task_id]
        if record.state not in RETRYABLE:   # RUNNING -> QUEUED is legal, but only for a lost worker
            raise InvalidTransition(f"task {task_id!r} cannot move from {record.state.value} to "
                                    f"{S.QUEUED.value} by retry; only FAILED, DEAD, CANCELLED "
                                    f"or SKIPPED tasks can be retried")
        waits = record.state is S.CANCELLED and any(
            dep in self.tasks and self.tasks[dep].state is not S.SUCCEEDED for dep in record.after)
        self._move(record, S.WAITING if waits else S.QUEUED)  # ... -> QUEUED, or CANCELLED -> WAITING
        record.retry_base = len(record.attempts)   # a manual retry gets the full retries again
        record.finished_at = None
        record.cancel_requested = False
        record.note = ""
        for tid in self._downstream(task_id):      # what it skipped waits for it again
            child = self.tasks[tid]
            if child.state is S.SKIPPED:
                self._move(child, S.WAITING)       # SKIPPED -> WAITING
                child.finished_at, child.note = None, ""
        if not waits:
            self._push(record, now)
            return self._dispatch(now)
        return self._consider(record, now) + self._dispatch(now)   # SKIPPED at once if one of them failed

    def attempt_finished(self, worker: str, task_id: str, attempt: int,
                         exit_code: Optional[int], reason: str, now: float) -> List[Action]:
        """A worker reports the end of an attempt (exit code or signal)."""
        record = self.tasks.get(task_id)
        w = self.workers.get(worker)
        att = record.current if record is not None else None
        if att is None or att.number != attempt or record.state is not S.RUNNING or att.worker != worker:
            if w is not None:
                w.foreign.discard((task_id, attempt))
            return self._dispatch(now)
        self._lost.pop(task_id, None)
        att.finished_at, att.exit_code, att.reason = now, exit_code, reason
        if w is not None:
            w.running -= 1
            if w.ahead:
                w.observe(now - att.started_at)
        if record.cancel_requested:
            att.state = S.CANCELLED
            return self._finish(record, S.CANCELLED, now) + self._dispatch(now)
        if exit_code == 0:
            att.state = S.SUCCEEDED
            return self._finish(record, S.SUCCEEDED, now) + self._dispatch(now)
        att.state = S.FAILED
        return self._failed(record, now) + self._dispatch(now)

    def attempt_returned(self, worker: str, task_id: str, attempt: int, waited_s: float,
                         now: float) -> List[Action]:
        """A worker hands back an attempt sent ahead that found no free slot: it is placed again.

        No retry is used; the worker gets no more work ahead until its
        attempts are quick again.
        """
        record = self.tasks.get(task_id)
        w = self.workers.get(worker)
        if w is not None:
            w.handed_back(waited_s)
        if record is None or record.current is None or record.current.number != attempt \
                or record.state is not S.RUNNING or record.current.worker != worker:
            return self._dispatch(now)
        why = f"{worker} handed it back unstarted after {waited_s:.1f}s with no free slot"
        return self._end_lost_attempt(record, now, why) + self._dispatch(now)

    def _failed(self, record: TaskRecord, now: float) -> List[Action]:
        self._move(record, S.FAILED)  # RUNNING -> FAILED
        since = record.retry_base
        failures = sum(1 for a in record.attempts[since:] if a.state is S.FAILED)
        if failures <= record.spec.retries:
            # FAILED -> QUEUED, after exponential backoff
            # Doubling stops at max_backoff_s (5 minutes), or at the backoff as set if that is longer.
            base = record.spec.retry_backoff_s
            backoff = min(max(self.max_backoff_s, base), base * 2 ** (failures - 1))
            self._move(record, S.QUEUED)
            self._enqueue(record, now + backoff, now)
            return [Note(f"task {record.id} failed; retry {failures}/{record.spec.retries} in {backoff:g}s")]
        record.finished_at = now
        if record.spec.retries > 0:
            self._move(record, S.DEAD)    # FAILED -> DEAD: retries used up
        return [Ended(record.id, record.state)] + self._settle(record, now)

    def _finish(self, record: TaskRecord, state: TaskState, now: float) -> List[Action]:
        self._move(record, state)
        record.finished_at = now
        return [Ended(record.id, state)] + self._settle(record, now)

    # ----- queue ---------------------------------------------------------
    def _enqueue(self, record: TaskRecord, ready_at: float, now: float) -> None:
        if ready_at > now:
            record.ready_at = ready_at
            heapq.heappush(self._delayed, (ready_at, record.seq, record.id))
        else:
            self._push(record, now)

    def _push(self, record: TaskRecord, now: float) -> None:
        record.ready_at = now
        record.qgen += 1           # older heap entries for this task are stale now
        gen = record.qgen
        key = (record.spec.requires, record.pin or record.spec.node)
        heap = self._classes.get(key)
        if heap is None:
            heap = self._classes[key] = []
        # One int orders by priority, then arrival: heap entries compare on it alone.
        heapq.heappush(heap, ((-record.spec.priority << 64) + record.seq, gen, record.id))

    def _head(self, heap: list) -> Optional[tuple]:
        while heap:
            entry = heap[0]
            record = self.tasks.get(entry[2])
            if record is not None and record.state is S.QUEUED and record.qgen == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    def _dispatch(self, now: float) -> List[Action]:
        actions: List[Action] = []
        if self._hold_until:
            if now < self._hold_until and self._awaiting:
                return actions
            self._hold_until = 0.0
        classes = self._classes
        if not any(classes.values()):   # nothing queued (most ends of a task): no worker to look for
            return actions
        # accepting(), inlined: this runs for every event on a busy cluster.  Within the
        # loop only the worker just chosen changes, so only it can leave the list.
        free = [w for w in self.workers.values()
                if w.connected and not w.draining and w.running + len(w.foreign) < w.capacity]
        while True:
            if not free:
                self._full = True
                return actions
            best_key, best_entry = None, None
            for key, heap in classes.items():
                entry = self._head(heap)
                if entry is None or (best_entry is not None and entry >= best_entry):
                    continue
                requires, node = key
                for w in free:
                    if eligible(w, requires, node):
                        best_key, best_entry = key, entry
                        break
            if best_key is None:
                self._full = False
                return actions
            heapq.heappop(classes[best_key])
            record = self.tasks[best_entry[2]]
            w = least_loaded(free, record.spec.requires, record.pin or record.spec.node, self._rr)
            assert w is not None
            actions.append(self._start(record, w, now))
            if w.running + len(w.foreign) >= w.capacity:     # it has no room left
                free.remove(w)

    def _start(self, record: TaskRecord, w: WorkerView, now: float) -> Dispatch:
        self._rr = w.order + 1
        self._move(record, S.RUNNING)  # QUEUED -> RUNNING
        attempt = Attempt(len(record.attempts) + 1, w.name, now)
        record.add_attempt(attempt)
        record.qgen += 1
        w.running += 1
        return Dispatch(w.name, record.id, attempt.number, record.spec)

    # ----- workers -------------------------------------------------------
    def worker_joined(self, name: str, tags: Iterable[str], slots: int, now: float, *,
                      dedicated: bool = False, running: Iterable[Tuple[str, int]] = (),
                      finished: Iterable[Tuple[str, int]] = (),
                      info: Optional[dict] = None, ahead: int = 0) -> List[Action]:
        """A worker (re)registered, reporting the attempts it still holds.

        ``running`` are attempts still running (or waiting for a slot) there;
        ``finished`` are attempts whose FINISHED report follows on the new
        connection.  ``ahead``: how many attempts beyond its slots it can hold.
        """
        w = self.workers.get(name)
        if w is None:
            self._worker_order += 1
            w = self.workers[name] = WorkerView(name, frozenset(tags), slots, dedicated=dedicated,
                                                order=self._worker_order, now=now)
        else:
            w.tags, w.slots, w.dedicated = frozenset(tags), max(1, slots), dedicated
            w.connected, w.last_seen = True, now
        self._left_at.pop(name, None)
        w.info = dict(info or {})
        w.ahead = max(0, ahead)
        w.update_capacity()
        self.workers_dirty.add(name)
        self._awaiting.discard(name)
        held = set((t, int(a)) for t, a in running)
        done = set((t, int(a)) for t, a in finished)
        actions = self._reconcile(w, held, done, now)
        return actions + self._dispatch(now)

    def _reconcile(self, w: WorkerView, held: set, done: set, now: float) -> List[Action]:
        actions: List[Action] = []
        w.running, w.foreign = 0, set()
        for record in self.tasks.values():
            att = record.current
            if record.state is not S.RUNNING or att is None or att.worker != w.name:
                continue
            key = (record.id, att.number)
            if key in held or key in done:
                still_running = key in held
                held.discard(key)
                w.running += 1
                if self._lost.pop(record.id, None) is not None:
                    actions.append(Note(f"worker {w.name} came back with {record.id}; adopted"))
                if record.cancel_requested and still_running:   # the first KILL may have been lost
                    actions.append(Kill(w.name, record.id, att.number, "cancelled"))
            else:
                w.running += 1      # released again by _end_lost_attempt
                actions += self._end_lost_attempt(record, now, f"worker {w.name} no longer had it")
        for task_id, number in sorted(held | done):
            record = self.tasks.get(task_id)
            if record is not None and self._adoptable(record, number):
                actions += self._adopt(record, number, w, now)
            elif (task_id, number) in held:
                w.foreign.add((task_id, number))
                if record is not None:
                    actions.append(Kill(w.name, task_id, number, "stale attempt: it runs elsewhere now"))
        return actions

    def _adoptable(self, record: TaskRecord, number: int) -> bool:
        """A reported attempt the store never heard of, but the one that would come next.

        Dispatch does not wait for the disk, so a master that dies right
        after sending one restarts with the task still QUEUED (or RUNNING on
        a worker that is gone); the worker's report then tells the truth.
        """
        if number != len(record.attempts) + 1:
            return False
        if record.state is S.QUEUED:
            return True
        current = record.current
        if record.state is S.RUNNING and current is not None:
            owner = self.workers.get(current.worker)
            return owner is None or not owner.connected
        return False

    def _adopt(self, record: TaskRecord, number: int, w: WorkerView, now: float) -> List[Action]:
        actions: List[Action] = []
        if record.state is S.RUNNING:      # its recorded attempt was on a worker that is gone
            actions += self._end_lost_attempt(record, now, f"attempt {number} reported by {w.name}")
        self._move(record, S.RUNNING)      # QUEUED -> RUNNING, on the worker that has it
        record.add_attempt(Attempt(number, w.name, now))
        record.qgen += 1
        w.running += 1
        return actions + [Note(f"worker {w.name} reported {record.id} attempt {number}; adopted")]

    def worker_left(self, name: str, now: float) -> List[Action]:
        """The worker's connection closed; its attempts wait ``lost_grace_s``."""
        w = self.workers.get(name)
        if w is None or not w.connected:
            return []
        w.connected = False
        self._left_at[name] = now
        self.workers_dirty.add(name)
        held = [r for r in self.tasks.values()
                if r.state is S.RUNNING and r.current is not None and r.current.worker == name]
        for record in held:
            self._lost[record.id] = now
        note = f"worker {name} disconnected"
        if held:
            note += f"; {len(held)} running attempt(s) re-queued unless it returns within {self.lost_grace_s:g}s"
        return [Note(note)]

    def worker_retired(self, name: str) -> None:
        """An idle ephemeral worker left for good: forget it (its record goes from the store too)."""
        self._left_at.pop(name, None)
        if self.workers.pop(name, None) is not None:
            self.workers_dirty.add(name)

    def pools(self) -> List[Tuple[FrozenSet[str], Optional[str], int, float]]:
        """Per routing class with queued work: (requires, node, how many, since when the oldest is ready)."""
        out = []
        for (requires, node), heap in self._classes.items():
            count, oldest = 0, 0.0
            for _, gen, task_id in heap:
                record = self.tasks.get(task_id)
                if record is not None and record.state is S.QUEUED and record.qgen == gen:
                    oldest = record.ready_at if not count else min(oldest, record.ready_at)
                    count += 1
            if count:
                out.append((requires, node, count, oldest))
        return out

    def heartbeat(self, name: str, now: float, info: Optional[dict] = None) -> None:
        w = self.workers.get(name)
        if w is not None:
            w.last_seen = now
            if info:
                w.info.update(info)

    def set_draining(self, name: str, draining: bool) -> None:
        self.workers[name].draining = draining

    def _end_lost_attempt(self, record: TaskRecord, now: float, why: str) -> List[Action]:
        self._lost.pop(record.id, None)
        att = record.current
        assert att is not None
        att.state, att.finished_at, att.reason = S.QUEUED, now, why
        w = self.workers.get(att.worker)
        if w is not None:
            w.running -= 1
        if record.cancel_requested:
            att.state = S.CANCELLED
            return self._finish(record, S.CANCELLED, now)
        self._move(record, S.QUEUED)    # RUNNING -> QUEUED: no retry used
        self._push(record, now)
        return [Note(f"task {record.id} re-queued: {why}")]

    # ----- time ----------------------------------------------------------
    def tick(self, now: float) -> List[Action]:
        """Expire heartbeats and grace periods, release delayed tasks, dispatch."""
        actions: List[Action] = []
        for w in list(self.workers.values()):
            if w.connected and now - w.last_seen >= self.heartbeat_timeout_s:
                actions.append(Disconnect(w.name, f"no heartbeat for {now - w.last_seen:.1f}s"))
                actions += self.worker_left(w.name, now)
        for task_id, lost_at in list(self._lost.items()):
            if now >= lost_at + self.lost_grace_s:
                record = self.tasks[task_id]
                worker = record.current.worker if record.current else "?"
                actions += self._end_lost_attempt(record, now, f"worker {worker} lost")
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task_id = heapq.heappop(self._delayed)
            record = self.tasks.get(task_id)
            if record is not None and record.state is S.QUEUED and record.ready_at <= now:
                self._push(record, now)     # else a stale entry: the task waits for a later ready_at
        actions += self._fail_affinity_to_gone_nodes(now)
        return actions + self._dispatch(now)
