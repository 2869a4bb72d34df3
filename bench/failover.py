#!/usr/bin/env python3
"""Failover benchmark: how fast work comes back after a worker or a service dies.

Prints ``metric value unit`` lines (medians over ``--rounds``):

- ``worker_kill_to_task_running``: from ``kill -9`` of the worker running a
  task to that task running again on the other worker (a line in a file the
  task appends to as it starts).  Master: ``--heartbeat-timeout 2
  --lost-grace 2``.  Target: at most heartbeat timeout + 1 s.  Baseline,
  ``task_submit_to_running``: the same task submitted to an idle cluster.
- ``service_crash_to_answering``: from ``kill -9`` of a deployed HTTP
  service (``backoff = 1s``) to it answering HTTP on its port again.
  Target: first restart delay + 0.5 s.  Baseline,
  ``service_cold_start_to_answering``: the same server started directly
  by this script until it answers.

Usage: ``python3 bench/failover.py [--rounds 5]``.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from titan.io import health  # noqa: E402
from titan.roles.local import LocalCluster  # noqa: E402

HEARTBEAT_TIMEOUT_S = 2.0
BACKOFF_S = 1.0
SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0, poll_s: float = 0.002) -> float:
    """Poll until ``check()``; return the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(poll_s)
    raise TimeoutError("the condition did not hold in time")


def answers(port: int) -> bool:
    return health.check(f"http://127.0.0.1:{port}/", timeout_s=0.5)[0]


def lines(path: Path) -> List[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def worker_failover(rounds: int) -> tuple:
    """(kill -> running elsewhere, submit -> running) medians, each round on a fresh cluster."""
    moved, cold = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp) / "starts"
            master_args = ["--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S), "--lost-grace", str(HEARTBEAT_TIMEOUT_S)]
            with LocalCluster(workers=1, slots=1, master_args=master_args,
                              worker_args=["--heartbeat-interval", "0.5"]) as cluster, cluster.client() as c:
                start = time.perf_counter()
                c.submit(f"echo $TITAN_NODE:$$ >> {marker}; exec sleep 60", watch=False)
                cold.append(wait_for(lambda: len(lines(marker)) >= 1) - start)
                cluster.start_worker("spare", ["--heartbeat-interval", "0.5", "--slots", "1"])
                cluster.wait_for_workers(2, time.monotonic() + 30)
                first = cluster.worker_procs[0]
                killed = time.perf_counter()
                os.kill(first.pid, signal.SIGKILL)
                back = wait_for(lambda: lines(marker)[-1].startswith("spare:"))
                moved.append(back - killed)
                first.wait()
                orphan = int(lines(marker)[0].split(":")[1])   # the killed worker's task lives on
                os.killpg(orphan, signal.SIGKILL)
    return statistics.median(moved), statistics.median(cold)


def service_restart(rounds: int) -> float:
    times = []
    with LocalCluster(workers=1, slots=1) as cluster, cluster.client() as c:
        row = c.deploy(SERVER + ["$PORT"], name="web", port="auto", health="tcp", backoff_s=BACKOFF_S,
                       stable_s=0.0, max_restarts=1000)
        for _ in range(rounds):
            wait_for(lambda: answers(row["port"]))
            pid = c.services("web")[0]["pid"]
            crashed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not answers(row["port"]), 5)
            times.append(wait_for(lambda: answers(row["port"]), 30) - crashed)
            wait_for(lambda: c.services("web")[0]["state"] == "RUNNING", 10, 0.01)
    return statistics.median(times)


def cold_start(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = time.perf_counter()
        proc = subprocess.Popen(SERVER + [str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            times.append(wait_for(lambda: answers(port)) - start)
        finally:
            proc.kill()
            proc.wait()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    moved, submitted = worker_failover(rounds)
    print(f"worker_kill_to_task_running {moved:.3f} s")
    print(f"task_submit_to_running {submitted:.3f} s")
    print(f"worker_failover_target {HEARTBEAT_TIMEOUT_S + 1.0:.3f} s")
    print(f"service_crash_to_answering {service_restart(rounds):.3f} s")
    print(f"service_cold_start_to_answering {cold_start(rounds):.3f} s")
    print(f"service_restart_target {BACKOFF_S + 0.5:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
