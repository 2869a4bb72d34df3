"""A client that drops its task and run handles does not keep their results.

The master pushes every watched task's result to the client. A program that
submits work for hours without keeping the Task objects (fire and forget)
must not collect all those results in memory: once a handle is gone, what
arrives for it is dropped.
"""
from __future__ import annotations

from typing import Callable

from conftest import wait_until
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]


def test_results_of_dropped_task_handles_are_not_kept(cluster: Cluster) -> None:
    # Given a client on a cluster of one worker with one slot (tasks end in the order submitted)
    local = cluster(workers=1, slots=1)
    with local.client() as c:
        # When it submits 60 tasks without keeping their handles, and keeps one more
        for _ in range(60):
            c.submit(["true"], name="dropped")
        kept = c.submit(["true"], name="kept")
        # Then the kept one still gets its result, after all the dropped ones ran
        assert kept.result(timeout=60).state == "SUCCEEDED"
        assert c.status("dropped#60")["state"] == "SUCCEEDED"
        # And after one more request the client holds nothing for any of them
        c.nodes()
        assert c._pending == {}


def test_a_dropped_run_handle_is_forgotten_and_a_kept_one_still_waits(cluster: Cluster) -> None:
    local = cluster(workers=1, slots=2)
    job = {"name": "pair", "tasks": [{"name": "a", "command": ["true"]},
                                     {"name": "b", "command": ["true"], "after": ["a"]}]}
    with local.client() as c:
        # Given a run whose handle is dropped at once and one whose handle is kept
        c.submit_job(job)
        kept = c.submit_job(job)
        # When both have ended
        assert kept.wait(timeout=60).state == "SUCCEEDED"
        wait_until(lambda: all(r["state"] == "SUCCEEDED" for r in c.runs("pair")), 30, "both runs to end")
        # Then the client keeps nothing for either of them
        assert c._pending == {}
