"""The master's answers to clients about tasks and nodes: submit, status, wait, cancel, retry, logs...

    client ──SUBMIT / STATUS / WAIT / CANCEL / RETRY / TASKS / LOGS / NODES / DRAIN──▶ ClientRequests
                                                     (methods of Master: one loop, one state)

Each handler gets the connection, the request id and the decoded body, and
answers on the connection (``hold`` for answers that must wait for the
store's fsync).  A request naming an unknown task raises
:class:`UnknownTaskId`, which the master turns into ``ERROR unknown_task``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from titan.core.model import TERMINAL, TaskRecord, TaskState
from titan.errors import InvalidTransition, UsageError
from titan.io.loop import Connection
from titan.roles.master.runs import task_view
from titan.wire.frames import FLAG_MORE, Op

if TYPE_CHECKING:
    from titan.roles.master.server import Master

__all__ = ["ClientRequests", "UnknownTaskId", "worker_state"]

LOG_CHUNK_BYTES = 1024 * 1024
LAZY = "lazy"      # a held frame that may ride along with the connection's next write


class ClientRequests:
    """Client request handlers; :class:`~titan.roles.master.server.Master` inherits them."""

    def _is_run(self: "Master", body: Dict[str, Any]) -> bool:
        task_id = body.get("task")
        return isinstance(task_id, str) and task_id in self.runs.runs

    def _record(self: "Master", body: Dict[str, Any]) -> TaskRecord:
        task_id = body.get("task")
        record = self.sched.tasks.get(task_id) if isinstance(task_id, str) else None
        if record is None:
            if self._is_run(body):
                raise UsageError(f"{task_id} is a run, not a task: `titan status {task_id}` shows its tasks, "
                                 f"whose ids read {task_id}/TASK")
            raise UnknownTaskId(task_id)
        return record

    def _c_submit(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        broken = self.durable.broken
        if broken is not None:
            conn.send_error(req_id, "store_unavailable",
                            f"not accepted: the master cannot write its state to disk "
                            f"({broken.strerror or broken}); free space in {self.config.data_dir} and retry")
            return
        spec = self.specs.get(body)
        n = self.counters.get(spec.name, 0) + 1
        self.counters[spec.name] = n
        self.durable.counters_dirty[spec.name] = n
        task_id = f"{spec.name}#{n}"
        peer = conn.state
        watch = bool(body.get("watch", True))
        flags = FLAG_MORE if watch else 0
        self.hold(conn, req_id, Op.OK, {"id": task_id}, flags, LAZY if watch else False)
        if watch:
            self.watchers.setdefault(task_id, []).append((conn, req_id))
            peer.watching.add((task_id, req_id))
            if body.get("follow"):
                peer.following.add((task_id, req_id))
        self.apply(self.sched.task_submitted(task_id, spec, self.clock()))

    def _c_status(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        if self._is_run(body):
            conn.send(Op.OK, req_id, self.runs.view(body["task"]))
            return
        record = self._record(body)
        conn.send(Op.OK, req_id, task_view(record, self.sched, self.clock()))

    def _c_wait(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        record = self._record(body)
        if record.state in TERMINAL:
            conn.send(Op.EVENT, req_id, {"kind": "result", "result": self.result_body(record)})
            return
        self.watchers.setdefault(record.id, []).append((conn, req_id))
        conn.state.watching.add((record.id, req_id))

    def _c_cancel(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        if self._is_run(body):
            was = self.runs.view(body["task"], detail=False)["state"]
            self.runs.cancel(body["task"])
            view = self.runs.view(body["task"], detail=False)
            conn.send(Op.OK, req_id, {"id": view["id"], "state": view["state"], "was": was,
                                      "cancelling": view["state"] == "RUNNING"})
            return
        record = self._record(body)
        was = record.state
        self.apply(self.sched.cancel(record.id, self.clock()))
        conn.send(Op.OK, req_id, {"id": record.id, "was": was.value, "state": record.state.value,
                                  "cancelling": record.cancel_requested and record.state is TaskState.RUNNING})

    def _c_retry(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        if self._is_run(body):          # a run: retry what failed in it
            retried = self.runs.retry(body["task"])
            if not retried:
                raise UsageError(f"run {body['task']} has no FAILED, DEAD or CANCELLED task to retry")
            conn.send(Op.OK, req_id, {"id": body["task"], "state": "RUNNING", "retried": retried})
            return
        record = self._record(body)
        try:
            self.apply(self.sched.retry(record.id, self.clock()))
        except InvalidTransition:
            raise UsageError(f"task {record.id} is {record.state.value}; only FAILED, DEAD, CANCELLED "
                             f"or SKIPPED tasks can be retried")
        conn.send(Op.OK, req_id, {"id": record.id, "state": record.state.value})

    def _c_drain(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        """No new work for a node (its running tasks finish), or, with ``undo``, work again."""
        name = body.get("node")
        w = self.sched.workers.get(name) if isinstance(name, str) else None
        if w is None:
            raise UsageError(f"no node {name!r}: `titan nodes` lists the workers this master knows")
        self.sched.set_draining(w.name, not body.get("undo"))
        self.sched.workers_dirty.add(w.name)
        if body.get("undo"):
            self.services.undrained()
        else:
            self.services.drained(w.name)
        self.apply(self.sched.tick(self.clock()))       # undrained: queued work may go there now
        self.hold(conn, req_id, Op.OK, {"node": w.name, "state": worker_state(w), "running": w.busy})

    def _c_nodes(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        now = self.clock()
        nodes = []
        for w in self.sched.workers.values():
            nodes.append({
                "name": w.name, "tags": sorted(w.tags), "slots": w.slots, "running": min(w.busy, w.slots),
                "ahead": max(0, w.busy - w.slots), "load": round(w.load, 3), "state": worker_state(w), "dedicated": w.dedicated,
                "last_seen_s": round(now - w.last_seen, 3), **w.info,
            })
        conn.send(Op.OK, req_id, {"nodes": nodes})

    def _c_tasks(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        limit = body.get("limit") if isinstance(body.get("limit"), int) else 50
        state = body.get("state")
        records = [r for r in self.sched.tasks.values() if state is None or r.state.value == state]
        records.sort(key=lambda r: r.seq, reverse=True)
        rows = []
        for r in records[:max(0, limit)]:
            row = r.to_wire()
            del row["attempts"]
            rows.append(row)
        conn.send(Op.OK, req_id, {"tasks": rows, "total": len(records)})

    def _c_logs(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        name = body.get("task")
        if isinstance(name, str) and name not in self.sched.tasks and name in self.services.entries:
            self._service_logs(conn, req_id, body, name)
            return
        record = self._record(body)
        asked = body.get("attempt")
        if asked is None:
            attempt = record.current.number if record.current else 0
        elif not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= len(record.attempts):
            raise UsageError(f"task {record.id} has no attempt {asked!r} (it has {len(record.attempts)}, "
                             f"numbered from 1)")
        else:
            attempt = asked
        if attempt:
            self._send_log(conn, req_id, record.id, attempt)
        # following the task: through its retries, to its end; following one attempt: to that attempt's end
        live = record.state not in TERMINAL and (asked is None or record.attempts[attempt - 1].finished_at is None)
        if body.get("follow") and live:
            key = record.id if asked is None else (record.id, attempt)
            self.followers.setdefault(key, []).append((conn, req_id))
            conn.state.following.add((key, req_id))
            return
        ended = record if asked is None else record.attempts[attempt - 1]     # the task's state, or the attempt's
        conn.send(Op.OK, req_id, {"state": ended.state.value, "exit_code": ended.exit_code, "attempt": attempt})


    def _send_log(self: "Master", conn: Connection, req_id: int, key: str, attempt: int) -> None:
        offset = 0
        size = self.logs.size(key, attempt)
        while offset < size:
            chunk = self.logs.read(key, attempt, offset, min(LOG_CHUNK_BYTES, size - offset))
            if not chunk:
                break
            conn.send(Op.EVENT, req_id, {"kind": "output", "attempt": attempt, "data": chunk}, FLAG_MORE)
            offset += len(chunk)

    def _service_logs(self: "Master", conn: Connection, req_id: int, body: Dict[str, Any], name: str) -> None:
        """A service's log: one per deployment (``attempt`` picks an older one), restarts included."""
        entry = self.services.entries[name]
        gen = body.get("attempt") if isinstance(body.get("attempt"), int) else entry.gen
        if not 1 <= gen <= entry.gen:
            raise UsageError(f"service {name} has no deployment {gen} (it has {entry.gen})")
        self._send_log(conn, req_id, "@" + name, gen)
        if body.get("follow") and gen == entry.gen:
            self.followers.setdefault("@" + name, []).append((conn, req_id))
            conn.state.following.add(("@" + name, req_id))
            return
        conn.send(Op.OK, req_id, {"state": entry.state.value, "exit_code": None, "attempt": gen})


class UnknownTaskId(UsageError):
    """Raised inside the master when a request names a task it does not know."""

    def __init__(self, task_id: object) -> None:
        if isinstance(task_id, str) and "/" not in task_id and ("#" in task_id or "@" in task_id):
            super().__init__(f"no run or task {task_id!r}: `titan runs` lists the runs and `titan tasks` "
                             "the tasks this master knows")          # JOB#N: a run's id, or a lone task's
        else:
            super().__init__(f"no task {task_id!r}: `titan tasks` lists the tasks this master knows")


def worker_state(w: Any) -> str:
    if not w.connected:
        return "lost"
    return "draining" if w.draining else "ready"
