"""The ``titan`` command line: parse argv, call a role or the SDK, print.

Global options (``--master``, ``--token``, ``--json``) are accepted before or
after the verb.  User errors print one line on stderr, without a traceback,
and exit with one of the codes below (``titan run`` and ``titan up -- CMD``
exit with the task's own code instead).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import titan
from titan import clijobs
from titan.errors import AuthError, ConnectionLost, RemoteError, TitanError, UnknownTask, UsageError
from titan.io.tls import server_context
from titan.sdk.client import DEFAULT_MASTER, Client, TaskResult
from titan.sdk.tls import client_context

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNAVAILABLE", "EXIT_NOT_FOUND",
           "EXIT_AUTH", "EXIT_TIMEOUT", "EXIT_CANCELLED"]

EXIT_OK = 0            # success
EXIT_FAILED = 1        # the task or the request failed
EXIT_USAGE = 2         # bad flags or input
EXIT_UNAVAILABLE = 3   # the master cannot be reached
EXIT_NOT_FOUND = 4     # unknown task id
EXIT_AUTH = 5          # wrong or missing cluster token
EXIT_TIMEOUT = 124     # titan run: the task timed out (as coreutils `timeout`)
EXIT_CANCELLED = 130   # titan run: the task was cancelled


# ----- parser ---------------------------------------------------------------
def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--master", default=default, metavar="HOST:PORT",
                        help=f"master address (env TITAN_MASTER, default {DEFAULT_MASTER})")
    parser.add_argument("--token", default=default, help="cluster token (env TITAN_TOKEN)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print machine-readable JSON")
    parser.add_argument("--tls", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="dial the master over TLS (env TITAN_TLS=1)")
    parser.add_argument("--tls-ca", default=default, metavar="FILE",
                        help="CA that signs the peer's certificate (env TITAN_TLS_CA); implies --tls")
    parser.add_argument("--tls-cert", default=default, metavar="FILE",
                        help="this process's certificate (env TITAN_TLS_CERT)")
    parser.add_argument("--tls-key", default=default, metavar="FILE",
                        help="its private key, if not in the certificate file (env TITAN_TLS_KEY)")


def _sub(subs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help_text, description=help_text)
    _globals(p, suppress=True)
    return p


def _task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requires", default="", metavar="TAGS", help="comma-separated tags a worker must have")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="kill the task after this long")
    p.add_argument("--name", default=None, help="task name (the id becomes NAME#N)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first")
    p.add_argument("--node", default=None, help="run only on this worker")
    p.add_argument("--retries", type=int, default=0, help="re-run a failed task up to N times")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="titan", description="Titan: a self-healing distributed runtime.")
    parser.add_argument("--version", action="version", version=f"titan {titan.__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO for daemons)")
    _globals(parser, suppress=False)
    subs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = _sub(subs, "master", "run the control plane")
    p.add_argument("--bind", default="127.0.0.1:9090", metavar="HOST:PORT")
    p.add_argument("--data", default="titan-data", metavar="DIR", help="state and logs (default ./titan-data)")
    p.add_argument("--name", default="master")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without a token")
    p.add_argument("--heartbeat-timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--lost-grace", type=float, default=10.0, metavar="SECONDS",
                   help="how long a lost worker's tasks wait before they are re-queued")
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--frame-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="close a connection whose frame is not complete this long after its first byte")
    p.add_argument("--max-connections", type=int, default=1024)
    p.add_argument("--max-frame-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--log-max-bytes", type=int, default=64 * 1024 * 1024, help="cap per attempt log")
    p.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="always",
                   help="when the store's AOF is fsynced (default always: nothing is acknowledged before it is on disk)")
    p.add_argument("--retention", type=float, default=7 * 86400.0, metavar="SECONDS",
                   help="how long finished tasks are kept (default 7 days)")
    p.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                   help="run the master's clock this far ahead (to try out schedules without waiting)")

    p = _sub(subs, "worker", "run tasks for a master")
    p.add_argument("--name", default=None, help="default: HOSTNAME-PID")
    p.add_argument("--tags", default="", help="comma-separated capabilities, e.g. gpu,highmem")
    p.add_argument("--slots", type=int, default=None, help="tasks at once (default: CPU count)")
    p.add_argument("--data", default=None, metavar="DIR", help="workspaces (default: a temporary directory)")
    p.add_argument("--dedicated", action="store_true", help="take only tasks that require one of my tags")
    p.add_argument("--heartbeat-interval", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--master-timeout", type=float, default=10.0, metavar="SECONDS")

    p = _sub(subs, "up", "a local master and workers in one command")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slots", type=int, default=2, help="slots per worker")
    p.add_argument("--tags", default="", help="comma-separated tags for the local workers, e.g. gpu")
    p.add_argument("--data", default=None, metavar="DIR", help="default: a temporary directory")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="a job file (FILE.ini) to run once, or -- COMMAND; prints the output and exits")

    p = _sub(subs, "run", "run a command on the cluster, stream its output, exit with its code")
    p.add_argument("--detach", action="store_true", help="print the task id and return at once")
    _task_options(p)

    for verb, text in (("status", "a task's state, attempts and nodes"),
                       ("cancel", "cancel a task and kill its process group"),
                       ("retry", "re-queue a failed, dead or cancelled task"),
                       ("wait", "wait for a task to end; exit 0 if it succeeded")):
        _sub(subs, verb, text).add_argument("task_id", metavar="TASK_ID")
    p = _sub(subs, "logs", "print a task's output")
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    p.add_argument("--attempt", type=int, default=None)
    _sub(subs, "nodes", "list workers")
    p = _sub(subs, "submit", "register a job file's job; start a run unless it has a schedule")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run succeeded")
    p = _sub(subs, "trigger", "start a run of a registered job now")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run succeeded")
    _sub(subs, "runs", "list recent runs").add_argument("job", nargs="?", default=None, metavar="JOB")
    _sub(subs, "jobs", "list registered jobs")
    _sub(subs, "dead", "the dead-letter list: tasks that used up their retries")
    p = _sub(subs, "drain", "give a node no new work; its running tasks finish")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--undo", action="store_true", help="let the node take work again")
    p = _sub(subs, "kv", "the cluster's key-value store: get, set, del, keys")
    kv = p.add_subparsers(dest="kv_action", metavar="ACTION")
    kv.add_parser("get", help="print a value").add_argument("key")
    q = kv.add_parser("set", help="store a value")
    q.add_argument("key")
    q.add_argument("value")
    q.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="expire after this long")
    kv.add_parser("del", help="delete keys").add_argument("keys", nargs="+")
    kv.add_parser("keys", help="list keys").add_argument("pattern", nargs="?", default="*")
    p = _sub(subs, "tasks", "list recent tasks")
    p.add_argument("--state", default=None)
    p.add_argument("--limit", type=int, default=50)
    p = _sub(subs, "check", "validate job files; print every problem with its file and line")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = _sub(subs, "store", "serve TitanStore, a Redis-compatible store with a durable AOF")
    p.add_argument("--bind", default="127.0.0.1:6380", metavar="HOST:PORT")
    p.add_argument("--dir", default="titan-store", metavar="DIR", help="AOF directory (default ./titan-store)")
    p.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="always")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind (the store has no auth)")
    p.add_argument("--rewrite-percentage", type=int, default=100, metavar="PCT",
                   help="rewrite the AOF when the incremental files outgrow the base by this much")
    p.add_argument("--rewrite-min-bytes", type=int, default=64 * 1024 * 1024, metavar="N")
    check = p.add_subparsers(dest="store_action", metavar="check").add_parser(
        "check", help="validate an AOF directory", description="validate an AOF directory; --fix cuts a torn tail")
    check.add_argument("check_dir", metavar="DIR")
    check.add_argument("--fix", action="store_true", help="truncate a torn or corrupt tail of the last file")

    p = _sub(subs, "cron", "cron expressions: when does a schedule fire")
    p = p.add_subparsers(dest="cron_action", metavar="next").add_parser(
        "next", help="print the next fire times", description="print the fire times strictly after --from")
    _globals(p, suppress=True)
    p.add_argument("expr", nargs="+", metavar="EXPR", help="5 fields or a nickname such as @daily (quote it)")
    p.add_argument("--from", dest="start", default=None, metavar="ISO",
                   help="start (default: now); without an offset it is wall time in --tz")
    p.add_argument("--count", type=int, default=5, metavar="N", help="how many fire times (default 5)")
    p.add_argument("--tz", default="UTC", metavar="ZONE", help="IANA time zone, e.g. Europe/Berlin (default UTC)")
    return parser


# ----- helpers --------------------------------------------------------------
def _setup_logging(level: Optional[str], default: str) -> None:
    logging.basicConfig(level=(level or default).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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


def _tags(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _client(args: argparse.Namespace) -> Client:
    return Client(args.master, token=args.token, tls=_client_tls(args))


def _client_tls(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The dialling side's TLS context, or None for plain TCP."""
    if not (args.tls or args.tls_ca):
        return None
    return client_context(args.tls_ca, args.tls_cert, args.tls_key)


def _server_tls(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The master's TLS context when it has a certificate; --tls-ca then requires client certificates."""
    if not args.tls_cert:
        if args.tls or args.tls_ca:
            raise UsageError("a TLS master needs its certificate: pass --tls-cert FILE (and --tls-key FILE)")
        return None
    return server_context(args.tls_cert, args.tls_key, args.tls_ca)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


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


def _stream_output(stream: str, data: bytes) -> None:
    target = sys.stderr if stream == "err" else sys.stdout
    target.buffer.write(data)
    target.flush()


def _report(result: TaskResult) -> None:
    if result.state != "SUCCEEDED":
        detail = f": {result.reason}" if result.reason else ""
        node = f" on {result.node}" if result.node else ""
        print(f"titan: task {result.id} {result.state}{node}{detail}", file=sys.stderr)


# ----- verbs ----------------------------------------------------------------
def cmd_master(args: argparse.Namespace) -> int:
    from titan.io.loop import parse_address
    from titan.roles.master import Master, MasterConfig
    _setup_logging(args.log_level, "INFO")
    config = MasterConfig(
        data_dir=Path(args.data), bind=parse_address(args.bind), token=args.token,
        insecure=args.insecure, name=args.name, heartbeat_timeout_s=args.heartbeat_timeout,
        lost_grace_s=args.lost_grace, handshake_timeout_s=args.handshake_timeout,
        frame_timeout_s=args.frame_timeout, max_connections=args.max_connections,
        max_body_bytes=args.max_frame_bytes, log_max_bytes=args.log_max_bytes, tls=_server_tls(args),
        fsync=args.appendfsync, retention_s=args.retention, clock_offset_s=args.clock_offset)
    master = Master(config)
    try:
        master.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.bind}: {exc.strerror or exc}") from None
    master.serve_forever()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from titan.io.loop import parse_address
    from titan.roles.worker import Worker, WorkerConfig
    _setup_logging(args.log_level, "INFO")
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    slots = args.slots if args.slots is not None else (os.cpu_count() or 1)
    if slots < 1:
        raise UsageError(f"--slots must be at least 1, not {slots}")
    temp = args.data is None
    data = Path(tempfile.mkdtemp(prefix="titan-worker-")) if temp else Path(args.data)
    config = WorkerConfig(master=parse_address(args.master or DEFAULT_MASTER), name=name, data_dir=data,
                          tags=frozenset(_tags(args.tags)), slots=slots, token=args.token,
                          dedicated=args.dedicated, heartbeat_interval_s=args.heartbeat_interval,
                          master_timeout_s=args.master_timeout, tls=_client_tls(args))
    try:
        Worker(config).serve_forever()
    finally:
        if temp:
            shutil.rmtree(data, ignore_errors=True)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    command = _command(args.command)
    with _client(args) as c:
        task = c.submit(command, requires=_tags(args.requires), timeout_s=args.timeout, name=args.name,
                        priority=args.priority, node=args.node, retries=args.retries,
                        env=_env_pairs(args.env), watch=not args.detach,
                        on_output=None if (args.detach or args.json) else _stream_output)
        if args.detach:
            print(task.id)
            return EXIT_OK
        if sys.stderr.isatty():
            print(f"titan: {task.id} submitted", file=sys.stderr)
        result = task.result()
    if args.json:
        _print_json(_result_json(result))
    else:
        _report(result)
    return exit_code_of(result)


def _result_json(result: TaskResult) -> Dict[str, Any]:
    return {"id": result.id, "state": result.state, "exit_code": result.exit_code, "node": result.node,
            "reason": result.reason, "output": result.output, "attempts": result.attempts}


def cmd_up(args: argparse.Namespace) -> int:
    from titan.roles.local import LocalCluster
    _setup_logging(args.log_level, "WARNING")
    _interrupt_on(signal.SIGINT, signal.SIGTERM)
    cluster = LocalCluster(workers=args.workers, slots=args.slots, worker_tags=_tags(args.tags),
                           data_dir=Path(args.data) if args.data else None, token=args.token)
    command = _command(args.command) if args.command else None
    address = cluster.start()
    try:
        if command is None:
            return _serve_until_interrupted(cluster, address)
        with cluster.client() as c:
            if isinstance(command, str) and command.endswith(".ini") and os.path.isfile(command):
                return clijobs.run_file(c, command)
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


def _serve_until_interrupted(cluster: Any, address: str) -> int:
    print(f"titan: local cluster up: master {address}, {cluster.workers} workers, data in {cluster.data_dir}",
          file=sys.stderr)
    print(f"titan: try  TITAN_MASTER={address} titan run -- echo hello   (Ctrl-C stops)", file=sys.stderr)
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
    with _client(args) as c:
        st = c.status(args.task_id)
    if args.json:
        _print_json(st)
        return EXIT_OK
    if isinstance(st.get("tasks"), list):          # a run: its graph
        return clijobs.show_run(st)
    print(f"{st['id']}  {st['state']}  {st['command']}")
    if st.get("requires"):
        print(f"  requires: {','.join(st['requires'])}")
    for a in st.get("attempts", []):
        code = "" if a.get("exit_code") is None else f" exit {a['exit_code']}"
        reason = f" ({a['reason']})" if a.get("reason") else ""
        print(f"  attempt {a['attempt']} on {a['node']}: {a['state']}{code}{reason}")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.task(args.task_id).result()
    if args.json:
        _print_json(_result_json(result))
    else:
        print(f"{result.id}  {result.state}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.cancel(args.task_id)
    if args.json:
        _print_json(reply)
    else:
        what = "cancelling (its process group is being killed)" if reply.get("cancelling") else reply["state"]
        print(f"{reply['id']}: {what}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.retry(args.task_id)
    _print_json(reply) if args.json else print(f"{reply['id']}: {reply['state']}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from titan.core.jobfile import JobFileError, check_files, parse
    failed = False
    for name in args.files:
        path = Path(name)
        try:
            spec = parse(path.read_bytes().decode("utf-8"), filename=name)
            problems = [str(p) for p in check_files(spec, lambda f: (path.parent / f).is_file())]
        except OSError as exc:
            problems = [f"{name}: cannot read: {exc.strerror or exc}"]
        except UnicodeDecodeError as exc:
            problems = [f"{name}: not UTF-8 text (byte offset {exc.start})"]
        except JobFileError as exc:
            problems = [str(p) for p in exc.problems]
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{name}: ok ({spec.summary()})")
        failed = failed or bool(problems)
    return EXIT_USAGE if failed else EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for chunk in c.logs(args.task_id, attempt=args.attempt, follow=args.follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    return EXIT_OK


def cmd_kv(args: argparse.Namespace) -> int:
    if not args.kv_action:
        raise UsageError("titan kv needs an action: get KEY, set KEY VALUE, del KEY..., keys [PATTERN]")
    with _client(args) as c:
        if args.kv_action == "get":
            value = c.kv.get(args.key)
            if args.json:
                _print_json(value)
                return EXIT_OK
            if value is None:
                print(f"titan: no key {args.key!r}", file=sys.stderr)
                return EXIT_NOT_FOUND
            sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") else b"\n"))
        elif args.kv_action == "set":
            c.kv.set(args.key, args.value, ttl_s=args.ttl)
        elif args.kv_action == "del":
            deleted = c.kv.delete(*args.keys)
            _print_json({"deleted": deleted}) if args.json else print(deleted)
        else:
            keys = c.kv.keys(args.pattern)
            _print_json(keys) if args.json else print("\n".join(keys)) if keys else None
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return clijobs.submit(c, args.file, wait=args.wait, as_json=args.json, printer=_print_json)


def cmd_trigger(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return clijobs.trigger(c, args.job, wait=args.wait, as_json=args.json, printer=_print_json)


def cmd_runs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return clijobs.show_runs(c, args.job, args.json, _print_json)


def cmd_drain(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.drain(args.node, undo=args.undo)
    if args.json:
        _print_json(reply)
    else:
        print(f"{reply['node']}: {reply['state']} ({reply['running']} running)")
    return EXIT_OK


def cmd_dead(args: argparse.Namespace) -> int:
    with _client(args) as c:
        tasks = c.tasks(state="DEAD", limit=1000)
    if args.json:
        _print_json(tasks)
        return EXIT_OK
    rows = [["ID", "NODE", "EXIT", "REASON"]]
    for t in tasks:
        rows.append([t["id"], t.get("node") or "-", "-" if t.get("exit_code") is None else str(t["exit_code"]),
                     (t.get("reason") or "")[:60]])
    _print_table(rows)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return clijobs.show_jobs(c, args.json, _print_json)


def cmd_nodes(args: argparse.Namespace) -> int:
    with _client(args) as c:
        nodes = c.nodes()
    if args.json:
        _print_json(nodes)
        return EXIT_OK
    rows = [["NAME", "STATE", "TAGS", "RUNNING", "SLOTS", "LOAD", "ADDRESS"]]
    for n in nodes:
        rows.append([n["name"], n["state"], ",".join(n["tags"]) or "-", str(n["running"]), str(n["slots"]),
                     f"{n['load']:.2f}", str(n.get("address", ""))])
    _print_table(rows)
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace) -> int:
    with _client(args) as c:
        tasks = c.tasks(state=args.state, limit=args.limit)
    if args.json:
        _print_json(tasks)
        return EXIT_OK
    rows = [["ID", "STATE", "NODE", "EXIT", "COMMAND"]]
    for t in tasks:
        rows.append([t["id"], t["state"], t.get("node") or "-",
                     "-" if t.get("exit_code") is None else str(t["exit_code"]), t["command"][:60]])
    _print_table(rows)
    return EXIT_OK


def cmd_store(args: argparse.Namespace) -> int:
    if getattr(args, "store_action", None) == "check":
        from titan.io.aofcheck import check
        from titan.store.engine import Engine
        report = check(Path(args.check_dir), fix=args.fix, engine=Engine(), now_ms=int(time.time() * 1000))
        for entry in report.files:
            print(entry.line())
        for line in report.fixed:
            print(f"fixed: {line}")
        for line in report.problems:
            print(f"titan: {line}", file=sys.stderr)
        return EXIT_OK if report.ok else EXIT_FAILED
    from titan.io.loop import parse_address
    from titan.roles.store import StoreConfig, StoreServer
    _setup_logging(args.log_level, "INFO")
    try:
        bind = parse_address(args.bind, 6380)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = StoreConfig(data_dir=Path(args.dir), bind=bind,
                         appendfsync=args.appendfsync, insecure=args.insecure,
                         rewrite_percentage=args.rewrite_percentage, rewrite_min_bytes=args.rewrite_min_bytes)
    server = StoreServer(config)
    server.start()
    server.serve_forever()
    return EXIT_OK


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
        _print_json(fires)
    else:
        for line in fires:
            print(line)
    return EXIT_OK


def _print_table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


VERBS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "check": cmd_check,
    "master": cmd_master, "worker": cmd_worker, "up": cmd_up, "run": cmd_run, "status": cmd_status,
    "wait": cmd_wait, "cancel": cmd_cancel, "retry": cmd_retry, "logs": cmd_logs, "nodes": cmd_nodes,
    "tasks": cmd_tasks, "kv": cmd_kv, "submit": cmd_submit, "trigger": cmd_trigger, "runs": cmd_runs,
    "jobs": cmd_jobs, "dead": cmd_dead, "drain": cmd_drain, "store": cmd_store,
    "cron": cmd_cron,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.master = args.master or os.environ.get("TITAN_MASTER") or DEFAULT_MASTER
    args.token = args.token if args.token is not None else (os.environ.get("TITAN_TOKEN") or None)
    env = os.environ
    args.tls_ca = args.tls_ca or env.get("TITAN_TLS_CA") or None
    args.tls_cert = args.tls_cert or env.get("TITAN_TLS_CERT") or None
    args.tls_key = args.tls_key or env.get("TITAN_TLS_KEY") or None
    args.tls = args.tls or env.get("TITAN_TLS", "") not in ("", "0")
    try:
        return VERBS[args.verb](args)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except AuthError as exc:
        return _fail(str(exc), EXIT_AUTH)
    except ConnectionLost as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except UnknownTask as exc:
        return _fail(exc.message, EXIT_NOT_FOUND)
    except RemoteError as exc:
        return _fail(exc.message, EXIT_USAGE if exc.code == "bad_request" else EXIT_FAILED)
    except TitanError as exc:
        return _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"titan: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
