"""The service verbs: ``deploy``, ``ps``, ``stop``, ``restart`` (``logs NAME`` is in :mod:`.tasks`).

    titan deploy api.ini                                  every [service:NAME] in the file
    titan deploy --name web --port 8000 -- python3 -m http.server 8000
    titan ps ; titan stop web [--remove] ; titan restart web

``deploy`` and ``restart`` return once each service is RUNNING, or has
failed to get there (FATAL, EXITED, BACKOFF after a crash: exit 1), or waits
for an eligible worker (PENDING).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

from titan.cli.common import EXIT_FAILED, EXIT_OK, make_client, print_json, show_list, tags
from titan.errors import UsageError

__all__ = ["cmd_deploy", "cmd_ps", "cmd_stop", "cmd_restart", "add_service_verbs"]

FAILED_STATES = ("FATAL", "EXITED", "BACKOFF")


def add_service_verbs(subs: Any, sub: Any) -> None:
    """Their options (``sub(subs, name, help)`` makes a verb parser with the global options)."""
    p = sub(subs, "deploy", "deploy services: a job file's [service:NAME] sections, or one command")
    p.add_argument("--name", default=None, help="the service's name (with -- COMMAND)")
    p.add_argument("--port", default=None, help="a port number or 'auto', exported as $PORT")
    p.add_argument("--requires", default="", metavar="TAGS", help="comma-separated tags a worker must have")
    p.add_argument("--node", default=None, help="run only on this worker")
    p.add_argument("--restart", default=None, help="always (default), on-failure or never")
    p.add_argument("--health", default=None, metavar="CHECK", help="'tcp' or an http://...:$PORT/... URL")
    p.add_argument("--max-restarts", type=int, default=None, metavar="N",
                   help="restarts allowed within the restart window before FATAL (default 5 in 60s)")
    p.add_argument("--backoff", type=float, default=None, metavar="SECONDS", help="first restart delay (default 1)")
    p.add_argument("--stop-signal", default=None, metavar="SIGNAL", help="default TERM")
    p.add_argument("--stop-grace", type=float, default=None, metavar="SECONDS", help="then KILL (default 10)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    p.add_argument("command", nargs=argparse.REMAINDER, help="FILE.ini, or -- COMMAND [ARGS...]")
    sub(subs, "ps", "list services: node, pid, state, uptime, restarts, health, port").add_argument(
        "name", nargs="?", default=None, metavar="NAME")
    p = sub(subs, "stop", "stop a service: kill its process group; it is not restarted")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--remove", action="store_true", help="also forget it (it leaves `titan ps`)")
    sub(subs, "restart", "restart a service (also one that is FATAL or stopped)").add_argument("name", metavar="NAME")


def cmd_deploy(args: argparse.Namespace) -> int:
    words = list(args.command)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError("titan deploy needs a job file (FILE.ini) or --name NAME -- COMMAND")
    with make_client(args) as c:
        if len(words) == 1 and words[0].endswith(".ini") and args.name is None:
            rows = c.deploy_file(words[0])
        else:
            if not args.name:
                raise UsageError("titan deploy -- COMMAND needs --name NAME")
            rows = [c.deploy(words if len(words) > 1 else words[0], **_settings(args))]
    return _report(rows, args.json)


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env wants KEY=VALUE, not {item!r}")
        env[key] = value
    port: Any = args.port
    if port is not None and port.isdigit():
        port = int(port)
    return {"name": args.name, "port": port, "requires": tags(args.requires), "node": args.node, "env": env,
            "restart": args.restart, "health": args.health, "max_restarts": args.max_restarts,
            "backoff_s": args.backoff, "stop_signal": args.stop_signal, "stop_grace_s": args.stop_grace}


def _report(rows: List[Dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            print(_line(r), file=sys.stderr if r["state"] in FAILED_STATES else sys.stdout)
    return EXIT_FAILED if any(r["state"] in FAILED_STATES for r in rows) else EXIT_OK


def _line(r: Dict[str, Any]) -> str:
    where = []
    if r.get("node"):
        where.append(f"on {r['node']}")
    if r.get("pid"):
        where.append(f"pid {r['pid']}")
    if r.get("port") is not None:
        where.append(f"port {r['port']}")
    text = f"{r['name']}: {r['state']}"
    if where:
        text += " (" + ", ".join(where) + ")"
    if r.get("reason"):
        text += f": {r['reason']}"
    return text


def cmd_ps(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        rows = c.services(args.name)
    return show_list(args, rows, ["NAME", "STATE", "NODE", "PID", "PORT", "UPTIME", "RESTARTS", "HEALTH", "NOTE"],
                     lambda r: [r["name"], r["state"], r.get("node") or "-", str(r.get("pid") or "-"),
                                "-" if r.get("port") is None else str(r["port"]), uptime(r.get("uptime_s")),
                                str(r.get("restarts", 0)), _health(r), r.get("reason") or "-"])


def _health(r: Dict[str, Any]) -> str:
    healthy = r.get("healthy")
    return "-" if healthy is None else "ok" if healthy else "failing"


def uptime(seconds: Any) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` when not running."""
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cmd_stop(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        row = c.service_ctl(args.name, "remove" if args.remove else "stop")
    if args.json:
        print_json(row)
    else:
        print(f"{row['name']}: {'removed' if args.remove else row['state']}")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        row = c.service_ctl(args.name, "restart")
    return _report([row], args.json)
