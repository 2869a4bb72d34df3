#!/usr/bin/env python3
"""DAG benchmark: a 1 -> 500 -> 1 run, 100,000 queued tasks, and the pure scheduling core.

Prints ``metric value unit`` lines:

- ``dag_1_500_1_wall``: submit-to-finish time (median of 5) of a run of 502 ``true`` tasks
  (one fans out to 500 which join into one) on a local master + 2 workers x
  2 slots; the baseline measured alongside is the same 502 processes run
  with ``subprocess.run`` from 4 threads (what 4 slots could do at best);
- ``queued_task_memory``: the master's resident memory per queued task, for
  100,000 tasks queued with no worker to take them;
- ``core_tasks_per_s``: tasks scheduled and completed per second by the pure
  Scheduler with fake workers (no processes, no sockets).

Targets (issue: job files, DAG runs and cron): 1 -> 500 -> 1 in at most
0.3 s (Ray 0.31 s, Dask 0.52 s here); at most 1 KiB per queued task; at
least 50,000 tasks/s in the core.  Usage: ``python3 bench/dag.py``.
"""
from __future__ import annotations

import collections
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from titan.core.scheduler import Dispatch, Scheduler  # noqa: E402
from titan.roles.local import LocalCluster  # noqa: E402
from titan.testing import make_spec  # noqa: E402

FAN = 500


def fan_job() -> dict:
    tasks = [{"name": "split", "command": ["true"]}]
    tasks += [{"name": f"m{i}", "command": ["true"], "after": ["split"]} for i in range(FAN)]
    tasks.append({"name": "join", "command": ["true"], "after": [f"m{i}" for i in range(FAN)]})
    return {"name": "fan", "tasks": tasks}


def baseline_502(threads: int = 4) -> float:
    count = [FAN + 2]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if count[0] == 0:
                    return
                count[0] -= 1
            subprocess.run(["true"], check=True)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def dag_wall(cluster: LocalCluster, runs: int = 5) -> float:
    """Median submit-to-finish time of ``runs`` runs, after one to warm up."""
    walls = []
    with cluster.client() as c:
        c.submit_job(fan_job()).wait(timeout=120)          # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            result = c.submit_job(fan_job()).wait(timeout=120)
            walls.append(time.perf_counter() - start)
            assert result.ok, result
    return statistics.median(walls)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def queued_memory(count: int = 100_000) -> float:
    with LocalCluster(workers=0) as cluster:
        assert cluster.master is not None
        with cluster.client() as c:
            c.submit("true", name="warm", watch=False)
            before = rss_bytes(cluster.master.pid)
            with c.batch():
                tasks = [c.submit(["true"], name="queued", watch=False) for _ in range(count)]
            tasks[-1].id
            time.sleep(0.5)
            after = rss_bytes(cluster.master.pid)
    return (after - before) / count


def core_rate(count: int = 100_000) -> float:
    s = Scheduler()
    for i in range(4):
        s.worker_joined(f"w{i}", [], 8, 0.0)
    spec = make_spec(["true"])
    running: "collections.deque[Dispatch]" = collections.deque()

    def finish_one() -> None:
        d = running.popleft()
        running.extend(a for a in s.attempt_finished(d.worker, d.task_id, d.attempt, 0, "", 1.0)
                       if isinstance(a, Dispatch))

    start = time.perf_counter()
    for i in range(count):
        running.extend(a for a in s.task_submitted(f"t#{i}", spec, 0.0) if isinstance(a, Dispatch))
        while len(running) >= 32:
            finish_one()
    while running:
        finish_one()
    return count / (time.perf_counter() - start)


def main() -> int:
    base = statistics.median(baseline_502() for _ in range(5))
    with LocalCluster(workers=2, slots=2) as cluster:
        wall = dag_wall(cluster)
    print(f"dag_1_500_1_wall {wall:.3f} s")
    print(f"dag_1_500_1_baseline_4_threads {base:.3f} s")
    print(f"queued_task_memory {queued_memory():.0f} bytes")
    print(f"core_tasks_per_s {core_rate():.0f} tasks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
