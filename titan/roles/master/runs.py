"""Jobs and their runs on the master.

    RUN {job | job_encoded, start, watch} ──▶ register the job (titan:job:NAME) ──▶ run JOB#N: tasks JOB#N/TASK
    TRIGGER {job}           ──▶ a run of a registered job now
    REMOVE_JOB {job}        ──▶ forget the job and its schedule; runs that started go on
    a task changes state ──▶ EVENT {kind: "task"} to the run's progress watchers
    the last task ends ──▶ EVENT {kind: "run"} to every watcher, and RUN_DONE to the connected workers
    worker HELLO {shared: [run, ...]} ──▶ RUN_DONE for each listed run that is over

A run is its tasks: the scheduler holds them (each record names its run), so
a restarted master finds its runs again from the tasks it restores.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from titan.core.model import TERMINAL, Attempt, TaskRecord, TaskSpec, TaskState
from titan.core.placement import eligible
from titan.core.service import service_from_wire
from titan.core.runs import MAX_SHARED_LISTED, check_job, file_hashes, run_state, summarize, task_body
from titan.errors import CodecError, TitanError, UsageError
from titan.io.loop import Connection
from titan.wire.codec import decode
from titan.wire.frames import FLAG_MORE, Op

if TYPE_CHECKING:
    from titan.core.scheduler import Scheduler
    from titan.roles.master.server import Master

__all__ = ["RunService", "UnknownJobName", "task_view"]


class RunService:
    """Runs RUN, TRIGGER, REMOVE_JOB, RUNS and JOBS requests, and tells watchers how runs go."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.job_specs: Dict[str, List[TaskSpec]] = {}      # job -> its tasks' specs, in order
        self.job_digests: Dict[bytes, str] = {}             # sha256 of a job's encoding -> its name (see _received)
        self._digest_of: Dict[str, bytes] = {}              # and back
        self.runs: Dict[str, List[str]] = {}
        self.watchers: Dict[str, List[Tuple[Connection, int, bool]]] = {}   # run -> (conn, req, progress)
        self.told: Dict[str, Dict[str, Tuple[str, int]]] = {}   # run with progress watchers -> task -> (state, attempts)
        self._touched: "set[str]" = set()
        self.slot_freed = False     # a scheduled run ended since fire_due last ran

    def restore(self, jobs: List[Dict[str, Any]], cursors: Dict[str, float]) -> None:
        for job in jobs:
            self.jobs[job["name"]] = job
            self._plan(job, cursors.get(job["name"]))
        for record in sorted(self.master.sched.tasks.values(), key=lambda r: r.seq):
            if record.run:
                self.runs.setdefault(record.run, []).append(record.id)

    # ----- requests ------------------------------------------------------
    def run(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        job, task_specs, digest = self._received(body)
        services = [service_from_wire(item) for item in job.get("services") or []]
        for spec in services:
            self.master.services.check_node(spec)
        self._store_files(job, body.get("blobs"))
        self._plan(job, None)
        if self.jobs.get(job["name"]) != job:      # the same job again (a rerun) is already stored
            self.master.durable.jobs_dirty[job["name"]] = job
        self.jobs[job["name"]] = job
        self.job_specs[job["name"]] = task_specs
        self._forget_digest(job["name"])
        if digest is not None:
            self.job_digests[digest] = job["name"]
            self._digest_of[job["name"]] = digest
        reply: Dict[str, Any] = {"job": job["name"], "run": None, "tasks": [],
                                 "services": [spec.name for spec in services]}
        for spec in services:                       # a job's services: deployed (or updated) with it
            self.master.services.deploy_spec(spec, job=job["name"])
        if body.get("start", True) and job["tasks"]:
            reply.update(self._start(job))
            self._watch(conn, req_id, reply["run"], body)
        self.master.hold(conn, req_id, Op.OK, reply, FLAG_MORE if body.get("watch") and reply["run"] else 0)

    def _received(self, body: Dict[str, Any]) -> Tuple[Dict[str, Any], List[TaskSpec], Optional[bytes]]:
        """A RUN's job, its tasks' specs, and the digest of its encoding (None when sent decoded).

        A client sends the job encoded (``job_encoded``).  The same bytes as a
        job registered here are that job: it is taken as registered, without
        decoding and checking it again (a rerun of a large job costs the
        master next to nothing).  Any other job is decoded and checked before
        anything is stored.
        """
        encoded = body.get("job_encoded")
        if encoded is None:
            return body.get("job"), check_job(body.get("job"), self.master.specs), None   # type: ignore[return-value]
        if not isinstance(encoded, bytes):
            raise UsageError("job_encoded must be bytes: the job in TITAN_PROTO's body encoding")
        digest = hashlib.sha256(encoded).digest()
        name = self.job_digests.get(digest)
        if name is not None and name in self.jobs:
            return self.jobs[name], self._specs(name), digest
        try:
            job = decode(encoded)
        except CodecError as exc:
            raise UsageError(f"job_encoded is not a job: {exc}") from None
        return job, check_job(job, self.master.specs), digest   # type: ignore[return-value]

    def _specs(self, name: str) -> List[TaskSpec]:
        """The specs of registered job ``name``'s tasks (built once, also after a restart)."""
        specs = self.job_specs.get(name)
        if specs is None:
            specs = self.job_specs[name] = [self.master.specs.get(task_body(task)) for task in self.jobs[name]["tasks"]]
        return specs

    def _forget_digest(self, name: str) -> None:
        self.job_digests.pop(self._digest_of.pop(name, b""), None)

    def _store_files(self, job: Dict[str, Any], blobs: Any) -> None:
        self.store_blobs(blobs, file_hashes(job), f"job {job['name']!r}")

    def store_blobs(self, blobs: Any, needed: List[str], what: str) -> None:
        """Keep shipped files by content (each once); every file ``needed`` must be here."""
        store = self.master.blobs
        for sha, data in (blobs.items() if isinstance(blobs, dict) else ()):
            if isinstance(sha, str) and isinstance(data, bytes):
                store.put(sha, data)
        missing = [sha for sha in needed if not store.has(sha)]
        if missing:
            raise UsageError(f"{what} names {len(missing)} file(s) it did not send "
                             f"(first: {missing[0][:12]}...)")

    def trigger(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        name = body.get("job")
        job = self.jobs.get(name) if isinstance(name, str) else None
        if job is None:
            raise UnknownJobName(name)
        if not job["tasks"]:
            raise UsageError(f"job {name!r} has only services: `titan ps` shows them, `titan restart NAME` "
                             f"restarts one")
        reply = self._start(job)
        self._watch(conn, req_id, reply["run"], body)
        self.master.hold(conn, req_id, Op.OK, reply, FLAG_MORE if body.get("watch") else 0)

    def remove(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        """Forget a registered job: no more runs on its schedule, none by trigger.

        Its runs that started are not cancelled: they finish and stay listed
        until their tasks' retention ends.  Its services keep running.  A
        job of the same name submitted later starts afresh (its schedule
        from then on; run numbers go on from the old ones).
        """
        name = body.get("job")
        job = self.jobs.pop(name, None) if isinstance(name, str) else None
        if job is None:
            raise UnknownJobName(name)
        self.job_specs.pop(name, None)
        self._forget_digest(name)
        self.master.planner.remove_job(name)         # its slots, claimed or waiting, with it
        durable = self.master.durable
        durable.jobs_dirty[name] = None
        durable.cursors_dirty[name] = None
        active = list(self._active_runs(name))
        services = sorted(n for n, entry in self.master.services.entries.items() if entry.job == name)
        self.master.hold(conn, req_id, Op.OK, {"job": name, "schedule": job.get("schedule"),
                                               "active_runs": active, "services": services})

    def _plan(self, job: Dict[str, Any], cursor: Optional[float]) -> None:
        """Give a scheduled job to the planner (or take an unscheduled one away)."""
        planner, now = self.master.planner, self.master.clock()
        if not job.get("schedule") or not job["tasks"]:
            planner.remove_job(job["name"])
            return
        try:
            planner.set_job(job["name"], job["schedule"], tz=job.get("timezone") or "UTC",
                            overlap=job.get("overlap") or "skip", catchup=job.get("catchup") or "latest",
                            catchup_limit=int(job.get("catchup_limit") or 10),
                            jitter_s=float(job.get("jitter_s") or 0.0), now=now, cursor=cursor)
        except TitanError as exc:
            raise UsageError(f"job {job['name']!r}: bad schedule {job['schedule']!r}: {exc}") from None
        if cursor is None:
            self.master.durable.cursors_dirty[job["name"]] = planner.saved_cursor(planner.jobs[job["name"]])

    def fire_due(self) -> None:
        """Start the runs of every scheduled slot whose time has come."""
        planner = self.master.planner
        self.slot_freed = False
        before = {name: planner.saved_cursor(job) for name, job in planner.jobs.items()}
        fires = planner.due(self.master.clock(), self._job_running)
        for name, job in planner.jobs.items():
            cursor = planner.saved_cursor(job)
            if cursor != before[name]:              # a claim: persisted with the runs it starts
                self.master.durable.cursors_dirty[name] = cursor
        for fire in fires:
            job = self.jobs.get(fire.job)
            if job is not None and fire.run_id not in self.runs:
                self._start(job, run_id=fire.run_id)

    def _live(self, run_id: str) -> bool:
        """Whether a task of the run has not ended (the last tasks are checked first: they end last)."""
        tasks = self.master.sched.tasks
        return any(tasks[t].state not in TERMINAL for t in reversed(self.runs.get(run_id, ())) if t in tasks)

    def _active_runs(self, name: str) -> Iterator[str]:
        """The runs of job ``name`` that have a task still to end."""
        return (run_id for run_id in self.runs if _job_of(run_id) == name and self._live(run_id))

    def _job_running(self, name: str) -> bool:
        return next(self._active_runs(name), None) is not None

    def _start(self, job: Dict[str, Any], run_id: Optional[str] = None) -> Dict[str, Any]:
        m = self.master
        if run_id is None:
            n = m.counters.get(job["name"], 0) + 1
            m.counters[job["name"]] = n
            m.durable.counters_dirty[job["name"]] = n
            run_id = f"{job['name']}#{n}"
        ids = []
        now = m.clock()
        for task, spec in zip(job["tasks"], self._specs(job["name"])):
            task_id = f"{run_id}/{task['name']}"
            after = [f"{run_id}/{d}" for d in task.get("after") or []]
            affinity = f"{run_id}/{task['affinity']}" if task.get("affinity") else None
            m.apply(m.sched.task_submitted(task_id, spec, now, after=after, affinity=affinity, run=run_id,
                                           delay_s=float(task.get("delay_s") or 0.0), dispatch=False))
            ids.append(task_id)
        m.apply(m.sched.dispatch(now))     # once all are queued: the highest priority first
        self.runs[run_id] = ids
        return {"job": job["name"], "run": run_id, "tasks": ids}

    def _watch(self, conn: Connection, req_id: int, run_id: str, body: Dict[str, Any]) -> None:
        """``watch``: the run's end as an EVENT; ``progress`` (default on): each task's changes too."""
        if body.get("watch") and run_id:
            progress = bool(body.get("progress", True))
            self.watchers.setdefault(run_id, []).append((conn, req_id, progress))
            if progress:
                self.told.setdefault(run_id, {})

    def forget(self, gone: List[TaskRecord]) -> None:
        """Tasks past their retention were forgotten: so is a run none of whose tasks is left."""
        tasks = self.master.sched.tasks
        for run_id in {record.run for record in gone if record.run}:
            if run_id in self.runs and not any(t in tasks for t in self.runs[run_id]):
                del self.runs[run_id]

    def list_runs(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        job = body.get("job")
        limit = body.get("limit") if isinstance(body.get("limit"), int) else 50
        matching = [run_id for run_id in self.runs if job is None or _job_of(run_id) == job]
        if job is not None and not matching and job not in self.jobs:
            raise UnknownJobName(job)           # (a removed job's runs are still listed)
        newest = matching[-limit:] if limit > 0 else []          # only these are looked at
        rows = [self.view(run_id, detail=False) for run_id in reversed(newest)]
        conn.send(Op.OK, req_id, {"runs": rows, "total": len(matching)})

    def list_jobs(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        rows = []
        for name, job in sorted(self.jobs.items()):
            mine = [r for r in self.runs if _job_of(r) == name]
            last = self.view(mine[-1], detail=False) if mine else None
            planned = self.master.planner.jobs.get(name)
            upcoming = None
            if planned is not None:
                upcoming = planned.schedule.next_after(
                    datetime.fromtimestamp(planned.cursor, timezone.utc), planned.tz).isoformat()
            rows.append({"name": name, "tasks": len(job["tasks"]), "schedule": job.get("schedule"), "next": upcoming,
                         "timezone": job.get("timezone") or "UTC", "runs": len(mine),
                         "last_run": last["id"] if last else None, "last_state": last["state"] if last else None})
        conn.send(Op.OK, req_id, {"jobs": rows})

    def view(self, run_id: str, *, detail: bool = True) -> Dict[str, Any]:
        records = self._records(run_id)
        states = [r.state for r in records]
        out: Dict[str, Any] = {"id": run_id, "job": _job_of(run_id), "state": run_state(states),
                               "counts": summarize(states), "tasks": len(records)}
        if detail:
            out["tasks"] = [task_view(r, self.master.sched, self.master.clock()) for r in records]
        return out

    def _records(self, run_id: str) -> List[TaskRecord]:
        tasks = self.master.sched.tasks
        return [tasks[t] for t in self.runs.get(run_id, ()) if t in tasks]

    def retry(self, run_id: str) -> List[str]:
        """Re-queue the run's failed tasks (their skipped dependants wait for them again)."""
        retried = []
        for record in self._records(run_id):
            if record.state in (TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED):
                self.master.apply(self.master.sched.retry(record.id, self.master.clock()))
                retried.append(record.id)
        return retried

    def cancel(self, run_id: str) -> None:
        for record in self._records(run_id):
            if not record.after:
                self.master.apply(self.master.sched.cancel(record.id, self.master.clock()))
        for record in self._records(run_id):      # whatever no root's cascade reached
            self.master.apply(self.master.sched.cancel(record.id, self.master.clock()))

    # ----- events --------------------------------------------------------
    def task_ended(self, record: TaskRecord) -> None:
        """Tell the run's progress watchers at once; close their stream when the whole run has ended."""
        run_id = record.run
        if not run_id:
            return
        self._touched.add(run_id)
        told = self.told.get(run_id)
        if told is None:
            return
        told[record.id] = (record.state.value, len(record.attempts))
        event = _task_event(record)
        event.update(exit_code=record.exit_code, reason=record.note or (record.current.reason if record.current else ""))
        self._tell(run_id, event)

    def tell_changes(self, changed: "set[str]", now: float) -> None:
        """Once a pass: progress watchers hear of each task of theirs that was queued, started,
        or set WAITING again (a retry upstream).

        A task that changed twice in one pass is told once, in the state it
        is in now (queued and started at once: RUNNING), with how the attempt
        before ended if no line told it.  Ends were told as they happened
        (:meth:`task_ended`).
        """
        if not self.told:
            return
        sched = self.master.sched
        news = []
        for task_id in changed:
            record = sched.tasks.get(task_id)
            if record is None or record.run not in self.told or record.state in TERMINAL:
                continue
            told = self.told[record.run]
            before = told.get(task_id, (TaskState.WAITING.value, 0))
            state = (record.state.value, len(record.attempts))
            if before != state:
                told[task_id] = state
                news.append((record.seq, record, before))
        for _, record, before in sorted(news, key=lambda item: item[0]):
            self._tell(record.run, _change(record, before, sched, now))

    def _tell(self, run_id: str, event: Dict[str, Any]) -> None:
        for conn, req_id, progress in self.watchers.get(run_id, ()):
            if progress:
                conn.send(Op.EVENT, req_id, event, FLAG_MORE, urgent=True)

    def close_finished(self) -> None:
        """After a batch of actions: end the streams of runs that are now over."""
        while self._touched:
            run_id = self._touched.pop()
            if self._live(run_id):
                continue
            view = self.view(run_id, detail=False)
            view["states"] = {r.id: r.state.value for r in self._records(run_id)}
            for conn in self.master.worker_conns.values():     # they may drop its $TITAN_SHARED
                conn.send(Op.RUN_DONE, 0, {"run": run_id}, lazy=True)
            if "@" in run_id:
                self.slot_freed = True                         # overlap=queue slots may start now
            self.told.pop(run_id, None)
            for conn, req_id, _ in self.watchers.pop(run_id, []):
                self.master.send_outcome(conn, req_id, {"kind": "run", "run": view}, self.runs.get(run_id, ()))

    def worker_joined(self, conn: Connection, shared: Any) -> None:
        """A worker listed the runs whose $TITAN_SHARED it holds: RUN_DONE for each one that is over.

        Over: every task ended, or the run is unknown here (forgotten, or
        never this master's).  RUN_DONE went only to the workers connected
        when the run ended; this reaches one that was away.
        """
        for run_id in shared[:MAX_SHARED_LISTED] if isinstance(shared, list) else ():
            if isinstance(run_id, str) and run_id and not self._live(run_id):
                conn.send(Op.RUN_DONE, 0, {"run": run_id}, lazy=True)

    def dropped(self, conn: Connection) -> None:
        for run_id in list(self.watchers):
            self.watchers[run_id] = [w for w in self.watchers[run_id] if w[0] is not conn]
            if not any(w[2] for w in self.watchers[run_id]):
                self.told.pop(run_id, None)
            if not self.watchers[run_id]:
                del self.watchers[run_id]


class UnknownJobName(UsageError):
    """Raised inside the master when TRIGGER or REMOVE_JOB names a job it has not registered."""

    def __init__(self, name: object) -> None:
        super().__init__(f"no job {name!r}: `titan jobs` lists the jobs this master knows; "
                         f"`titan submit FILE` registers one")


def _task_event(record: TaskRecord) -> Dict[str, Any]:
    return {"kind": "task", "id": record.id, "state": record.state.value, "attempt": len(record.attempts),
            "node": record.node}


def _change(record: TaskRecord, before: Tuple[str, int], sched: "Scheduler", now: float) -> Dict[str, Any]:
    """The EVENT telling that ``record`` is now queued, running or waiting, and why.

    ``before`` is the (state, attempts) last told: an attempt that ended
    since, and that no line told of, is described (a task re-queued and
    started again in one pass shows only as RUNNING).
    """
    attempts = record.attempts
    event = _task_event(record)
    running = record.state is TaskState.RUNNING
    told_ended = before[1] - 1 if before[0] == TaskState.RUNNING.value else before[1]
    last_ended = len(attempts) - 2 if running else len(attempts) - 1
    why = [_how_it_ended(attempts[last_ended])] if 0 <= last_ended and told_ended <= last_ended else []
    if record.state is TaskState.QUEUED:
        waiting = _why_queued(record, sched, now)
        if waiting:
            why.append(waiting)
    event["reason"] = "; ".join(why)
    return event


def task_view(record: TaskRecord, sched: "Scheduler", now: float) -> Dict[str, Any]:
    """A task as STATUS shows it; a QUEUED one that waits for more than a free slot says why,
    and one on a later attempt how the attempt before its latest ended (``before``)."""
    view = record.to_wire()
    if len(record.attempts) > 1:
        view["before"] = _how_it_ended(record.attempts[-2])
    if record.state is TaskState.QUEUED:
        waiting = _why_queued(record, sched, now)
        if waiting:
            view["waiting"] = waiting
    return view


def _why_queued(record: TaskRecord, sched: "Scheduler", now: float) -> str:
    """Why a QUEUED task is not running yet, if for more than want of a free slot ("" then)."""
    why = []
    if record.ready_at > now:       # the wait as set (a backoff, or the delay), not what is left of it
        why.append(_wait_as_set(record))
    nobody = _nobody_can_take(record, sched)
    if nobody:
        why.append(nobody)
    return "; ".join(why)


def _wait_as_set(record: TaskRecord) -> str:
    """How long a QUEUED task is held: the backoff after its last attempt, or its ``delay``.

    The delay counts from when the task became ready (its dependencies
    succeeded), not from when the run was submitted.
    """
    attempts = record.attempts
    if attempts and attempts[-1].finished_at:      # a retry's backoff, counted from the failed attempt's end
        return f"next attempt in {record.ready_at - attempts[-1].finished_at:.3g}s"
    return f"delayed: starts in {record.delay_s:.3g}s"


def _how_it_ended(attempt: Attempt) -> str:
    if attempt.state is TaskState.QUEUED:          # its worker was lost, or handed it back unstarted
        return f"attempt {attempt.number} lost ({attempt.reason}); no retry used"
    if attempt.exit_code is not None:
        return f"attempt {attempt.number} failed with exit code {attempt.exit_code}"
    return f"attempt {attempt.number} {attempt.state.value.lower()} ({attempt.reason})"


def _nobody_can_take(record: TaskRecord, sched: "Scheduler") -> str:
    """Why no connected worker can take ``record`` at all ("" when one can, busy or not)."""
    node, needs = record.pin or record.spec.node, record.spec.requires
    live = [w for w in sched.workers.values() if w.connected and not w.draining]
    if any(eligible(w, needs, node) for w in live):
        return ""
    if not live:
        return "no worker is connected"
    if node is not None and not any(w.name == node for w in live):
        return f"it must run on {node}, which is not connected"
    lacking = ",".join(sorted(needs))
    if needs and not any(needs <= w.tags for w in live if node in (None, w.name)):
        return f"no connected worker has tags {lacking}: start one with --tags {lacking}"
    return "every connected worker that could take it takes only tasks that require its tags (--dedicated)"


def _job_of(run_id: str) -> str:
    """``etl#3`` or ``etl@2026-11-28T02:00Z`` -> ``etl``."""
    return run_id.split("@", 1)[0].rsplit("#", 1)[0]
