"""Elasticity on a worker: forking ephemeral children (inception) and retiring when idle.

    master scaler ──SPAWN {count}──▶ parent worker ──multiprocessing (spawn)──▶ child worker process
                                                                                 │ dials the master itself:
                                                                                 │ ephemeral, parent's tags,
                                                                                 ▼ retires when idle
    parent: each child's sentinel in its loop ──▶ joined (reaped) when it exits

Children use the ``spawn`` start method: a fresh interpreter that inherits
no sockets, pipes or directory locks from the parent, and that works the same
whether the parent runs from the sources, ``python -m titan`` or
``dist/titan.pyz``.  Each child has its own data directory under the
parent's ``children/`` and its own process ledger; when the parent starts it
reaps the directories dead children left behind.  ``--max-children`` bounds
how many live at once.

An ephemeral worker idle for ``--idle-timeout`` asks the master (RETIRE); the
master says no if it has work running or in flight to it, so a worker is
never retired while a task is being placed on it.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from titan.io.loop import Connection
from titan.io.reaper import DataDirLocked, ProcessLedger
from titan.wire.frames import Op

if TYPE_CHECKING:
    from titan.roles.worker.server import Worker

__all__ = ["Children", "child_main"]

logger = logging.getLogger(__name__)


def child_main(settings: Dict[str, Any], log_level: int) -> None:
    """The child process: a worker of its own (runs in a fresh interpreter)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from titan.roles.worker.server import Worker, WorkerConfig    # after basicConfig: log as we go
    settings = dict(settings)
    settings["data_dir"] = Path(settings["data_dir"])
    settings["tags"] = frozenset(settings["tags"])
    settings["master"] = tuple(settings["master"])
    if settings.get("tls_files"):
        from titan.sdk.tls import client_context
        settings["tls"] = client_context(*settings["tls_files"])
    worker = Worker(WorkerConfig(**settings))
    worker.serve_forever()


class Children:
    """The child workers of one worker."""

    def __init__(self, worker: "Worker") -> None:
        self.w = worker
        self.root = worker.config.data_dir.resolve() / "children"
        self.live: Dict[str, Any] = {}          # name -> multiprocessing Process
        self._next = 0
        self.idle_since = time.monotonic()
        self.retire_req = 0                    # the RETIRE request in flight, if any

    def reap_leftovers(self) -> List[str]:
        """Directories of children that died with a previous life: kill what they left, remove them."""
        notes: List[str] = []
        if not self.root.is_dir():
            return notes
        for path in sorted(self.root.iterdir()):
            ledger = ProcessLedger(path)
            try:
                ledger.lock()
            except DataDirLocked:
                continue                          # a child of a previous life still runs: leave it
            except OSError:
                continue
            try:
                notes += ledger.reap()
            finally:
                ledger.close()
            shutil.rmtree(path, ignore_errors=True)
        return notes

    def spawn(self, count: int, why: str) -> int:
        """Start up to ``count`` children, within ``--max-children``; return how many started."""
        cfg = self.w.config
        started = 0
        while started < count and len(self.live) < cfg.max_children and not self.w.stopping:
            name = self._free_name()
            settings = self._settings(name)
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=child_main, args=(settings, logging.getLogger().level), name=name,
                               daemon=True)
            try:
                proc.start()
            except OSError as exc:
                logger.error("cannot start a child worker: %s", exc)
                break
            self.live[name] = proc
            self.w.loop.register(proc.sentinel, 1, lambda mask, name=name: self._ended(name))
            logger.info("started child worker %s (pid %d): %s", name, proc.pid, why)
            started += 1
        return started

    def _free_name(self) -> str:
        while True:
            self._next += 1
            name = f"{self.w.config.name}.{self._next}"
            if not (self.root / name).exists() and name not in self.live:
                return name

    def _settings(self, name: str) -> Dict[str, Any]:
        cfg = self.w.config
        settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        settings.update(name=name, data_dir=str(self.root / name), tags=sorted(cfg.tags),
                        master=list(cfg.master), ephemeral=True, max_children=0, parent=cfg.name, tls=None,
                        tls_files=list(cfg.tls_files) if cfg.tls_files else None)
        return settings

    def _ended(self, name: str) -> None:
        proc = self.live.pop(name, None)
        if proc is None:
            return
        self.w.loop.unregister(proc.sentinel)
        self._reap(name, proc, time.monotonic() + 5.0)

    def _reap(self, name: str, proc: Any, deadline: float) -> None:
        """Reap a child whose sentinel closed: it may take a moment more to exit."""
        proc.join(0)
        code = proc.exitcode
        if code is None and time.monotonic() < deadline:
            self.w.loop.call_later(0.02, lambda: self._reap(name, proc, deadline))
            return
        logger.info("child worker %s exited (%s)", name, "retired" if code == 0 else f"exit code {code}")
        shutil.rmtree(self.root / name, ignore_errors=True)

    def stop_all(self) -> None:
        """The parent is stopping: its children stop too (SIGTERM: they finish like any worker)."""
        for proc in self.live.values():
            if proc.is_alive():
                proc.terminate()

    @property
    def count(self) -> int:
        return len(self.live)

    # ----- retiring (ephemeral workers) -------------------------------------
    def busy(self) -> None:
        self.idle_since = time.monotonic()

    def maybe_retire(self, conn: Connection) -> None:
        """Idle long enough: ask the master (it says no if it is placing work here right now)."""
        now = time.monotonic()
        if not self.w.idle():
            self.idle_since = now
            return
        cfg = self.w.config
        if not cfg.ephemeral or self.retire_req or now - self.idle_since < cfg.idle_timeout_s:
            return
        self.retire_req = self.w.new_request_id()
        conn.send(Op.RETIRE, self.retire_req, {"idle_s": round(now - self.idle_since, 1)})

    def retire_answer(self, granted: bool) -> None:
        self.retire_req = 0
        if granted and self.w.idle():
            logger.info("idle for %gs: retiring", self.w.config.idle_timeout_s)
            self.w.shutdown()
        else:
            self.idle_since = time.monotonic()
