"""When scheduled jobs fire: slots, catch-up, overlap and jitter, given ``now``.

    set_job(name, expr, tz, overlap, catchup, ...)   a job with a schedule (cursor: now)
    due(now, active)  -> [Fire(job, slot, run_id, start_at)]   slots whose time has come
    saved_cursor(job) -> the cursor the owner persists, with the runs due() started
    next_deadline()   -> when due() next has something to return

A slot is named by its time (``nightly@2026-11-28T02:00Z``), so a slot can
run at most once even across a master restart: the saved cursor moves past
it in the same write as its run's records, and the run id is the same if it
is started again.  A slot claimed but not started yet (waiting out its
jitter, or queued behind the job's running run) keeps the saved cursor just
before it, so a restarted master finds it again and its catch-up policy
decides, as for any slot missed while the master was down.

After downtime (``cursor`` far behind ``now``): ``none`` skips the missed
slots, ``latest`` runs the last one, ``all`` runs up to ``catchup_limit``
of them, oldest first.  Overlap, when the job's previous run is still
going: ``skip`` drops the slot, ``queue`` keeps it until that run ends
(at most ``catchup_limit`` wait; the owner calls ``due`` again when a run ends), ``allow`` runs it anyway.
The missed slots ``all`` asked for are never dropped by ``skip``: they run
one after another, as with ``queue``.  ``jitter``
delays each slot by a fixed pseudo-random part of the jitter (the same for
the same slot).  Pure: no clock, no I/O.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, List, NamedTuple, Optional

from titan.core.cron import CronSchedule, load_zone, parse, slot_id

__all__ = ["Fire", "Planner", "PlannedJob"]


class Fire(NamedTuple):
    """One slot of one job whose run should start at ``start_at``."""
    job: str
    slot: float          # the slot's time, seconds since the epoch
    run_id: str          # JOB@SLOT
    start_at: float      # slot + jitter
    missed: bool = False  # found by catch-up (its minute had passed, or it came with older ones)


@dataclass
class PlannedJob:
    name: str
    schedule: CronSchedule
    tz: str
    overlap: str = "skip"
    catchup: str = "latest"
    catchup_limit: int = 10
    jitter_s: float = 0.0
    cursor: float = 0.0                       # the last slot claimed (or when the job was registered)
    delayed: List[Fire] = field(default_factory=list)   # claimed, waiting out their jitter
    queued: List[Fire] = field(default_factory=list)    # overlap=queue: waiting for the running run


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class Planner:
    """The schedules of every job with one; the master persists each job's cursor."""

    def __init__(self) -> None:
        self.jobs: Dict[str, PlannedJob] = {}

    def set_job(self, name: str, expr: str, *, tz: str = "UTC", overlap: str = "skip", catchup: str = "latest",
                catchup_limit: int = 10, jitter_s: float = 0.0, now: float, cursor: Optional[float] = None) -> None:
        """Add or update a job; a new job's cursor is ``now`` (no catch-up for its past)."""
        load_zone(tz)
        old = self.jobs.get(name)
        start = cursor if cursor is not None else (old.cursor if old else now)
        self.jobs[name] = PlannedJob(name, parse(expr), tz, overlap, catchup, max(1, catchup_limit), jitter_s,
                                     start, old.delayed if old else [], old.queued if old else [])

    def remove_job(self, name: str) -> None:
        self.jobs.pop(name, None)

    def _jitter(self, job: PlannedJob, slot: float) -> float:
        if job.jitter_s <= 0:
            return 0.0
        digest = hashlib.sha256(f"{job.name}@{slot}".encode()).digest()
        return job.jitter_s * int.from_bytes(digest[:4], "big") / 2 ** 32

    def _fire(self, job: PlannedJob, slot_dt: datetime, now: float) -> Fire:
        slot = slot_dt.timestamp()
        return Fire(job.name, slot, f"{job.name}@{slot_id(slot_dt)}", slot + self._jitter(job, slot),
                    now - slot >= 60.0)

    def _new_slots(self, job: PlannedJob, now: float) -> "tuple[Optional[float], List[Fire]]":
        """The latest slot in (cursor, now], and the slots the catch-up policy runs."""
        if job.schedule.next_after(_utc(job.cursor), job.tz).timestamp() > now:
            return None, []
        limit = job.catchup_limit if job.catchup == "all" else 1
        slots = [self._fire(job, s, now)
                 for s in job.schedule.between(_utc(job.cursor), _utc(now), job.tz, limit=limit)]
        latest = slots[-1].slot
        if job.catchup == "none":            # only a slot whose minute is still going runs
            slots = [f for f in slots if not f.missed]
        elif len(slots) > 1:                 # found together after downtime: each one is a catch-up
            slots = [f._replace(missed=True) for f in slots]
        return latest, slots

    def due(self, now: float, is_running: Callable[[str], bool]) -> List[Fire]:
        """Slots whose runs start now.  Each slot found moves its job's cursor: the claim
        the owner must persist before it starts the run."""
        out: List[Fire] = []
        for job in self.jobs.values():
            latest, fires = self._new_slots(job, now)
            if latest is not None:
                job.cursor = latest
            job.delayed += fires
            job.queued += [f for f in job.delayed if f.start_at <= now]
            job.delayed = [f for f in job.delayed if f.start_at > now]
            busy = is_running(job.name)
            keep: List[Fire] = []
            for fire in job.queued:
                if not busy or job.overlap == "allow":
                    out.append(fire)
                    busy = True
                elif (job.overlap == "queue" or (fire.missed and job.catchup == "all")) \
                        and len(keep) < job.catchup_limit:
                    keep.append(fire)                  # overlap=skip: dropped, unless catch-up asked for it
            job.queued = keep
        return out

    @staticmethod
    def saved_cursor(job: PlannedJob) -> float:
        """The cursor to persist: the last slot claimed, or just before the first one
        claimed whose run has not started."""
        waiting = [f.slot for f in job.delayed] + [f.slot for f in job.queued]
        return min(job.cursor, min(waiting) - 0.001) if waiting else job.cursor

    def next_deadline(self) -> Optional[float]:
        times: List[float] = []
        for job in self.jobs.values():
            times.append(job.schedule.next_after(_utc(job.cursor), job.tz).timestamp())
            times += [f.start_at for f in job.delayed]
        return min(times) if times else None
