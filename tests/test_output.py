"""Task output end to end: streams kept apart, big output delivered whole, logs capped.

Also `titan up` without a command: it serves until interrupted, then stops
everything it started.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from conftest import child_env, cli_argv, pid_gone, run_cli, wait_until
from titan.roles.local import LocalCluster
from titan.sdk.client import Client

# Prints SIZE bytes of a deterministic pattern to stdout as fast as it can.
PRINTER = ("import sys; n = int(sys.argv[1]); chunk = bytes(range(256)) * 256\n"
           "while n > 0:\n"
           "    sys.stdout.buffer.write(chunk[:n]); n -= len(chunk)\n")


def pattern(size: int) -> bytes:
    chunk = bytes(range(256)) * 256
    return (chunk * (size // len(chunk) + 1))[:size]


def test_stdout_and_stderr_reach_the_terminal_on_their_own_streams(cluster: Callable[..., LocalCluster]) -> None:
    # Given a cluster
    local = cluster(workers=1)
    # When `titan run` runs a command that writes to both streams
    res = run_cli("--master", local.address, "run", "--", "sh", "-c", "echo to-out; echo to-err >&2")
    # Then each line lands on the stream it was written to
    assert res.code == 0, res
    assert res.stdout == "to-out\n"
    assert "to-err" in res.stderr and "to-err" not in res.stdout


def test_output_larger_than_the_socket_buffers_arrives_whole_and_in_order(
        cluster: Callable[..., LocalCluster]) -> None:
    # Given a cluster and a task that prints 6 MiB as fast as it can
    local = cluster(workers=1)
    size = 6 * 1024 * 1024
    with local.client() as c:
        task = c.submit([sys.executable, "-c", PRINTER, str(size)])
        result = task.result(timeout=60)
        # When its output is read back
        logged = b"".join(c.logs(task.id))
        indexed = c.status(task.id)["attempts"][0]["log_bytes"]
    # Then every byte is there, in order: the result carries the last 1 MiB
    assert result.state == "SUCCEEDED", result
    assert hashlib.sha256(logged).hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    assert result.output_bytes == pattern(size)[-1024 * 1024:]
    # And the attempt's record indexes its log
    assert indexed == size


def test_a_chatty_task_cannot_grow_its_log_past_the_cap(cluster: Callable[..., LocalCluster]) -> None:
    # Given a master that keeps at most 100 kB of log per attempt
    cap = 100_000
    local = cluster(workers=1, master_args=["--log-max-bytes", str(cap)])
    with local.client() as c:
        # When a task prints 5 MB
        task = c.submit([sys.executable, "-c", PRINTER, str(5_000_000)])
        result = task.result(timeout=60)
        logged = b"".join(c.logs(task.id))
    # Then the task still succeeds, and its log holds the first 100 kB plus one marker line
    assert result.state == "SUCCEEDED", result
    assert logged[:cap] == pattern(cap)
    assert b"log reached its 100000-byte cap" in logged[cap:]
    assert len(logged) < cap + 200
    files = list((local.data_dir / "master" / "logs").rglob("*.log"))
    assert len(files) == 1 and files[0].stat().st_size == len(logged)
    # And `titan run` of the same task prints those 100 kB, then says on stderr that the rest was dropped
    res = run_cli("--master", local.address, "run", "--", "sh", "-c", "yes abcdefghi | head -c 5000000")
    assert res.code == 0 and res.stdout == ("abcdefghi\n" * (cap // 10)), (res.code, len(res.stdout), res.stderr)
    assert res.stderr == "\n[titan: log reached its 100000-byte cap; further output is dropped]\n", res.stderr


def test_up_without_a_command_serves_until_interrupted(tmp_path: Path) -> None:
    # Given `titan up` started with no command
    proc = subprocess.Popen(cli_argv("up", "--workers", "1", "--data", str(tmp_path / "up")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=child_env(), start_new_session=True)
    try:
        line = proc.stderr.readline().decode()
        match = re.search(r"master (\S+:\d+)", line)
        assert match, line
        # When a client uses the cluster it announced
        with Client(match.group(1), token="") as c:
            assert c.submit("echo served").result(timeout=30).output == "served\n"
            worker_pid = c.nodes()[0]["pid"]
        # And the command its next line suggests works as it is
        hint = proc.stderr.readline().decode()
        suggested = re.fullmatch(r"titan: try  (.*)   \(Ctrl-C stops\)\n", hint)
        assert suggested and suggested.group(1).endswith(" run -- echo hello"), hint
        tried = subprocess.run(["sh", "-c", suggested.group(1)], stdin=subprocess.DEVNULL, capture_output=True,
                               env=child_env(), timeout=60)
        assert (tried.returncode, tried.stdout) == (0, b"hello\n"), tried
        # And the user presses Ctrl-C
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pidfile in (tmp_path / "up").glob("*.pid"):   # the cluster it started, if it could not
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    # Then it exits 0 and the worker it started is gone
    assert code == 0
    wait_until(lambda: pid_gone(worker_pid), 10, "the local worker to exit")


def test_logs_json_gives_the_output_with_its_attempt_and_node(cluster: Callable[..., LocalCluster],
                                                              tmp_path: Path) -> None:
    local = cluster(workers=1)
    m = ("--master", local.address)
    marker = tmp_path / "tried"
    with local.client() as c:
        # attempt 1 prints "café" and fails; attempt 2 prints a cut UTF-8 sequence and fails too
        task = c.submit(f"if [ -e {marker} ]; then printf 'ab\\303'; else touch {marker}; "
                        f"printf 'caf\\303\\251\\n'; fi; exit 4", retries=1, retry_backoff_s=0.1)
        assert task.result(timeout=30).exit_code == 4
    for argv in (["--json", "logs", task.id], ["logs", task.id, "--json"]):
        res = run_cli(*m, *argv)
        assert res.code == 0, res
        assert json.loads(res.stdout) == {"task": task.id, "attempt": 2, "node": "local-1", "state": "FAILED",
                                          "exit_code": 4, "output": "ab\ufffd"}
    res = run_cli(*m, "logs", task.id, "--attempt", "1", "--json")
    assert json.loads(res.stdout)["output"] == "café\n" and json.loads(res.stdout)["attempt"] == 1, res
    # followed: a JSON line per chunk of output, then one that says how the attempt ended
    for attempt, output in ((None, "ab\ufffd"), ("1", "café\n")):
        res = run_cli(*m, "logs", "-f", "--json", task.id, *(["--attempt", attempt] if attempt else []))
        lines = [json.loads(line) for line in res.stdout.splitlines()]
        number = int(attempt or 2)
        assert {line["attempt"] for line in lines} == {number}, res
        assert "".join(line.get("output", "") for line in lines[:-1]) == output, res
        assert lines[-1] == {"task": task.id, "attempt": number, "node": "local-1", "state": "FAILED",
                             "exit_code": 4, "end": True}
    res = run_cli(*m, "logs", task.id, "--attempt", "0")
    assert res.code == 2 and "has no attempt 0 (it has 2, numbered from 1)" in res.stderr, res


def test_logs_follow_of_one_attempt_ends_with_that_attempt(cluster: Callable[..., LocalCluster],
                                                          tmp_path: Path) -> None:
    # Given a task whose first attempt prints, waits on a gate and fails; the second prints and waits on another
    local = cluster(workers=1)
    gate1, gate2, marker = tmp_path / "gate1", tmp_path / "gate2", tmp_path / "tried"
    with local.client() as c:
        task = c.submit(f"if [ -e {marker} ]; then echo second; while [ ! -e {gate2} ]; do sleep 0.05; done; "
                        f"exit 0; fi; touch {marker}; echo first; "
                        f"while [ ! -e {gate1} ]; do sleep 0.05; done; exit 1", retries=1, retry_backoff_s=0.1)
        wait_until(lambda: b"first" in b"".join(c.logs(task.id)), 30, "the first attempt to print")
        # When attempt 1 is followed while it runs, and it fails
        chunks = c.log_chunks(task.id, attempt=1, follow=True, timeout=30)
        first = next(chunks)
        gate1.touch()
        rest = list(chunks)
        # Then the follow ends with attempt 1, having shown only its output, though the task goes on
        assert first == (1, b"first\n") and rest == [], rest
        assert c.status(task.id)["state"] in ("QUEUED", "RUNNING")
        wait_until(lambda: b"second" in b"".join(c.logs(task.id)), 30, "the second attempt to print")
        assert c.status(task.id)["state"] == "RUNNING"          # held by gate2: the follow did not wait for it
        assert b"".join(c.logs(task.id, attempt=1)) == b"first\n"
        gate2.touch()
        assert task.result(timeout=30).state == "SUCCEEDED"
        assert list(c.log_chunks(task.id)) == [(2, b"second\n")]


# Waits for the file GO, then prints SIZE bytes like PRINTER, writing after every chunk
# how many bytes it has written so far into the file PROGRESS.
GATED_PRINTER = (
    "import os, sys, time\n"
    "n, go, progress = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "while not os.path.exists(go):\n"
    "    time.sleep(0.01)\n"
    "chunk, done = bytes(range(256)) * 256, 0\n"
    "fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)\n"
    "while done < n:\n"
    "    part = chunk[:n - done]\n"
    "    sys.stdout.buffer.write(part); sys.stdout.buffer.flush(); done += len(part)\n"
    "    os.pwrite(fd, b'%20d' % done, 0)\n")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_worker_stops_reading_a_task_s_output_while_the_master_takes_none(
        cluster: Callable[..., LocalCluster], tmp_path: Path) -> None:
    # Given a cluster (nobody gives up on a silent peer for a minute), and a task that
    # will print 96 MiB as fast as it can once it is told to, noting how far it got
    size = 96 * 1024 * 1024
    local = cluster(workers=1, master_args=["--heartbeat-timeout", "60", "--log-max-bytes", str(2 * size)],
                    worker_args=["--master-timeout", "60"])
    go, progress = tmp_path / "go", tmp_path / "progress"
    worker_pid = local.worker_procs[0].pid

    def written() -> int:
        try:
            return int(progress.read_bytes() or b"0")
        except (OSError, ValueError):
            return 0

    with local.client() as c:
        task = c.submit([sys.executable, "-c", GATED_PRINTER, str(size), str(go), str(progress)])
        wait_until(lambda: c.status(task.id)["state"] == "RUNNING", 30, "the task to start")
        rss_before = rss_bytes(worker_pid)
        # When the master stops reading (stopped) and the task starts printing
        os.kill(local.master.pid, signal.SIGSTOP)
        try:
            go.touch()
            seen = [-1, time.monotonic()]

            def stalled() -> bool:
                now, count = time.monotonic(), written()
                if count != seen[0]:
                    seen[:] = [count, now]
                return count > 0 and now - seen[1] >= 0.5

            wait_until(stalled, 60, lambda: f"the task to stop getting anywhere (at {written()} bytes)")
            stuck_at, rss_growth = written(), rss_bytes(worker_pid) - rss_before
        finally:
            os.kill(local.master.pid, signal.SIGCONT)
        # And the master reads again
        result = task.result(timeout=120)
        logged = b"".join(c.logs(task.id))
    # Then while the master took nothing the task was held at a write: the worker stopped
    # reading its pipes instead of keeping what it printed
    assert stuck_at < size * 2 // 3, stuck_at
    assert rss_growth < 32 * 1024 * 1024, rss_growth
    # And once the master read again, every byte arrived, in order
    assert result.state == "SUCCEEDED", result
    assert hashlib.sha256(logged).hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
