"""The documented defaults: where a master listens, what a worker calls itself, and TITAN_MASTER.

A user who gives no flags gets a master on 127.0.0.1:9090, workers named
HOSTNAME-PID with one slot per CPU, a CLI and SDK that find the master
through ``TITAN_MASTER``, and a ``titan up`` of two workers that leaves
nothing behind.
"""
from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

import titan
from conftest import (FAST_MASTER_ARGS, FAST_WORKER_ARGS, TitanProcs, child_env, cli_argv, dump_logs, pid_gone,
                      run_cli, wait_until)
from titan.cli.parser import build_parser
from titan.errors import TitanError
from titan.io.proc import titan_command
from titan.roles.local import LocalCluster
from titan.sdk.client import DEFAULT_MASTER, Client

DEFAULT_ADDRESS = "127.0.0.1:9090"

Cluster = Callable[..., LocalCluster]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def any_node_ready(address: str) -> bool:
    with Client(address, token="", timeout=2.0) as c:
        return any(n["state"] == "ready" for n in c.nodes())


# ----- the master's address ---------------------------------------------------
def test_a_master_binds_loopback_port_9090_unless_told_otherwise() -> None:
    # Given `titan master` with no --bind, then it listens on 127.0.0.1:9090
    assert build_parser().parse_args(["master"]).bind == DEFAULT_ADDRESS
    # And the CLI's --master is unset, so it falls back to TITAN_MASTER, then to the same address
    assert build_parser().parse_args(["nodes"]).master is None
    assert DEFAULT_MASTER == DEFAULT_ADDRESS


def test_a_master_started_without_bind_answers_on_9090(titan_procs: TitanProcs) -> None:
    if not port_is_free("127.0.0.1", 9090):
        pytest.skip("port 9090 on 127.0.0.1 is taken on this host")
    # Given a master started with no --bind
    data_dir = titan_procs.base_dir / "master"
    # (with a token: a worker elsewhere on this host dialling the default address cannot join it)
    token = "defaults-test-token"
    proc = titan_procs.spawn(["master", "--data", str(data_dir), *FAST_MASTER_ARGS], log_name="master.log",
                             token=token)
    addr_file = data_dir / "master.addr"
    wait_until(lambda: addr_file.exists() or proc.poll() is not None, 30,
               lambda: "the master to listen\n" + titan_procs.logs())
    if proc.poll() is not None and "cannot listen" in (titan_procs.base_dir / "master.log").read_text():
        pytest.skip("another process took port 9090 before this master could")
    assert proc.poll() is None, f"the master exited with {proc.returncode}\n{titan_procs.logs()}"
    # Then it says it listens on 127.0.0.1:9090, and a client that names no address reaches it there
    assert addr_file.read_text().strip() == DEFAULT_ADDRESS
    out = run_cli("nodes", "--json", token=token)        # child_env(): no TITAN_MASTER, no --master
    assert out.code == 0, out
    assert json.loads(out.stdout) == []
    assert proc.poll() is None


# ----- a worker's name and slots ----------------------------------------------
def test_a_worker_without_name_and_slots_is_hostname_pid_with_one_slot_per_cpu(
        titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a master, and a worker started with neither --name nor --slots
    master = titan_procs.start_master()
    worker = titan_procs.spawn(["worker", "--master", master.address, "--data", str(tmp_path / "w"),
                                *FAST_WORKER_ARGS], log_name="worker.log")
    wait_until(lambda: any_node_ready(master.address), 30, lambda: "the worker to register\n" + titan_procs.logs(),
               interval_s=0.05, ignore=(TitanError, OSError))
    # When a user lists the nodes
    out = run_cli("--master", master.address, "nodes", "--json")
    # Then the worker is there under HOSTNAME-PID, with as many slots as the host has CPUs
    assert out.code == 0, out
    nodes = json.loads(out.stdout)
    assert [(n["name"], n["slots"]) for n in nodes] == [(f"{socket.gethostname()}-{worker.pid}", os.cpu_count())]
    assert worker.poll() is None


# ----- TITAN_MASTER -------------------------------------------------------------
def test_the_cli_finds_the_master_through_titan_master(cluster: Cluster) -> None:
    # Given a cluster, and an environment that names its master in TITAN_MASTER only
    local = cluster(workers=1)
    env = child_env()
    env["TITAN_MASTER"] = local.address
    # When a user runs `titan nodes` and `titan run` without --master
    nodes = run_cli("nodes", "--json", env=env)
    ran = run_cli("run", "--", "echo", "found", env=env)
    # Then both went to that master
    assert nodes.code == 0, nodes
    assert [n["name"] for n in json.loads(nodes.stdout)] == ["local-1"]
    assert (ran.code, ran.stdout) == (0, "found\n"), ran


def test_the_sdk_connects_to_titan_master_when_given_no_address(cluster: Cluster,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a cluster, and TITAN_MASTER naming its master
    local = cluster(workers=1)
    for name in ("TITAN_TOKEN", "TITAN_TLS", "TITAN_TLS_CA", "TITAN_TLS_CERT", "TITAN_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TITAN_MASTER", local.address)
    # When a program calls titan.connect() with no address
    try:
        with titan.connect(timeout=5) as c:
            names = [n["name"] for n in c.nodes()]
            result = c.submit(["echo", "found"]).result(30)
    except (TitanError, OSError) as exc:
        raise AssertionError(f"titan.connect() did not reach {local.address}: {exc}\n"
                             f"{dump_logs(local.data_dir)}") from None
    # Then it reached that master and ran a task there
    assert names == ["local-1"]
    assert (result.state, result.output) == ("SUCCEEDED", "found\n"), result


# ----- titan up ---------------------------------------------------------------
def nodes_and_pids_script(pid_dir_glob: str) -> List[str]:
    """argv of a task that prints the pid files matching ``pid_dir_glob``/*.pid, a line ``---``,
    then `titan nodes --json` for the master it was told of in TITAN_MASTER."""
    nodes = " ".join(shlex.quote(word) for word in titan_command())
    return ["sh", "-c", f"cat {pid_dir_glob}/*.pid; echo ---; {nodes} nodes --json"]


def read_nodes_and_pids(stdout: str) -> Tuple[List[str], List[int]]:
    pids, _, nodes = stdout.partition("---\n")
    return sorted(n["name"] for n in json.loads(nodes)), [int(p) for p in pids.split()]


def test_titan_up_runs_two_workers_in_a_temporary_directory_that_it_removes(tmp_path: Path) -> None:
    # Given an environment whose temporary directory is an empty one of this test
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    env = child_env()
    env["TMPDIR"] = str(tmp_root)
    # When `titan up -- CMD`, with no other flag, runs a command that lists the cluster's nodes
    # and the pids of the processes `up` started (pid files in its data directory)
    script = nodes_and_pids_script(shlex.quote(str(tmp_root)) + "/titan-up-*")
    out = run_cli("up", "--", *script, env=env, cwd=tmp_path)
    # Then the command saw a master with two workers, in a titan-up-* directory under TMPDIR
    assert out.code == 0, out
    names, pids = read_nodes_and_pids(out.stdout)
    assert names == ["local-1", "local-2"], out
    assert len(pids) == 3, out          # the master and two workers
    # And once `up` has exited, that directory and those processes are gone
    assert list(tmp_root.iterdir()) == [], list(tmp_root.iterdir())
    assert [pid for pid in pids if not pid_gone(pid)] == []


def test_titan_up_with_data_keeps_the_directory_and_stops_its_processes(tmp_path: Path) -> None:
    # Given a data directory named with --data
    data = tmp_path / "up-data"
    # When `titan up --data DIR -- CMD` runs the same command
    out = run_cli("up", "--data", str(data), "--", *nodes_and_pids_script(shlex.quote(str(data))), cwd=tmp_path)
    # Then the command saw two workers
    assert out.code == 0, out
    names, pids = read_nodes_and_pids(out.stdout)
    assert (names, len(pids)) == (["local-1", "local-2"], 3), out
    # And after `up` the directory is still there with the cluster's logs, and its processes are gone
    assert {"master.log", "local-1.log", "local-2.log"} <= {p.name for p in data.iterdir()}, list(data.iterdir())
    assert [pid for pid in pids if not pid_gone(pid)] == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "hangup"])
def test_the_cluster_of_titan_up_stops_when_up_is_killed_or_its_terminal_closes(tmp_path: Path, sig: int) -> None:
    # Given `titan up` serving a master and one worker
    data = tmp_path / "up"
    proc = subprocess.Popen(cli_argv("up", "--workers", "1", "--data", str(data)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
                            start_new_session=True)
    pids: List[int] = []
    try:
        assert "local cluster up" in proc.stderr.readline().decode()
        pids = [int(p.read_text()) for p in sorted(data.glob("*.pid"))]
        assert len(pids) == 2 and not any(pid_gone(pid) for pid in pids), pids
        # When `up` alone is killed with SIGKILL (it cannot clean up), or gets SIGHUP
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        # Then the master and the worker stop by themselves
        wait_until(lambda: all(pid_gone(pid) for pid in pids), 20, "the master and the worker to stop")
    finally:
        for pid in [proc.pid] + pids:        # each runs in a session (a process group) of its own
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()
        proc.stderr.close()
