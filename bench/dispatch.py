#!/usr/bin/env python3
"""Dispatch benchmark: Titan's task latency and throughput against the spawn limit.

Prints ``metric value unit`` lines:

- ``spawn_limit``: how fast this machine runs ``subprocess.run(["true"])``
  from 2 threads (the ceiling for any runtime that starts a process per task);
- ``latency_median`` / ``latency_p90``: submit-to-result time of one ``true``
  task on a local master + 2 workers x 2 slots, one task at a time, next to
  ``spawn_latency_median``, one bare ``subprocess.run(["true"])``;
- ``throughput``: 2,000 ``true`` tasks submitted at once, and its ratio to the
  spawn limit measured in the same run.

The baseline and Titan's measures alternate (``--rounds``, default 5) and
the medians are printed, so a shared host's drift does not favour either;
``throughput_vs_spawn_limit_min`` / ``_max`` give the spread of the rounds.

Targets (issue: core runtime): latency median <= 1.5 ms, throughput >= 70% of
the spawn limit.  Usage: ``python3 bench/dispatch.py [--tasks 2000] [--samples 200]``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from titan.roles.local import LocalCluster  # noqa: E402


def spawn_limit(total: int, threads: int = 2) -> float:
    """Processes per second that ``subprocess.run(["true"])`` reaches."""
    per_thread = total // threads

    def work() -> None:
        for _ in range(per_thread):
            subprocess.run(["true"], check=True)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return per_thread * threads / (time.perf_counter() - start)


def spawn_latency(samples: int) -> list:
    """Seconds per ``subprocess.run(["true"])``: the floor under any one task's latency."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append(time.perf_counter() - start)
    return times


def latency(client, samples: int) -> list:
    for _ in range(20):                      # warm up both workers
        client.submit(["true"]).result(timeout=30)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        result = client.submit(["true"]).result(timeout=30)
        times.append(time.perf_counter() - start)
        assert result.state == "SUCCEEDED", result
    return times


def throughput(client, tasks: int) -> float:
    start = time.perf_counter()
    handles = [client.submit(["true"]) for _ in range(tasks)]
    for h in handles:
        assert h.result(timeout=120).state == "SUCCEEDED"
    return tasks / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5,
                        help="baseline and Titan alternate this many times (medians are printed)")
    args = parser.parse_args()
    limits, rates, times, floors = [], [], [], []
    with LocalCluster(workers=2, slots=2) as cluster:
        with cluster.client() as c:
            for _ in range(args.rounds):      # interleaved, so drift on a shared host hits both alike
                limits.append(spawn_limit(args.tasks))
                rates.append(throughput(c, args.tasks))
                times += latency(c, args.samples // args.rounds)
                floors += spawn_latency(args.samples // args.rounds)
    times.sort()
    limit, rate = statistics.median(limits), statistics.median(rates)
    print(f"spawn_limit {limit:.0f} tasks/s")
    print(f"latency_median {statistics.median(times) * 1000:.3f} ms")
    print(f"latency_p90 {times[int(len(times) * 0.9)] * 1000:.3f} ms")
    print(f"spawn_latency_median {statistics.median(floors) * 1000:.3f} ms")
    print(f"throughput {rate:.0f} tasks/s")
    print(f"throughput_vs_spawn_limit {rate / limit * 100:.1f} %")
    ratios = [r / lim * 100 for r, lim in zip(rates, limits)]
    print(f"throughput_vs_spawn_limit_min {min(ratios):.1f} %")
    print(f"throughput_vs_spawn_limit_max {max(ratios):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
