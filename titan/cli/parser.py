"""The ``titan`` argument parser: every verb, its options and its help text.

Global options (``--master``, ``--token``, ``--json``, ``--tls*``) are added
to the top-level parser and again, with ``SUPPRESS`` defaults, to every verb,
so they are accepted before or after the verb without one overwriting the
other. Verbs are added in the order ``titan --help`` lists them.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import titan
from titan.cli.services import add_service_verbs
from titan.core.model import TaskState
from titan.sdk.client import DEFAULT_MASTER

__all__ = ["build_parser"]


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


def _number(kind: type, least: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` at least ``least`` (greater, if ``above``)."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < least or (above and value == least):
            raise argparse.ArgumentTypeError(f"must be {'greater than' if above else 'at least'} {least}, not {text}")
        return value
    return convert


SECONDS = _number(float, 0, above=True)       # a timeout or an interval
SECONDS_OR_0 = _number(float, 0)
COUNT = _number(int, 1)
COUNT_OR_0 = _number(int, 0)


def _sub(subs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help_text, description=help_text)
    _globals(p, suppress=True)
    return p


def _task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requires", default="", metavar="TAGS", help="comma-separated tags a worker must have")
    p.add_argument("--timeout", type=SECONDS, default=None, metavar="SECONDS", help="kill the task after this long")
    p.add_argument("--kill-grace", type=SECONDS_OR_0, default=None, metavar="SECONDS",
                   help="between TERM and KILL when the task is timed out or cancelled (default 5)")
    p.add_argument("--name", default=None, help="task name (the id becomes NAME#N)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first")
    p.add_argument("--node", default=None, help="run only on this worker")
    p.add_argument("--retries", type=COUNT_OR_0, default=0, help="re-run a failed task up to N times")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="titan", description="Titan: a self-healing distributed runtime.")
    parser.add_argument("--version", action="version", version=f"titan {titan.__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO for daemons)")
    _globals(parser, suppress=False)
    subs = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_master(subs)
    _add_worker(subs)
    _add_up_and_run(subs)
    _add_task_verbs(subs)
    _sub(subs, "nodes", "list workers")
    _add_job_verbs(subs)
    add_service_verbs(subs, _sub)
    p = _sub(subs, "drain", "give a node no new work; its running tasks finish")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--undo", action="store_true", help="let the node take work again")
    _add_kv(subs)
    p = _sub(subs, "tasks", "list recent tasks")
    p.add_argument("--state", default=None, type=str.upper, metavar="STATE",
                   choices=[s.value for s in TaskState], help="only tasks in this state (e.g. FAILED)")
    p.add_argument("--limit", type=COUNT, default=50)
    p = _sub(subs, "check", "validate job files; print every problem with its file and line")
    p.add_argument("files", nargs="+", metavar="FILE")
    _add_store(subs)
    _add_cron(subs)
    return parser


def _add_master(subs: Any) -> None:
    p = _sub(subs, "master", "run the control plane")
    p.add_argument("--with-parent", action="store_true", help=argparse.SUPPRESS)   # see roles.local
    p.add_argument("--bind", default="127.0.0.1:9090", metavar="HOST:PORT")
    p.add_argument("--data", default="titan-data", metavar="DIR", help="state and logs (default ./titan-data)")
    p.add_argument("--name", default="master")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without a token")
    p.add_argument("--heartbeat-timeout", type=SECONDS, default=10.0, metavar="SECONDS")
    p.add_argument("--lost-grace", type=SECONDS_OR_0, default=10.0, metavar="SECONDS",
                   help="how long a lost worker's tasks wait before they are re-queued")
    p.add_argument("--handshake-timeout", type=SECONDS, default=10.0, metavar="SECONDS")
    p.add_argument("--frame-timeout", type=SECONDS, default=30.0, metavar="SECONDS",
                   help="close a connection whose frame is not complete this long after its first byte")
    p.add_argument("--max-connections", type=COUNT, default=1024)
    p.add_argument("--max-frame-bytes", type=_number(int, 65536), default=64 * 1024 * 1024)
    p.add_argument("--log-max-bytes", type=COUNT_OR_0, default=64 * 1024 * 1024, help="cap per attempt log")
    p.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="always",
                   help="when the store's AOF is fsynced (default always: nothing is acknowledged before it is on disk)")
    p.add_argument("--retention", type=SECONDS_OR_0, default=7 * 86400.0, metavar="SECONDS",
                   help="how long finished tasks are kept (default 7 days)")
    p.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                   help="run the master's clock this far ahead (to try out schedules without waiting)")
    p.add_argument("--scale-after", type=SECONDS_OR_0, default=3.0, metavar="SECONDS",
                   help="inception: queued work waits this long on a full pool before a worker forks a child")
    p.add_argument("--scale-cooldown", type=SECONDS_OR_0, default=10.0, metavar="SECONDS",
                   help="inception: the least time between two scaling decisions for one pool")
    p.add_argument("--max-children-per-host", type=COUNT_OR_0, default=8, metavar="N")
    p.add_argument("--max-children-total", type=COUNT_OR_0, default=32, metavar="N")


def _add_worker(subs: Any) -> None:
    p = _sub(subs, "worker", "run tasks for a master")
    p.add_argument("--with-parent", action="store_true", help=argparse.SUPPRESS)   # see roles.local
    p.add_argument("--name", default=None, help="default: HOSTNAME-PID")
    p.add_argument("--tags", default="", help="comma-separated capabilities, e.g. gpu,highmem")
    p.add_argument("--slots", type=COUNT, default=None, help="tasks at once (default: CPU count)")
    p.add_argument("--data", default=None, metavar="DIR", help="workspaces (default: a temporary directory)")
    p.add_argument("--dedicated", action="store_true", help="take only tasks that require one of my tags")
    p.add_argument("--heartbeat-interval", type=SECONDS, default=2.0, metavar="SECONDS")
    p.add_argument("--master-timeout", type=SECONDS, default=10.0, metavar="SECONDS")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--ephemeral", action="store_true", help="retire after --idle-timeout without work")
    kind.add_argument("--permanent", action="store_true", help="never retire (the default)")
    p.add_argument("--idle-timeout", type=SECONDS, default=45.0, metavar="SECONDS",
                   help="how long an ephemeral worker stays idle before it retires (default 45)")
    p.add_argument("--max-children", type=COUNT_OR_0, default=0, metavar="K",
                   help="let the master ask this worker to fork up to K ephemeral child workers")
    p.add_argument("--ahead", type=COUNT_OR_0, default=None, metavar="N",
                   help="hold up to N quick tasks beyond --slots, started as slots free (default: three times --slots; 0: none)")


def _add_up_and_run(subs: Any) -> None:
    p = _sub(subs, "up", "a local master and workers in one command")
    p.add_argument("--workers", type=COUNT_OR_0, default=2)
    p.add_argument("--slots", type=COUNT, default=2, help="slots per worker")
    p.add_argument("--tags", default="", help="comma-separated tags for the local workers, e.g. gpu")
    p.add_argument("--data", default=None, metavar="DIR", help="default: a temporary directory")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="a job file (FILE.ini) to run once, or -- COMMAND; prints the output and exits")
    p = _sub(subs, "run", "run a command on the cluster, stream its output, exit with its code")
    p.add_argument("--detach", action="store_true", help="print the task id and return at once")
    _task_options(p)


def _add_task_verbs(subs: Any) -> None:
    """status, cancel, retry, wait and logs: the verbs that take one TASK_ID."""
    for verb, text in (("status", "a task's state, attempts and nodes"),
                       ("cancel", "cancel a task and kill its process group"),
                       ("retry", "re-queue a failed, dead or cancelled task"),
                       ("wait", "wait for a task to end; exit 0 if it succeeded")):
        _sub(subs, verb, text).add_argument("task_id", metavar="TASK_ID")
    p = _sub(subs, "logs", "print a task's or a service's output")
    p.add_argument("task_id", metavar="TASK_ID|SERVICE")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the task ends (a service: until interrupted)")
    p.add_argument("--attempt", type=int, default=None, help="a task's attempt, or a service's deployment")


def _add_job_verbs(subs: Any) -> None:
    """submit, trigger, runs, jobs (and jobs rm) and dead."""
    p = _sub(subs, "submit", "register a job file's job; start a run unless it has a schedule")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run succeeded")
    p = _sub(subs, "trigger", "start a run of a registered job now")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run succeeded")
    _sub(subs, "runs", "list recent runs").add_argument("job", nargs="?", default=None, metavar="JOB")
    p = _sub(subs, "jobs", "list registered jobs; `titan jobs rm NAME...` removes jobs")
    p = p.add_subparsers(dest="jobs_action", metavar="rm").add_parser(
        "rm", help="remove registered jobs",
        description="remove registered jobs: their schedules stop; runs that started finish")
    _globals(p, suppress=True)
    p.add_argument("names", nargs="+", metavar="NAME")
    _sub(subs, "dead", "the dead-letter list: tasks that used up their retries")


def _add_kv(subs: Any) -> None:
    p = _sub(subs, "kv", "the cluster's key-value store: get, set, del, keys")
    kv = p.add_subparsers(dest="kv_action", metavar="ACTION")
    _sub(kv, "get", "print a value").add_argument("key")
    q = _sub(kv, "set", "store a value")
    q.add_argument("key")
    q.add_argument("value")
    q.add_argument("--ttl", type=SECONDS, default=None, metavar="SECONDS", help="expire after this long")
    _sub(kv, "del", "delete keys").add_argument("keys", nargs="+")
    _sub(kv, "keys", "list keys").add_argument("pattern", nargs="?", default="*")


def _add_store(subs: Any) -> None:
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
    _globals(check, suppress=True)
    check.add_argument("check_dir", metavar="DIR")
    check.add_argument("--fix", action="store_true", help="truncate a torn or corrupt tail of the last file")


def _add_cron(subs: Any) -> None:
    p = _sub(subs, "cron", "cron expressions: when does a schedule fire")
    p = p.add_subparsers(dest="cron_action", metavar="next").add_parser(
        "next", help="print the next fire times", description="print the fire times strictly after --from")
    _globals(p, suppress=True)
    p.add_argument("expr", nargs="+", metavar="EXPR", help="5 fields or a nickname such as @daily (quote it)")
    p.add_argument("--from", dest="start", default=None, metavar="ISO",
                   help="start (default: now); without an offset it is wall time in --tz")
    p.add_argument("--count", type=int, default=5, metavar="N", help="how many fire times (default 5)")
    p.add_argument("--tz", default="UTC", metavar="ZONE", help="IANA time zone, e.g. Europe/Berlin (default UTC)")
