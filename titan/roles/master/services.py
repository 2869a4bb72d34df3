"""Services on the master: where each one runs, and what the cluster knows of it.

    DEPLOY {services}  ──▶ entry (titan:svc:NAME) ──place──▶ SVC_START {name, gen, spec} ──▶ worker
    SERVICE_CTL stop | restart ──▶ SVC_STOP / SVC_START (gen + 1)
    worker SVC_STATE / HELLO {services} ──▶ entry's state, pid, port, restarts, health
    worker gone ──▶ LOST ──(lost_grace_s)──▶ placed again elsewhere (gen + 1)

The worker supervises (restarts, health checks, backoff, FATAL); the master
places, moves and remembers.  ``gen`` counts deployments of a name: reports
about an older one are ignored, and a worker still running an older or
unwanted one is told to stop it.  Everything a restart needs is in the
store, so a restarted master finds its services and re-adopts them from the
HELLO of the workers that run them (same pid).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from titan.core.placement import choose_for_service
from titan.core.service import LIVE, ServiceSpec, ServiceState, service_from_wire, service_to_wire
from titan.errors import UsageError
from titan.io.loop import Connection
from titan.wire.frames import Op

if TYPE_CHECKING:
    from titan.roles.master.server import Master

__all__ = ["ServiceManager"]

logger = logging.getLogger(__name__)

V = ServiceState
SETTLED = frozenset({V.RUNNING, V.BACKOFF, V.FATAL, V.EXITED, V.STOPPED, V.PENDING})
OCCUPYING = LIVE | {V.LOST}            # states in which a service has a node


class Entry:
    """One service as the master knows it."""

    __slots__ = ("spec", "gen", "desired", "node", "state", "pid", "port", "started_at", "restarts",
                 "reason", "health", "healthy", "lost_since", "job")

    def __init__(self, spec: ServiceSpec, gen: int, job: Optional[str] = None) -> None:
        self.spec = spec
        self.gen = gen
        self.desired = "running"
        self.node: Optional[str] = None
        self.state = V.PENDING
        self.pid: Optional[int] = None
        self.port: Optional[int] = None
        self.started_at: Optional[float] = None
        self.restarts = 0
        self.reason = ""
        self.health = ""
        self.healthy: Optional[bool] = None
        self.lost_since: Optional[float] = None
        self.job = job

    def to_store(self) -> Dict[str, Any]:
        return {"name": self.spec.name, "spec": service_to_wire(self.spec), "gen": self.gen,
                "desired": self.desired, "node": self.node, "state": self.state.value, "pid": self.pid,
                "port": self.port, "started_at": self.started_at, "restarts": self.restarts,
                "reason": self.reason, "job": self.job}

    @classmethod
    def from_store(cls, saved: Dict[str, Any]) -> "Entry":
        entry = cls(service_from_wire(saved["spec"]), int(saved.get("gen") or 1), saved.get("job"))
        entry.desired = saved.get("desired") or "running"
        entry.node = saved.get("node")
        entry.state = V(saved.get("state") or "PENDING")
        entry.pid, entry.port = saved.get("pid"), saved.get("port")
        entry.started_at = saved.get("started_at")
        entry.restarts = int(saved.get("restarts") or 0)
        entry.reason = saved.get("reason") or ""
        return entry

    def view(self, now: float) -> Dict[str, Any]:
        up = self.state in (V.RUNNING, V.STARTING) and self.started_at is not None
        return {"name": self.spec.name, "state": self.state.value, "node": self.node, "pid": self.pid,
                "port": self.port, "restarts": self.restarts, "reason": self.reason, "health": self.health, "healthy": self.healthy,
                "uptime_s": round(max(0.0, now - self.started_at), 1) if up else None,  # type: ignore[operator]
                "gen": self.gen, "desired": self.desired, "requires": sorted(self.spec.requires),
                "job": self.job, "command": list(self.spec.argv)}


class ServiceManager:
    """Runs DEPLOY, SERVICES and SERVICE_CTL, and follows what workers report."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.entries: Dict[str, Entry] = {}
        self.waiters: List[Tuple[Connection, int, List[str], str, Dict[str, Any]]] = []
        # each: conn, request id, names, "deploy" or "stop", extra fields of the answer

    def restore(self, saved: Iterable[Dict[str, Any]], now: float) -> None:
        """After a restart: services that had a node wait for it to report them (LOST until then)."""
        for item in saved:
            try:
                entry = Entry.from_store(item)
            except (UsageError, ValueError, KeyError, TypeError) as exc:
                logger.error("cannot read the stored service %r: %s; it is skipped", item.get("name"), exc)
                continue
            self.entries[entry.spec.name] = entry
            if entry.state in OCCUPYING:
                entry.state, entry.lost_since = V.LOST, now
        if self.entries:
            logger.info("restored %d services", len(self.entries))

    # ----- requests --------------------------------------------------------
    def deploy(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        items = body.get("services")
        if not isinstance(items, list) or not items:
            raise UsageError("DEPLOY needs a non-empty list of services")
        specs = [service_from_wire(item) for item in items]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise UsageError("two services in one deployment have the same name")
        for spec in specs:
            self.check_node(spec)
        self.master.runs.store_blobs(body.get("blobs"), [sha for s in specs for _, sha, _ in s.files], "deployment")
        changed = [self.deploy_spec(spec, job=body.get("job")) for spec in specs]
        self._answer_when_settled(conn, req_id, names, "deploy", {"changed": [n for n, c in zip(names, changed) if c]})

    def _next_gen(self, name: str) -> int:
        """Deployments of a name are numbered for good (a removed name deployed again goes on)."""
        key = "@" + name                     # no task name starts with "@"
        n = self.master.counters.get(key, 0) + 1
        self.master.counters[key] = n
        self.master.durable.counters_dirty[key] = n
        return n

    def check_node(self, spec: ServiceSpec) -> None:
        if spec.node is not None and spec.node not in self.master.sched.workers:
            known = ", ".join(sorted(self.master.sched.workers)) or "none yet"
            raise UsageError(f"service {spec.name}: no node {spec.node!r} (known nodes: {known}); "
                             f"`titan nodes` lists them")
        if spec.node is not None and self.master.sched.workers[spec.node].info.get("ephemeral"):
            raise UsageError(f"service {spec.name}: node {spec.node!r} is an ephemeral worker, which retires "
                             f"when idle; services run on permanent workers")

    def deploy_spec(self, spec: ServiceSpec, job: Optional[str] = None) -> bool:
        """Deploy or update one service; False when the same spec already runs."""
        entry = self.entries.get(spec.name)
        if entry is not None and entry.spec == spec and entry.desired == "running" and entry.state in (
                V.RUNNING, V.STARTING, V.BACKOFF):
            return False
        gen = self._next_gen(spec.name)
        previous = entry.node if entry is not None and entry.state in OCCUPYING else None
        fresh = Entry(spec, gen, job)
        self.entries[spec.name] = fresh
        logger.info("service %s: deployment %d", spec.name, gen)
        self._place(fresh, prefer=previous)
        if previous is not None and fresh.node != previous:
            self._send(previous, Op.SVC_STOP, {"name": spec.name, "gen": entry.gen, "reason": "deployed elsewhere"})
        return True

    def control(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        """``stop``, ``restart`` or ``remove`` one service."""
        action, name = body.get("action"), body.get("name")
        entry = self.entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise UsageError(f"no service {name!r}: `titan ps` lists the services this master knows")
        if action == "stop" or action == "remove":
            self._stop(entry, "stopped by request")
            if action == "remove":
                self._forget(entry)
                self.master.hold(conn, req_id, Op.OK, {"services": [entry.view(self.master.clock())]})
                return
            self._answer_when_settled(conn, req_id, [entry.spec.name], "stop", {})
        elif action == "restart":
            self.restart(entry)
            self._answer_when_settled(conn, req_id, [entry.spec.name], "deploy", {})
        else:
            raise UsageError(f"unknown service action {action!r}: use stop, restart or remove")

    def restart(self, entry: Entry) -> None:
        """A new generation of the same spec, on the same node when it still may run there."""
        self.check_node(entry.spec)
        old_node = entry.node if entry.state in OCCUPYING else None
        old_gen, entry.gen = entry.gen, self._next_gen(entry.spec.name)
        entry.desired, entry.restarts, entry.reason = "running", 0, ""
        logger.info("service %s: restart (deployment %d)", entry.spec.name, entry.gen)
        self._place(entry, prefer=entry.node)
        if old_node is not None and entry.node != old_node:
            self._send(old_node, Op.SVC_STOP, {"name": entry.spec.name, "gen": old_gen, "reason": "restarted"})

    def _stop(self, entry: Entry, reason: str) -> None:
        entry.desired = "stopped"
        if entry.node is not None and entry.state in LIVE and entry.node in self.master.worker_conns:
            self._send(entry.node, Op.SVC_STOP, {"name": entry.spec.name, "gen": entry.gen, "reason": reason})
            self._set(entry, V.STOPPING)
        elif entry.state not in (V.FATAL, V.EXITED):
            entry.reason = reason
            self._set(entry, V.STOPPED)

    def _forget(self, entry: Entry) -> None:
        del self.entries[entry.spec.name]
        self.master.durable.services_dirty[entry.spec.name] = None
        self._settle()          # a request waiting on it (a stop) is answered: it is gone
        self.master.end_followers("@" + entry.spec.name,          # `logs -f` of it ends here
                                  {"state": entry.state.value, "exit_code": None, "attempt": entry.gen})

    def listing(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        now = self.master.clock()
        name = body.get("name")
        rows = [e.view(now) for n, e in sorted(self.entries.items()) if name is None or n == name]
        if name is not None and not rows:
            raise UsageError(f"no service {name!r}: `titan ps` lists the services this master knows")
        conn.send(Op.OK, req_id, {"services": rows})

    # ----- placement -------------------------------------------------------
    def _placed(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for e in self.entries.values():
            if e.node is not None and e.state in OCCUPYING:
                counts[e.node] = counts.get(e.node, 0) + 1
        return counts

    def _place(self, entry: Entry, *, prefer: Optional[str] = None, exclude: Iterable[str] = ()) -> None:
        spec, workers = entry.spec, self.master.sched.workers
        exclude = set(exclude) | {n for n, w in workers.items() if w.info.get("ephemeral")}   # they retire
        entry.node = None
        w = None
        if prefer is not None and prefer in workers and prefer not in set(exclude):
            w = choose_for_service([workers[prefer]], spec.requires, spec.node, {})
        if w is None:
            w = choose_for_service(workers.values(), spec.requires, spec.node, self._placed(), exclude)
        entry.pid = entry.started_at = None
        hint, entry.port = entry.port, None
        entry.lost_since, entry.health, entry.healthy = None, "", None
        if w is None:
            want = f"node {spec.node}" if spec.node else (
                "a worker with tags " + ",".join(sorted(spec.requires)) if spec.requires else "a worker")
            entry.reason = f"waiting for {want}"
            self._set(entry, V.PENDING)
            return
        entry.node, entry.reason = w.name, ""
        self._set(entry, V.STARTING)
        start = {"name": spec.name, "gen": entry.gen, "spec": service_to_wire(spec)}
        if spec.port == 0 and hint and w.name == prefer:
            start["port"] = hint          # port = auto: keep the one it had on this node if free
        self._send(w.name, Op.SVC_START, start)

    def _send(self, node: str, opcode: int, body: Dict[str, Any]) -> None:
        conn = self.master.worker_conns.get(node)
        if conn is not None:
            conn.send(opcode, 0, body, urgent=True)

    def _set(self, entry: Entry, state: ServiceState) -> None:
        if entry.state is not state:
            logger.info("service %s: %s -> %s%s", entry.spec.name, entry.state.value, state.value,
                        f" ({entry.reason})" if entry.reason and state in (V.FATAL, V.PENDING, V.BACKOFF) else "")
        entry.state = state
        self.master.durable.services_dirty[entry.spec.name] = entry.to_store()
        self._settle()

    # ----- what workers report ---------------------------------------------
    def reported(self, worker: str, body: Dict[str, Any]) -> None:
        """SVC_STATE from a worker, or one item of its HELLO list."""
        name, gen = body.get("name"), body.get("gen")
        entry = self.entries.get(name) if isinstance(name, str) else None
        try:
            state = V(body.get("state"))
        except ValueError:
            return
        if entry is None or not isinstance(gen, int) or gen != entry.gen or entry.node != worker:
            replacing = entry is not None and entry.node == worker and isinstance(gen, int) and gen < entry.gen
            if state in LIVE and isinstance(name, str) and not replacing:   # an instance nobody wants any more
                self._send(worker, Op.SVC_STOP, {"name": name, "gen": gen, "reason": "not deployed here"})
            return                  # (``replacing``: the newer SVC_START sent there replaces it)
        entry.pid = body.get("pid") if isinstance(body.get("pid"), int) else None
        if isinstance(body.get("port"), int):
            entry.port = body["port"]
        entry.started_at = body.get("started_at") if isinstance(body.get("started_at"), (int, float)) else None
        entry.restarts = body.get("restarts") if isinstance(body.get("restarts"), int) else entry.restarts
        entry.reason = str(body.get("reason") or "")
        entry.health = str(body.get("health") or "")
        entry.healthy = body.get("healthy") if isinstance(body.get("healthy"), bool) else None
        entry.lost_since = None
        if entry.desired != "running" and state in (V.STARTING, V.RUNNING, V.BACKOFF):
            # stopped while its node was away: it still runs there, so stop it now
            self._send(worker, Op.SVC_STOP, {"name": entry.spec.name, "gen": gen, "reason": "stopped by request"})
            self._set(entry, V.STOPPING)
            return
        if state is V.STOPPED and entry.desired == "running":
            self._set(entry, state)
            self._place(entry, exclude=(worker,))      # it was moved, or its worker is shutting down
            return
        self._set(entry, state)

    def worker_joined(self, worker: str, reports: Any) -> None:
        """A worker (re)registered: adopt what it runs, re-place what it lost, place what waits."""
        seen = set()
        for item in reports if isinstance(reports, list) else []:
            if isinstance(item, dict):
                if self._adoptable(worker, item):
                    logger.info("service %s: adopted on %s (pid %s)", item["name"], worker, item.get("pid"))
                    seen.add(item["name"])
                self.reported(worker, item)
        for entry in list(self.entries.values()):
            if entry.desired != "running":
                continue
            if entry.node == worker and entry.state in OCCUPYING and entry.spec.name not in seen:
                entry.gen = self._next_gen(entry.spec.name)   # its instance ended with the worker's last life
                self._place(entry)
            elif entry.state is V.PENDING:
                self._place(entry)

    def _adoptable(self, worker: str, item: Dict[str, Any]) -> bool:
        name = item.get("name")
        entry = self.entries.get(name) if isinstance(name, str) else None
        return (entry is not None and entry.node == worker and entry.gen == item.get("gen")
                and entry.desired == "running" and item.get("state") in {s.value for s in LIVE})

    def worker_left(self, worker: str, now: float) -> None:
        for entry in self.entries.values():
            if entry.node == worker and entry.state in LIVE:
                entry.lost_since = now
                entry.reason = f"its node {worker} is unreachable"
                self._set(entry, V.LOST)

    def drained(self, worker: str) -> None:
        """Move the node's services to other eligible workers (those with nowhere to go stay)."""
        for entry in self.entries.values():
            if entry.node != worker or entry.state not in LIVE or entry.desired != "running":
                continue
            spec = entry.spec
            if choose_for_service(self.master.sched.workers.values(), spec.requires, spec.node, {},
                                  (worker,)) is None:
                logger.warning("service %s stays on draining node %s: no other worker may run it",
                               spec.name, worker)
                continue
            self._send(worker, Op.SVC_STOP, {"name": spec.name, "gen": entry.gen, "reason": f"node {worker} drained"})

    def undrained(self) -> None:
        for entry in list(self.entries.values()):
            if entry.state is V.PENDING and entry.desired == "running":
                self._place(entry)

    def on_node(self, worker: str) -> bool:
        """Whether a service runs (or is starting) on ``worker``."""
        return any(e.node == worker and e.state in LIVE for e in self.entries.values())

    def next_deadline(self, grace_s: float) -> Optional[float]:
        times = [e.lost_since + grace_s for e in self.entries.values() if e.lost_since is not None]
        return min(times) if times else None

    def tick(self, now: float, grace_s: float) -> None:
        """Services whose node stayed away past the grace period start elsewhere."""
        for entry in list(self.entries.values()):
            if entry.lost_since is None or now < entry.lost_since + grace_s:
                continue
            old = entry.node
            entry.lost_since = None
            if entry.desired != "running":
                self._set(entry, V.STOPPED)
                continue
            entry.gen = self._next_gen(entry.spec.name)
            logger.warning("service %s: node %s did not come back within %gs; starting it elsewhere",
                           entry.spec.name, old, grace_s)
            self._place(entry, exclude=(old,) if old else ())

    # ----- answers -----------------------------------------------------------
    def _answer_when_settled(self, conn: Connection, req_id: int, names: List[str], kind: str,
                             extra: Dict[str, Any]) -> None:
        self.waiters.append((conn, req_id, names, kind, extra))
        self._settle()

    def _settle(self) -> None:
        if not self.waiters:
            return
        keep = []
        now = self.master.clock()
        for conn, req_id, names, kind, extra in self.waiters:
            entries = [self.entries.get(n) for n in names]
            if all(e is None or self._settled(e, kind) for e in entries):
                rows = [e.view(now) for e in entries if e is not None]
                self.master.hold(conn, req_id, Op.OK, {"services": rows, **extra})
            else:
                keep.append((conn, req_id, names, kind, extra))
        self.waiters = keep

    @staticmethod
    def _settled(entry: Entry, kind: str) -> bool:
        if kind == "stop":
            return entry.state not in LIVE and entry.state is not V.LOST
        return entry.state in SETTLED

    def dropped(self, conn: Connection) -> None:
        self.waiters = [w for w in self.waiters if w[0] is not conn]
