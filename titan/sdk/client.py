"""The Python SDK: a blocking client for the master, with future-like tasks.

    c = titan.connect()                 # TITAN_MASTER / TITAN_TOKEN or 127.0.0.1:9090
    t = c.submit("echo hi")             # -> Task (the master pushes its result)
    r = t.result(timeout=30)            # -> TaskResult(state, exit_code, output, node, ...)

One socket, many requests in flight (request ids).  There is no background
thread: whoever waits reads frames and hands each to the request it answers,
so a result costs no thread switch.  A lock makes one Client safe to share.
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from titan.core.model import KILL_GRACE_S
from titan.errors import ConnectionLost, RemoteError, UnknownJob, UnknownTask, UsageError
from titan.wire.codec import encode
from titan.wire.frames import FLAG_MORE, Frame, FrameDecoder, Op, pack
from titan.sdk.kv import KV
from titan.sdk.runs import Run, RunResult
from titan.sdk.services import file_request, load_job_file, service_body, tag_list
from titan.sdk.tls import client_context
from titan.wire.handshake import ClientHandshake

__all__ = ["connect", "Client", "Task", "TaskResult", "Run", "RunResult", "DEFAULT_MASTER"]

DEFAULT_MASTER = "127.0.0.1:9090"
BATCH_FRAMES = 1024          # a batch is written out at least this often
TAKE_EVERY = 32             # submissions between looks at the replies that have arrived
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "DEAD", "CANCELLED", "SKIPPED"})


@dataclass(frozen=True)
class TaskResult:
    """How a task ended, as the master saw it."""

    id: str
    state: str
    exit_code: Optional[int]
    output: str
    node: Optional[str]
    reason: str = ""
    attempts: int = 0
    output_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        return self.state == "SUCCEEDED"

    @classmethod
    def from_wire(cls, body: Dict[str, Any]) -> "TaskResult":
        raw = body.get("output") or b""
        return cls(id=body["id"], state=body["state"], exit_code=body.get("exit_code"),
                   output=raw.decode("utf-8", "replace"), node=body.get("node"),
                   reason=body.get("reason") or "", attempts=int(body.get("attempts") or 0),
                   output_bytes=raw)


class _Pending:
    """A request in flight: its reply, its events, whether more will come."""

    __slots__ = ("reply", "events", "done", "on_event")

    def __init__(self, on_event: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self.reply: Optional[Frame] = None
        self.events: List[Dict[str, Any]] = []
        self.done = False
        self.on_event = on_event


class Task:
    """A handle on one submitted task; behaves like a future."""

    def __init__(self, client: "Client", task_id: Optional[str], req_id: Optional[int] = None) -> None:
        self.client = client
        self._id = task_id
        self._req_id = req_id
        self._result: Optional[TaskResult] = None
        self._ended = False        # the master said the task has ended (a handle without a watch)

    def __repr__(self) -> str:
        return f"<titan.Task {self._id or '(submitting)'}>"

    def __del__(self) -> None:
        if self._result is None and self._req_id is not None:
            self.client._abandon(self._req_id)     # nobody can ask for this result any more

    @property
    def id(self) -> str:
        """The task's id, e.g. ``echo#3``; waits for the master's reply if needed."""
        if self._id is None:
            assert self._req_id is not None
            pending = self.client._wait_for(self._req_id, time.monotonic() + 30.0)
            assert pending.reply is not None
            self._id = str(pending.reply.body["id"])
        return self._id

    def done(self) -> bool:
        """True once the task has ended (or its submission was refused); never blocks for long.

        A watching handle looks at what the master pushed; a handle without
        a watch (from :meth:`Client.task` or ``submit(watch=False)``) asks
        the master for the task's state, one round trip, until it has ended.
        """
        if self._result is not None or self._ended:
            return True
        if self._req_id is None:
            self._ended = self.client.status(self.id).get("state") in TERMINAL_STATES
            return self._ended
        self.client._poll(0.0)
        self._collect()
        pending = self.client._pending.get(self._req_id)
        refused = pending is not None and pending.reply is not None and pending.reply.opcode == Op.ERROR
        return self._result is not None or refused

    def result(self, timeout: Optional[float] = None) -> TaskResult:
        """Block until the task ends (or raise TimeoutError) and return its result."""
        if self._result is None:
            if self._req_id is None:
                self._req_id = self.client._send(Op.WAIT, {"task": self.id})
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                pending = self.client._wait_for(self._req_id, deadline, final_event="result")
            except TimeoutError:
                self._take_id(self.client._pending.get(self._req_id))
                raise TimeoutError(f"task {self._id or '(not acknowledged yet)'} has not ended after "
                                   f"{timeout:g}s") from None
            self._take_id(pending)
            self._collect()
        assert self._result is not None
        return self._result

    def _take_id(self, pending: Optional[_Pending]) -> None:
        if self._id is None and pending is not None and pending.reply is not None and pending.reply.opcode == Op.OK:
            self._id = str(pending.reply.body["id"])

    def _collect(self) -> None:
        if self._req_id is None:
            return
        pending = self.client._pending.get(self._req_id)
        if pending is None:
            return
        for event in pending.events:
            if event.get("kind") == "result":
                self._result = TaskResult.from_wire(event["result"])
                if self._id is None:       # the result can come before the (held) reply naming it
                    self._id = self._result.id
                self.client._forget(self._req_id)
                return

    def wait(self, timeout: Optional[float] = None) -> TaskResult:
        return self.result(timeout)

    def status(self) -> Dict[str, Any]:
        return self.client.status(self.id)

    def cancel(self) -> Dict[str, Any]:
        return self.client.cancel(self.id)

    def logs(self) -> str:
        """Everything the latest attempt printed so far."""
        return b"".join(self.client.logs(self.id)).decode("utf-8", "replace")


class Client:
    """A connection to the master; use :func:`connect` to make one."""

    def __init__(self, address: Optional[str] = None, *, token: Optional[str] = None,
                 timeout: float = 10.0, name: Optional[str] = None,
                 tls: Union[None, bool, ssl.SSLContext] = None) -> None:
        self.address = address or os.environ.get("TITAN_MASTER") or DEFAULT_MASTER
        self.token = token if token is not None else os.environ.get("TITAN_TOKEN") or None
        self.tls = _tls_context(tls)
        self.name = name or f"client-{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.RLock()
        self._pending: Dict[int, _Pending] = {}
        self._abandoned: List[int] = []      # requests whose Task, Run or Subscription was dropped
        self._next_id = 1
        self._decoder = FrameDecoder()
        self._batch: Optional[List[bytes]] = None
        self._inbox = memoryview(bytearray(1 << 20))    # see _take_in
        self.master_name = ""                            # both from the master's WELCOME
        self.master_features: frozenset = frozenset()
        self._sock = self._open(timeout)

    # ----- connection ----------------------------------------------------
    def _open(self, timeout: float) -> socket.socket:
        host, port = _split(self.address)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot reach the master at {self.address}: {exc.strerror or exc}; "
                                 f"is `titan master` running? (set --master or TITAN_MASTER)") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise ConnectionLost(f"TLS handshake with the master at {self.address} failed: {exc}") from None
        self._sock = sock
        try:
            self._handshake(timeout)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def _handshake(self, timeout: float) -> None:
        hs = ClientHandshake(role="client", name=self.name, token=self.token)
        deadline = time.monotonic() + timeout
        try:
            self._sock.sendall(pack(Op.HELLO, 0, hs.hello()))
            while not hs.done:
                for frame in self._read_frames(deadline):
                    for opcode, body in hs.on_frame(frame):
                        self._sock.sendall(pack(opcode, 0, body))
        except (ConnectionError, ssl.SSLError) as exc:    # e.g. a TLS master that refused our certificate
            raise ConnectionLost(f"the master at {self.address} refused the connection: {exc}") from None
        except TimeoutError:                              # e.g. a stopped master, or another kind of server
            raise ConnectionLost(f"{self.address} accepted the connection but did not answer within {timeout:g}s; "
                                 f"is a Titan master listening there, and running?") from None
        self.master_name = hs.welcome.get("name", "")
        features = hs.welcome.get("features")
        self.master_features = frozenset(f for f in features if isinstance(f, str)) if isinstance(features, list) \
            else frozenset()        # an older master names none

    def _read_frames(self, deadline: Optional[float]) -> List[Frame]:
        if self._batch:
            self._flush_batch()      # never wait for an answer to a request not yet sent
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        buffered = self.tls is not None and self._sock.pending() > 0  # type: ignore[attr-defined]
        if not buffered:
            ready, _, _ = select.select([self._sock], [], [], wait)
            if not ready:
                raise TimeoutError("timed out waiting for the master")
        return self._take_in()

    def _take_in(self, flags: int = 0) -> List[Frame]:
        """Read what has arrived and return the frames it completes (call with the lock held).

        It is read into one reused buffer: ``sock.recv(1 MiB)`` would map,
        fault in and unmap a fresh MiB per read.  With ``MSG_DONTWAIT`` and
        nothing there, no frames.
        """
        try:
            count = self._sock.recv_into(self._inbox, len(self._inbox), flags)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            raise ConnectionLost(f"connection to the master at {self.address} failed: {exc}") from None
        if not count:
            raise ConnectionLost(f"the master at {self.address} closed the connection")
        return self._decoder.feed(self._inbox[:count].tobytes())

    def close(self) -> None:
        with self._lock:
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- request plumbing ----------------------------------------------
    def _send(self, opcode: int, body: Dict[str, Any],
              on_event: Optional[Callable[[Dict[str, Any]], None]] = None) -> int:
        with self._lock:
            req_id = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            self._pending[req_id] = _Pending(on_event)
            frame = pack(opcode, req_id, body)
            if self._batch is not None:
                self._batch.append(frame)
                if len(self._batch) >= BATCH_FRAMES:
                    self._flush_batch()
            else:
                self._write(frame)
            return req_id

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"cannot send to the master at {self.address}: {exc}") from None

    def _flush_batch(self) -> None:
        if self._batch:
            data, self._batch[:] = b"".join(self._batch), []
            self._write(data)

    @contextlib.contextmanager
    def batch(self) -> Iterator["Client"]:
        """Send the requests made inside the block together, when it ends.

        For submitting many tasks at once: one write instead of one per task,
        and the master takes them in a few passes.  A call inside the block
        that must wait for an answer (``task.id``, ``result()``) sends what is
        batched first.
        """
        with self._lock:
            outer = self._batch is not None
            if not outer:
                self._batch = []
            try:
                yield self
            finally:
                if not outer:
                    try:
                        self._flush_batch()
                    finally:
                        self._batch = None

    def _forget(self, req_id: int) -> None:
        self._pending.pop(req_id, None)

    def _abandon(self, req_id: int) -> None:
        """The handle on ``req_id`` is gone: drop what arrived for it at the next request.

        Called from ``__del__``, so at any moment: it only appends, and the
        next read (under the lock) does the forgetting.
        """
        self._abandoned.append(req_id)

    def _dispatch_all(self, frames: List[Frame]) -> None:
        """Hand every frame to its request, then raise the first error an ``on_output`` callback raised.

        The frames are out of the socket already: stopping at the error would
        lose the rest of them (another task's result, say).
        """
        while self._abandoned:
            self._pending.pop(self._abandoned.pop(), None)
        error: Optional[BaseException] = None
        for frame in frames:
            try:
                self._dispatch(frame)
            except BaseException as exc:        # KeyboardInterrupt too: raised once the rest are handed on
                error = error or exc
        if error is not None:
            raise error

    def _dispatch(self, frame: Frame) -> None:
        pending = self._pending.get(frame.req_id)
        if pending is None:
            return
        if frame.opcode == Op.EVENT:
            event = frame.body if isinstance(frame.body, dict) else {}
            if pending.on_event is not None and event.get("kind") != "result":
                pending.on_event(event)
            else:
                pending.events.append(event)
            if not frame.flags & FLAG_MORE:
                pending.done = True
        else:
            pending.reply = frame
            if not frame.flags & FLAG_MORE:
                pending.done = True

    def _poll(self, timeout: float) -> None:
        with self._lock:
            try:
                self._dispatch_all(self._read_frames(time.monotonic() + timeout))
            except TimeoutError:
                pass

    def _take_arrived(self) -> None:
        """Handle the frames that have already arrived, without waiting (one recv, no select)."""
        if self.tls is not None:
            self._poll(0.0)
            return
        with self._lock:
            self._dispatch_all(self._take_in(socket.MSG_DONTWAIT))

    def _wait_for(self, req_id: int, deadline: Optional[float], final_event: str = "") -> _Pending:
        with self._lock:
            pending = self._pending[req_id]
            while not self._satisfied(pending, final_event):
                self._dispatch_all(self._read_frames(deadline))
            self._raise_error(pending)
            return pending

    @staticmethod
    def _satisfied(pending: _Pending, final_event: str) -> bool:
        if pending.reply is not None and pending.reply.opcode == Op.ERROR:
            return True
        if final_event:
            return any(e.get("kind") == final_event for e in pending.events)
        return pending.reply is not None

    def _raise_error(self, pending: _Pending) -> None:
        reply = pending.reply
        if reply is None or reply.opcode != Op.ERROR:
            return
        body = reply.body if isinstance(reply.body, dict) else {}
        code, message = str(body.get("code", "error")), str(body.get("message", body))
        if code == "unknown_task":
            raise UnknownTask(code, message)
        if code == "unknown_job":
            raise UnknownJob(code, message)
        raise RemoteError(code, message)

    def _call(self, opcode: int, body: Dict[str, Any], timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        req_id = self._send(opcode, body)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            pending = self._wait_for(req_id, deadline)
        except TimeoutError:
            raise TimeoutError(f"the master at {self.address} did not answer within {timeout:g}s") from None
        finally:
            if self._pending.get(req_id) is not None and self._pending[req_id].done:
                self._forget(req_id)
        assert pending.reply is not None
        return pending.reply.body if isinstance(pending.reply.body, dict) else {}

    # ----- the API -------------------------------------------------------
    @property
    def kv(self) -> KV:
        """The cluster's key-value store and pub/sub (see :mod:`titan.sdk.kv`)."""
        return KV(self)

    def submit(self, command: Union[str, Sequence[str]], *, requires: Union[None, str, Iterable[str]] = None,
               timeout_s: Optional[float] = None, name: Optional[str] = None, priority: int = 0,
               env: Optional[Dict[str, str]] = None, node: Optional[str] = None, retries: int = 0,
               retry_backoff_s: float = 1.0, kill_grace_s: float = KILL_GRACE_S, watch: bool = True,
               on_output: Optional[Callable[[str, bytes], None]] = None) -> Task:
        """Queue a command (a str runs in ``/bin/sh -c``, a list is argv); return its Task.

        ``on_output(stream, data)`` is called with the task's output as it
        arrives while you wait on the task.  What it raises comes out of the
        call that was waiting, once everything that arrived with it is handled.
        """
        body = _submit_body(command, requires, timeout_s, name, priority, env, node, retries,
                            retry_backoff_s, kill_grace_s)
        if not watch:
            body["watch"] = False
        if on_output is not None:
            body["follow"] = True
        handler = None
        if on_output is not None:
            handler = lambda ev: on_output(str(ev.get("stream", "out")), ev.get("data") or b"")
        req_id = self._send(Op.SUBMIT, body, handler)
        if self._batch is None and req_id % TAKE_EVERY == 0:
            self._take_arrived()    # so replies never pile up (a recv per submission cost 10% of its time)
        task = Task(self, None, req_id)
        if not watch:
            task.id            # the reply is all that will come
            self._forget(req_id)
            task._req_id = None
        return task

    def submit_job(self, job: Dict[str, Any], *, start: bool = True, watch: bool = True,
                   on_task: Optional[Callable[[Dict[str, Any]], None]] = None,
                   blobs: Optional[Dict[str, bytes]] = None) -> Run:
        """Register ``job`` (a RUN body's job, see :mod:`titan.core.runs`) and start a run of it.

        ``blobs`` carries the contents of the files its tasks list (sha256 -> bytes).
        """
        body: Dict[str, Any] = {"start": start, "watch": watch, "blobs": blobs or {}, "progress": on_task is not None}
        if "job_encoded" in self.master_features:    # a master with this very job registered takes it as it is
            body["job_encoded"] = encode(job)
        else:
            body["job"] = job
        req_id = self._send(Op.RUN, body)
        reply = self._wait_for(req_id, time.monotonic() + 30.0).reply
        assert reply is not None
        body = reply.body if isinstance(reply.body, dict) else {}
        if not (watch and body.get("run")):
            self._forget(req_id)
        run = Run(self, body.get("run"), list(body.get("tasks") or []),
                  req_id if watch and body.get("run") else None, on_task, job=str(body.get("job") or job.get("name")))
        run.services = list(body.get("services") or [])
        return run

    def submit_file(self, path: str, *, start: Optional[bool] = None, watch: bool = True,
                    on_task: Optional[Callable[[Dict[str, Any]], None]] = None) -> Run:
        """Check the job file at ``path``, register its job, and start a run unless it is scheduled.

        Raises :class:`titan.core.jobfile.JobFileError` (a UsageError) listing every problem.
        """
        spec, read = load_job_file(path)
        return self.submit_spec(spec, read, start=start, watch=watch, on_task=on_task)

    def submit_spec(self, spec: Any, read: Callable[[str], Tuple[bytes, bool]], *, start: Optional[bool] = None,
                    watch: bool = True, on_task: Optional[Callable[[Dict[str, Any]], None]] = None) -> Run:
        """As :meth:`submit_file`, for a job file already read by
        :func:`titan.sdk.services.load_job_file` (its ``JobSpec`` and reader of the files it names)."""
        from titan.core.runs import job_to_wire     # only this method needs it
        blobs: Dict[str, bytes] = {}
        job = job_to_wire(spec, read, blobs)
        return self.submit_job(job, start=(spec.schedule is None) if start is None else start,
                               watch=watch, on_task=on_task, blobs=blobs)

    def trigger(self, job: str, *, watch: bool = True,
                on_task: Optional[Callable[[Dict[str, Any]], None]] = None) -> Run:
        """Start a run of a registered job now, whatever its schedule."""
        req_id = self._send(Op.TRIGGER, {"job": job, "watch": watch, "progress": on_task is not None})
        reply = self._wait_for(req_id, time.monotonic() + 30.0).reply
        assert reply is not None
        if not watch:
            self._forget(req_id)
        return Run(self, reply.body["run"], list(reply.body["tasks"]), req_id if watch else None, on_task, job=job)

    def runs(self, job: Optional[str] = None, *, limit: int = 50) -> List[Dict[str, Any]]:
        return list(self._call(Op.RUNS, {"job": job, "limit": limit}).get("runs", []))

    def jobs(self) -> List[Dict[str, Any]]:
        return list(self._call(Op.JOBS, {}).get("jobs", []))

    def remove_job(self, name: str) -> Dict[str, Any]:
        """Forget a registered job: its schedule stops firing and it leaves :meth:`jobs`.

        Returns ``{job, schedule, active_runs, services}``: the runs of it
        that are still going (they are not cancelled) and the services
        deployed with it (they keep running).  Raises
        :class:`~titan.errors.UnknownJob` (a RemoteError) for a name the
        master has not registered.
        """
        return self._call(Op.REMOVE_JOB, {"job": name})

    def _wait_more(self, req_id: int, deadline: Optional[float], seen: int) -> None:
        """Block until request ``req_id`` has more than ``seen`` events (or raise TimeoutError)."""
        with self._lock:
            pending = self._pending[req_id]
            while len(pending.events) <= seen:
                self._dispatch_all(self._read_frames(deadline))
                self._raise_error(pending)

    def task(self, task_id: str) -> Task:
        """A handle on a task submitted earlier (by anyone)."""
        return Task(self, task_id)

    def status(self, task_id: str) -> Dict[str, Any]:
        return self._call(Op.STATUS, {"task": task_id})

    def cancel(self, task_id: str) -> Dict[str, Any]:
        return self._call(Op.CANCEL, {"task": task_id})

    def retry(self, task_id: str) -> Dict[str, Any]:
        return self._call(Op.RETRY, {"task": task_id})

    # ----- services ------------------------------------------------------
    def deploy(self, command: Union[str, Sequence[str]], *, name: str, timeout: Optional[float] = 120.0,
               **settings: Any) -> Dict[str, Any]:
        """Deploy (or update) one service; returns its row once RUNNING, FATAL, EXITED or PENDING.

        ``settings``: port (number or "auto"), requires, node, env, restart, health,
        backoff_s, max_restarts, stop_signal, ... (see ``titan.core.service``).
        """
        rows = self._call(Op.DEPLOY, {"services": [service_body(command, name=name, **settings)]},
                          timeout).get("services", [])
        return dict(rows[0]) if rows else {}

    def deploy_file(self, path: str, *, timeout: Optional[float] = 120.0) -> List[Dict[str, Any]]:
        """Deploy every ``[service:NAME]`` of a job file (its tasks are not run: see submit_file)."""
        body, _ = file_request(path)
        if not body["services"]:
            raise UsageError(f"{path} has no [service:NAME] section; `titan submit` runs its tasks")
        return list(self._call(Op.DEPLOY, body, timeout).get("services", []))

    def services(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every service (or the one named): node, pid, state, uptime, restarts, health, port."""
        return list(self._call(Op.SERVICES, {"name": name}).get("services", []))

    def service_ctl(self, name: str, action: str, *, timeout: Optional[float] = 60.0) -> Dict[str, Any]:
        """``stop`` (kills its process group; no restart), ``restart`` or ``remove`` a service."""
        rows = self._call(Op.SERVICE_CTL, {"name": name, "action": action}, timeout).get("services", [])
        return dict(rows[0]) if rows else {}

    def drain(self, node: str, *, undo: bool = False) -> Dict[str, Any]:
        """Give ``node`` no new work (its running tasks finish); ``undo`` lets it take work again."""
        return self._call(Op.DRAIN, {"node": node, "undo": undo})

    def nodes(self) -> List[Dict[str, Any]]:
        return list(self._call(Op.NODES, {}).get("nodes", []))

    def tasks(self, *, state: Optional[str] = None, limit: int = 50) -> List[Dict[str, Any]]:
        return list(self._call(Op.TASKS, {"state": state, "limit": limit}).get("tasks", []))

    def ping(self) -> float:
        start = time.perf_counter()
        self._call(Op.PING, {})
        return time.perf_counter() - start

    def logs(self, task_id: str, *, attempt: Optional[int] = None, follow: bool = False,
             timeout: Optional[float] = None) -> Iterator[bytes]:
        """Yield the attempt's output in chunks; with ``follow``, until it ends."""
        for _, data in self.log_chunks(task_id, attempt=attempt, follow=follow, timeout=timeout):
            yield data

    def log_chunks(self, task_id: str, *, attempt: Optional[int] = None, follow: bool = False,
                   timeout: Optional[float] = None) -> Iterator[Tuple[Optional[int], bytes]]:
        """As :meth:`logs`, each chunk with the number of the attempt that printed it.

        Following a live task goes on through its retries; following a given
        ``attempt`` ends with that attempt.
        """
        chunks: List[Tuple[Optional[int], bytes]] = []
        req_id = self._send(Op.LOGS, {"task": task_id, "attempt": attempt, "follow": follow},
                            lambda ev: chunks.append((ev.get("attempt"), ev.get("data") or b"")))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                with self._lock:
                    pending = self._pending[req_id]
                    if not chunks and pending.reply is None:
                        self._dispatch_all(self._read_frames(deadline))
                    self._raise_error(pending)
                while chunks:
                    yield chunks.pop(0)
                if pending.reply is not None:
                    return
        finally:
            self._forget(req_id)


def _split(address: str) -> Tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, 9090
    if not port.isdigit():
        raise UsageError(f"bad master address {address!r}: use HOST:PORT, e.g. 127.0.0.1:9090")
    return host.strip("[]") or "127.0.0.1", int(port)


def _submit_body(command: Union[str, Sequence[str]], requires: Union[None, str, Iterable[str]],
                 timeout_s: Optional[float], name: Optional[str], priority: int,
                 env: Optional[Dict[str, str]], node: Optional[str], retries: int,
                 retry_backoff_s: float, kill_grace_s: float) -> Dict[str, Any]:
    if isinstance(command, str):
        if not command.strip():
            raise UsageError("empty command: give a shell string or an argv list")
        wire_command: Union[str, List[str]] = command
    else:
        wire_command = [str(a) for a in command]
        if not wire_command or not wire_command[0]:
            raise UsageError("empty command: give a shell string or an argv list")
    body: Dict[str, Any] = {"command": wire_command}     # what has its default stays out
    tags = tag_list(requires)
    if tags:
        body["requires"] = tags
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    if name is not None:
        body["name"] = name
    if priority != 0:
        body["priority"] = priority
    if env:
        body["env"] = dict(env)
    if node is not None:
        body["node"] = node
    if retries != 0:
        body["retries"] = retries
    if retry_backoff_s != 1.0:
        body["retry_backoff_s"] = retry_backoff_s
    if kill_grace_s != KILL_GRACE_S:
        body["kill_grace_s"] = kill_grace_s
    return body


def _tls_context(tls: Union[None, bool, ssl.SSLContext]) -> Optional[ssl.SSLContext]:
    """The TLS context to dial with: given, built from $TITAN_TLS_*, or none."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    env = os.environ
    if tls is None:
        tls = bool(env.get("TITAN_TLS_CA") or env.get("TITAN_TLS", "") not in ("", "0"))
    if not tls:
        return None
    return client_context(env.get("TITAN_TLS_CA") or None, env.get("TITAN_TLS_CERT") or None,
                          env.get("TITAN_TLS_KEY") or None)


def connect(address: Optional[str] = None, *, token: Optional[str] = None,
            timeout: float = 10.0, tls: Union[None, bool, ssl.SSLContext] = None) -> Client:
    """Connect to a master (default: $TITAN_MASTER, else 127.0.0.1:9090).

    ``tls``: an ``ssl.SSLContext``, True (verify with the system CAs or
    $TITAN_TLS_CA), or None (TLS when $TITAN_TLS_CA or $TITAN_TLS=1 is set).
    """
    return Client(address, token=token, timeout=timeout, tls=tls)
