"""The command line for jobs and runs: submit, trigger, runs, jobs, and ``up FILE``.

Kept apart from :mod:`titan.cli` (which parses every verb and owns the exit
codes); these functions get the parsed arguments and a connected client.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional

from titan.core.jobfile import JobFileError
from titan.sdk.client import Client
from titan.sdk.runs import Run, RunResult

__all__ = ["submit", "trigger", "show_runs", "show_jobs", "show_run", "run_file", "print_problems"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_problems(exc: JobFileError) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    return EXIT_USAGE


def _progress(event: Dict[str, Any]) -> None:
    node = f" on {event['node']}" if event.get("node") else ""
    why = f" ({event['reason']})" if event.get("reason") and event.get("state") != "SUCCEEDED" else ""
    print(f"{event['id']}  {event['state']}{node}{why}", file=sys.stderr, flush=True)


def _finish(run: Run, wait: bool, as_json: bool, printer: Callable[[Any], None]) -> int:
    if not wait:
        if as_json:
            printer({"run": run.id, "tasks": run.task_ids})
        else:
            print(run.id or "(registered; the job runs on its schedule)")
        return EXIT_OK
    result = run.wait()
    if as_json:
        printer({"run": result.id, "state": result.state, "tasks": result.tasks})
    else:
        print(f"{result.id}  {result.state}")
    return EXIT_OK if result.ok else EXIT_FAILED


def submit(c: Client, path: str, *, wait: bool, as_json: bool, printer: Callable[[Any], None]) -> int:
    try:
        run = c.submit_file(path, watch=wait, on_task=None if as_json else _progress)
    except JobFileError as exc:
        return print_problems(exc)
    if run.id and not as_json and wait:
        print(f"titan: {run.id} started: {len(run.task_ids)} tasks", file=sys.stderr)
    return _finish(run, wait, as_json, printer)


def trigger(c: Client, job: str, *, wait: bool, as_json: bool, printer: Callable[[Any], None]) -> int:
    run = c.trigger(job, watch=wait, on_task=None if as_json else _progress)
    return _finish(run, wait, as_json, printer)


def _table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def show_runs(c: Client, job: Optional[str], as_json: bool, printer: Callable[[Any], None]) -> int:
    runs = c.runs(job)
    if as_json:
        printer(runs)
        return EXIT_OK
    rows = [["RUN", "STATE", "TASKS", "COUNTS"]]
    for r in runs:
        counts = " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items()))
        rows.append([r["id"], r["state"], str(r["tasks"]), counts])
    _table(rows)
    return EXIT_OK


def show_jobs(c: Client, as_json: bool, printer: Callable[[Any], None]) -> int:
    jobs = c.jobs()
    if as_json:
        printer(jobs)
        return EXIT_OK
    rows = [["JOB", "TASKS", "SCHEDULE", "NEXT", "RUNS", "LAST RUN", "LAST STATE"]]
    for j in jobs:
        when = f"{j['schedule']} {j['timezone']}" if j.get("schedule") else "-"
        rows.append([j["name"], str(j["tasks"]), when, j.get("next") or "-", str(j["runs"]),
                     j.get("last_run") or "-", j.get("last_state") or "-"])
    _table(rows)
    return EXIT_OK


def show_run(view: Dict[str, Any]) -> int:
    print(f"{view['id']}  {view['state']}")
    for t in view["tasks"]:
        node = f" on {t['node']}" if t.get("node") else ""
        after = f"  (after {', '.join(a.rsplit('/', 1)[-1] for a in t['after'])})" if t.get("after") else ""
        reason = f"  {t['reason']}" if t.get("reason") and t["state"] != "SUCCEEDED" else ""
        print(f"  {t['id'].rsplit('/', 1)[-1]:<16} {t['state']:<10}{node}{after}{reason}")
    return EXIT_OK


def run_file(c: Client, path: str) -> int:
    """``titan up FILE``: run the job once on the local cluster, then show each task's output."""
    try:
        run = c.submit_file(path, start=True, on_task=_progress)
    except JobFileError as exc:
        return print_problems(exc)
    result: RunResult = run.wait()
    for task_id in run.task_ids:
        output = b"".join(c.logs(task_id)).decode("utf-8", "replace")
        if output:
            print(f"--- {task_id}")
            print(output, end="" if output.endswith("\n") else "\n")
    print(f"{result.id}  {result.state}")
    return EXIT_OK if result.ok else EXIT_FAILED
