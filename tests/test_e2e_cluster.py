"""End-to-end: a real master and real workers, driven through the SDK and the CLI.

Each test starts its own processes on 127.0.0.1 (see ``conftest.py``) and
asserts what a user sees: results, output, exit codes, which node ran what,
and that killed tasks leave no process behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import (TitanProcs, child_env, cli_argv, dump_logs, free_port, pid_gone, run_cli,
                      wait_until)
from titan.errors import AuthError, ConnectionLost
from titan.roles.local import LocalCluster
from titan.sdk.client import Client

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_TIMEOUT_S = 30.0

Cluster = Callable[..., LocalCluster]


# ----- helpers ---------------------------------------------------------------
def pid_script(directory: Path) -> str:
    """A shell script that records its pid and its background child's pid, then waits."""
    d = shlex.quote(str(directory))
    return f"echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid; " \
           f"sleep 300 & echo $! > {d}/child.tmp && mv {d}/child.tmp {d}/child; wait"


def read_pids(directory: Path) -> List[int]:
    return [int((directory / name).read_text()) for name in ("pid", "child")]


def pids_written(directory: Path) -> bool:
    return (directory / "pid").exists() and (directory / "child").exists()


def assert_all_gone(pids: List[int], logs: Callable[[], str]) -> None:
    wait_until(lambda: all(pid_gone(p) for p in pids), 5.0,
               lambda: f"pids {pids} to exit; alive: {[p for p in pids if not pid_gone(p)]}\n{logs()}")


def next_line(lines: "queue.Queue[bytes]", what: str, timeout_s: float = 15.0) -> bytes:
    """The next line a reader thread queued, or an AssertionError naming ``what`` after ``timeout_s``."""
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        raise AssertionError(f"no line from {what} within {timeout_s:g}s") from None


@contextlib.contextmanager
def cli_lines(*args: str, stream: str = "stdout",
              env: Optional[Dict[str, str]] = None) -> Iterator[Tuple[subprocess.Popen, "queue.Queue[bytes]"]]:
    """`titan ARGS` in a session of its own, with a thread queueing the lines of ``stream``;
    killed (its group) and reaped on the way out."""
    proc = subprocess.Popen(cli_argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env if env is not None else child_env(),
                            start_new_session=True)
    lines: "queue.Queue[bytes]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in getattr(proc, stream)], daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        reader.join(5)                  # it has read to the end of the stream
        proc.stdout.close()
        proc.stderr.close()


def assert_heard_again(c: Client, names: Set[str]) -> None:
    """Wait until every node in ``names`` shows a last_seen_s lower than in an earlier listing."""
    heard: Set[str] = set()
    last: Dict[str, float] = {}

    def all_heard() -> bool:
        for n in c.nodes():
            if n["last_seen_s"] < last.get(n["name"], -1.0):
                heard.add(n["name"])
            last[n["name"]] = n["last_seen_s"]
        return heard >= names

    wait_until(all_heard, 10, lambda: f"a heartbeat from each of {sorted(names - heard)}; last_seen_s {last}")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]


# ----- 1. throughput and spread ----------------------------------------------
def test_200_pipelined_tasks_all_succeed_on_both_workers(cluster: Cluster) -> None:
    # Given a master and two workers with two slots each
    local = cluster(workers=2, slots=2)
    # When one client submits 200 tasks before it collects any result
    with local.client() as c:
        tasks = [(n, c.submit(["true"] if n % 2 else ["echo", str(n)])) for n in range(200)]
        results = [(n, t.result(timeout=60)) for n, t in tasks]
    # Then every task succeeded with its own output, and both workers ran some
    failed = [(n, r.state, r.reason) for n, r in results if r.state != "SUCCEEDED"]
    assert not failed, failed
    for n, r in results:
        assert r.exit_code == 0
        assert r.output == ("" if n % 2 else f"{n}\n"), (n, r.output)
    nodes = [r.node for _, r in results]
    assert set(nodes) == {"local-1", "local-2"}, {n: nodes.count(n) for n in set(nodes)}
    assert len({r.id for _, r in results}) == 200


# ----- 2. capability routing -------------------------------------------------
def test_every_attempt_starts_in_an_empty_workspace(cluster: Cluster) -> None:
    # Given one worker with one slot, so attempts follow each other in the same pool of directories
    local = cluster(workers=1, slots=1)
    with local.client() as c:
        # When attempts alternately leave files (and a directory) behind and list what they found
        script = 'ls -A; touch left-$TITAN_TASK; mkdir -p sub/deeper'
        results = [c.submit(["sh", "-c", script]).result(timeout=30) for _ in range(6)]
        quiet = [c.submit(["sh", "-c", "ls -A"]).result(timeout=30) for _ in range(3)]
    # Then none of them saw anything another one left
    assert [r.exit_code for r in results + quiet] == [0] * 9
    assert [r.output for r in results + quiet] == [""] * 9


def test_a_task_is_told_its_master_run_task_attempt_node_and_directories(cluster: Cluster) -> None:
    # Given a cluster, and a task that fails on its first attempt and may be retried once
    local = cluster(workers=1)
    names = ["TITAN_MASTER", "TITAN_RUN", "TITAN_TASK", "TITAN_ATTEMPT", "TITAN_SHARED", "TITAN_WORKSPACE",
             "TITAN_NODE"]
    script = " ".join(f'echo "{n}=${n}";' for n in names) + ' echo "PWD=$(pwd -P)"; [ "$TITAN_ATTEMPT" = 2 ]'
    # When it runs twice
    with local.client() as c:
        result = c.submit(["sh", "-c", script], retries=1, retry_backoff_s=0.1).result(RESULT_TIMEOUT_S)
    # Then its second attempt was told where the master is, which run, task, attempt and node it is,
    # and that a lone task's shared directory is its own workspace, the directory it started in
    assert (result.state, result.attempts) == ("SUCCEEDED", 2), result
    env = dict(line.split("=", 1) for line in result.output.splitlines())
    assert env["TITAN_MASTER"] == local.address
    assert (env["TITAN_RUN"], env["TITAN_TASK"], env["TITAN_ATTEMPT"]) == (result.id, result.id, "2"), env
    assert env["TITAN_NODE"] == result.node == "local-1"
    workspace = str(Path(env["TITAN_WORKSPACE"]).resolve())
    assert env["TITAN_SHARED"] == env["TITAN_WORKSPACE"] and workspace == env["PWD"], env
    assert workspace.startswith(str((local.data_dir / "local-1").resolve()) + "/"), env


def test_a_task_starts_with_every_signal_at_its_default_action(cluster: Cluster) -> None:
    # Given a worker (a Python process, which ignores SIGPIPE and SIGXFSZ itself)
    local = cluster(workers=1, slots=1)
    with local.client() as c:
        # When a task pipes an endless writer into a reader that stops after one line
        piped = c.submit(["sh", "-c", "yes | head -1"]).result(timeout=30)
        # and another reads the set of signals it ignores
        ignored = c.submit(["sh", "-c", "grep SigIgn /proc/self/status"]).result(timeout=30)
    # Then the writer died of SIGPIPE quietly, as under a shell, instead of reporting a broken pipe
    assert (piped.exit_code, piped.output) == (0, "y\n")
    # and neither SIGPIPE nor SIGXFSZ is ignored in the task
    mask = int(ignored.output.split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1)), ignored.output
    assert not mask & (1 << (signal.SIGXFSZ - 1)), ignored.output


def test_gpu_tasks_run_only_on_the_gpu_worker(cluster: Cluster) -> None:
    # Given a plain worker and a gpu worker
    local = cluster(workers=1)
    local.start_worker("gpu-1", extra=["--tags", "gpu"])
    local.wait_for_workers(2, time.monotonic() + 30)
    # When gpu tasks are submitted next to plain ones
    with local.client() as c:
        gpu = [c.submit(["sh", "-c", "sleep 0.2; echo $TITAN_NODE"], requires={"gpu"}) for _ in range(5)]
        gpu.append(c.submit(["sh", "-c", "sleep 0.2; echo $TITAN_NODE"], requires="gpu"))  # one tag, as a str
        plain = [c.submit(["sh", "-c", "sleep 0.2"]) for _ in range(6)]
        gpu_results = [t.result(timeout=RESULT_TIMEOUT_S) for t in gpu]
        plain_results = [t.result(timeout=RESULT_TIMEOUT_S) for t in plain]
    # Then every gpu task ran on gpu-1, and said so itself
    for r in gpu_results:
        assert (r.state, r.node, r.output) == ("SUCCEEDED", "gpu-1", "gpu-1\n"), r
    assert all(r.ok for r in plain_results)
    assert "local-1" in {r.node for r in plain_results}
    # And the CLI's JSON status names the node, with --json before or after the verb
    for argv in (["--json", "status", gpu_results[0].id], ["status", gpu_results[0].id, "--json"]):
        out = run_cli("--master", local.address, *argv)
        assert out.code == 0, out
        status = json.loads(out.stdout)
        assert (status["id"], status["state"], status["node"]) == (gpu_results[0].id, "SUCCEEDED", "gpu-1")
        assert status["requires"] == ["gpu"]


def test_cli_run_requires_gpu_runs_on_the_gpu_worker_every_time(cluster: Cluster) -> None:
    # Given an untagged worker and a gpu worker
    local = cluster(workers=1)
    local.start_worker("gpu-1", extra=["--tags", "gpu"])
    local.wait_for_workers(2, time.monotonic() + 30)
    # When a user runs a command that requires gpu, a few times over
    outs = [run_cli("--master", local.address, "run", "--requires", "gpu", "--", "sh", "-c", "echo $TITAN_NODE")
            for _ in range(4)]
    # Then each run printed the gpu worker's name and exited 0
    assert [(out.code, out.stdout) for out in outs] == [(0, "gpu-1\n")] * 4, outs


# ----- 3 and 4. killing the whole process group ------------------------------
def test_timeout_kills_the_task_and_its_grandchild(cluster: Cluster, tmp_path: Path) -> None:
    # Given a task that starts a background child and waits on it
    local = cluster(workers=1)
    pids = tmp_path / "pids"
    pids.mkdir()
    # When it outlives its timeout
    with local.client() as c:
        started = time.monotonic()
        result = c.submit(["sh", "-c", pid_script(pids)], timeout_s=1, kill_grace_s=1).result(RESULT_TIMEOUT_S)
        elapsed = time.monotonic() - started
    # Then it failed for the timeout, soon after it
    assert result.state == "FAILED", result
    assert "timed out after 1s" in result.reason
    assert elapsed < 10, elapsed
    # And neither the shell nor its background sleep is left
    assert pids_written(pids), "the task never started"
    assert_all_gone(read_pids(pids), lambda: dump_logs(local.data_dir))


def test_cancel_kills_a_running_task_and_its_grandchild(cluster: Cluster, tmp_path: Path) -> None:
    # Given a running task with a background child
    local = cluster(workers=1)
    pids = tmp_path / "pids"
    pids.mkdir()
    with local.client() as c:
        task = c.submit(["sh", "-c", pid_script(pids)], kill_grace_s=1)
        wait_until(lambda: pids_written(pids), 15, "the task to write its pids")
        shell, child = read_pids(pids)
        assert not pid_gone(shell) and not pid_gone(child)
        # When a user cancels it from the CLI
        out = run_cli("--master", local.address, "cancel", task.id)
        result = task.result(RESULT_TIMEOUT_S)
    # Then the CLI says so, the task is CANCELLED, and both processes are gone
    assert out.code == 0, out
    assert task.id in out.stdout and "cancelling" in out.stdout
    assert result.state == "CANCELLED", result
    assert_all_gone([shell, child], lambda: dump_logs(local.data_dir))


def test_a_cancelled_task_that_ignores_term_is_killed_after_its_grace(cluster: Cluster, tmp_path: Path) -> None:
    # Given a running task whose shell only logs TERM, with a background child that ignores TERM
    local = cluster(workers=1)
    pids = tmp_path / "pids"
    pids.mkdir()
    d = shlex.quote(str(pids))
    script = (f"trap 'echo TERM ignored' TERM; echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid; "
              f"(trap '' TERM; exec sleep 300) & echo $! > {d}/child.tmp && mv {d}/child.tmp {d}/child; "
              f"while :; do wait; done")
    with local.client() as c:
        task = c.submit(["sh", "-c", script], kill_grace_s=1.0)
        wait_until(lambda: pids_written(pids), 15, "the task to write its pids")
        shell, child = read_pids(pids)
        try:
            assert c.status(task.id)["state"] == "RUNNING"
            # When it is cancelled
            c.cancel(task.id)
            result = task.result(RESULT_TIMEOUT_S)
            # Then TERM came first and was shrugged off, and KILL ended it after the grace
            assert result.state == "CANCELLED", result
            assert "TERM ignored" in result.output, result
            assert result.exit_code == -signal.SIGKILL, result
            # And neither the shell nor its child is left
            assert_all_gone([shell, child], lambda: dump_logs(local.data_dir))
        finally:
            for pid in (shell, child):      # stopping the cluster would not end them: TERM is ignored
                if not pid_gone(pid):
                    os.kill(pid, signal.SIGKILL)


def group_members(pgid: int) -> List[int]:
    """The live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_cli_run_timeout_kills_a_task_that_ignores_term_and_its_whole_group(cluster: Cluster,
                                                                            tmp_path: Path) -> None:
    # Given a task whose shell and children ignore TERM: a background sleep and a foreground one
    local = cluster(workers=1)
    pids = tmp_path / "pids"
    pids.mkdir()
    d = shlex.quote(str(pids))
    script = (f"trap '' TERM; echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid; "
              f"sleep 300 & echo $! > {d}/child.tmp && mv {d}/child.tmp {d}/child; sleep 300")
    try:
        # When `titan run` gives it a 1 s timeout and half a second between TERM and KILL
        started = time.monotonic()
        out = run_cli("--master", local.address, "run", "--timeout", "1", "--kill-grace", "0.5", "--",
                      "sh", "-c", script, timeout_s=20)
        elapsed = time.monotonic() - started
        # Then it exits with the timeout's code (124) soon after the timeout, saying why
        assert out.code == 124, out
        assert "timed out" in out.stderr, out
        assert elapsed < 10, elapsed
        # And KILL took the whole process group: the shell, its background child and its foreground sleep
        assert pids_written(pids), "the task never started"
        shell, child = read_pids(pids)
        wait_until(lambda: not group_members(shell), 5,
                   lambda: f"process group {shell} to be gone; left: {group_members(shell)}\n"
                           f"{dump_logs(local.data_dir)}")
        assert pid_gone(child)
    finally:
        if pids_written(pids):      # stopping the cluster would not end them: they ignore TERM
            for pid in group_members(read_pids(pids)[0]):
                os.kill(pid, signal.SIGKILL)


# ----- 5. the CLI ------------------------------------------------------------
def test_cli_run_prints_output_and_exits_with_the_task_code(cluster: Cluster) -> None:
    # Given a cluster
    local = cluster(workers=1)
    m = ["--master", local.address]
    # When a user runs commands that succeed, fail and time out
    hi = run_cli(*m, "run", "--", "python3", "-c", 'print("hi")')
    three = run_cli(*m, "run", "--", "sh", "-c", "exit 3")
    timed_out = run_cli(*m, "run", "--timeout", "1", "--", "sleep", "30", timeout_s=20)
    # Then the output is printed and the exit code is the task's (124 for a timeout)
    assert (hi.code, hi.stdout) == (0, "hi\n"), hi
    assert three.code == 3, three
    assert "FAILED" in three.stderr and "exit code 3" in three.stderr
    assert timed_out.code == 124, timed_out
    assert "timed out" in timed_out.stderr


def test_cli_run_streams_output_while_the_task_runs(cluster: Cluster, tmp_path: Path) -> None:
    # Given a cluster, and a command that prints a line, waits for a gate file, then prints another
    local = cluster(workers=1)
    gate = tmp_path / "gate"
    script = f"echo first; while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; echo second"
    # When a user runs it with `titan run`, its stdout a pipe (block-buffered, as a user's would be)
    env = child_env()
    env.pop("PYTHONUNBUFFERED", None)
    try:
        with cli_lines("--master", local.address, "run", "--", "sh", "-c", script, env=env) as (run, lines):
            # Then the first line is printed while the task is still running, and the second is not
            assert next_line(lines, "titan run") == b"first\n"
            with local.client() as c:
                states = [(t["id"], t["state"]) for t in c.tasks()]
            assert len(states) == 1 and states[0][1] == "RUNNING", states
            assert run.poll() is None, "titan run returned before the task ended"
            assert lines.empty()
            # And once the task goes on, the rest is printed and titan run exits 0
            gate.touch()
            assert run.wait(15) == 0, run.stderr.read() if run.stderr else ""
            assert next_line(lines, "titan run", 5) == b"second\n"
        assert lines.empty()
    finally:
        gate.touch()


def test_cli_run_says_why_its_task_waits_and_ctrl_c_cancels_it(cluster: Cluster) -> None:
    # Given a cluster whose only worker has no gpu tag
    local = cluster(workers=1)
    # When a user runs a task that requires gpu
    with cli_lines("--master", local.address, "run", "--requires", "gpu", "--", "echo", "x",
                   stream="stderr") as (run, lines):
        # Then within seconds it says why the task waits, and how to fix it
        assert next_line(lines, "titan run") == (b"titan: echo#1 QUEUED (no connected worker has tags gpu: "
                                                 b"start one with --tags gpu)\n")
        # And when the user presses Ctrl-C, it cancels the task and exits 130
        run.send_signal(signal.SIGINT)
        assert run.wait(15) == 130
        assert next_line(lines, "titan run", 5) == b"titan: cancelled echo#1\n"
    with local.client() as c:
        assert c.status("echo#1")["state"] == "CANCELLED"
    # And `run --detach --json` prints the id as JSON
    res = run_cli("--master", local.address, "run", "--detach", "--json", "--", "true")
    assert (res.code, json.loads(res.stdout)) == (0, {"id": "true#1"}), res


def test_cli_run_says_when_a_later_attempt_starts(cluster: Cluster, tmp_path: Path) -> None:
    # Given a task whose first attempt fails and whose second waits for a gate file
    local = cluster(workers=1)
    marker, gate = tmp_path / "failed-once", tmp_path / "gate"
    script = (f"if [ -e {marker} ]; then while [ ! -e {gate} ]; do sleep 0.05; done; echo done; "
              f"else touch {marker}; exit 3; fi")
    try:
        with cli_lines("--master", local.address, "run", "--retries", "1", "--", "sh", "-c", script,
                       stream="stderr") as (run, lines):
            # Then `titan run` says that attempt 2 started, and why (after, if it looked during the
            # 1 s backoff, a line saying the task waits for it)
            attempt_line = b"titan: sh#1 attempt 2 on local-1 (attempt 1 failed with exit code 3)\n"
            seen = [next_line(lines, "titan run", 30)]
            if seen[0] != attempt_line:
                seen.append(next_line(lines, "titan run", 30))
            assert seen in ([attempt_line], [b"titan: sh#1 QUEUED (next attempt in 1s)\n", attempt_line]), seen
            # And it ends with the second attempt's result
            gate.touch()
            assert run.wait(15) == 0
            assert run.stdout.read() == b"done\n"
    finally:
        gate.touch()


def test_cli_status_nodes_and_logs(cluster: Cluster) -> None:
    # Given a finished task that printed two lines
    local = cluster(workers=2)
    m = ["--master", local.address]
    with local.client() as c:
        result = c.submit(["sh", "-c", "echo first; echo second >&2"]).result(RESULT_TIMEOUT_S)
    assert result.ok, result
    # When a user asks for its status, the nodes and its logs
    before, after = run_cli(*m, "--json", "status", result.id), run_cli(*m, "status", result.id, "--json")
    nodes = run_cli(*m, "nodes", "--json")
    logs = run_cli(*m, "logs", result.id)
    plain = run_cli(*m, "status", result.id)
    # Then each answer is there and names the node that ran it
    for out in (before, after):
        assert out.code == 0, out
        status = json.loads(out.stdout)
        assert (status["state"], status["node"]) == ("SUCCEEDED", result.node)
        assert status["attempts"][0]["node"] == result.node
    assert nodes.code == 0, nodes
    listed = {n["name"]: n for n in json.loads(nodes.stdout)}
    assert set(listed) == {"local-1", "local-2"}
    assert all(n["state"] == "ready" and n["slots"] == 2 for n in listed.values())
    assert logs.code == 0, logs
    assert sorted(logs.stdout.splitlines()) == ["first", "second"]
    assert plain.code == 0 and result.id in plain.stdout and f"on {result.node}" in plain.stdout, plain


def test_cli_nodes_shows_each_workers_load_and_when_it_was_last_heard(cluster: Cluster, tmp_path: Path) -> None:
    # Given two workers with two slots each, one of them running a task that waits for a gate file
    local = cluster(workers=2, slots=2)
    gate, started = tmp_path / "gate", tmp_path / "started"
    script = f"touch {shlex.quote(str(started))}; while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"

    def nodes() -> Dict[str, dict]:
        out = run_cli("--master", local.address, "nodes", "--json")
        assert out.code == 0, out
        return {n["name"]: n for n in json.loads(out.stdout)}

    with local.client() as c:
        task = c.submit(["sh", "-c", script])
        try:
            wait_until(started.exists, 15, "the task to start")
            # When a user lists the nodes while it runs
            busy = nodes()
        finally:
            gate.touch()
        result = task.result(RESULT_TIMEOUT_S)
    # Then the node running it shows one of its two slots in use, and the other node none
    assert result.ok, result
    node, other = result.node, ({"local-1", "local-2"} - {result.node}).pop()
    assert (busy[node]["running"], busy[node]["load"]) == (1, 0.5), busy[node]
    assert (busy[other]["running"], busy[other]["load"]) == (0, 0.0), busy[other]
    # And once it has ended, both are idle again
    idle = nodes()
    assert [(n["running"], n["load"]) for n in idle.values()] == [(0, 0.0), (0, 0.0)], idle
    # And each was heard from within its heartbeat timeout (5 s here; 0.5 s between heartbeats)
    for listed in (busy, idle):
        for n in listed.values():
            assert 0 <= n["last_seen_s"] < 5, n
    # And the plain table shows the same as a LAST SEEN column, in seconds
    table = run_cli("--master", local.address, "nodes")
    assert table.code == 0, table
    header, *rows = [re.split(r"\s{2,}", line) for line in table.stdout.splitlines()]
    assert header[header.index("LOAD") + 1] == "LAST SEEN", header
    seen = {row[0]: row[header.index("LAST SEEN")] for row in rows}
    assert set(seen) == {"local-1", "local-2"}, table.stdout
    for name, text in seen.items():
        match = re.fullmatch(r"(\d+\.\d)s ago", text)
        assert match and float(match.group(1)) < 5, (name, text)
    # And last_seen_s starts again from zero when a worker's next heartbeat comes in (not only when it
    # registers again: each worker registered once)
    with local.client() as c:
        assert_heard_again(c, {"local-1", "local-2"})
    for name in ("local-1", "local-2"):
        log = (local.data_dir / f"{name}.log").read_text()
        assert log.count("registered with the master") == 1, log


def test_cli_logs_follow_prints_lines_as_they_come(cluster: Cluster, tmp_path: Path) -> None:
    # Given a running task that printed one line and waits for a gate file
    local = cluster(workers=1)
    gate = tmp_path / "gate"
    script = f"echo one; while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; echo two"
    detached = run_cli("--master", local.address, "run", "--detach", "--", "sh", "-c", script)
    assert detached.code == 0, detached
    task_id = detached.stdout.strip()
    # When a user follows its logs
    follow = subprocess.Popen(cli_argv("--master", local.address, "logs", "-f", task_id),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=child_env(), start_new_session=True)
    lines: "queue.Queue[bytes]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True)
    reader.start()
    try:
        # Then the first line shows up while the task still runs
        assert lines.get(timeout=15) == b"one\n"
        assert follow.poll() is None, "logs -f returned before the task ended"
        # And when the task ends, the rest is printed and logs -f returns
        gate.touch()
        assert follow.wait(15) == 0, follow.stderr.read() if follow.stderr else ""
        reader.join(5)
        assert lines.get(timeout=5) == b"two\n"
        assert lines.empty()
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.wait(10)
        follow.stdout.close()
        follow.stderr.close()


def test_cli_unknown_task_exits_4_with_one_line(cluster: Cluster) -> None:
    local = cluster(workers=1)
    for verb in ("status", "logs", "cancel", "wait"):
        out = run_cli("--master", local.address, verb, "nosuch#9")
        assert out.code == 4, out
        line = one_line(out.stderr)
        assert line.startswith("titan: no run or task 'nosuch#9'") and "titan runs" in line, line
        assert "Traceback" not in out.stderr
    out = run_cli("--master", local.address, "status", "nosuch#9/t")     # a run's task: not a run
    assert out.code == 4 and one_line(out.stderr).startswith("titan: no task 'nosuch#9/t'"), out


def test_cli_exits_3_when_no_master_listens() -> None:
    port = free_port()
    for argv in (["nodes"], ["run", "--", "true"], ["status", "x#1"]):
        out = run_cli("--master", f"127.0.0.1:{port}", *argv)
        assert out.code == 3, out
        line = one_line(out.stderr)
        assert f"cannot reach the master at 127.0.0.1:{port}" in line, line


def test_a_server_that_accepts_but_never_answers_is_a_clear_error_not_a_hang() -> None:
    # Given something listening that is not a master answering (a stopped master, another server)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        # Then the SDK says so once its timeout is up
        with pytest.raises(ConnectionLost, match=rf"^{address} accepted the connection but did not answer "
                                                 r"within 0.5s; is a Titan master listening there, and running\?$"):
            Client(address, token="", timeout=0.5)
        # And the CLI exits 3 with that line (after its 10 s), no traceback
        out = run_cli("--master", address, "status", "x#1")
        assert out.code == 3 and one_line(out.stderr).startswith(f"titan: {address} accepted the connection"), out


# ----- 6. master restart -----------------------------------------------------
def test_workers_reconnect_after_the_master_is_killed_and_restarted(titan_procs: TitanProcs) -> None:
    # Given a master and two workers
    master = titan_procs.start_master()
    workers = [titan_procs.start_worker(master.address, name) for name in ("w1", "w2")]
    titan_procs.wait_ready(master.address, ["w1", "w2"])
    # When the master is killed with SIGKILL and started again on the same port and data directory
    master = titan_procs.restart_master(master)
    # Then the same worker processes register again by themselves
    titan_procs.wait_ready(master.address, ["w1", "w2"], timeout_s=15)
    assert all(w.poll() is None for w in workers)
    out = run_cli("--master", master.address, "nodes", "--json")
    assert out.code == 0, out
    assert {n["name"]: n["state"] for n in json.loads(out.stdout)} == {"w1": "ready", "w2": "ready"}
    # And they take new work
    with Client(master.address, token="") as c:
        results = [c.submit(["echo", "again"]) for _ in range(4)]
        for r in [t.result(RESULT_TIMEOUT_S) for t in results]:
            assert (r.state, r.output) == ("SUCCEEDED", "again\n"), r
            assert r.node in ("w1", "w2")


def test_a_task_queued_before_any_worker_runs_when_one_joins(titan_procs: TitanProcs) -> None:
    # Given a master with no worker and a task waiting in its queue
    master = titan_procs.start_master()
    with Client(master.address, token="") as c:
        task = c.submit(["echo", "waited"])
        assert c.status(task.id)["state"] == "QUEUED"
        # When a worker joins (its WELCOME and the waiting DISPATCH go out together)
        worker = titan_procs.start_worker(master.address, "late")
        result = task.result(RESULT_TIMEOUT_S)
    # Then the task runs there, and the worker registered once, without a reconnect loop
    assert (result.state, result.node, result.output) == ("SUCCEEDED", "late", "waited\n"), result
    assert worker.poll() is None
    log = (titan_procs.base_dir / "late.log").read_text()
    assert log.count("registered with the master") == 1, log


# ----- 7. token authentication ----------------------------------------------
def test_token_admits_the_right_client_and_refuses_others(cluster: Cluster,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TITAN_TOKEN", raising=False)
    # Given a cluster with a token (its workers got it through TITAN_TOKEN)
    local = cluster(workers=1, token="s3cret-token")
    # Then a client with the token runs a task
    with Client(local.address, token="s3cret-token") as c:
        assert c.submit(["echo", "in"]).result(RESULT_TIMEOUT_S).output == "in\n"
    # And clients with a wrong token or none are refused with AuthError
    with pytest.raises(AuthError, match="wrong cluster token"):
        Client(local.address, token="wrong", timeout=5)
    with pytest.raises(AuthError, match="requires a cluster token"):
        Client(local.address, token="", timeout=5)
    # And the CLI exits 5 with one line and the token nowhere in it
    right = run_cli("--master", local.address, "nodes", token="s3cret-token")
    assert right.code == 0 and "local-1" in right.stdout, right
    wrong = run_cli("--master", local.address, "--token", "wrong", "nodes")
    none = run_cli("--master", local.address, "nodes")
    for out, words in ((wrong, "wrong cluster token"), (none, "TITAN_TOKEN")):
        assert out.code == 5, out
        line = one_line(out.stderr)
        assert words in line and "s3cret" not in line, line


# ----- 8. titan up and the zipapp --------------------------------------------
def test_titan_up_runs_a_command_and_exits_with_its_code(tmp_path: Path) -> None:
    hello = run_cli("up", "--", "echo", "hello", cwd=tmp_path)
    assert (hello.code, hello.stdout) == (0, "hello\n"), hello
    seven = run_cli("up", "--", "sh", "-c", "exit 7", cwd=tmp_path)
    assert seven.code == 7, seven
    assert list(tmp_path.iterdir()) == [], "titan up left files in the working directory"


def test_zipapp_alone_in_an_empty_directory_runs_up(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    try:
        import zipapp_build
    finally:
        sys.path.remove(str(REPO_ROOT))
    built = zipapp_build.build(tmp_path / "build" / "titan.pyz")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(str(built), str(alone / "titan.pyz"))
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    out = run_cli(argv=[sys.executable, "titan.pyz", "up", "--", "echo", "hello"], cwd=alone, env=env)
    assert (out.code, out.stdout) == (0, "hello\n"), out


# ----- 9. a worker outlives its master ---------------------------------------
def test_a_running_task_survives_the_master_being_killed(titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a one-slot worker running a task that takes two seconds
    master = titan_procs.start_master()
    worker = titan_procs.start_worker(master.address, "w1", slots=1)
    titan_procs.wait_ready(master.address, ["w1"])
    out = tmp_path / "out"
    out.mkdir()
    d = shlex.quote(str(out))
    script = f"echo $$ > {d}/pid; sleep 2; echo done > {d}/end"
    with Client(master.address, token="") as c:
        c.submit(["sh", "-c", script], watch=False)
    wait_until(lambda: (out / "pid").exists(), 15, "the task to start")
    # When the master is killed and restarted while it runs
    master = titan_procs.restart_master(master)
    # Then the task is not killed: it runs to its end
    wait_until(lambda: (out / "end").exists(), 10, lambda: "the task to finish\n" + titan_procs.logs())
    assert (out / "end").read_text() == "done\n"
    # And the same worker reconnects and, its slot free again, takes new work
    assert worker.poll() is None
    titan_procs.wait_ready(master.address, ["w1"], timeout_s=15)
    with Client(master.address, token="") as c:
        result = c.submit(["echo", "next"]).result(RESULT_TIMEOUT_S)
    assert (result.state, result.node, result.output) == ("SUCCEEDED", "w1", "next\n"), result
    assert "lost the master" in (titan_procs.base_dir / "w1.log").read_text()


def test_a_new_task_is_not_confused_with_an_orphan_of_the_same_id(titan_procs: TitanProcs,
                                                                    tmp_path: Path) -> None:
    # Given a worker still running "job#1" from before a master restart
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "w1", slots=2)
    titan_procs.wait_ready(master.address, ["w1"])
    gate, started = tmp_path / "gate", tmp_path / "started"
    orphan = f"touch {shlex.quote(str(started))}; while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; " \
             f"echo old"
    with Client(master.address, token="") as c:
        assert c.submit(["sh", "-c", orphan], name="job", watch=False).id == "job#1"
    wait_until(started.exists, 15, "the first job to start")
    master = titan_procs.restart_master(master)
    titan_procs.wait_ready(master.address, ["w1"], timeout_s=15)
    # When a new task with the same name is submitted to the new master and dispatched
    with Client(master.address, token="") as c:
        task = c.submit(["echo", "new"], name="job")
        wait_until(lambda: c.status(task.id)["state"] != "QUEUED", 10, "the new job to be dispatched")
        gate.touch()
        result = task.result(RESULT_TIMEOUT_S)
    # Then its result is its own: ids survive the restart, so it is job#2
    assert (task.id, result.state, result.output) == ("job#2", "SUCCEEDED", "new\n"), result
    # And the first job, adopted across the restart, finished with its own output
    with Client(master.address, token="") as c:
        first = c.task("job#1").result(RESULT_TIMEOUT_S)
    assert (first.state, first.output) == ("SUCCEEDED", "old\n"), first


def test_a_batch_of_submissions_goes_out_together_and_each_gets_its_result(
        cluster: Callable[..., LocalCluster]) -> None:
    # Given a client batching 50 submissions
    local = cluster(workers=2)
    with local.client() as c:
        with c.batch():
            tasks = [c.submit(["echo", str(i)]) for i in range(50)]
            # a call that needs an answer inside the batch sends what is batched first
            first_id = tasks[0].id
        # Then every task runs and answers on its own request
        outputs = [t.result(timeout=60).output for t in tasks]
    assert first_id.startswith("echo#")
    assert outputs == [f"{i}\n" for i in range(50)]


def test_a_drained_node_takes_no_new_work_until_undrained(cluster: Callable[..., LocalCluster]) -> None:
    local = cluster(workers=2)
    m = ("--master", local.address)
    res = run_cli(*m, "drain", "local-1")
    assert res.code == 0 and "local-1: draining" in res.stdout, res
    with local.client() as c:
        nodes = [t.result(timeout=30).node for t in [c.submit("true") for _ in range(10)]]
        assert set(nodes) == {"local-2"}
        assert {n["name"]: n["state"] for n in c.nodes()}["local-1"] == "draining"
        c.drain("local-1", undo=True)
        nodes = [t.result(timeout=30).node for t in [c.submit("true") for _ in range(10)]]
    assert "local-1" in nodes
    assert run_cli(*m, "drain", "nope").code == 2
