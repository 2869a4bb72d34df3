"""Test fakes shipped with the package, as dramatiq ships its stub broker.

What this module owns: small, dependency-free stand-ins that let a test drive
Titan's pure cores (above all :class:`titan.core.scheduler.Scheduler`) without
sockets, threads, processes or the real clock::

    FakeClock  --now-->  SchedulerHarness  --events-->  Scheduler
                              |                             |
                              +<------- actions ------------+
                              (kept in .actions for asserts)

It imports only the pure layers (``titan.core``, ``titan.errors``), so user
code and tests of any layer may import it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from titan.core.model import TaskSpec, TaskState, spec_from_wire
from titan.core.scheduler import Action, Dispatch, Scheduler

__all__ = ["FakeClock", "make_spec", "actions_of", "SchedulerHarness"]

T = TypeVar("T")


class FakeClock:
    """A clock that moves only when told: ``clock()`` returns the fake now.

    Pass it wherever a role takes a ``clock`` callable; a test then controls
    time with :meth:`advance` and :meth:`set`.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (not negative); return the new now."""
        if seconds < 0:
            raise ValueError(f"a clock cannot advance by {seconds!r}s; use set() to go back")
        self.now += seconds
        return self.now

    def set(self, t: float) -> float:
        """Jump to ``t`` (backwards too, to model a wall-clock step); return it."""
        self.now = float(t)
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"


def make_spec(command: Union[str, Sequence[str]] = "true", **overrides: Any) -> TaskSpec:
    """A :class:`TaskSpec` for ``command``, validated as a SUBMIT would be.

    ``overrides`` are TaskSpec field names (``requires={"gpu"}``, ``node="w1"``,
    ``retries=2``, ``priority=5``, ``env={"A": "1"}`` ...); ``requires`` may be
    any iterable of tags and ``env`` a mapping.
    """
    spec = spec_from_wire({"command": command if isinstance(command, str) else list(command)})
    if "requires" in overrides:
        overrides["requires"] = frozenset(overrides["requires"])
    if isinstance(overrides.get("env"), Mapping):
        overrides["env"] = tuple(sorted(overrides["env"].items()))
    return dataclasses.replace(spec, **overrides)


def actions_of(actions: Iterable[Action], kind: Type[T]) -> List[T]:
    """The actions of one type, in order: ``actions_of(acts, Dispatch)``."""
    return [a for a in actions if isinstance(a, kind)]


class SchedulerHarness:
    """A :class:`Scheduler` and a :class:`FakeClock`, driven by short calls.

    Every call passes the clock's now and returns the actions of that event;
    all actions are also appended to :attr:`actions`.
    """

    def __init__(self, *, clock: Optional[FakeClock] = None, **scheduler_options: Any) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.sched = Scheduler(**scheduler_options)
        self.actions: List[Action] = []

    def _keep(self, actions: List[Action]) -> List[Action]:
        self.actions.extend(actions)
        return actions

    def submit(self, task_id: str, command: Union[str, Sequence[str]] = "true", *,
               delay_s: float = 0.0, **spec_overrides: Any) -> List[Action]:
        spec = make_spec(command, **spec_overrides)
        return self._keep(self.sched.task_submitted(task_id, spec, self.clock(), delay_s=delay_s))

    def join(self, name: str, tags: Iterable[str] = (), slots: int = 1, *,
             running: Iterable[Tuple[str, int]] = (), finished: Iterable[Tuple[str, int]] = (),
             dedicated: bool = False, ahead: int = 0) -> List[Action]:
        return self._keep(self.sched.worker_joined(name, tags, slots, self.clock(), dedicated=dedicated,
                                                   running=running, finished=finished, ahead=ahead))

    def leave(self, name: str) -> List[Action]:
        return self._keep(self.sched.worker_left(name, self.clock()))

    def heartbeat(self, name: str) -> None:
        self.sched.heartbeat(name, self.clock())

    def finish(self, worker: str, task_id: str, attempt: int, exit_code: Optional[int] = 0,
               reason: str = "") -> List[Action]:
        return self._keep(self.sched.attempt_finished(worker, task_id, attempt, exit_code,
                                                      reason, self.clock()))

    def finish_dispatch(self, dispatch: Dispatch, exit_code: Optional[int] = 0) -> List[Action]:
        """Report the end of the attempt a :class:`Dispatch` started."""
        return self.finish(dispatch.worker, dispatch.task_id, dispatch.attempt, exit_code)

    def hand_back(self, worker: str, task_id: str, attempt: int, waited_s: float) -> List[Action]:
        return self._keep(self.sched.attempt_returned(worker, task_id, attempt, waited_s, self.clock()))

    def cancel(self, task_id: str) -> List[Action]:
        return self._keep(self.sched.cancel(task_id, self.clock()))

    def retry(self, task_id: str) -> List[Action]:
        return self._keep(self.sched.retry(task_id, self.clock()))

    def tick(self, advance_s: float = 0.0) -> List[Action]:
        """Advance the clock by ``advance_s``, then tick at the new now."""
        self.clock.advance(advance_s)
        return self._keep(self.sched.tick(self.clock()))

    def tick_at(self, t: float) -> List[Action]:
        """Set the clock to ``t``, then tick."""
        self.clock.set(t)
        return self._keep(self.sched.tick(self.clock()))

    def state(self, task_id: str) -> TaskState:
        return self.sched.tasks[task_id].state

    def running_on(self, worker: str) -> List[str]:
        """Ids of RUNNING tasks whose current attempt is on ``worker``, sorted."""
        return sorted(r.id for r in self.sched.tasks.values()
                      if r.state is TaskState.RUNNING and r.node == worker)
