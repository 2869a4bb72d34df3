"""The job and schedule verbs: ``check``, ``submit``, ``trigger``, ``runs``, ``jobs [rm]``, ``dead``, ``cron``.

Also owns how a run is shown (``titan status RUN``) and ``titan up FILE.ini``
(:func:`run_file`), which :mod:`titan.cli.tasks` calls. ``check`` and
``cron`` work offline; the others talk to the master through the SDK.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Dict, List, Set, Tuple

from titan.cli.common import (EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, fail, make_client, print_json,
                              show_list)
from titan.core.jobfile import JobFileError
from titan.errors import UnknownJob, UsageError
from titan.sdk.client import Client
from titan.sdk.runs import Run, RunResult
from titan.sdk.services import load_job_file

__all__ = ["cmd_check", "cmd_submit", "cmd_trigger", "cmd_runs", "cmd_jobs", "cmd_dead", "cmd_cron",
           "show_run", "run_file", "required_tags", "print_problems"]


def print_problems(exc: JobFileError) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    return EXIT_USAGE


def _progress(event: Dict[str, Any]) -> None:
    """One line per change of a task's state: queued (and why it waits), running, ended."""
    state = event.get("state")
    node = f" on {event['node']}" if event.get("node") and state not in ("QUEUED", "WAITING") else ""
    notes = [f"attempt {event['attempt']}"] if state == "RUNNING" and (event.get("attempt") or 0) > 1 else []
    if event.get("reason") and state != "SUCCEEDED":
        notes.append(event["reason"])
    why = f" ({'; '.join(notes)})" if notes else ""
    print(f"{event['id']}  {state}{node}{why}", file=sys.stderr, flush=True)


def _finish(run: Run, wait: bool, as_json: bool) -> int:
    if not wait or not run.id:
        if as_json:
            print_json({"run": run.id, "tasks": run.task_ids, "services": run.services})
            return EXIT_OK
        if run.services:
            print(f"services deployed: {', '.join(run.services)} (`titan ps` shows them)")
        if run.id or not run.services:
            print(run.id or "(registered; the job runs on its schedule)")
        return EXIT_OK
    if not as_json:
        count = len(run.task_ids)
        print(f"titan: {run.id} started: {count} task{'s' if count != 1 else ''}", file=sys.stderr)
    result = run.wait()
    if as_json:
        print_json({"run": result.id, "state": result.state, "tasks": result.tasks})
    else:
        print(f"{result.id}  {result.state}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_check(args: argparse.Namespace) -> int:
    failed, report = False, []
    for name in args.files:
        try:
            spec, _ = load_job_file(name)
        except JobFileError as exc:
            failed = True
            report.append({"file": name, "ok": False, "problems": [str(p) for p in exc.problems]})
            if not args.json:
                print_problems(exc)
        else:
            report.append({"file": name, "ok": True, "job": spec.name, "summary": spec.summary()})
            if not args.json:
                print(f"{name}: ok ({spec.summary()})")
    if args.json:
        print_json(report)
    return EXIT_USAGE if failed else EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    """Register a job file's job; start (and with --wait, follow) a run unless it has a schedule."""
    try:
        spec, read = load_job_file(args.file)   # a bad file is reported as such, even with no master to reach
    except JobFileError as exc:
        return print_problems(exc)
    with make_client(args) as c:
        run = c.submit_spec(spec, read, watch=args.wait, on_task=None if args.json else _progress)
        return _finish(run, args.wait, args.json)


def cmd_trigger(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        run = c.trigger(args.job, watch=args.wait, on_task=None if args.json else _progress)
        return _finish(run, args.wait, args.json)


def cmd_runs(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        runs = c.runs(args.job)
    return show_list(args, runs, ["RUN", "STATE", "TASKS", "COUNTS"], lambda r: [
        r["id"], r["state"], str(r["tasks"]), " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items()))])


def cmd_jobs(args: argparse.Namespace) -> int:
    if getattr(args, "jobs_action", None) == "rm":
        return _remove_jobs(args)
    with make_client(args) as c:
        jobs = c.jobs()
    return show_list(args, jobs, ["JOB", "TASKS", "SCHEDULE", "NEXT", "RUNS", "LAST RUN", "LAST STATE"], lambda j: [
        j["name"], str(j["tasks"]), f"{j['schedule']} {j['timezone']}" if j.get("schedule") else "-",
        j.get("next") or "-", str(j["runs"]), j.get("last_run") or "-", j.get("last_state") or "-"])


def _remove_jobs(args: argparse.Namespace) -> int:
    """``titan jobs rm NAME...``: each known job is removed even when another name is unknown (exit 4)."""
    removed: List[Dict[str, Any]] = []
    code = EXIT_OK
    with make_client(args) as c:
        for name in args.names:
            try:
                removed.append(c.remove_job(name))
            except UnknownJob as exc:
                code = fail(exc.message, EXIT_NOT_FOUND)
    if args.json:
        print_json(removed)
    else:
        for reply in removed:
            print(_removed_line(reply))
    return code


def _removed_line(reply: Dict[str, Any]) -> str:
    """``etl: removed``, and what goes on without it: runs that started, services deployed with it."""
    notes = []
    active = reply.get("active_runs") or []
    if active:
        notes.append(f"{len(active)} run(s) still going, not cancelled: {', '.join(active)}")
    if reply.get("services"):
        notes.append(f"its services keep running: {', '.join(reply['services'])} (`titan stop NAME --remove`)")
    return f"{reply['job']}: removed" + (f" ({'; '.join(notes)})" if notes else "")


def cmd_dead(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        tasks = c.tasks(state="DEAD", limit=1000)
    return show_list(args, tasks, ["ID", "NODE", "EXIT", "REASON"], lambda t: [
        t["id"], t.get("node") or "-", "-" if t.get("exit_code") is None else str(t["exit_code"]),
        (t.get("reason") or "")[:60]])


def cmd_cron(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone
    from titan.core.cron import CronError, load_zone, parse, parse_datetime
    if getattr(args, "cron_action", None) != "next":
        raise UsageError("use: titan cron next EXPR [--from ISO] [--count N] [--tz ZONE]")
    expr = " ".join(args.expr)
    try:
        schedule = parse(expr)
    except CronError as exc:
        raise UsageError(f"bad cron expression {expr!r}: {exc}") from None
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, not {args.count}")
    zone = load_zone(args.tz)
    start = parse_datetime(args.start, zone) if args.start else datetime.now(timezone.utc)
    fires = [fire.isoformat() for _, fire in zip(range(args.count), schedule.iter_after(start, zone))]
    if args.json:
        print_json(fires)
    else:
        for line in fires:
            print(line)
    if len(fires) < args.count:         # fire times are looked for up to the year 9998
        print(f"titan: {len(fires) or 'no'} fire time{'s' if len(fires) != 1 else ''} after "
              f"{start.isoformat()} within the years Titan schedules in (up to 9998)", file=sys.stderr)
    return EXIT_OK


def show_run(view: Dict[str, Any]) -> int:
    print(f"{view['id']}  {view['state']}")
    for t in view["tasks"]:
        tries = len(t.get("attempts") or ())
        tries_text = f"{tries} attempt{'s' if tries != 1 else ''}" if tries else ""
        node = f" on {t['node']}" if t.get("node") else ""
        after = f"  (after {', '.join(a.rsplit('/', 1)[-1] for a in t['after'])})" if t.get("after") else ""
        reason = f"  {t['reason']}" if t.get("reason") and t["state"] != "SUCCEEDED" else ""
        if t.get("waiting"):
            reason += f"  (waiting: {t['waiting']})"
        print(f"  {t['id'].rsplit('/', 1)[-1]:<16} {t['state']:<10} {tries_text:<10}{node}{after}{reason}".rstrip())
    return EXIT_OK


def required_tags(spec: Any) -> List[str]:
    """The tags the tasks and services of a job require."""
    units = list(spec.tasks.values()) + list(spec.services.values())
    return sorted(set().union(*(unit.requires for unit in units)))


def _placed(c: Client, names: List[str], wants_port: Set[str], wait_s: float = 5.0) -> List[Dict[str, Any]]:
    """The rows of services ``names`` once each is placed, and has its port if it wants one
    (or after ``wait_s``: one with no eligible worker stays PENDING)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = [row for row in c.services() if row["name"] in names]
        if time.monotonic() > deadline or all(row["state"] != "PENDING" and (row.get("port") or row["name"]
                                                                             not in wants_port) for row in rows):
            return rows
        time.sleep(0.05)


def run_file(c: Client, spec: Any, read: Callable[[str], Tuple[bytes, bool]]) -> Tuple[int, List[str]]:
    """``titan up FILE``: run the job (read by ``load_job_file``) once on the local cluster, then
    show each task's output.

    Returns the exit code and the job's services (deployed with it; `up` keeps serving them).
    """
    run = c.submit_spec(spec, read, start=True, on_task=_progress)
    if run.services:
        wants_port = {name for name, service in spec.services.items() if service.port is not None}
        for row in _placed(c, run.services, wants_port):
            print(f"service {row['name']}: {row['state']}" + (f" on port {row['port']}" if row.get("port") else ""),
                  file=sys.stderr)
    if not run.id:
        return EXIT_OK, run.services
    result: RunResult = run.wait()
    for task_id in run.task_ids:
        output = b"".join(c.logs(task_id)).decode("utf-8", "replace")
        if output:
            print(f"--- {task_id}")
            print(output, end="" if output.endswith("\n") else "\n")
    print(f"{result.id}  {result.state}")
    return (EXIT_OK if result.ok else EXIT_FAILED), run.services
