#!/usr/bin/env python3
"""Durable submissions through the master: how many per second 50 clients get acknowledged.

A submission counts once its OK has arrived, which the master sends only
after the task's record is fsynced (``--appendfsync always``, the default).
The master has no workers, so the measure is the submission path alone.
Clients: 5 processes x 10 connections, each pipelining its share.

Prints ``metric value unit`` lines; the baseline printed alongside is the
same load against ``--appendfsync no`` (the cost of durability).  Target
(issue: TitanStore): at least 10,000 durable submissions per second.
Usage: ``python3 bench/submit.py [--total 50000]``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from titan.roles.local import LocalCluster  # noqa: E402
from titan.sdk.client import Client  # noqa: E402

PROCESSES = 5
CONNECTIONS = 10


def _client_process(args: Tuple[str, int, "multiprocessing.synchronize.Barrier"]) -> Tuple[float, float, int]:
    address, per_connection, barrier = args
    clients = [Client(address, token="") for _ in range(CONNECTIONS)]
    barrier.wait()
    start = time.perf_counter()
    handles: List = []
    for _ in range(per_connection):
        for c in clients:
            handles.append(c.submit(["true"], name="bench"))
    ids = {h.id for h in handles}             # waits for every OK
    end = time.perf_counter()
    for c in clients:
        c.close()
    return start, end, len(ids)


def measure(fsync: str, total: int) -> float:
    per_connection = total // (PROCESSES * CONNECTIONS)
    with LocalCluster(workers=0, master_args=["--appendfsync", fsync]) as cluster:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Manager().Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            spans = pool.map(_client_process, [(cluster.address, per_connection, barrier)] * PROCESSES)
    done = sum(n for _, _, n in spans)
    return done / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total", type=int, default=50_000)
    args = parser.parse_args()
    durable = measure("always", args.total)
    print(f"durable_submissions {durable:.0f} submissions/s", flush=True)
    relaxed = measure("no", args.total)
    print(f"submissions_without_fsync {relaxed:.0f} submissions/s")
    print(f"durability_cost {100 * (1 - durable / relaxed):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
