"""The ``titan`` command line: parse argv, call a role or the SDK, print.

Global options (``--master``, ``--token``, ``--json``) are accepted before or
after the verb.  User errors print one line on stderr, without a traceback,
and exit with one of the codes in :mod:`titan.cli.common` (``titan run`` and
``titan up -- CMD`` exit with the task's own code instead).

The package is split by responsibility::

    main(argv)  parser.build_parser -> args; environment fills the unset globals
        |
        +-- VERBS[args.verb](args) -> tasks.cmd_*  run, up, status, wait, cancel, retry, logs, tasks
        |                             jobs.cmd_*   check, submit, trigger, runs, jobs [rm], dead, cron
        |                             admin.cmd_*  master, worker, store, nodes, drain, kv
        |                             services.cmd_*  deploy, ps, stop, restart
        |
        +-- TitanError -> common.fail: "titan: ..." on stderr, a named exit code

A new verb goes into the module of its kind: its options in
:func:`~titan.cli.parser.build_parser`, its ``cmd_*`` function there, and
one entry in :data:`VERBS`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, Optional, Sequence

from titan.cli import admin, jobs, services, tasks
from titan.cli.common import (EXIT_AUTH, EXIT_CANCELLED, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_TIMEOUT,
                              EXIT_UNAVAILABLE, EXIT_USAGE, fail)
from titan.cli.parser import build_parser
from titan.cli.tasks import exit_code_of
from titan.errors import AuthError, ConnectionLost, RemoteError, TitanError, UnknownJob, UnknownTask, UsageError
from titan.sdk.client import DEFAULT_MASTER

__all__ = ["main", "build_parser", "exit_code_of", "VERBS", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE",
           "EXIT_UNAVAILABLE", "EXIT_NOT_FOUND", "EXIT_AUTH", "EXIT_TIMEOUT", "EXIT_CANCELLED"]

VERBS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "check": jobs.cmd_check,
    "master": admin.cmd_master, "worker": admin.cmd_worker, "up": tasks.cmd_up, "run": tasks.cmd_run,
    "status": tasks.cmd_status, "wait": tasks.cmd_wait, "cancel": tasks.cmd_cancel, "retry": tasks.cmd_retry,
    "logs": tasks.cmd_logs, "nodes": admin.cmd_nodes, "tasks": tasks.cmd_tasks, "kv": admin.cmd_kv,
    "submit": jobs.cmd_submit, "trigger": jobs.cmd_trigger, "runs": jobs.cmd_runs, "jobs": jobs.cmd_jobs,
    "dead": jobs.cmd_dead, "drain": admin.cmd_drain, "store": admin.cmd_store, "cron": jobs.cmd_cron,
    "deploy": services.cmd_deploy, "ps": services.cmd_ps, "stop": services.cmd_stop,
    "restart": services.cmd_restart,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _apply_environment(args)
    try:
        return VERBS[args.verb](args)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except BrokenPipeError:             # `titan logs -f web | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except AuthError as exc:
        return fail(str(exc), EXIT_AUTH)
    except ConnectionLost as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    except TimeoutError as exc:         # the master stopped answering (stopped, or overloaded)
        return fail(str(exc), EXIT_UNAVAILABLE)
    except (UnknownTask, UnknownJob) as exc:
        return fail(exc.message, EXIT_NOT_FOUND)
    except RemoteError as exc:
        return fail(exc.message, EXIT_USAGE if exc.code == "bad_request" else EXIT_FAILED)
    except TitanError as exc:
        return fail(str(exc), EXIT_FAILED)


def _apply_environment(args: argparse.Namespace) -> None:
    """Fill the global options not given on the command line from TITAN_* variables and defaults."""
    env = os.environ
    args.master = args.master or env.get("TITAN_MASTER") or DEFAULT_MASTER
    args.token = args.token if args.token is not None else (env.get("TITAN_TOKEN") or None)
    args.tls_ca = args.tls_ca or env.get("TITAN_TLS_CA") or None
    args.tls_cert = args.tls_cert or env.get("TITAN_TLS_CERT") or None
    args.tls_key = args.tls_key or env.get("TITAN_TLS_KEY") or None
    args.tls = args.tls or env.get("TITAN_TLS", "") not in ("", "0")
