"""What every verb of the ``titan`` command line shares.

Owns the exit codes, the client (and TLS contexts) built from the global
options, and the output helpers: JSON, aligned tables, the one-line
``titan: ...`` error, and logging for the daemon verbs. Only the CLI prints.
"""
from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
from typing import Any, Callable, Dict, List, Optional

from titan.errors import UsageError
from titan.io.tls import server_context
from titan.sdk.client import Client
from titan.sdk.tls import client_context

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNAVAILABLE", "EXIT_NOT_FOUND", "EXIT_AUTH",
           "EXIT_TIMEOUT", "EXIT_CANCELLED", "setup_logging", "tags", "make_client", "client_tls",
           "server_tls", "print_json", "print_table", "fail"]

EXIT_OK = 0            # success
EXIT_FAILED = 1        # the task or the request failed
EXIT_USAGE = 2         # bad flags or input
EXIT_UNAVAILABLE = 3   # the master cannot be reached
EXIT_NOT_FOUND = 4     # unknown task id
EXIT_AUTH = 5          # wrong or missing cluster token
EXIT_TIMEOUT = 124     # titan run: the task timed out (as coreutils `timeout`)
EXIT_CANCELLED = 130   # titan run: the task was cancelled


def setup_logging(level: Optional[str], default: str) -> None:
    logging.basicConfig(level=(level or default).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def tags(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def make_client(args: argparse.Namespace) -> Client:
    return Client(args.master, token=args.token, tls=client_tls(args))


def client_tls(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The dialling side's TLS context, or None for plain TCP."""
    if not (args.tls or args.tls_ca):
        return None
    return client_context(args.tls_ca, args.tls_cert, args.tls_key)


def server_tls(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The master's TLS context when it has a certificate; --tls-ca then requires client certificates."""
    if not args.tls_cert:
        if args.tls or args.tls_ca:
            raise UsageError("a TLS master needs its certificate: pass --tls-cert FILE (and --tls-key FILE)")
        return None
    return server_context(args.tls_cert, args.tls_key, args.tls_ca)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def print_table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def show_list(args: argparse.Namespace, items: List[Dict[str, Any]], header: List[str],
              row: Callable[[Dict[str, Any]], List[str]]) -> int:
    """A listing command's output: the items as JSON with ``--json``, else a table, a row per item."""
    if args.json:
        print_json(items)
    else:
        print_table([header] + [row(item) for item in items])
    return EXIT_OK


def fail(message: str, code: int) -> int:
    print(f"titan: {message}", file=sys.stderr)
    return code
