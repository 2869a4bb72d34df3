"""The worker: dials the master, runs attempts as process groups, reports back.

    master ──DISPATCH / KILL / ACK──▶ Worker ──spawn──▶ task process group
           ◀──HELLO / HEARTBEAT / OUTPUT / FINISHED──    (pipes + pidfd in the loop)

One selectors loop owns the master connection, every task's pipes and its
exit notification.  Output is forwarded in the pass it is read; when the
master reads slower than tasks print, the worker stops reading the pipes
(back-pressure).  When the master goes away the worker keeps running its
tasks, keeps their output (up to a cap) and results, and dials again with
backoff; the new HELLO lists what it still holds so nothing runs twice.
"""
from __future__ import annotations

import errno
import functools
import gc
import itertools
import logging
import os
import random
import shutil
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple, Union
from urllib.parse import quote, unquote

from titan import __version__
from titan.core.model import KILL_GRACE_S
from titan.core.runs import MAX_SHARED_LISTED
from titan.errors import AuthError
from titan.io.reaper import ProcessLedger
from titan.io.loop import Connection, Handler, Loop, Timer, format_address
from titan.io.proc import OsProcesses, Spawned, boot_ticks
from titan.roles.worker.children import Children
from titan.roles.worker.files import JobFiles
from titan.roles.worker.services import ServiceRunner
from titan.roles.worker.workspaces import WorkspacePool
from titan.wire.frames import Frame, Op
from titan.wire.handshake import ClientHandshake

__all__ = ["WorkerConfig", "Worker"]

logger = logging.getLogger(__name__)

Key = Tuple[str, int]
EXIT_CHECK_S = 0.5    # how soon the exit of a task whose children hold its pipes is noticed
HAND_BACK_S = 0.5     # an attempt sent ahead that finds no free slot this long goes back to the master


@dataclass(frozen=True)
class WorkerConfig:
    """Everything ``titan worker`` can be told."""

    master: Tuple[str, int]
    name: str
    data_dir: Path
    tags: FrozenSet[str] = frozenset()
    slots: int = 1
    token: Optional[str] = None
    dedicated: bool = False
    heartbeat_interval_s: float = 2.0
    master_timeout_s: float = 10.0
    reconnect_max_s: float = 5.0
    offline_output_bytes: int = 8 * 1024 * 1024           # output kept per attempt while the master is away
    offline_total_bytes: int = 64 * 1024 * 1024           # ... and for all of them (sent in one go on reconnect)
    high_water_bytes: int = 4 * 1024 * 1024
    exit_linger_s: float = 1.0
    tls: Optional[ssl.SSLContext] = None
    tls_files: Optional[Tuple[Optional[str], Optional[str], Optional[str]]] = None   # (ca, cert, key): for children
    ephemeral: bool = False           # retires after idle_timeout_s without work
    idle_timeout_s: float = 45.0
    max_children: int = 0             # how many ephemeral children the master may ask it to fork
    parent: Optional[str] = None      # the worker that forked this one
    ahead: Optional[int] = None       # attempts it holds beyond its slots (None: three times its slots)


class Job:
    """One attempt running on this worker."""

    __slots__ = ("key", "run", "spawned", "timers", "exit_code", "open_fds",
                 "reason", "terminating", "workspace", "service", "grace_s")

    def __init__(self, key: Key, run: str, spawned: Spawned, workspace: Path,
                 service: Optional[str] = None) -> None:
        self.key = key
        self.run = run
        self.spawned = spawned
        self.timers: List[Timer] = []
        self.exit_code: Optional[int] = None
        self.open_fds = {spawned.stdout_fd: "out", spawned.stderr_fd: "err"}
        self.reason = ""
        self.terminating = False
        self.workspace = workspace
        self.service = service          # the service this process is an instance of (None: a task)
        self.grace_s = KILL_GRACE_S     # TERM-to-KILL grace (a DISPATCH may set its own)


class Worker(Handler):
    """Runs attempts for one master; survives the master going away."""

    def __init__(self, config: WorkerConfig, *, procs: Optional[OsProcesses] = None) -> None:
        self.config = config
        self.procs = procs or OsProcesses()
        self.loop = Loop()
        self.conn: Optional[Connection] = None
        self.handshake: Optional[ClientHandshake] = None
        self.jobs: Dict[Key, Job] = {}
        self.running_tasks = 0                  # task attempts in ``jobs`` (the rest are services)
        self.ahead: Dict[Key, Tuple[float, Dict[str, Any]]] = {}   # sent ahead, waiting for a slot, oldest first
        self.ahead_max = 3 * config.slots if config.ahead is None else max(0, config.ahead)
        self._hand_back_timer: Optional[Timer] = None
        self._exit_sweep: Optional[Timer] = None
        self.unacked: Dict[Key, Dict[str, Any]] = {}   # results reported, not yet stored: oldest (lowest seq) first
        self.seq = 0                                   # the last result's number (the master ACKs "up to" one)
        self.outbox: List[Dict[str, Any]] = []        # OUTPUT bodies read while the master was away
        self.outbox_bytes: Dict[Key, int] = {}
        self.outbox_total = 0
        self.dropped: Dict[Key, int] = {}
        self.files = JobFiles(self, config.data_dir.resolve() / "cache")
        self.next_req = 1
        self.paused = False
        self.last_rx = 0.0
        self.backoff_s = 0.1
        self.stopping = False
        data_dir = config.data_dir.resolve()
        self.ledger = ProcessLedger(data_dir)
        self.ledger.lock()                     # before touching anything in the directory
        self.reaped = self.ledger.reap()       # what a previous life of this worker left running
        self.ledger.write_per_pass(self.loop)  # the groups a pass starts are on file before the loop sleeps
        self.spaces = WorkspacePool(data_dir / "work", keep=2 * config.slots + 2)
        self.shared_root = data_dir / "shared"
        self.ended_runs: Set[str] = set()      # runs that ended while a task of theirs still ran here
        self.run_dirs: Dict[str, str] = {}      # run -> its $TITAN_SHARED path here
        self.shared_root.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(os.environ)
        self.base_env["TITAN_MASTER"] = format_address(config.master)
        self.base_env["TITAN_NODE"] = config.name
        if config.token:
            self.base_env["TITAN_TOKEN"] = config.token
        self.services = ServiceRunner(self)
        self.children = Children(self)
        self.reaped += self.children.reap_leftovers()

    # ----- lifecycle -----------------------------------------------------
    def serve_forever(self) -> None:
        logger.info("titan worker %s %s starting: master %s, tags=%s, slots=%d, data in %s",
                    self.config.name, __version__, format_address(self.config.master),
                    ",".join(sorted(self.config.tags)) or "-", self.config.slots, self.config.data_dir)
        self._dial()
        self.loop.call_later(self.config.heartbeat_interval_s, self._heartbeat)
        gc.freeze()     # the modules live on: full collections skip them
        try:
            self.loop.run_until_signalled(self.shutdown)
        finally:
            if self.conn is not None:
                self.conn.close("worker stopped")
            self.ledger.close()
            logger.info("titan worker %s stopped", self.config.name)

    def shutdown(self, grace_s: float = 2.0) -> None:
        """Stop: terminate running attempts, then leave the loop."""
        if self.stopping:
            return
        self.stopping = True
        self.children.stop_all()
        self.services.shutdown(grace_s)
        self._hand_back(everything=True)
        for job in self.task_jobs():
            self.terminate(job, "worker shutting down", grace_s=grace_s)
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        if self.stopping and not self.jobs:
            self.loop.stop()

    # ----- connection to the master --------------------------------------
    def _dial(self) -> None:
        if self.stopping:
            return
        host, port = self.config.master
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._retry_later(f"cannot resolve {host}: {exc}")
            return
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            self._retry_later(os.strerror(err))
            return
        self.loop.register(sock, 2, lambda mask: self._connected(sock))

    def _connected(self, sock: socket.socket) -> None:
        self.loop.unregister(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            self._retry_later(os.strerror(err))
            return
        if self.config.tls is not None:
            try:
                sock = self.config.tls.wrap_socket(sock, server_hostname=self.config.master[0],
                                                   do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                self._retry_later(f"TLS setup failed: {exc}")
                return
        self.conn = Connection(self.loop, sock, self)
        self.last_rx = self.loop.clock()
        self.handshake = ClientHandshake(role="worker", name=self.config.name, token=self.config.token,
                                         extra=self._hello_extra())
        self.conn.send(Op.HELLO, 1, self.handshake.hello())

    def _hello_extra(self) -> Dict[str, Any]:
        return {
            "tags": sorted(self.config.tags), "slots": self.config.slots,
            "dedicated": self.config.dedicated, "host": socket.gethostname(), "pid": os.getpid(),
            "version": __version__, "ephemeral": self.config.ephemeral, "parent": self.config.parent,
            "max_children": self.config.max_children, "ahead": self.ahead_max,
            "running": [list(job.key) for job in self.task_jobs()]
                       + [list(k) for k in self._fetching()]
                       + [list(k) for k in self.ahead],
            "services": self.services.hello(),
            "finished": [list(k) for k in self.unacked],
            "shared": self._shared_runs(),
        }

    def _shared_runs(self) -> List[str]:
        """The runs whose $TITAN_SHARED is here (the first MAX_SHARED_LISTED found).

        A run that ended while this worker was away got no RUN_DONE here;
        the master answers this list with one for each run that is over.
        """
        try:
            with os.scandir(self.shared_root) as entries:
                names = [entry.name for entry in itertools.islice(entries, MAX_SHARED_LISTED)]
        except OSError:
            return []
        runs = [unquote(name) for name in names]
        return [run for run, name in zip(runs, names) if _shared_name(run) == name]

    def _retry_later(self, why: str) -> None:
        delay = self.backoff_s * (0.8 + 0.4 * random.random())
        self.backoff_s = min(self.config.reconnect_max_s, self.backoff_s * 2)
        logger.warning("cannot reach the master at %s (%s); retrying in %.1fs",
                       format_address(self.config.master), why, delay)
        self.loop.call_later(delay, self._dial)

    def on_close(self, conn: Connection, reason: str) -> None:
        if conn is not self.conn:
            return
        was_ready = self.handshake is not None and self.handshake.done
        self.conn = None
        self.handshake = None
        self.children.retire_req = 0        # a RETIRE asked on that connection gets no answer now
        self._resume_pipes()
        if self.stopping:
            return
        if was_ready:
            logger.warning("lost the master (%s); %d task(s) keep running", reason, len(self.jobs))
        self._retry_later(reason)

    def on_drain(self, conn: Connection) -> None:
        self._resume_pipes()

    def on_frame(self, conn: Connection, frame: Frame) -> None:
        self.last_rx = self.loop.clock()
        assert self.handshake is not None
        if not self.handshake.done:
            self._on_handshake(conn, frame)
            return
        body = frame.body
        if not isinstance(body, dict):
            body = {}
        opcode = frame.opcode
        if opcode == Op.DISPATCH:
            self._dispatched(body)
        elif opcode == Op.KILL:
            key = (body.get("task"), body.get("attempt"))
            job = self.jobs.get(key)       # type: ignore[arg-type]
            if job is not None and job.service is None:
                self.terminate(job, str(body.get("reason") or "cancelled"))
            elif key in self.files.waiting or key in self.ahead:  # not started yet: it never will be
                self.files.waiting.pop(key, None)  # type: ignore[call-overload]
                self.ahead.pop(key, None)          # type: ignore[call-overload]
                self._finish_now(key, -15, str(body.get("reason") or "cancelled"))  # type: ignore[arg-type]
        elif opcode == Op.ACK:
            self._acked(body)
        elif opcode == Op.SVC_START:
            self.services.start(body)
        elif opcode == Op.SVC_STOP:
            self.services.stop(body)
        elif opcode == Op.SPAWN:
            count = body.get("count")
            self.children.spawn(count if isinstance(count, int) else 1, str(body.get("reason") or "asked by the master"))
        elif frame.req_id and frame.req_id == self.children.retire_req:
            self.children.retire_answer(opcode == Op.OK and bool(body.get("retire")))
        elif opcode == Op.RUN_DONE:
            self._run_done(str(body.get("run") or ""))
        elif frame.req_id in self.files.reqs:
            self.files.fetched(frame.req_id, opcode, body)
        elif opcode == Op.ERROR:
            logger.error("the master reported an error: %s", body.get("message", body))

    def _on_handshake(self, conn: Connection, frame: Frame) -> None:
        assert self.handshake is not None
        try:
            replies = self.handshake.on_frame(frame)
        except AuthError as exc:
            logger.error("%s", exc)
            conn.close(str(exc))
            return
        for opcode, body in replies:
            conn.send(opcode, 1, body)
        if self.handshake.done:
            self.backoff_s = 0.1
            logger.info("registered with the master at %s as %s", conn.peer, self.config.name)
            # Output first, then every result not yet stored, in the order they were numbered:
            # an ACK "up to" a number then covers exactly what was sent before it.
            for body in self.outbox:
                conn.send(Op.OUTPUT, 0, body)
            self.outbox.clear()
            self.outbox_bytes.clear()
            self.outbox_total = 0
            for body in self.unacked.values():
                conn.send(Op.FINISHED, 0, body)
            self.services.registered()
            self.files.ask_again()

    def _acked(self, body: Dict[str, Any]) -> None:
        """The master stored these results: forget them (by number, or by name from an older master)."""
        upto = body.get("upto")
        if type(upto) is int:
            unacked = self.unacked
            while unacked:
                key = next(iter(unacked))
                if unacked[key]["seq"] > upto:
                    break
                del unacked[key]
        items = body.get("items")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                self.unacked.pop((item[0], item[1]), None)

    def _heartbeat(self) -> None:
        conn = self.conn
        if conn is not None and self.loop.clock() - self.last_rx > self.config.master_timeout_s:
            # also before the handshake is done: a master that never answers HELLO is dialled again
            conn.close(f"the master was silent for {self.config.master_timeout_s:g}s")
        elif conn is not None and self.handshake is not None and self.handshake.done:
            conn.send(Op.HEARTBEAT, 0, {"running": self.running_tasks, "slots": self.config.slots})
            self.children.maybe_retire(conn)
        self.loop.call_later(self.config.heartbeat_interval_s, self._heartbeat)

    def new_request_id(self) -> int:
        self.next_req = self.next_req % 0xFFFFFFF0 + 2
        return self.next_req

    def idle(self) -> bool:
        """No task, service, child or file fetch here."""
        return not (self.files.waiting or self.services.runs or self.children.count or self.running_tasks
                    or self.ahead)

    def task_jobs(self) -> List[Job]:
        """The task attempts running here (``jobs`` also holds the services' processes)."""
        return [job for job in self.jobs.values() if job.service is None]

    def connected(self) -> bool:
        return self._ready() is not None

    def ready_conn(self) -> Optional[Connection]:
        return self._ready()

    def _ready(self) -> Optional[Connection]:
        if self.conn is not None and self.handshake is not None and self.handshake.done:
            return self.conn
        return None

    def _report(self, opcode: int, body: Dict[str, Any], key: Key, capped: bool = True) -> None:
        """Send a report, or keep output for the next connection (within the caps, if ``capped``)."""
        conn = self._ready()
        if conn is not None:
            # With work waiting here, the master is in no hurry: reports go out in batches.
            # Otherwise a result goes out at once, before the rest of the pass.
            batch = bool(self.ahead)
            conn.send(opcode, 0, body, soon=batch)
            if opcode == Op.FINISHED and not batch:
                conn.flush()
            if conn.out_bytes > self.config.high_water_bytes:
                self._pause_pipes()
            return
        if opcode != Op.OUTPUT:
            return                      # a result waits in ``unacked``, sent again on the next connection
        used, size = self.outbox_bytes.get(key, 0), len(body["data"])
        if capped and (used + size > self.config.offline_output_bytes
                       or self.outbox_total + size > self.config.offline_total_bytes):
            self.dropped[key] = self.dropped.get(key, 0) + size     # noted in the attempt's log at its end
            return
        self.outbox_bytes[key] = used + size
        self.outbox_total += size
        self.outbox.append(body)

    # ----- attempts ------------------------------------------------------
    def _dispatched(self, body: Dict[str, Any]) -> None:
        """A DISPATCH: start it now, or hold it until a slot frees (the master sent it ahead)."""
        key = (str(body["task"]), int(body["attempt"]))
        if self.config.ephemeral:         # only an ephemeral worker retires when idle
            self.children.busy()
        if key in self.ahead:
            return
        if not self.ahead and self._occupied() < self.config.slots:
            self._start(key, body)
            return
        self.ahead[key] = (self.loop.clock(), body)
        if self.stopping:                 # it will never get a slot here
            self._hand_back(everything=True)
        elif self._hand_back_timer is None:
            self._hand_back_timer = self.loop.call_later(HAND_BACK_S, self._hand_back)

    def _fetching(self) -> List[Key]:
        """Task attempts waiting for their files (a service instance's key starts with "@")."""
        return [k for k in self.files.waiting if not k[0].startswith("@")]

    def _occupied(self) -> int:
        """Slots in use: running attempts and those waiting for their files."""
        return self.running_tasks + (len(self._fetching()) if self.files.waiting else 0)

    def _start_ahead(self) -> None:
        """Start what waits here, oldest first, while slots are free."""
        while self.ahead and self._occupied() < self.config.slots and not self.stopping:
            key = next(iter(self.ahead))
            self._start(key, self.ahead.pop(key)[1])

    def _hand_back(self, everything: bool = False) -> None:
        """Return attempts that waited too long for a slot (all of them when stopping) unstarted."""
        self._hand_back_timer = None
        now = self.loop.clock()
        while self.ahead:
            key, (since, _) = next(iter(self.ahead.items()))
            if not everything and now - since < HAND_BACK_S:
                self._hand_back_timer = self.loop.call_later(since + HAND_BACK_S - now, self._hand_back)
                return
            del self.ahead[key]
            body = {"task": key[0], "attempt": key[1], "returned": True, "waited_s": round(now - since, 3),
                    "exit_code": None, "reason": "the worker is stopping" if everything else "no free slot"}
            self._result(key, body)

    def _start(self, key: Key, body: Dict[str, Any]) -> None:
        """Start DISPATCH ``body`` (attempt ``key``), unless it runs, ran or waits for its files already."""
        if key in self.jobs or key in self.unacked or key in self.files.waiting:
            return
        files = body.get("files")
        missing = self.files.missing(files) if files else None
        if missing:                      # fetch the job's files first; start when they are here
            self.files.fetch_for(key, body, missing)
            return
        run = str(body.get("run") or key[0])
        workspace = shared = None
        try:
            workspace = self.spaces.acquire()
            shared = workspace if run == key[0] else self._run_dir(run)   # a one-task run shares with itself
            if files:
                self.files.materialise(files, workspace)
            env = self._env(body, key, run, workspace, shared)
            job = self.spawn_job(key, body["argv"], workspace, env, run=run)
        except (OSError, ValueError) as exc:    # ValueError: a NUL byte in argv/env, '=' in an env name
            argv0 = body["argv"][0] if body.get("argv") else "?"
            self._finish_now(key, 127, f"cannot start {argv0!r}: {getattr(exc, 'strerror', None) or exc}")
            if workspace is not None:
                self.spaces.release(workspace)
            return
        timeout_s = body.get("timeout_s")
        grace = body.get("kill_grace_s")
        if isinstance(grace, (int, float)):
            job.grace_s = float(grace)
        if timeout_s:
            job.timers.append(self.loop.call_later(
                float(timeout_s), lambda: self.terminate(job, f"timed out after {timeout_s:g}s")))

    def spawn_job(self, key: Key, argv: List[str], workspace: Path, env: Dict[str, str], *,
                  run: str = "", service: Optional[str] = None) -> Job:
        """Start a process group for a task attempt or a service instance and watch it."""
        ticks = boot_ticks()
        spawned = self.procs.spawn(argv, cwd=str(workspace), env=env)
        job = Job(key, run or key[0], spawned, workspace, service)
        self.jobs[key] = job
        if service is None:
            self.running_tasks += 1
        self.ledger.record(spawned.pid, key[0], key[1], ticks)
        self._watch(job)
        return job

    def output(self, key: Key, stream: str, data: bytes) -> None:
        """Output of an attempt or a service (also the markers titan writes into its log)."""
        self._report(Op.OUTPUT, {"task": key[0], "attempt": key[1], "stream": stream, "data": data}, key)

    def files_ready(self, key: Key, start: Dict[str, Any], error: str) -> None:
        """The files a start waited for are here (or could not be fetched: ``error``)."""
        if "service" in start:
            self.services.files_ready(start["service"], start["gen"], error)
        elif error:
            self._finish_now(key, 127, error)
        else:
            self._start(key, start)

    def _run_done(self, run: str) -> None:
        """A run ended: its $TITAN_SHARED here goes, now or when its last task here ends."""
        name = _shared_name(run)
        if name is None:
            return
        if any(job.run == run for job in self.jobs.values()):
            self.ended_runs.add(run)         # a stale attempt of it still runs here
        else:
            self.ended_runs.discard(run)
            self.run_dirs.pop(run, None)
            shutil.rmtree(self.shared_root / name, ignore_errors=True)

    def _run_dir(self, run: str) -> str:
        """The run's $TITAN_SHARED here, made if missing (its path is worked out once per run)."""
        path = self.run_dirs.get(run)
        if path is None:
            if len(self.run_dirs) >= 1024:
                self.run_dirs.clear()
            path = self.run_dirs[run] = str(self.shared_root / quote(run, safe=""))
        if not os.path.isdir(path):
            os.mkdir(path)
        return path

    def _env(self, body: Dict[str, Any], key: Key, run: str, workspace: Path, shared: Union[Path, str]) -> Dict[str, str]:
        env = self.base_env.copy()
        extra = body.get("env")
        if extra:
            env.update({k: v for k, v in extra.items() if isinstance(v, str)})
        env.update(TITAN_RUN=run, TITAN_TASK=key[0], TITAN_ATTEMPT=str(key[1]), TITAN_SHARED=str(shared),
                   TITAN_WORKSPACE=str(workspace))
        return env

    def _watch(self, job: Job) -> None:
        """Watch the pipes; the exit is noticed when both close (the usual case).

        A task whose own children keep its pipes open is caught by a slow
        check, which then watches its exit exactly (a pidfd where there is one).
        """
        for fd in job.open_fds:
            self.loop.register(fd, 1, functools.partial(self._readable, job, fd))
        if self._exit_sweep is None:
            self._exit_sweep = self.loop.call_later(EXIT_CHECK_S, self._sweep_exits)
        if self.paused:
            self._pause_job(job)

    def _sweep_exits(self) -> None:
        """Every EXIT_CHECK_S: the processes that exited while something else holds their pipes."""
        self._exit_sweep = None
        for job in list(self.jobs.values()):
            if job.exit_code is None and job.open_fds and job.key in self.jobs and self.procs.has_exited(job.spawned):
                self._exited(job)
        if self.jobs:
            self._exit_sweep = self.loop.call_later(EXIT_CHECK_S, self._sweep_exits)

    def _watch_exit(self, job: Job) -> None:
        """The pipes closed but the process runs on: wait for its exit itself."""
        pidfd = self.procs.watch_exit(job.spawned)
        if pidfd is not None:
            self.loop.register(pidfd, 1, lambda mask: self._exited(job))
        else:
            self._poll_exit(job)

    def _poll_exit(self, job: Job) -> None:
        if self.procs.has_exited(job.spawned):
            self._exited(job)
        elif job.key in self.jobs:
            job.timers = [timer for timer in job.timers if not timer.done]    # not one more per poll
            job.timers.append(self.loop.call_later(0.05, lambda: self._poll_exit(job)))

    def _readable(self, job: Job, fd: int, mask: int) -> None:
        """The loop's callback for one of ``job``'s pipes (a partial: no extra frame per read)."""
        data = self.procs.read(fd)
        if data is None:
            return
        if not data:
            self._close_fd(job, fd)
            return
        key = job.key
        self._report(Op.OUTPUT, {"task": key[0], "attempt": key[1], "stream": job.open_fds[fd],
                                 "data": data}, key)

    def _close_fd(self, job: Job, fd: int) -> None:
        self.loop.unregister(fd)
        job.open_fds.pop(fd, None)
        if job.open_fds:
            return                          # the other pipe is still open
        if job.exit_code is not None:       # its exit was noticed first (the sweep)
            self._maybe_done(job)
        elif self.procs.has_exited(job.spawned):
            self._exited(job)
        else:
            self._watch_exit(job)

    def _exited(self, job: Job) -> None:
        if job.exit_code is not None or job.key not in self.jobs:
            return
        if job.spawned.pidfd is not None:
            self.loop.unregister(job.spawned.pidfd)
        # The leader is a zombie until polled, so its group id cannot be reused yet:
        # kill whatever it left behind, then reap it.
        self.procs.kill_group(job.spawned.pid, signal.SIGKILL)
        code = self.procs.poll(job.spawned)
        job.exit_code = code if code is not None else -signal.SIGKILL
        if job.open_fds:
            job.timers.append(self.loop.call_later(self.config.exit_linger_s, lambda: self._force_close(job)))
        self._maybe_done(job)

    def _force_close(self, job: Job) -> None:
        for fd in list(job.open_fds):
            self._drain_fd(job, fd)
            self.loop.unregister(fd)
            job.open_fds.pop(fd, None)
        self._maybe_done(job)

    def _drain_fd(self, job: Job, fd: int) -> None:
        for _ in range(64):
            data = self.procs.read_available(fd)
            if not data:
                return
            key = job.key
            self._report(Op.OUTPUT, {"task": key[0], "attempt": key[1], "stream": job.open_fds[fd],
                                     "data": data}, key)

    def _maybe_done(self, job: Job) -> None:
        if job.exit_code is None or job.open_fds or job.key not in self.jobs:
            return
        del self.jobs[job.key]
        # Its group leaves the ledger before anything else can start: its reaped pid
        # may be handed to the next attempt's process at once.
        self.ledger.forget(job.spawned.pid)
        if job.service is None:
            self.running_tasks -= 1
            # The result first (someone may be waiting for it), the cleanup after.
            self._finish_now(job.key, job.exit_code, job.reason or _describe_exit(job.exit_code))
        for timer in job.timers:
            timer.cancel()
        self.procs.release(job.spawned)
        if job.service is not None:
            self.services.exited(job, _describe_exit(job.exit_code) or "exited with code 0")
            self._maybe_exit()
            return
        self.spaces.release(job.workspace)
        if job.run in self.ended_runs:
            self._run_done(job.run)
        self._maybe_exit()

    def _finish_now(self, key: Key, exit_code: int, reason: str) -> None:
        if self.dropped or self.outbox_bytes:    # (both empty but for output read while the master was away)
            self._offline_output_done(key)
        body = {"task": key[0], "attempt": key[1], "exit_code": exit_code}
        if reason:
            body["reason"] = reason
        self._result(key, body)
        if self.ahead:
            self._start_ahead()

    def _offline_output_done(self, key: Key) -> None:
        """The attempt ended: note in its log how much output was dropped; stop counting what was kept."""
        dropped = self.dropped.pop(key, 0)
        if dropped:
            note = f"\n[titan: {dropped} bytes of output dropped while the master was unreachable]\n"
            self._report(Op.OUTPUT, {"task": key[0], "attempt": key[1], "stream": "err", "data": note.encode()},
                         key, capped=False)       # past the caps: it is what tells they were reached
        self.outbox_bytes.pop(key, None)

    def _result(self, key: Key, body: Dict[str, Any]) -> None:
        """Number a result, keep it until the master ACKs it, and report it."""
        self.seq += 1
        body["seq"] = self.seq
        self.unacked[key] = body
        self._report(Op.FINISHED, body, key)

    def terminate(self, job: Job, reason: str, grace_s: Optional[float] = None,
                  sig: int = signal.SIGTERM) -> None:
        """TERM (or ``sig``) the process group, then KILL it after the grace period."""
        if job.terminating or job.exit_code is not None:
            return
        job.terminating = True
        job.reason = reason
        grace = job.grace_s if grace_s is None else grace_s
        logger.info("stopping %s attempt %d: %s", job.key[0], job.key[1], reason)
        self.procs.kill_group(job.spawned.pid, sig)
        job.timers.append(self.loop.call_later(
            grace, lambda: self.procs.kill_group(job.spawned.pid, signal.SIGKILL)))

    # ----- back-pressure -------------------------------------------------
    def _pause_pipes(self) -> None:
        if self.paused:
            return
        self.paused = True
        for job in self.jobs.values():
            self._pause_job(job)

    def _pause_job(self, job: Job) -> None:
        for fd in job.open_fds:
            self.loop.unregister(fd)

    def _resume_pipes(self) -> None:
        if not self.paused:
            return
        self.paused = False
        for job in self.jobs.values():
            for fd in job.open_fds:
                self.loop.register(fd, 1, functools.partial(self._readable, job, fd))


def _shared_name(run: str) -> Optional[str]:
    """The name of run ``run``'s directory under ``shared/``; None for what is no run id ("", ".", "..")."""
    name = quote(run, safe="")
    return name if name not in ("", ".", "..") else None


def _describe_exit(code: int) -> str:
    if code == 0:
        return ""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
