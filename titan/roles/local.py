"""A one-command local cluster: one master and N workers as child processes.

``titan up`` uses it, and so do the end-to-end tests.  Every process it
starts runs in its own session and is stopped (TERM, grace, KILL of the whole
group) by :meth:`LocalCluster.stop`, also when start-up fails half-way.

If the process holding the cluster dies without stopping it (``kill -9``, a
closed terminal), the cluster stops by itself: each child's standard input
is a pipe whose only writer is that process (``--with-parent``), and its end
of file stops the child as SIGTERM would.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from titan.errors import TitanError
from titan.io.proc import titan_command, titan_env
from titan.sdk.client import Client

__all__ = ["LocalCluster"]


class LocalCluster:
    """Start, reach and stop a master plus ``workers`` workers on loopback."""

    def __init__(self, *, workers: int = 2, slots: Optional[int] = None, data_dir: Optional[Path] = None,
                 token: Optional[str] = None, bind: str = "127.0.0.1:0",
                 master_args: Sequence[str] = (), worker_args: Sequence[str] = (),
                 worker_tags: Sequence[str] = (), first_worker_tags: Sequence[str] = ()) -> None:
        self.workers = workers
        self.slots = slots
        self.token = token
        self.bind = bind
        self.master_args = list(master_args)
        self.worker_args = list(worker_args)
        self.worker_tags = list(worker_tags)
        self.first_worker_tags = list(first_worker_tags)     # local-1's own, on top of worker_tags
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="titan-up-"))
        self.master: Optional[subprocess.Popen] = None
        self.worker_procs: List[subprocess.Popen] = []
        self.address = ""
        self._lifeline: Optional[Tuple[int, int]] = None     # the pipe whose end stops the children

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict:
        env = titan_env()
        if self.token:
            env["TITAN_TOKEN"] = self.token
        else:
            env.pop("TITAN_TOKEN", None)
        return env

    def _spawn(self, args: List[str], log_name: str) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._lifeline is None:
            self._lifeline = os.pipe()      # (not inherited: only the children's stdin is its read end)
        log = open(self.data_dir / log_name, "ab")
        try:
            proc = subprocess.Popen(titan_command() + args + ["--with-parent"], stdin=self._lifeline[0],
                                    stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        finally:
            log.close()
        # each child's pid next to its log, so whoever cleans up after a crash can find it
        (self.data_dir / log_name).with_suffix(".pid").write_text(f"{proc.pid}\n")
        return proc

    def start(self, timeout_s: float = 30.0) -> str:
        """Start everything; return the master's address once all workers are ready."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        master_dir = self.data_dir / "master"
        addr_file = master_dir / "master.addr"
        if addr_file.exists():
            addr_file.unlink()
        self.master = self._spawn(["master", "--bind", self.bind, "--data", str(master_dir)]
                                  + self.master_args, "master.log")
        while not addr_file.exists():
            self._check_alive(self.master, "master", deadline)
        self.address = addr_file.read_text().strip()
        for i in range(1, self.workers + 1):
            self.start_worker(f"local-{i}")
        self.wait_for_workers(self.workers, deadline)
        return self.address

    def start_worker(self, name: str, extra: Sequence[str] = ()) -> subprocess.Popen:
        args = ["worker", "--master", self.address, "--name", name,
                "--data", str(self.data_dir / name)]
        if self.slots:
            args += ["--slots", str(self.slots)]
        own = self.worker_tags + (self.first_worker_tags if name == "local-1" else [])
        if own:
            args += ["--tags", ",".join(sorted(set(own)))]
        proc = self._spawn(args + self.worker_args + list(extra), f"{name}.log")
        self.worker_procs.append(proc)
        return proc

    def wait_for_workers(self, count: int, deadline: float) -> None:
        while True:
            assert self.master is not None
            self._check_alive(self.master, "master", deadline)
            for proc in self.worker_procs:
                self._check_alive(proc, "worker", deadline, sleep=False)
            try:
                with self.client(timeout=2.0) as c:
                    ready = [n for n in c.nodes() if n.get("state") == "ready"]
            except (TitanError, OSError):
                ready = []
            if len(ready) >= count:
                return
            time.sleep(0.02)

    def _check_alive(self, proc: subprocess.Popen, what: str, deadline: float, sleep: bool = True) -> None:
        if proc.poll() is not None:
            raise TitanError(f"the local {what} exited with code {proc.returncode}; "
                             f"see the logs in {self.data_dir}")
        if time.monotonic() > deadline:
            raise TitanError(f"the local cluster did not start in time; see the logs in {self.data_dir}")
        if sleep:
            time.sleep(0.01)

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.address, token=self.token, timeout=timeout)

    def stop(self, grace_s: float = 5.0) -> None:
        """TERM every process group we started, then KILL what is left."""
        procs = self.worker_procs + ([self.master] if self.master else [])
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.worker_procs = []
        self.master = None
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
