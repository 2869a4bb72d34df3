"""Runs of jobs from the SDK: ``c.submit_file(path)``, ``c.trigger(job)``, ``run.wait()``.

    run = c.submit_file("etl.ini")          # registers the job; starts a run unless it is scheduled
    result = run.wait(timeout=600)          # RunResult: state, and each task's state and node
    result.state == "SUCCEEDED"

The master pushes the run's end on the request that started the run, so
waiting costs no polling.  With ``on_task=callback`` it also pushes each
change of a task's state (queued, running, ended; each an event dict with
``id``, ``state``, ``node``, ``attempt`` and ``reason``), and ``wait`` calls
the callback with each as it arrives.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from titan.errors import UsageError

if TYPE_CHECKING:
    from titan.sdk.client import Client

__all__ = ["Run", "RunResult"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its state and each task's final state."""

    id: str
    state: str
    tasks: Dict[str, str] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "SUCCEEDED"


class Run:
    """A handle on one run of a job."""

    def __init__(self, client: "Client", run_id: Optional[str], task_ids: List[str], req_id: Optional[int],
                 on_task: Optional[Callable[[Dict[str, Any]], None]] = None, *, job: str = "") -> None:
        self.client = client
        self.id = run_id
        self.job = job                      # the job's name
        self.task_ids = task_ids
        self._req_id = req_id
        self._on_task = on_task
        self._seen = 0
        self._result: Optional[RunResult] = None
        self.services: List[str] = []      # the job's services, deployed with it (see Client.services)

    def __repr__(self) -> str:
        return f"<titan.Run {self.id}>"

    def __del__(self) -> None:
        if self._result is None and self._req_id is not None:
            self.client._abandon(self._req_id)     # nobody can wait on this run any more

    def tasks(self) -> List[Dict[str, Any]]:
        """Every task of the run as the master sees it now (state, attempts, node)."""
        return list(self.status()["tasks"])

    def status(self) -> Dict[str, Any]:
        return self.client.status(self._started())

    def _started(self) -> str:
        """The run's id; a UsageError if submitting the job started no run."""
        if self.id is None:
            job = self.job or "the job"
            raise UsageError(f"no run was started: {job} has a schedule, so submitting it registered it only; "
                             f"trigger({self.job!r}) starts a run now")
        return self.id

    def wait(self, timeout: Optional[float] = None) -> RunResult:
        """Block until every task of the run has ended; return the run's result.

        Raises TimeoutError if it has not ended after ``timeout`` seconds."""
        if self._result is not None:
            return self._result
        if self._req_id is None:           # not watching: ask the master until it is over
            return self._poll_until_done(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = self.client._pending[self._req_id]
        while True:
            self._report(pending.events)
            for event in pending.events:
                if event.get("kind") == "run":
                    self.client._forget(self._req_id)
                    self._result = self._from_event(event.get("run") or {}) or self._final()
                    return self._result
            try:
                self.client._wait_more(self._req_id, deadline, len(pending.events))
            except TimeoutError:
                raise TimeoutError(f"run {self.id} still running after {timeout:g}s") from None

    def _report(self, events: List[Dict[str, Any]]) -> None:
        for event in events[self._seen:]:
            if event.get("kind") == "task" and self._on_task is not None:
                self._on_task(event)
        self._seen = len(events)

    @staticmethod
    def _from_event(view: Dict[str, Any]) -> Optional[RunResult]:
        """The result the run's last EVENT carries (None from a master that sends no states)."""
        states = view.get("states")
        if not isinstance(states, dict):
            return None
        return RunResult(view["id"], view["state"], dict(states), dict(view.get("counts") or {}))

    def _final(self) -> RunResult:
        view = self.status()
        return RunResult(view["id"], view["state"], {t["id"]: t["state"] for t in view["tasks"]},
                         dict(view.get("counts") or {}))

    def _poll_until_done(self, timeout: Optional[float]) -> RunResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = self._final()
            if result.state != "RUNNING":
                self._result = result
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still running after {timeout:g}s")
            time.sleep(0.1)
