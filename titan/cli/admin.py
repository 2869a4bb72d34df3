"""The cluster-running verbs: ``master``, ``worker``, ``store``, ``nodes``, ``drain``, ``kv``.

``master``, ``worker`` and ``store`` start a role and serve until stopped
(``store check`` validates an AOF directory instead); ``nodes``, ``drain``
and ``kv`` are requests to a running master through the SDK.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from titan.cli.common import (EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, client_tls, make_client, print_json,
                              show_list, server_tls, setup_logging, tags)
from titan.errors import UsageError
from titan.sdk.client import DEFAULT_MASTER

if TYPE_CHECKING:
    from titan.io.loop import Loop

__all__ = ["cmd_master", "cmd_worker", "cmd_store", "cmd_nodes", "cmd_drain", "cmd_kv"]


def _address(text: str, option: str, default_port: int = 9090) -> Tuple[str, int]:
    """``HOST:PORT`` of ``option``; a bad one is a UsageError (exit 2) naming the option."""
    from titan.io.loop import parse_address
    try:
        return parse_address(text, default_port)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _stop_with_parent(loop: "Loop") -> None:
    """``--with-parent``: standard input is a pipe that only the starting process writes to;
    its end of file (that process is gone, however it ended) stops this one as SIGTERM would."""
    def readable(mask: int) -> None:
        if not os.read(0, 4096):
            loop.unregister(0)
            os.kill(os.getpid(), signal.SIGTERM)
    try:
        loop.register(0, 1, readable)
    except OSError:
        raise UsageError("--with-parent needs a pipe as standard input") from None


def cmd_master(args: argparse.Namespace) -> int:
    from titan.core.scaler import ScalerConfig
    from titan.roles.master import Master, MasterConfig
    setup_logging(args.log_level, "INFO")
    config = MasterConfig(
        data_dir=Path(args.data), bind=_address(args.bind, "--bind"), token=args.token,
        insecure=args.insecure, name=args.name, heartbeat_timeout_s=args.heartbeat_timeout,
        lost_grace_s=args.lost_grace, handshake_timeout_s=args.handshake_timeout,
        frame_timeout_s=args.frame_timeout, max_connections=args.max_connections,
        max_body_bytes=args.max_frame_bytes, log_max_bytes=args.log_max_bytes, tls=server_tls(args),
        fsync=args.appendfsync, retention_s=args.retention, clock_offset_s=args.clock_offset,
        scaler=ScalerConfig(wait_s=args.scale_after, cooldown_s=args.scale_cooldown,
                            max_per_host=args.max_children_per_host, max_cluster=args.max_children_total))
    master = Master(config)
    try:
        master.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.bind}: {exc.strerror or exc}") from None
    if args.with_parent:
        _stop_with_parent(master.loop)
    master.serve_forever()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from titan.roles.worker import Worker, WorkerConfig
    setup_logging(args.log_level, "INFO")
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    slots = args.slots if args.slots is not None else (os.cpu_count() or 1)
    temp = args.data is None
    data = Path(tempfile.mkdtemp(prefix="titan-worker-")) if temp else Path(args.data)
    tls = client_tls(args)
    config = WorkerConfig(master=_address(args.master or DEFAULT_MASTER, "--master"), name=name, data_dir=data,
                          tags=frozenset(tags(args.tags)), slots=slots, token=args.token,
                          dedicated=args.dedicated, heartbeat_interval_s=args.heartbeat_interval,
                          master_timeout_s=args.master_timeout, tls=tls,
                          tls_files=(args.tls_ca, args.tls_cert, args.tls_key) if tls is not None else None,
                          ephemeral=args.ephemeral, idle_timeout_s=args.idle_timeout,
                          max_children=args.max_children, ahead=args.ahead)
    try:
        worker = Worker(config)
        if args.with_parent:
            _stop_with_parent(worker.loop)
        worker.serve_forever()
    finally:
        if temp:
            shutil.rmtree(data, ignore_errors=True)
    return EXIT_OK


def cmd_store(args: argparse.Namespace) -> int:
    if getattr(args, "store_action", None) == "check":
        return _store_check(args)
    from titan.roles.store import StoreConfig, StoreServer
    setup_logging(args.log_level, "INFO")
    bind = _address(args.bind, "--bind", 6380)
    config = StoreConfig(data_dir=Path(args.dir), bind=bind,
                         appendfsync=args.appendfsync, insecure=args.insecure,
                         rewrite_percentage=args.rewrite_percentage, rewrite_min_bytes=args.rewrite_min_bytes)
    server = StoreServer(config)
    server.start()
    server.serve_forever()
    return EXIT_OK


def _store_check(args: argparse.Namespace) -> int:
    """``titan store check DIR [--fix]``: list the AOF files, what was fixed and what is wrong."""
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


def cmd_nodes(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        nodes = c.nodes()
    return show_list(args, nodes, ["NAME", "STATE", "KIND", "TAGS", "RUNNING", "SLOTS", "LOAD", "LAST SEEN",
                                   "PARENT", "ADDRESS"],
                     lambda n: [n["name"], n["state"], "ephemeral" if n.get("ephemeral") else "permanent",
                                ",".join(n["tags"]) or "-", str(n["running"]), str(n["slots"]), f"{n['load']:.2f}",
                                _ago(n.get("last_seen_s")), n.get("parent") or "-", str(n.get("address", ""))])


def _ago(seconds: Optional[float]) -> str:
    """How long ago a worker was last heard from: ``0.4s ago``, ``12m ago``, ``3h ago``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m ago"
    return f"{seconds // 3600:.0f}h ago"


def cmd_drain(args: argparse.Namespace) -> int:
    with make_client(args) as c:
        reply = c.drain(args.node, undo=args.undo)
    if args.json:
        print_json(reply)
    else:
        print(f"{reply['node']}: {reply['state']} ({reply['running']} running)")
    return EXIT_OK


def cmd_kv(args: argparse.Namespace) -> int:
    if not args.kv_action:
        raise UsageError("titan kv needs an action: get KEY, set KEY VALUE, del KEY..., keys [PATTERN]")
    with make_client(args) as c:
        if args.kv_action == "get":
            value = c.kv.get(args.key)
            if args.json:
                print_json(value)           # null for a missing key, which still exits 4
            elif value is not None:
                sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") else b"\n"))
            if value is None:
                print(f"titan: no key {args.key!r}", file=sys.stderr)
                return EXIT_NOT_FOUND
        elif args.kv_action == "set":
            c.kv.set(args.key, args.value, ttl_s=args.ttl)
        elif args.kv_action == "del":
            deleted = c.kv.delete(*args.keys)
            print_json({"deleted": deleted}) if args.json else print(deleted)
        else:
            keys = c.kv.keys(args.pattern)
            print_json(keys) if args.json else print("\n".join(keys)) if keys else None
    return EXIT_OK
