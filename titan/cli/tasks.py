"""The task verbs: ``run``, ``up``, ``status``, ``wait``, ``cancel``, ``retry``, ``logs``, ``tasks``.

Each gets the parsed arguments, talks to the master through the SDK and
prints. ``titan run`` and ``titan up -- CMD`` exit with the task's own code
(:func:`exit_code_of`); the rest exit with the codes in :mod:`titan.cli.common`.
"""
from __future__ import annotations

import argparse
import codecs
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from titan.cli import jobs
from titan.cli.common import (EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, make_client, print_json,
                              show_list, setup_logging, tags)
from titan.core.jobfile import JobFileError
from titan.errors import RemoteError, UsageError
from titan.sdk.client import TaskResult
from titan.sdk.services import load_job_file

__all__ = ["exit_code_of", "cmd_run", "cmd_up", "cmd_status", "cmd_wait", "cmd_cancel", "cmd_retry",
           "cmd_logs", "cmd_tasks"]


def exit_code_of(result: TaskResult) -> int:
    """The code ``titan run`` exits with for a finished task."""
    if result.state == "SUCCEEDED":
        return EXIT_OK
    if result.state == "CANCELLED":
        return EXIT_CANCELLED
    if result.reason.startswith("timed out"):
        return EXIT_TIMEOUT
    code = result.exit_code
    if code is None:
        return EXIT_FAILED
    return 128 - code if code < 0 else (code or EXIT_FAILED)


def _command(words: Sequence[str]) -> Any:
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError("no command given: put it after --, e.g. titan run -- echo hello")
    return words[0] if len(words) == 1 else words


def _env_pairs(items: Sequence[str]) -> Dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad --env {item!r}: use KEY=VALUE")
        env[key] = value
    return env


def _kill_grace(args: argparse.Namespace) -> Dict[str, float]:
    """``kill_grace_s`` for submit when ``--kill-grace`` was given (else the SDK's default holds)."""
    if args.kill_grace is None:
        return {}
    return {"kill_grace_s": args.kill_grace}


def _stream_output(stream: str, data: bytes) -> None:
    target = sys.stderr if stream == "err" else sys.stdout
    target.buffer.write(data)
    target.flush()


def _report(result: TaskResult) -> None:
    if result.state != "SUCCEEDED":
        detail = f": {result.reason}" if result.reason else ""
        node = f" on {result.node}" if result.node else ""
        print(f"titan: task {result.id} {result.state}{node}{detail}", file=sys.stderr)


def _result_json(result: TaskResult) -> Dict[str, Any]:
    return {"id": result.id, "state": result.state, "exit_code": result.exit_code, "node": result.node,
            "reason": result.reason, "output": result.output, "attempts": result.attempts}


def cmd_run(args: argparse.Namespace) -> int:
    command = _command(args.command)
    grace = _kill_grace(args)
    with make_client(args) as c:
        task = c.submit(command, requires=tags(args.requires), timeout_s=args.timeout, name=args.name,
                        priority=args.priority, node=args.node, retries=args.retries,
                        env=_env_pairs(args.env), watch=not args.detach, **grace,
                        on_output=None if (args.detach or args.json) else _stream_output)
        if args.detach:
            if args.json:
                print_json({"id": task.id})
            else:
                print(task.id)
            return EXIT_OK
        if sys.stderr.isatty():
            print(f"titan: {task.id} submitted", file=sys.stderr)
        _interrupt_on(signal.SIGINT, signal.SIGTERM)
        try:
            result = _follow(c, task)
        except KeyboardInterrupt:           # Ctrl-C stops the task too, as it would a local command
            c.cancel(task.id)
            print(f"titan: cancelled {task.id}", file=sys.stderr)
            return EXIT_CANCELLED
    if args.json:
        print_json(_result_json(result))
    else:
        _report(result)
    return exit_code_of(result)


def _follow(c: Any, task: Any) -> TaskResult:
    """Wait for ``task``'s result; meanwhile say on stderr why it waits, if no worker can take it,
    and when an attempt after the first starts (the one before was lost or failed)."""
    told, attempts, pause = "", 1, 1.0
    while True:
        try:
            return task.result(timeout=pause)
        except TimeoutError:
            pause = min(pause * 2, 5.0)
        st = c.status(task.id)
        tries = st.get("attempts") or []
        if len(tries) > attempts:            # a new attempt is made when it is dispatched
            print(f"titan: {task.id} attempt {len(tries)} on {tries[-1].get('node')} ({st.get('before')})",
                  file=sys.stderr)
            attempts = len(tries)
        waiting = st.get("waiting", "")
        if waiting and waiting != told:
            print(f"titan: {task.id} QUEUED ({waiting})", file=sys.stderr)
        told = waiting


def _names_job_file(command: Union[None, str, List[str]]) -> bool:
    """``titan up FILE.ini``: one word ending in .ini is a job file (``-- sh x.ini`` is a command)."""
    return isinstance(command, str) and command.endswith(".ini") and not any(c.isspace() for c in command)


def cmd_up(args: argparse.Namespace) -> int:
    from titan.roles.local import LocalCluster
    setup_logging(args.log_level, "WARNING")
    _interrupt_on(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)     # SIGHUP: its terminal closed
    command = _command(args.command) if args.command else None
    if command is not None and args.workers == 0:
        raise UsageError("--workers 0 leaves nothing to run the command or job: give --workers 1 or more")
    job_file = command if _names_job_file(command) else None
    first_tags: List[str] = []
    if job_file is not None:            # checked before anything starts: a bad file starts nothing
        try:
            loaded = load_job_file(job_file)
        except JobFileError as exc:
            return jobs.print_problems(exc)
        first_tags = [] if args.tags else jobs.required_tags(loaded[0])
    if first_tags:
        print(f"titan: local-1 gets the tags {','.join(first_tags)}, which the job requires "
              f"(--tags gives them to every local worker instead)", file=sys.stderr)
    cluster = LocalCluster(workers=args.workers, slots=args.slots, worker_tags=tags(args.tags),
                           first_worker_tags=first_tags, data_dir=Path(args.data) if args.data else None,
                           token=args.token)
    address = cluster.start()
    try:
        if command is None:
            return _serve_until_interrupted(cluster, address)
        if job_file is not None:
            with cluster.client() as c:
                code, services = jobs.run_file(c, *loaded)
            if not services or code != EXIT_OK:
                return code
            return _serve_until_interrupted(cluster, address)   # the job's services: until Ctrl-C
        with cluster.client() as c:
            result = c.submit(command, on_output=_stream_output).result()
        _report(result)
        return exit_code_of(result)
    finally:
        cluster.stop()


def _interrupt_on(*signals: int) -> None:
    """Turn these signals into KeyboardInterrupt, even where a shell started us ignoring them,
    so the cluster `up` started is always stopped."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    for sig in signals:
        signal.signal(sig, interrupt)


def _invoked_as() -> str:
    """How the user started this Titan, to repeat in a hint: ``python3 titan.py``, ``titan``..."""
    arg0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(arg0)
    if name == "__main__.py":
        return "python3 -m titan"
    if name.endswith((".py", ".pyz")):
        return f"python3 {shlex.quote(arg0)}"
    return "titan"


def _serve_until_interrupted(cluster: Any, address: str) -> int:
    print(f"titan: local cluster up: master {address}, {cluster.workers} workers, data in {cluster.data_dir}",
          file=sys.stderr)
    print(f"titan: try  TITAN_MASTER={address} {_invoked_as()} run -- echo hello   (Ctrl-C stops)",
          file=sys.stderr)
    try:
        while True:
            if cluster.master.poll() is not None:
                print("titan: the master exited; shutting down", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    print("titan: shutting down", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        st = c.status(args.task_id)
    if args.json:
        print_json(st)
        return EXIT_OK
    if isinstance(st.get("tasks"), list):          # a run: its graph
        return jobs.show_run(st)
    print(f"{st['id']}  {st['state']}  {st['command']}")
    if st.get("requires"):
        print(f"  requires: {','.join(st['requires'])}")
    for a in st.get("attempts", []):
        code = "" if a.get("exit_code") is None else f" exit {a['exit_code']}"
        reason = f" ({a['reason']})" if a.get("reason") else ""
        print(f"  attempt {a['attempt']} on {a['node']}: {a['state']}{code}{reason}")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        result = c.task(args.task_id).result()
    if args.json:
        print_json(_result_json(result))
    else:
        print(f"{result.id}  {result.state}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        reply = c.cancel(args.task_id)
    if args.json:
        print_json(reply)
    else:
        what = "cancelling (its process group is being killed)" if reply.get("cancelling") else reply["state"]
        print(f"{reply['id']}: {what}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        reply = c.retry(args.task_id)
    print_json(reply) if args.json else print(f"{reply['id']}: {reply['state']}")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        if args.json:
            return _logs_json(c, args)
        for chunk in c.logs(args.task_id, attempt=args.attempt, follow=args.follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    return EXIT_OK


def _logs_json(c: Any, args: argparse.Namespace) -> int:
    """``logs --json``: one object with the output, or with ``-f`` a line per chunk, then the end."""
    def attempt_of(number: Optional[int]) -> Dict[str, Any]:
        """The attempt ``number`` (default: the latest) as the master sees it now; {} for a service."""
        try:
            attempts = c.status(args.task_id).get("attempts") or []
        except RemoteError:           # a service's name: its output has no attempt to name
            return {}
        chosen = [a for a in attempts if number is None or a.get("attempt") == number][-1:]
        return {key: chosen[0][key] for key in ("attempt", "node", "state", "exit_code")} if chosen else {}

    if not args.follow:
        fixed = attempt_of(args.attempt)      # read before the output, so both are of one attempt
        output = b"".join(c.logs(args.task_id, attempt=fixed.get("attempt", args.attempt)))
        print_json({"task": args.task_id, **fixed, "output": output.decode("utf-8", "replace")})
        return EXIT_OK
    text = codecs.getincrementaldecoder("utf-8")("replace")     # a character may span two chunks
    last = args.attempt
    for attempt, chunk in c.log_chunks(args.task_id, attempt=args.attempt, follow=True):
        if attempt != last and last is not None:
            _json_line({"task": args.task_id, "attempt": last, "output": text.decode(b"", final=True)})
        last = attempt
        _json_line({"task": args.task_id, "attempt": attempt, "output": text.decode(chunk)})
    _json_line({"task": args.task_id, "attempt": last, "output": text.decode(b"", final=True)})
    _json_line({"task": args.task_id, **attempt_of(args.attempt), "end": True})
    return EXIT_OK


def _json_line(item: Dict[str, Any]) -> None:
    if item.get("output") != "":
        print(json.dumps(item, sort_keys=True), flush=True)


def cmd_tasks(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        tasks = c.tasks(state=args.state, limit=args.limit)
    return show_list(args, tasks, ["ID", "STATE", "NODE", "EXIT", "COMMAND"], lambda t: [
        t["id"], t["state"], t.get("node") or "-", "-" if t.get("exit_code") is None else str(t["exit_code"]),
        t["command"][:60]])
