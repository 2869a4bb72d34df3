"""Services on a worker: spawn, watch, health-check and restart them, and report how they are.

    master ──SVC_START {name, gen, spec}──▶ ServiceRunner ──spawn──▶ process group (a Job keyed ("@NAME", gen))
           ──SVC_STOP {name, gen}────────▶      │   ◀── exit, via the worker's pipe/exit watching
           ◀──SVC_STATE {name, gen, state, pid, port, ...}── on every change; HELLO lists them all

The restart decisions are :class:`titan.core.service.Supervision`'s; this
module carries them out with the worker's loop, so a service keeps being
supervised while the master is away.  ``gen`` counts deployments: a START
with a newer ``gen`` replaces the running instance (stopped first, then
started), one with the same ``gen`` is already done.  Output goes to the
master as the log ``@NAME`` attempt ``gen``; restarts leave a marker line in it.
"""
from __future__ import annotations

import logging
import random
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from titan.core.service import (LIVE, STARTING_PROBE_S, STARTUP_S, ServiceSpec, ServiceState, Supervision,
                                service_from_wire)
from titan.errors import UsageError
from titan.io import health
from titan.io.loop import Timer
from titan.wire.frames import Op

if TYPE_CHECKING:
    from titan.roles.worker.server import Job, Worker

__all__ = ["ServiceRunner", "port_in_use", "free_port"]

logger = logging.getLogger(__name__)

V = ServiceState
END = frozenset({V.STOPPED, V.EXITED, V.FATAL})


def port_in_use(port: int) -> bool:
    """Whether a TCP port is taken on this host (a listener on any address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a TIME_WAIT leftover does not count
        sock.bind(("0.0.0.0", port))
        return False
    except OSError:
        return True
    finally:
        sock.close()


def free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class ServiceRun:
    """One deployed service on this worker."""

    __slots__ = ("name", "gen", "spec", "sup", "job", "port", "timer", "probe", "replacement")

    def __init__(self, name: str, gen: int, spec: ServiceSpec) -> None:
        self.name = name
        self.gen = gen
        self.spec = spec
        self.sup = Supervision(spec, random.random)
        self.job: Optional["Job"] = None
        self.port: Optional[int] = None
        self.timer: Optional[Timer] = None
        self.probe: Optional[health.Probe] = None
        self.replacement: Optional[Dict[str, Any]] = None   # a newer SVC_START waiting for this one to stop

    @property
    def files(self) -> Dict[str, Any]:
        """The spec's files as DISPATCH carries them: path -> [sha256, executable]."""
        return {path: [sha, executable] for path, sha, executable in self.spec.files}

    @property
    def key(self) -> tuple:
        return ("@" + self.name, self.gen)

    def cancel_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None


class ServiceRunner:
    """The worker's services, by name."""

    def __init__(self, worker: "Worker") -> None:
        self.w = worker
        self.runs: Dict[str, ServiceRun] = {}
        self.root = worker.config.data_dir.resolve() / "services"
        self.root.mkdir(parents=True, exist_ok=True)

    # ----- requests from the master ----------------------------------------
    def start(self, body: Dict[str, Any]) -> None:
        """SVC_START: run generation ``gen`` of a service (replacing an older one)."""
        name, gen = body.get("name"), body.get("gen")
        if not isinstance(name, str) or not isinstance(gen, int):
            return
        current = self.runs.get(name)
        if current is not None and current.gen >= gen:
            self._report(current)                  # a repeat: say how it is
            return
        if current is not None and current.sup.state in LIVE:
            current.replacement = body             # stop the old one first (it may hold the port)
            self._stop(current, "replaced by a new deployment")
            return
        if current is not None:
            current.cancel_timers()
        try:
            spec = service_from_wire(body.get("spec"))
        except UsageError as exc:
            self._send({"name": name, "gen": gen, "state": V.FATAL.value, "reason": str(exc)})
            return
        run = self.runs[name] = ServiceRun(name, gen, spec)
        hint = body.get("port")
        self._launch(run, hint if isinstance(hint, int) and 0 < hint < 65536 else None)

    def stop(self, body: Dict[str, Any]) -> None:
        """SVC_STOP: stop it for good (the master restarts it elsewhere if it wants to)."""
        name = body.get("name")
        run = self.runs.get(name) if isinstance(name, str) else None
        if run is None:
            if isinstance(name, str):
                self._send({"name": name, "gen": body.get("gen") or 0, "state": V.STOPPED.value,
                            "reason": "not running here"})
            return
        gen = body.get("gen")
        if run.replacement is not None and isinstance(gen, int) and gen < run.replacement.get("gen", 0):
            return                                 # an older generation: it is being replaced anyway
        run.replacement = None
        self._stop(run, str(body.get("reason") or "stopped"))

    def _stop(self, run: ServiceRun, reason: str) -> None:
        state = run.sup.state
        if state in (V.STARTING, V.RUNNING):
            run.sup.stopping("stop")
            self._report(run)
            self._signal(run, reason)
        elif state is V.STOPPING:
            run.sup.intent = "stop"
        elif state is V.BACKOFF:
            run.cancel_timers()
            run.sup.stopped()
            self._ended(run)
        else:
            self._ended(run)

    def _signal(self, run: ServiceRun, reason: str) -> None:
        if run.job is None:
            return
        if run.probe is not None:
            run.probe.cancel()
            run.probe = None
        sig = getattr(signal, run.spec.stop_signal, signal.SIGTERM)
        self.w.terminate(run.job, reason, grace_s=run.spec.stop_grace_s, sig=sig)

    # ----- running ----------------------------------------------------------
    def _launch(self, run: ServiceRun, hint: Optional[int] = None) -> None:
        """Resolve the port (``auto``: the one it had before if free), then spawn."""
        spec = run.spec
        if spec.port == 0:
            run.port = hint if hint is not None and not port_in_use(hint) else free_port()
        elif spec.port is not None:
            run.port = spec.port
        missing = self.w.files.missing(run.files)
        if missing:
            self.w.files.fetch_for(run.key, {"service": run.name, "gen": run.gen}, missing)
            return
        self.spawn(run)

    def files_ready(self, name: str, gen: int, error: str) -> None:
        run = self.runs.get(name)
        if run is None or run.gen != gen or run.sup.state in LIVE:
            return
        if error:
            run.sup.fatal(error)
            self._ended(run)
        else:
            self.spawn(run)

    def spawn(self, run: ServiceRun) -> None:
        run.timer = None
        if run.name not in self.runs or self.runs[run.name] is not run:
            return
        if run.port is not None and port_in_use(run.port):
            run.sup.fatal(f"port {run.port} is already in use on {self.w.config.name}: stop what listens "
                          f"there, or deploy with another port (or port = auto)")
            logger.error("service %s: %s", run.name, run.sup.reason)
            self._ended(run)
            return
        workspace = self.root / run.name
        workspace.mkdir(parents=True, exist_ok=True)
        env = self._env(run, workspace)
        try:
            self.w.files.materialise(run.files, workspace)
            job = self.w.spawn_job(run.key, self._argv(run), workspace, env, service=run.name)
        except (OSError, ValueError) as exc:
            run.sup.fatal(f"cannot start {run.spec.argv[0]!r}: {getattr(exc, 'strerror', None) or exc}")
            self._ended(run)
            return
        run.job = job
        run.sup.start(time.time())
        logger.info("service %s (deployment %d) started: pid %d%s", run.name, run.gen, job.spawned.pid,
                    f", port {run.port}" if run.port is not None else "")
        self._report(run)
        if run.spec.health:
            run.timer = self.w.loop.call_later(STARTING_PROBE_S, lambda: self._check(run, job))
        else:
            run.timer = self.w.loop.call_later(STARTUP_S, lambda: self._startup_over(run, job))

    @staticmethod
    def _argv(run: ServiceRun) -> List[str]:
        """The command with ``$PORT`` filled in (an argv list has no shell to do it)."""
        if run.port is None:
            return list(run.spec.argv)
        port = str(run.port)
        return [a.replace("${PORT}", port).replace("$PORT", port) for a in run.spec.argv]

    def _env(self, run: ServiceRun, workspace: Path) -> Dict[str, str]:
        env = self.w.base_env.copy()
        env.update(dict(run.spec.env))
        if run.port is not None:
            env["PORT"] = str(run.port)
        env["TITAN_SERVICE"] = run.name
        env["TITAN_WORKSPACE"] = str(workspace)
        return env

    def _startup_over(self, run: ServiceRun, job: "Job") -> None:
        run.timer = None
        if run.job is job and run.sup.state is V.STARTING:
            run.sup.up(time.time())
            self._report(run)

    def _check(self, run: ServiceRun, job: "Job") -> None:
        run.timer = None
        if run.job is not job or run.sup.state not in (V.STARTING, V.RUNNING):
            return
        target = run.spec.health or "tcp"
        if run.port is not None:
            target = target.replace("$PORT", str(run.port)).replace("${PORT}", str(run.port))
        run.probe = health.probe(self.w.loop, target, run.port, run.spec.health_timeout_s,
                                 lambda ok, detail: self._checked(run, job, ok, detail))

    def _checked(self, run: ServiceRun, job: "Job", ok: bool, detail: str) -> None:
        run.probe = None
        if run.job is not job:
            return
        before = (run.sup.state, bool(run.sup.failures))
        restart = run.sup.health(ok, detail, time.time())
        if restart:
            logger.warning("service %s: %s; restarting it", run.name, run.sup.health_note)
            run.sup.stopping("restart")
            self._report(run)
            self._signal(run, f"health check failed: {detail}")
            return
        if (run.sup.state, bool(run.sup.failures)) != before:
            self._report(run)
        pause = STARTING_PROBE_S if run.sup.state is V.STARTING else run.spec.health_interval_s
        run.timer = self.w.loop.call_later(pause, lambda: self._check(run, job))

    def exited(self, job: "Job", how: str) -> None:
        """The worker saw the service's process end (reaped, pipes drained)."""
        name = job.service
        run = self.runs.get(name) if name else None
        if run is None or run.job is not job:
            return
        run.job = None
        run.cancel_timers()
        failed = job.exit_code != 0 or run.sup.intent == "restart"
        if run.sup.intent == "restart" and run.sup.health_note:
            how = f"unhealthy: {run.sup.health_note}"        # killed for failing its health check
        delay = run.sup.exited(how or "exited", failed, time.time())
        if run.replacement is not None:
            body, run.replacement = run.replacement, None
            del self.runs[run.name]
            self.start(body)
            return
        if delay is None:
            self._ended(run)
            return
        note = f"\n[titan: service {run.name} {how or 'exited'}; restart {run.sup.restarts} in {delay:.1f}s]\n"
        self.w.output(run.key, "err", note.encode())
        logger.warning("service %s %s; restart %d in %.1fs", run.name, how or "exited", run.sup.restarts, delay)
        self._report(run)
        run.timer = self.w.loop.call_later(delay, lambda: self.spawn(run))

    def _ended(self, run: ServiceRun) -> None:
        """STOPPED, EXITED or FATAL: say so; it leaves the table once the master knows."""
        if run.sup.state is V.FATAL:
            self.w.output(run.key, "err", f"\n[titan: service {run.name} FATAL: {run.sup.reason}]\n".encode())
        self._report(run)
        if self.w.connected():
            self.runs.pop(run.name, None)

    # ----- reporting ------------------------------------------------------
    def view(self, run: ServiceRun) -> Dict[str, Any]:
        body = run.sup.view()
        body.update(name=run.name, gen=run.gen, port=run.port,
                    pid=run.job.spawned.pid if run.job is not None else None)
        return body

    def _report(self, run: ServiceRun) -> None:
        self._send(self.view(run))

    def _send(self, body: Dict[str, Any]) -> None:
        conn = self.w.ready_conn()
        if conn is not None:                    # while away, HELLO carries the latest of each
            conn.send(Op.SVC_STATE, 0, body)

    def hello(self) -> List[Dict[str, Any]]:
        return [self.view(run) for run in self.runs.values()]

    def registered(self) -> None:
        """The master has the HELLO list: forget the ones that had ended."""
        for name in [n for n, run in self.runs.items() if run.sup.state in END]:
            del self.runs[name]

    def shutdown(self, grace_s: float) -> None:
        """The worker is stopping: stop every service (no restarts)."""
        for run in list(self.runs.values()):
            run.replacement = None
            if run.sup.state in (V.STARTING, V.RUNNING) and run.job is not None:
                run.sup.stopping("stop")
                sig = getattr(signal, run.spec.stop_signal, signal.SIGTERM)
                self.w.terminate(run.job, "worker shutting down", grace_s=min(grace_s, run.spec.stop_grace_s),
                                 sig=sig)
                self._report(run)
            elif run.sup.state is V.BACKOFF:
                run.cancel_timers()
                run.sup.stopped()
                run.sup.reason = "worker shutting down"
                self._report(run)
