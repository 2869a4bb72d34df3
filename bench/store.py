#!/usr/bin/env python3
"""TitanStore benchmark: durable SET throughput and AOF load time, against redis-server.

Prints ``metric value unit`` lines:

- ``titan_set_always`` / ``redis_set_always``: SETs per second with
  ``appendfsync always`` from 50 concurrent connections (``redis-benchmark -t
  set -n 100000 -c 50`` when installed, else a built-in generator: 50
  connections, one request in flight each, in 2 separate processes), and
  ``set_ratio`` (Titan / Redis; target >= 0.33);
- ``titan_load_1m`` / ``redis_load_1m``: seconds from start to the first PONG
  on a directory holding a 1,000,000-key AOF that Titan wrote (both servers
  load the same files), and ``load_ratio`` (Titan / Redis; target <= 2.0).
  ``*_load_1m_rewritten``: the same after a BGREWRITEAOF (a base file).

redis-server / redis-benchmark are optional: without them only Titan's
figures are printed.  Usage: ``python3 bench/store.py [--requests 100000] [--keys 1000000]``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from titan.io.proc import titan_command, titan_env  # noqa: E402
from titan.store.resp import encode_command  # noqa: E402

CLIENTS = 50
OK = b"+OK\r\n"                 # every SET here answers exactly this


# ----- servers -------------------------------------------------------------------
class Server:
    """A titan store or redis-server subprocess in its own session."""

    def __init__(self, argv: List[str], log: Path, env: Optional[dict] = None) -> None:
        self.started = time.perf_counter()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_titan(data_dir: Path, log: Path) -> Tuple[Server, int]:
    addr = data_dir / "store.addr"
    if addr.exists():
        addr.unlink()
    server = Server(titan_command() + ["store", "--bind", "127.0.0.1:0", "--dir", str(data_dir),
                                       "--appendfsync", "always"], log, env=titan_env())
    wait_for(lambda: addr.exists() or server.proc.poll() is not None, 600)
    if server.proc.poll() is not None:
        sys.exit(f"titan store exited with {server.proc.returncode}; see {log}")
    port = int(addr.read_text().strip().rpartition(":")[2])
    wait_for(lambda: ping(port), 60)
    return server, port


def start_redis(data_dir: Path, log: Path) -> Tuple[Server, int]:
    port = free_port()
    server = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                     "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                     "--aof-use-rdb-preamble", "no"], log)
    wait_for(lambda: ping(port) or server.proc.poll() is not None, 600)
    if server.proc.poll() is not None:
        sys.exit(f"redis-server exited with {server.proc.returncode}; see {log}")
    return server, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {timeout_s}s")
        time.sleep(0.002)


def ping(port: int) -> bool:
    """True once the server answers PING with PONG (not -LOADING)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def command(port: int, *args: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
        s.sendall(encode_command(list(args)))
        data = s.recv(1 << 16)
        while not data.endswith(b"\r\n"):
            data += s.recv(1 << 16)
        return data


# ----- SET throughput ------------------------------------------------------------------
def set_throughput(port: int, requests: int) -> float:
    if shutil.which("redis-benchmark"):
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(requests),
                              "-c", str(CLIENTS), "-q"], capture_output=True, text=True, timeout=900).stdout
        found = re.findall(r"SET: ([0-9.]+) requests per second", out.replace("\r", "\n"))
        if not found:
            sys.exit(f"cannot read redis-benchmark's output: {out[-500:]!r}")
        return float(found[-1])
    return builtin_load(port, requests)


def builtin_load(port: int, requests: int, processes: int = 2) -> float:
    """50 connections, one SET in flight each (as redis-benchmark -c 50), from separate processes."""
    per_process = requests // processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        start = time.perf_counter()
        pool.starmap(_load_worker, [(port, CLIENTS // processes, per_process, p) for p in range(processes)])
        elapsed = time.perf_counter() - start
    return per_process * processes / elapsed


def _load_worker(port: int, conns: int, requests: int, worker: int) -> None:
    sel = selectors.DefaultSelector()
    left = {"sent": 0, "done": 0}
    value = b"x" * 3

    def send(sock: socket.socket) -> None:
        if left["sent"] < requests:
            sock.sendall(encode_command([b"SET", b"key:%d:%d" % (worker, left["sent"]), value]))
            left["sent"] += 1

    for _ in range(conns):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(sock, selectors.EVENT_READ)
        send(sock)
    received = {key.fileobj: 0 for key in sel.get_map().values()}
    while left["done"] < requests:
        for key, _ in sel.select(10):
            received[key.fileobj] += len(key.fileobj.recv(65536))  # type: ignore[union-attr]
            replies, received[key.fileobj] = divmod(received[key.fileobj], len(OK))
            left["done"] += replies
            for _ in range(replies):
                send(key.fileobj)  # type: ignore[arg-type]


# ----- a 1,000,000-key AOF ------------------------------------------------------------------
def fill(port: int, keys: int, conns: int = 4, batch: int = 2000) -> None:
    """SET key:N value-N for N < keys, pipelined in batches over a few connections."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    next_key = 0
    while next_key < keys:
        pending = []
        for s in socks:
            stop = min(next_key + batch, keys)
            if next_key >= stop:
                break
            s.sendall(b"".join(encode_command([b"SET", b"key:%08d" % i, b"value-%d" % i])
                               for i in range(next_key, stop)))
            pending.append((s, stop - next_key))
            next_key = stop
        for s, count in pending:
            got = 0
            while got < count * len(OK):
                got += len(s.recv(1 << 20))
    for s in socks:
        s.close()


def time_start(start: Callable[[Path, Path], Tuple[Server, int]], data_dir: Path, log: Path,
               keys: int) -> float:
    server, port = start(data_dir, log)
    elapsed = time.perf_counter() - server.started
    size = command(port, b"DBSIZE")
    server.stop()
    if size != b":%d\r\n" % keys:
        sys.exit(f"{data_dir}: expected {keys} keys after loading, got {size!r}")
    return elapsed


def copy_aof(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "appendonlydir", dst / "appendonlydir")
    return dst


def bench_set(work: Path, log: Path, requests: int, have_redis: bool) -> None:
    """SET throughput with appendfsync always: Titan, Redis, ratio."""
    server, port = start_titan(work / "titan-set", log)
    titan_rate = set_throughput(port, requests)
    server.stop()
    print(f"titan_set_always {titan_rate:.0f} requests/s", flush=True)
    if have_redis:
        (work / "redis-set").mkdir()
        server, port = start_redis(work / "redis-set", log)
        redis_rate = set_throughput(port, requests)
        server.stop()
        print(f"redis_set_always {redis_rate:.0f} requests/s")
        print(f"set_ratio {titan_rate / redis_rate:.2f} x", flush=True)


def bench_load(work: Path, log: Path, keys: int, have_redis: bool) -> None:
    """Start-to-PONG on a Titan-written AOF of ``keys`` keys, before and after a rewrite."""
    data = work / "titan-load"
    server, port = start_titan(data, log)
    fill(port, keys)
    server.stop()
    compare_loads(work, data, log, keys, have_redis, "")
    server, port = start_titan(data, log)
    command(port, b"BGREWRITEAOF")
    manifest = data / "appendonlydir" / "appendonly.aof.manifest"
    wait_for(lambda: "appendonly.aof.2.base.aof" in manifest.read_text(), 600)
    server.stop()
    compare_loads(work, data, log, keys, have_redis, "_rewritten")


def compare_loads(work: Path, data: Path, log: Path, keys: int, have_redis: bool, suffix: str) -> None:
    redis_copy = copy_aof(data, work / f"redis-load{suffix}") if have_redis else None
    label = "1m" if keys == 1_000_000 else f"{keys}keys"
    titan_load = time_start(start_titan, data, log, keys)
    print(f"titan_load_{label}{suffix} {titan_load:.2f} s", flush=True)
    if redis_copy is not None:
        redis_load = time_start(start_redis, redis_copy, log, keys)
        print(f"redis_load_{label}{suffix} {redis_load:.2f} s")
        print(f"load_ratio{suffix} {titan_load / redis_load:.2f} x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    have_redis = shutil.which("redis-server") is not None
    with tempfile.TemporaryDirectory(prefix="titan-bench-store-") as tmp:
        work = Path(tmp)
        log = work / "servers.log"
        bench_set(work, log, args.requests, have_redis)
        bench_load(work, log, args.keys, have_redis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
