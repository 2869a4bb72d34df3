"""The master: accepts clients and workers, and runs the scheduler's decisions.

    client ──SUBMIT/STATUS/LOGS/...──▶ ┐
                                      ├─ MasterHandler ─▶ Scheduler (pure) ─▶ actions
    worker ──HELLO/OUTPUT/FINISHED──▶ ┘        │                                │
                                            LogStore                 DISPATCH / KILL to workers,
                                        (per-attempt files)          results and output to clients

One selectors loop on one thread owns every connection and the scheduler.
Results are pushed to the clients that asked (no polling); a client's bad
frame closes that client alone.
"""
from __future__ import annotations

import collections
import gc
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

from titan import __version__
from titan.core.model import KILL_GRACE_S, TERMINAL, SpecCache, TaskRecord, TaskState
from titan.core.planner import Planner
from titan.core.scaler import PoolDemand, Scaler, ScalerConfig, WorkerInfo
from titan.core.scheduler import Disconnect, Dispatch, Ended, Kill, Note, Scheduler
from titan.errors import ProtocolError, UsageError
from titan.io.blobs import BlobStore
from titan.io.logfiles import LogStore
from titan.roles.master.durable import Durable, SavedState
from titan.roles.master.kv import KvService
from titan.roles.master.requests import LAZY, ClientRequests, UnknownTaskId
from titan.roles.master.runs import RunService, UnknownJobName
from titan.roles.master.services import ServiceManager
from titan.io.loop import Connection, Handler, Listener, Loop, Timer, format_address, is_loopback
from titan.wire.frames import DEFAULT_MAX_BODY_BYTES, FLAG_MORE, Frame, Op
from titan.wire.handshake import ServerHandshake

__all__ = ["MasterConfig", "Master"]

logger = logging.getLogger(__name__)

LAZY_SYNC_S = 0.02         # the longest stored results wait for their fsync
ACK_EVERY_S = 0.02         # results read within this long share one ACK per worker
FEATURES = ("job_encoded",)  # named in WELCOME: RUN may carry the job encoded (see RunService._received)
MAX_AHEAD_PER_SLOT = 4      # a worker may hold at most this many attempts per slot beyond its slots


@dataclass(frozen=True)
class MasterConfig:
    """Everything ``titan master`` can be told."""

    data_dir: Path
    bind: Tuple[str, int] = ("127.0.0.1", 9090)
    token: Optional[str] = None
    insecure: bool = False
    name: str = "master"
    heartbeat_timeout_s: float = 10.0
    lost_grace_s: float = 10.0
    handshake_timeout_s: float = 10.0
    frame_timeout_s: float = 30.0
    max_connections: int = 1024
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_max_bytes: int = 64 * 1024 * 1024
    log_tail_bytes: int = 1024 * 1024
    tls: Optional[ssl.SSLContext] = None
    fsync: str = "always"
    retention_s: float = 7 * 86400.0
    aof_rewrite_min_bytes: int = 64 * 1024 * 1024
    clock_offset_s: float = 0.0     # added to the wall clock (to test schedules without waiting)
    gather_s: float = 0.001         # while work waits for capacity, events gather this long per pass
    scaler: ScalerConfig = ScalerConfig()
    extra: Dict[str, Any] = field(default_factory=dict)


def check_exposure(config: MasterConfig) -> None:
    """Refuse a tokenless master on a non-loopback address unless --insecure."""
    if config.token or config.insecure or (config.tls is not None and config.tls.verify_mode == ssl.CERT_REQUIRED):
        return
    host = config.bind[0]
    if not is_loopback(host):
        raise UsageError(
            f"refusing to serve on {host} without a cluster token: set TITAN_TOKEN "
            f"(or --token), require client certificates (--tls-ca), or pass --insecure "
            f"if this network is trusted")


Frame_ = Tuple[Connection, int, int, Any, int, Any]   # conn, request id, opcode, body, flags, when


class Peer:
    """Per-connection state: handshake progress and who is on the other end."""

    __slots__ = ("handshake", "role", "name", "watching", "following", "subscriptions", "retiring")

    def __init__(self, handshake: ServerHandshake) -> None:
        self.handshake = handshake
        self.role = ""
        self.name = ""
        # (task, request) pairs this client waits on or follows the output of, until the task ends
        self.watching: Set[Tuple[str, int]] = set()
        self.following: Set[Tuple[str, int]] = set()
        self.subscriptions: List[int] = []
        self.retiring = False


class Master(ClientRequests, Handler):
    """The control plane: one loop, one scheduler, many connections."""

    def __init__(self, config: MasterConfig, *, clock: Callable[[], float] = time.time) -> None:
        check_exposure(config)
        self.config = config
        offset = config.clock_offset_s
        self.clock = clock if not offset else (lambda: clock() + offset)
        self.started_at = self.clock()
        self.loop = Loop()
        self.sched = Scheduler(lost_grace_s=config.lost_grace_s,
                               heartbeat_timeout_s=config.heartbeat_timeout_s)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs = LogStore(config.data_dir / "logs", max_bytes=config.log_max_bytes,
                             tail_bytes=config.log_tail_bytes)
        self.conns: "set[Connection]" = set()
        self.worker_conns: Dict[str, Connection] = {}
        self.watchers: Dict[str, List[Tuple[Connection, int]]] = {}
        self.followers: Dict[Any, List[Tuple[Connection, int]]] = {}    # task, "@"+service, or (task, attempt)
        self.counters: Dict[str, int] = {}
        self.specs = SpecCache()
        self.listener: Optional[Listener] = None
        self._tick_timer: Optional[Timer] = None
        self._tick_at: Optional[float] = None
        self._tails: Dict[str, bytes] = {}
        self._acks: Dict[Connection, List[List[Any]]] = {}   # results without a seq (older workers), not yet ACKed
        self._acked: Dict[Connection, int] = {}                # the highest result seq read per worker, not yet ACKed
        self._acks_due = False                                 # ACK_EVERY_S has passed since the first of them
        self._results_read = False                             # in this pass
        self._held: List[Frame_] = []                        # held in this pass
        self._sync_timer: Optional[Timer] = None               # a deferred fsync (see _sync_later)
        self._appended_at_pass = 0                             # the AOF position at the end of the last pass
        self._batch_unsynced = False                           # a pass left its fsync to the rest of a batch
        self._waiting: Deque[Tuple[int, List[Frame_]]] = collections.deque()   # (AOF position, frames)
        # Tasks whose first record is written but not yet fsynced, by the AOF position that covers them
        self._first_unsynced: Deque[Tuple[int, Set[str]]] = collections.deque()
        self.blobs = BlobStore(config.data_dir / "files")
        self.durable = Durable(config.data_dir / "store", fsync=config.fsync, retention_s=config.retention_s,
                               rewrite_min_bytes=config.aof_rewrite_min_bytes)
        saved = self.durable.open(self.clock(), self.specs)
        self._restore(saved)
        self.kv = KvService(self)
        self.planner = Planner()
        self.scaler = Scaler(config.scaler)
        self.runs = RunService(self)
        self.runs.restore(saved.jobs, saved.cursors)
        self.services = ServiceManager(self)
        self.services.restore(saved.services, self.clock())
        self._purged_at = 0.0
        self.loop.add_pass_hook(self._end_of_pass)
        self.loop.gather_while(self.sched.saturated, config.gather_s)
        self.loop.add_pass_hook(self._schedule_tick)

    def _restore(self, saved: SavedState) -> None:
        """Take back what the store remembers: tasks, workers (as lost until they dial in), counters."""
        now = self.clock()
        for w in saved.workers:
            self.sched.restore_worker(w["name"], w.get("tags") or [], int(w.get("slots") or 1),
                                      dedicated=bool(w.get("dedicated")), last_seen=float(w.get("last_seen") or now),
                                      info=w.get("info"))
            self.sched.workers[w["name"]].draining = bool(w.get("draining"))
        self.sched.restore(saved.records, now)
        self.sched.hold_dispatch(now + self.config.lost_grace_s)
        self.counters.update(saved.counters)
        running = sum(1 for r in saved.records if r.state is TaskState.RUNNING)
        if saved.records:
            logger.info("restored %d tasks (%d were running: they wait %gs for their workers to report)",
                        len(saved.records), running, self.config.lost_grace_s)

    # ----- lifecycle -----------------------------------------------------
    def start(self) -> Tuple[str, int]:
        if self.config.fsync == "always":
            self.durable.start_syncer(self.loop, self._release)
        self.listener = Listener.bind(self.loop, self.config.bind, self._accept)
        address = self.listener.address
        addr_file = self.config.data_dir / "master.addr"
        tmp = addr_file.with_suffix(".tmp")
        tmp.write_text(format_address(address) + "\n")
        os.replace(tmp, addr_file)
        self.loop.call_later(1.0, self._housekeeping)
        logger.info("titan master %s listening on %s (data in %s)", __version__,
                    format_address(address), self.config.data_dir)
        return address

    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT, then close everything (final fsync included)."""
        gc.freeze()     # the modules and the state read back live on: full collections skip them
        try:
            self.loop.run_until_signalled()
        finally:
            self.close()

    def close(self) -> None:
        for conn in list(self.conns):
            conn.close("master shutting down")
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.logs.close()
        self.durable.close()
        logger.info("titan master stopped")

    def _accept(self, sock: socket.socket) -> None:
        if self.config.tls is not None:
            sock = self.config.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn = Connection(self.loop, sock, self, max_body_bytes=self.config.max_body_bytes)
        if len(self.conns) >= self.config.max_connections:
            conn.fail(0, "too_many_connections",
                      f"the master already has {len(self.conns)} connections (limit {self.config.max_connections})")
            return
        conn.state = Peer(ServerHandshake(name=self.config.name, token=self.config.token, features=FEATURES))
        self.conns.add(conn)

    def _housekeeping(self) -> None:
        now = self.loop.clock()
        for conn in list(self.conns):
            peer: Peer = conn.state
            if not peer.handshake.done and now - conn.opened_at > self.config.handshake_timeout_s:
                conn.fail(0, "handshake_timeout",
                          f"handshake not completed within {self.config.handshake_timeout_s:g}s")
            elif conn.decoder.mid_frame and now - conn.frame_started_at > self.config.frame_timeout_s:
                conn.fail(0, "frame_timeout",
                          f"incomplete frame: not completed within {self.config.frame_timeout_s:g}s")
        self.durable.housekeeping(self.clock())
        if now - self._purged_at > min(60.0, max(1.0, self.config.retention_s / 4)):
            self._purged_at = now
            self.runs.forget(self.sched.forget_finished(self.clock() - self.config.retention_s))
        self._scale()
        self._forget_lost_ephemerals()
        self.loop.call_later(1.0, self._housekeeping)

    def _forget_lost_ephemerals(self) -> None:
        """An ephemeral worker gone past the grace period will not be back: it leaves `titan nodes`."""
        now = self.clock()
        wait = self.config.lost_grace_s + self.config.heartbeat_timeout_s
        for w in list(self.sched.workers.values()):
            if not w.connected and w.info.get("ephemeral") and now - w.last_seen > wait and not w.busy:
                logger.info("forgetting ephemeral worker %s: lost for %.0fs", w.name, now - w.last_seen)
                self.sched.worker_retired(w.name)

    def _scale(self) -> None:
        """Inception: ask workers that may fork children to do so for pools that waited too long."""
        workers = list(self.sched.workers.values())
        if not any(w.connected and w.info.get("max_children") for w in workers):
            return
        pools = [PoolDemand(requires, node, queued, since) for requires, node, queued, since in self.sched.pools()]
        infos = [WorkerInfo(name=w.name, tags=w.tags, slots=w.slots, busy=w.busy, host=str(w.info.get("host") or ""),
                            max_children=int(w.info.get("max_children") or 0), parent=w.info.get("parent"),
                            ephemeral=bool(w.info.get("ephemeral")), connected=w.connected, draining=w.draining,
                            dedicated=w.dedicated) for w in workers]
        for fork in self.scaler.decide(self.clock(), pools, infos):
            conn = self.worker_conns.get(fork.parent)
            if conn is not None:
                logger.info("scaling: %s forks a child worker: %s", fork.parent, fork.reason)
                conn.send(Op.SPAWN, 0, {"count": 1, "reason": fork.reason}, urgent=True)

    def _schedule_tick(self) -> None:
        times = [t for t in (self.sched.next_deadline(), self.planner.next_deadline(),
                             self.services.next_deadline(self.config.lost_grace_s)) if t is not None]
        deadline = min(times) if times else None
        if deadline == self._tick_at:
            return
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        self._tick_at = deadline
        self._tick_timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self.clock()) + 0.001
            self._tick_timer = self.loop.call_later(delay, self._tick)

    def _end_of_pass(self) -> None:
        """Persist what changed and start its fsync; frames held in this pass wait for it.

        Until the store has the data, submissions get no OK and results no
        ACK (a worker keeps an un-ACKed result and reports it again).
        """
        if self.runs.slot_freed:                    # a scheduled run ended: queued slots may start
            self.runs.fire_due()
        now = self.clock()
        if self.followers:
            self._end_attempt_followers()
        self.runs.tell_changes(self.sched.dirty, now)
        wrote_more = self.durable.persist(self.sched, now)
        if self.durable.first_written:
            self._first_unsynced.append((self.durable.appended_total, self.durable.first_written))
        acks_only = not self._held
        results, self._results_read = self._results_read, False
        if self._acks_due:                          # one ACK per worker per ACK_EVERY_S
            self._acks_due = False
            for conn, upto in self._acked.items():
                self._held.append((conn, 0, Op.ACK, {"upto": upto}, 0, False))
            for conn, items in self._acks.items():
                self._held.append((conn, 0, Op.ACK, {"items": items}, 0, False))
            self._acked.clear()
            self._acks.clear()
        # A pass that only stored results (task records, later answered by ACKs to
        # their workers) may leave its fsync for a moment; anything else is fsynced
        # now, before the pass's replies go out, and so is what earlier passes left.
        appended = self.durable.appended_total
        quiet = not wrote_more and not self.loop.replies_waiting
        if self._held:
            may_wait = acks_only and quiet
            self._waiting.append((appended, self._held))
            self._held = []
        else:
            may_wait = appended == self._appended_at_pass or (results and quiet)
        # While more of a batch is handled next pass, one fsync after it covers this pass too
        # (the replies that wait for this one are all held); the pass that ends it fsyncs.
        batch_goes_on = self.loop.frames_held and not self.loop.replies_waiting
        if batch_goes_on or self._batch_unsynced:
            may_wait = batch_goes_on
        self._batch_unsynced = batch_goes_on
        self._appended_at_pass = appended
        if self.durable.broken:
            self.durable.flush()
        elif self.durable.unsynced:
            if may_wait and self.config.fsync == "always":
                self._sync_later()
            else:
                self.durable.flush()
        self._release()

    def _end_attempt_followers(self) -> None:
        """``logs -f --attempt N``: the follow ends once attempt N is over (it finished, its worker
        was lost, or it was handed back), even while the task goes on."""
        for key in [key for key in self.followers if type(key) is tuple]:
            record = self.sched.tasks.get(key[0])
            attempt = record.attempts[key[1] - 1] if record is not None else None
            if attempt is None:
                self.end_followers(key, {"state": None, "exit_code": None, "attempt": key[1]})
            elif attempt.finished_at is not None or record.state in TERMINAL:
                self.end_followers(key, {"state": attempt.state.value, "exit_code": attempt.exit_code,
                                         "attempt": key[1]})

    def _sync_later(self) -> None:
        """Write this pass's data now; fsync it with the next pass that needs one,
        or within LAZY_SYNC_S.

        Two kinds of pass leave their fsync.  One that only stored results:
        only ACKs wait for it, and a worker keeps a result until its ACK, so
        an fsync per pass of results buys nobody anything (the results were
        pushed to their clients already, as always before the pass's fsync).
        And one that took a share of a batch whose rest the next passes take
        (a connection's frames beyond FRAMES_PER_PASS): its replies are held,
        and the pass that ends the batch fsyncs for all of them.
        """
        self.durable.write_ahead()
        if self._sync_timer is None:
            self._sync_timer = self.loop.call_later(LAZY_SYNC_S, self._sync_now)

    def _sync_now(self) -> None:
        self._sync_timer = None
        if self.durable.unsynced or self.durable.broken:
            self.durable.flush()
        self._release()

    def _release(self) -> None:
        """Send the held frames whose data the store now has on disk."""
        durable = self.durable.durable_total
        while self._first_unsynced and self._first_unsynced[0][0] <= durable:
            self._first_unsynced.popleft()
        while self._waiting and self._waiting[0][0] <= durable:
            for conn, req_id, opcode, body, flags, when in self._waiting.popleft()[1]:
                conn.send(opcode, req_id, body, flags, urgent=when is True, lazy=when is LAZY)

    def hold(self, conn: Connection, req_id: int, opcode: int, body: Any, flags: int = 0,
             urgent: Any = False) -> None:
        """Send this frame once the pass's writes are on disk.

        Held: OK to a submission, ACK of a result, and DISPATCH of a task of a
        scheduled slot's run whose records are not on disk yet (the slot's claim,
        written with them, must be on disk before any of its work starts).  Not
        held: other DISPATCHes (after a restart the master
        waits for its workers' reports before it dispatches, and adopts attempts
        the store never recorded), output pushed to clients, and results, which
        a worker's un-ACKed report can always reproduce (but see send_outcome).
        """
        self._held.append((conn, req_id, opcode, body, flags, urgent))

    def send_outcome(self, conn: Connection, req_id: int, event: Dict[str, Any], task_ids: Iterable[str]) -> None:
        """The EVENT that ends a request about these tasks: at once, or once their submission is on disk.

        A client that saw a task end must find it after a kill -9 of the
        master, so an outcome waits while a task's first record is not yet
        fsynced (a slow disk's fsync on the helper thread, or a task that
        ended in the pass that created it).
        """
        if all(self._on_disk(task_id) for task_id in task_ids):
            conn.send(Op.EVENT, req_id, event, 0, urgent=True)
        else:
            self.hold(conn, req_id, Op.EVENT, event, 0, True)

    def _on_disk(self, task_id: str) -> bool:
        """Whether the task's first record is written and fsynced (so a kill -9 cannot lose it)."""
        record = self.sched.tasks.get(task_id)
        if record is not None and record.saved is None:
            return False
        return not any(task_id in ids for _, ids in self._first_unsynced)

    def _tick(self) -> None:
        self._tick_at = None
        self._tick_timer = None
        self.apply(self.sched.tick(self.clock()))
        self.services.tick(self.clock(), self.config.lost_grace_s)
        self.runs.fire_due()

    # ----- frames --------------------------------------------------------
    def on_frame(self, conn: Connection, frame: Frame) -> None:
        peer: Peer = conn.state
        if not peer.handshake.done:
            self._handshake(conn, peer, frame)
            return
        handlers = WORKER_OPS if peer.role == "worker" else CLIENT_OPS
        method = handlers.get(frame.opcode)
        if method is None:
            self._unknown_op(conn, peer, frame)
            return
        body = frame.body if isinstance(frame.body, dict) else {}
        try:
            method(self, conn, frame.req_id, body)
        except UnknownTaskId as exc:
            conn.send_error(frame.req_id, "unknown_task", str(exc))
        except UnknownJobName as exc:
            conn.send_error(frame.req_id, "unknown_job", str(exc))
        except UsageError as exc:
            conn.send_error(frame.req_id, "bad_request", str(exc))

    def _unknown_op(self, conn: Connection, peer: Peer, frame: Frame) -> None:
        if frame.opcode == Op.PING:
            conn.send(Op.PONG, frame.req_id, {"time": self.clock()})
            return
        try:
            name = Op(frame.opcode).name
            message = f"{name} is not a request a {peer.role} may send"
        except ValueError:
            message = f"unknown opcode 0x{frame.opcode:02x}"
        conn.send_error(frame.req_id, "unknown_opcode", message)

    def _handshake(self, conn: Connection, peer: Peer, frame: Frame) -> None:
        try:
            replies = peer.handshake.on_frame(frame)
        except ProtocolError as exc:
            conn.fail(exc.req_id, exc.code, exc.message)
            return
        if peer.handshake.done:
            hello = peer.handshake.hello
            peer.role, peer.name = hello["role"], hello["name"]
            if peer.role == "worker" and not self._name_free(conn, peer):
                return
        for opcode, body in replies:
            conn.send(opcode, frame.req_id, body)
        if peer.handshake.done and peer.role == "worker":
            # After WELCOME: joining may dispatch work on this connection at once.
            self._admit_worker(conn, peer, peer.handshake.hello)

    def on_close(self, conn: Connection, reason: str) -> None:
        self.conns.discard(conn)
        peer: Peer = conn.state
        if peer is None:
            return
        if peer.role == "worker" and self.worker_conns.get(peer.name) is conn:
            del self.worker_conns[peer.name]
            if peer.retiring:
                logger.info("worker %s retired", peer.name)
                self.sched.worker_retired(peer.name)
            else:
                logger.info("worker %s disconnected: %s", peer.name, reason)
                self.apply(self.sched.worker_left(peer.name, self.clock()))
                self.services.worker_left(peer.name, self.clock())
        _forget_conn(self.watchers, peer.watching, conn)
        _forget_conn(self.followers, peer.following, conn)
        if peer.subscriptions:
            self.kv.dropped(peer.subscriptions)
        if peer.role == "client":
            self.runs.dropped(conn)
            self.services.dropped(conn)

    # ----- actions -------------------------------------------------------
    def apply(self, actions: List[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Dispatch:
                self._send_dispatch(action)
            elif kind is Ended:
                self._ended(action.task_id)
            elif kind is Kill:
                conn = self.worker_conns.get(action.worker)
                if conn is not None:
                    conn.send(Op.KILL, 0, {"task": action.task_id, "attempt": action.attempt,
                                           "reason": action.reason})
            elif kind is Disconnect:
                conn = self.worker_conns.get(action.worker)
                if conn is not None:
                    conn.close(action.reason)
            elif kind is Note:
                logger.info("%s", action.message)
        self.runs.close_finished()

    def _send_dispatch(self, action: Dispatch) -> None:
        """DISPATCH, leaving out what has its default (run = the task, no env, no timeout, no files, 5 s grace)."""
        spec = action.spec
        body = {"task": action.task_id, "attempt": action.attempt, "argv": spec.argv}
        if spec.kill_grace_s != KILL_GRACE_S:
            body["kill_grace_s"] = spec.kill_grace_s
        run = self.sched.tasks[action.task_id].run
        if run and run != action.task_id:
            body["run"] = run
        if spec.env:
            body["env"] = dict(spec.env)
        if spec.timeout_s:
            body["timeout_s"] = spec.timeout_s
        if spec.files:
            body["files"] = {path: [sha, executable] for path, sha, executable in spec.files}
        conn = self.worker_conns[action.worker]
        # A scheduled slot's run: its claim, written with the run's first records, is on disk
        # before any of its work starts.
        if run and "@" in run and not self._on_disk(action.task_id):
            self.hold(conn, 0, Op.DISPATCH, body, 0, True)
        else:
            conn.send(Op.DISPATCH, 0, body, urgent=True)

    def result_body(self, record: TaskRecord) -> Dict[str, Any]:
        """What a waiting client receives when a task ends (status has the detail)."""
        last = record.current
        tail = self._tails.pop(record.id, None)
        if tail is None and last is not None:
            tail = self.logs.tail(record.id, last.number)
        result = {"id": record.id, "state": record.state.value, "exit_code": last.exit_code if last else None,
                  "node": last.worker if last else None, "attempts": len(record.attempts)}
        reason = record.note or (last.reason if last else "")
        if reason:                      # the two left out when empty (most results)
            result["reason"] = reason
        if tail:
            result["output"] = tail
        return result

    def _ended(self, task_id: str) -> None:
        record = self.sched.tasks[task_id]
        watchers = self.watchers.pop(task_id, None)
        if watchers:                    # a run's task usually has none: its run is watched instead
            result = self.result_body(record)
            for conn, req_id in watchers:
                peer = conn.state
                peer.watching.discard((task_id, req_id))
                peer.following.discard((task_id, req_id))       # a submission that also asked for the output
                self.send_outcome(conn, req_id, {"kind": "result", "result": result}, (task_id,))
        if task_id in self.followers:
            self.end_followers(task_id, {"state": record.state.value, "exit_code": record.exit_code})
        self.runs.task_ended(record)

    def end_followers(self, key: Any, reply: Dict[str, Any]) -> None:
        """The log of ``key`` (a task, or "@" + a service) is over: its followers get ``reply`` as their final OK."""
        for conn, req_id in self.followers.pop(key, ()):
            conn.state.following.discard((key, req_id))
            conn.send(Op.OK, req_id, reply)

    # ----- worker requests -----------------------------------------------
    def _name_free(self, conn: Connection, peer: Peer) -> bool:
        other = self.worker_conns.get(peer.name)
        if other is not None:
            conn.fail(0, "name_taken", f"a worker named {peer.name!r} is already connected from {other.peer}; "
                                       f"start this one with a different --name")
            return False
        return True

    def _admit_worker(self, conn: Connection, peer: Peer, hello: Dict[str, Any]) -> None:
        tags = [t for t in hello.get("tags") or [] if isinstance(t, str)]
        slots = hello.get("slots") if isinstance(hello.get("slots"), int) else 1
        running = [(t, a) for t, a in _pairs(hello.get("running"))]
        finished = [(t, a) for t, a in _pairs(hello.get("finished"))]
        self.worker_conns[peer.name] = conn
        info = {k: hello.get(k) for k in ("host", "pid", "version", "ephemeral", "parent", "max_children")
                if k in hello}
        info["address"] = conn.peer
        logger.info("worker %s joined from %s: tags=%s slots=%d", peer.name, conn.peer, ",".join(tags) or "-", slots)
        ahead = hello.get("ahead") if isinstance(hello.get("ahead"), int) else 0
        self.apply(self.sched.worker_joined(peer.name, tags, slots, self.clock(),
                                            dedicated=bool(hello.get("dedicated")),
                                            running=running, finished=finished, info=info,
                                            ahead=min(ahead, MAX_AHEAD_PER_SLOT * slots)))
        self.services.worker_joined(peer.name, hello.get("services"))
        self.runs.worker_joined(conn, hello.get("shared"))
        if isinstance(hello.get("parent"), str):
            self.scaler.child_joined(hello["parent"])

    def _w_heartbeat(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        peer: Peer = conn.state
        self.sched.heartbeat(peer.name, self.clock(), {"reported_running": body.get("running")})
        conn.send(Op.HEARTBEAT, req_id, {"time": self.clock()})

    def _w_retire(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        """An idle ephemeral worker asks to leave; not while anything runs or is being placed on it."""
        peer: Peer = conn.state
        w = self.sched.workers.get(peer.name)
        if w is None or w.busy or self.services.on_node(peer.name):
            conn.send(Op.OK, req_id, {"retire": False})
            return
        self.sched.set_draining(peer.name, True)      # no dispatch from now on: it may go
        peer.retiring = True
        conn.send(Op.OK, req_id, {"retire": True})

    def _w_output(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        task_id, attempt, data = body.get("task"), body.get("attempt"), body.get("data")
        if not isinstance(task_id, str) or not isinstance(attempt, int) or not isinstance(data, bytes):
            return
        kept, note = self.logs.append(task_id, attempt, data)
        if kept:
            self._tell_output(task_id, attempt, body.get("stream", "out"), kept)
        if note:                        # the log's cap was reached: said on stderr, after what was kept
            self._tell_output(task_id, attempt, "err", note)

    def _tell_output(self, task_id: str, attempt: int, stream: Any, data: bytes) -> None:
        """Output of an attempt to those who follow its task or that attempt, or watch with output."""
        event = {"kind": "output", "stream": stream, "attempt": attempt, "data": data}
        for fconn, freq in self.followers.get(task_id, ()):
            fconn.send(Op.EVENT, freq, event, FLAG_MORE)
        for fconn, freq in self.followers.get((task_id, attempt), ()):
            fconn.send(Op.EVENT, freq, event, FLAG_MORE)
        for wconn, wreq in self.watchers.get(task_id, ()):
            if (task_id, wreq) in wconn.state.following:
                wconn.send(Op.EVENT, wreq, event, FLAG_MORE)

    def _w_fetch(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        """A worker asks for a job file it has not cached yet."""
        sha = body.get("sha")
        data = self.blobs.get(sha) if isinstance(sha, str) and len(sha) == 64 else None
        if data is None:
            conn.send_error(req_id, "unknown_file", f"no file with hash {sha!r} on this master")
            return
        conn.send(Op.OK, req_id, {"sha": sha, "data": data})

    def _w_finished(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        peer: Peer = conn.state
        task_id, attempt = body.get("task"), body.get("attempt")
        if not isinstance(task_id, str) or not isinstance(attempt, int):
            conn.send_error(req_id, "bad_request", "FINISHED needs task and attempt")
            return
        self._ack_later(conn, body, task_id, attempt)
        if body.get("returned"):           # sent ahead, never started: placed again
            waited = body.get("waited_s")
            self.apply(self.sched.attempt_returned(peer.name, task_id, attempt,
                                                   float(waited) if isinstance(waited, (int, float)) else 0.0,
                                                   self.clock()))
            return
        log_bytes = self.logs.written(task_id, attempt)
        self._tails[task_id] = self.logs.finish(task_id, attempt)
        record = self.sched.tasks.get(task_id)
        current = record.current if record is not None else None
        if current is not None and current.number == attempt and current.finished_at is None:
            if log_bytes is None:      # no output in this master's life: none at all, unless it began before
                fresh = current.started_at >= self.started_at
                log_bytes = 0 if fresh else self.logs.size(task_id, attempt)
            current.log_bytes = log_bytes              # the log index: kept with the attempt
        exit_code = body.get("exit_code")
        actions = self.sched.attempt_finished(peer.name, task_id, attempt,
                                              exit_code if isinstance(exit_code, int) else None,
                                              str(body.get("reason") or ""), self.clock())
        self.apply(actions)
        self._tails.pop(task_id, None)

    def _ack_later(self, conn: Connection, body: Dict[str, Any], task_id: str, attempt: int) -> None:
        """ACK this result within ACK_EVERY_S, once it is on disk: by its seq, or (older workers) by name.

        A worker keeps a result until its ACK, and nothing else waits for one,
        so the results of many passes share one ACK frame per worker, sent on
        its own: it never rides ahead of a DISPATCH the worker should read first.
        """
        if not (self._acked or self._acks):        # the first result since the last ACKs
            self.loop.call_later(ACK_EVERY_S, self._acks_now)
        seq = body.get("seq")
        if type(seq) is int:
            if seq > self._acked.get(conn, 0):
                self._acked[conn] = seq
        else:
            self._acks.setdefault(conn, []).append([task_id, attempt])
        self._results_read = True

    def _acks_now(self) -> None:
        self._acks_due = True


def _forget_conn(table: Dict[str, List[Tuple[Connection, int]]], pairs: Set[Tuple[str, int]],
                 conn: Connection) -> None:
    """A client went away: drop its entries from ``table`` (task -> who waits on it)."""
    for task_id in {task_id for task_id, _ in pairs}:
        left = [w for w in table.get(task_id, ()) if w[0] is not conn]
        if left:
            table[task_id] = left
        else:
            table.pop(task_id, None)
    pairs.clear()


def _pairs(value: object) -> List[Tuple[str, int]]:
    out: List[Tuple[str, int]] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int):
            out.append((item[0], item[1]))
    return out


CLIENT_OPS: Dict[int, Callable[..., None]] = {
    Op.SUBMIT: Master._c_submit, Op.STATUS: Master._c_status, Op.WAIT: Master._c_wait,
    Op.CANCEL: Master._c_cancel, Op.NODES: Master._c_nodes, Op.TASKS: Master._c_tasks,
    Op.LOGS: Master._c_logs, Op.RETRY: Master._c_retry,
    Op.KV: lambda m, conn, req_id, body: m.kv.request(conn, req_id, body),
    Op.SUBSCRIBE: lambda m, conn, req_id, body: m.kv.subscribe(conn, req_id, body),
    Op.DRAIN: Master._c_drain,
    Op.DEPLOY: lambda m, conn, req_id, body: m.services.deploy(conn, req_id, body),
    Op.SERVICES: lambda m, conn, req_id, body: m.services.listing(conn, req_id, body),
    Op.SERVICE_CTL: lambda m, conn, req_id, body: m.services.control(conn, req_id, body),
    Op.RUN: lambda m, conn, req_id, body: m.runs.run(conn, req_id, body),
    Op.TRIGGER: lambda m, conn, req_id, body: m.runs.trigger(conn, req_id, body),
    Op.RUNS: lambda m, conn, req_id, body: m.runs.list_runs(conn, req_id, body),
    Op.JOBS: lambda m, conn, req_id, body: m.runs.list_jobs(conn, req_id, body),
    Op.REMOVE_JOB: lambda m, conn, req_id, body: m.runs.remove(conn, req_id, body),
}
WORKER_OPS: Dict[int, Callable[..., None]] = {
    Op.HEARTBEAT: Master._w_heartbeat, Op.OUTPUT: Master._w_output, Op.FINISHED: Master._w_finished,
    Op.FETCH: Master._w_fetch, Op.RETIRE: Master._w_retire,
    Op.SVC_STATE: lambda m, conn, req_id, body: m.services.reported(conn.state.name, body),
}
