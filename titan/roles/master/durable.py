"""The master's durable state: an embedded TitanStore engine and its AOF.

    scheduler.dirty ──persist()──▶ engine (SET titan:task:…) ──▶ AOF buffer
                                                            ──flush()──▶ one write + fsync per pass
    start-up: AOF ──replay──▶ engine ──load_state()──▶ records, workers, counters ──▶ scheduler

What a client or worker is told is on disk first: the master holds the OK of
a submission and the ACK of a result until :meth:`Durable.flush` succeeds.
The store lives in ``DATA/store/`` in Redis 7's AOF layout, so a stock
``redis-server --dir DATA/store --appendonly yes`` can read it too.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

from titan.core.model import TERMINAL, SpecCache, TaskRecord
from titan.core.scheduler import Scheduler
from titan.core.state import (COUNTERS_KEY, CRON_KEY, JOB_PREFIX, SERVICE_PREFIX, TASK_PREFIX, WORKER_PREFIX, needs_saving, record_from_blob,
                              save_counters, save_worker, task_write, worker_from_blob)
from titan.io.aof import AppendOnlyFile
from titan.wire.codec import decode, encode
from titan.io.loop import Loop
from titan.io.syncer import Syncer
from titan.store.engine import Engine
from titan.store.reply import ErrorReply

__all__ = ["Durable", "SavedState"]

logger = logging.getLogger(__name__)

# While the quickest of the recent fsyncs on the loop thread took less than
# this, fsyncs are done there: handing each one to the helper thread and back
# costs more than it saves.  Slower ones (a spinning disk, a busy volume) go
# to the thread, so the loop goes on reading and dispatching while the disk
# works.  The quickest, because on a busy host a blocking call also counts the
# wait for a CPU afterwards; the disk itself is never faster than that.
INLINE_FSYNC_S = 0.001
TIMED_FSYNCS = 8
# Only fsyncs on the loop thread are timed (one on the helper thread is mostly
# waiting for its turn), so while the thread has them, one in this many
# seconds is done on the loop again, to see whether the disk is fast now.
PROBE_S = 1.0


@dataclass
class SavedState:
    """What a restart reads back from the store."""

    records: List[TaskRecord] = field(default_factory=list)
    workers: List[Dict[str, Any]] = field(default_factory=list)
    counters: Dict[str, int] = field(default_factory=dict)
    jobs: List[Dict[str, Any]] = field(default_factory=list)
    cursors: Dict[str, float] = field(default_factory=dict)
    services: List[Dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0


class Durable:
    """Owns the engine and the AOF; the master calls it once per loop pass."""

    def __init__(self, data_dir: Path, *, fsync: str = "always", retention_s: float = 7 * 86400.0,
                 rewrite_min_bytes: int = 64 * 1024 * 1024) -> None:
        self.engine = Engine(config={b"appendonly": b"yes", b"appendfsync": fsync.encode()})
        self.aof = AppendOnlyFile(data_dir, fsync=fsync, rewrite_min_bytes=rewrite_min_bytes)
        self.retention_s = retention_s
        self.counters_dirty: Dict[str, int] = {}
        self.jobs_dirty: Dict[str, Optional[Dict[str, Any]]] = {}       # None: forget it
        self.cursors_dirty: Dict[str, Optional[float]] = {}              # None: forget it
        self.services_dirty: Dict[str, Optional[Dict[str, Any]]] = {}   # None: forget it
        self.first_written: Set[str] = set()    # tasks whose first record the last persist() wrote
        self._timed: Deque[float] = deque(maxlen=TIMED_FSYNCS)            # recent fsyncs on the loop, in seconds

    # ----- start-up ------------------------------------------------------
    def open(self, now: float, specs: SpecCache) -> SavedState:
        """Lock the directory, replay the AOF and read the master's records back."""
        self.aof.open()
        report = self.aof.load(self.engine, _ms(now))
        state = SavedState()
        for key, blob in self._values(TASK_PREFIX, now):
            try:
                state.records.append(record_from_blob(blob, specs))
            except (ValueError, KeyError, TypeError) as exc:
                state.unreadable += 1
                logger.error("cannot read the task record %r: %s; it is skipped", key, exc)
        for _, blob in self._values(WORKER_PREFIX, now):
            worker = worker_from_blob(blob)
            if worker is not None:
                state.workers.append(worker)
        for _, blob in self._values(JOB_PREFIX, now):
            job = decode(blob)
            if isinstance(job, dict) and isinstance(job.get("name"), str):
                state.jobs.append(job)
        for _, blob in self._values(SERVICE_PREFIX, now):
            service = decode(blob)
            if isinstance(service, dict) and isinstance(service.get("name"), str):
                state.services.append(service)
        reply, _ = self.engine.execute([b"HGETALL", COUNTERS_KEY], _ms(now))
        pairs = list(reply) if isinstance(reply, list) else []
        for name, n in zip(pairs[::2], pairs[1::2]):
            state.counters[name.decode()] = int(n)
        reply, _ = self.engine.execute([b"HGETALL", CRON_KEY], _ms(now))
        pairs = list(reply) if isinstance(reply, list) else []
        for name, cursor in zip(pairs[::2], pairs[1::2]):
            state.cursors[name.decode()] = float(cursor)
        logger.info("store: replayed %d commands from %d files: %d tasks, %d workers",
                    report.commands, report.files, len(state.records), len(state.workers))
        return state

    def _values(self, prefix: bytes, now: float) -> Iterable[Tuple[bytes, bytes]]:
        cursor = b"0"
        while True:
            reply, _ = self.engine.execute([b"SCAN", cursor, b"MATCH", prefix + b"*", b"COUNT", b"1000"],
                                           _ms(now))
            cursor, keys = reply  # type: ignore[misc]
            for key in keys:
                value, _ = self.engine.execute([b"GET", key], _ms(now))
                if isinstance(value, bytes):
                    yield key, value
            if cursor == b"0":
                return

    # ----- each pass -----------------------------------------------------
    def persist(self, sched: Scheduler, now: float) -> bool:
        """Write every record the scheduler changed since the last pass.

        Returns True if it wrote more than task records (workers, jobs,
        services, cron claims, id counters).
        """
        now_ms = _ms(now)
        out: List[List[bytes]] = []
        records: List[bytes] = []           # their SETs, appended to the AOF as one piece
        put, tasks = self.engine.put_string, sched.tasks
        first = self.first_written = set()
        try:
            for task_id in sched.dirty:
                record = tasks.get(task_id)
                if record is not None and needs_saving(record):
                    if record.saved is None:
                        first.add(task_id)
                    records.append(put(*task_write(record, terminal=record.state in TERMINAL,
                                                   retention_s=self.retention_s), now_ms))
        finally:        # what the engine took, the AOF gets, even if a record after it fails
            if records:
                self.aof.append_encoded(b"".join(records))
        sched.dirty.clear()
        for name in sched.workers_dirty:
            w = sched.workers.get(name)
            if w is not None:
                out += self._run(save_worker(w.name, w.tags, w.slots, w.dedicated, w.last_seen, w.info,
                                             draining=w.draining), now_ms)
            else:                                   # retired
                out += self._run([b"DEL", WORKER_PREFIX + name.encode()], now_ms)
        sched.workers_dirty.clear()
        for name, job in self.jobs_dirty.items():
            key = JOB_PREFIX + name.encode()
            out += self._run([b"SET", key, encode(job)] if job is not None else [b"DEL", key], now_ms)
        self.jobs_dirty.clear()
        for name, service in self.services_dirty.items():
            key = SERVICE_PREFIX + name.encode()
            out += self._run([b"SET", key, encode(service)] if service is not None else [b"DEL", key], now_ms)
        self.services_dirty.clear()
        if self.cursors_dirty:                  # cron claims: in the same write as the runs they start
            out += self._save_cursors(now_ms)
        if self.counters_dirty:
            out += self._run(save_counters(self.counters_dirty), now_ms)
            self.counters_dirty.clear()
        if out:
            self.aof.append(out)
        return bool(out)

    def _save_cursors(self, now_ms: int) -> List[List[bytes]]:
        """One HSET for the cursors that moved, one HDEL for those of removed jobs."""
        moved, gone = [b"HSET", CRON_KEY], [b"HDEL", CRON_KEY]
        for name, cursor in sorted(self.cursors_dirty.items()):
            if cursor is None:
                gone.append(name.encode())
            else:
                moved += [name.encode(), repr(cursor).encode()]
        self.cursors_dirty.clear()
        out: List[List[bytes]] = []
        for command in (moved, gone):
            if len(command) > 2:
                out += self._run(command, now_ms)
        return out

    def _run(self, command: List[bytes], now_ms: int) -> List[List[bytes]]:
        reply, aof = self.engine.execute(command, now_ms)
        if isinstance(reply, ErrorReply):
            logger.error("store refused %r: %s", command[0], reply.message)
        return aof

    def execute(self, command: List[bytes], now: float) -> Any:
        """Run a command for a user (kv); its AOF commands are buffered for this pass."""
        reply, aof = self.engine.execute(command, _ms(now))
        if aof:
            self.aof.append(aof)
        return reply

    def start_syncer(self, loop: Loop, on_durable: Callable[[], None]) -> None:
        """fsync on a helper thread from now on, when the disk is slow; ``on_durable`` runs when more data is safe."""
        def done(error: Optional[OSError]) -> None:
            self.aof.sync_done(error, self._request_fsync)
            on_durable()
        self._syncer = Syncer(loop, done, fsync=self.aof.ops.fsync)

    _syncer: Optional[Syncer] = None
    _timed_at = 0.0                     # when an fsync on the loop was last timed

    @property
    def fsync_s(self) -> float:
        """The quickest of the recent fsyncs on the loop thread (0 before the first)."""
        return min(self._timed, default=0.0)

    def _inline_now(self) -> bool:
        """fsync on the loop thread: the disk is fast, or it is time to time it again."""
        return self.fsync_s < INLINE_FSYNC_S or time.perf_counter() - self._timed_at >= PROBE_S

    def _observe(self, seconds: float) -> None:
        self._timed.append(seconds)
        self._timed_at = time.perf_counter()

    def _request_fsync(self, fd: int) -> None:
        """Start the fsync of what :meth:`flush_async` wrote: on the thread, or here when it is fast."""
        if self._syncer is not None and not self._inline_now():
            self._syncer.request(fd)
            return
        error: Optional[OSError] = None           # also when closing: the thread is gone
        start = time.perf_counter()
        try:
            self.aof.ops.fsync(fd)
        except OSError as exc:
            error = exc
        if self._syncer is not None:
            self._observe(time.perf_counter() - start)
        self.aof.sync_done(error, self._request_fsync)

    def flush(self) -> bool:
        """Write this pass's commands; fsync inline, or on the syncer's thread when the disk is slow.

        False while the disk refuses them.  :attr:`durable_total` tells how
        far the data is safe.
        """
        if self._syncer is None:
            return self._flush_inline()
        if self.aof.syncing or not self._inline_now():
            return self.aof.flush_async(self._request_fsync)
        if not self.unsynced:
            return self._flush_inline()
        start = time.perf_counter()
        ok = self._flush_inline()
        self._observe(time.perf_counter() - start)
        return ok

    def write_ahead(self) -> bool:
        """Write this pass's commands to the file, leaving the fsync to a later :meth:`flush`.

        What is written survives the master being killed; what waits for
        durability waits for that flush.
        """
        return self.aof.write_ahead()

    @property
    def unsynced(self) -> bool:
        """True while appended commands are not yet known to be on disk."""
        return self.aof.appended_total > self.aof.durable_total

    def _flush_inline(self) -> bool:
        ok = self.aof.flush()
        if ok:
            self.aof.durable_total = self.aof.appended_total
        return ok

    @property
    def appended_total(self) -> int:
        return self.aof.appended_total

    @property
    def durable_total(self) -> int:
        return self.aof.durable_total

    @property
    def broken(self) -> Optional[OSError]:
        return self.aof.error

    def housekeeping(self, now: float) -> None:
        """Active expiry and background compaction of the AOF."""
        expired = self.engine.active_expire(_ms(now), 100)
        if expired:
            self.aof.append(expired)
        if self.aof.syncing:
            return              # a rewrite switches files: start it between fsyncs
        self.aof.poll_rewrite()
        if self.aof.rewrite_due():
            self.aof.start_rewrite(self.engine, _ms(now))

    def close(self) -> None:
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.close()                # lets a running fsync finish and report
        self.aof.flush(force_fsync=True)
        self.aof.close()


def _ms(now: float) -> int:
    return int(now * 1000)
