"""Services end to end: real masters, workers and service processes on loopback."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from conftest import TitanProcs, child_env, cli_argv, pid_gone, run_cli, wait_until
from titan.errors import RemoteError, TitanError
from titan.io import health
from titan.sdk.client import Client

SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
HTTP_SERVE = " ".join(SERVER) + " $PORT"


@pytest.fixture
def leftovers() -> Iterator[List[int]]:
    """Process groups a test leaves behind on purpose (a kill -9'd worker's services): killed at the end."""
    pgids: List[int] = []
    yield pgids
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def row(c: Client, name: str) -> Dict[str, Any]:
    return c.services(name)[0]


def wait_service(address: str, name: str, check: Callable[[Dict[str, Any]], bool], timeout_s: float = 20.0,
                 what: str = "") -> Dict[str, Any]:
    def probe() -> Any:
        with Client(address, token="", timeout=2.0) as c:
            r = row(c, name)
        return r if check(r) else None
    return wait_until(probe, timeout_s, what or f"service {name} to change", interval_s=0.05,
                      ignore=(TitanError, OSError))


def answers(port: int) -> bool:
    """The service answers HTTP on its port (Titan's own health check, run once)."""
    return health.check(f"http://127.0.0.1:{port}/", timeout_s=1.0)[0]


def test_a_deployed_http_service_runs_with_an_auto_port_and_stop_ends_it(cluster: Any) -> None:
    local = cluster(workers=1)
    with Client(local.address, token="") as c:
        r = c.deploy(HTTP_SERVE, name="web", port="auto", health="tcp")
        assert r["state"] == "RUNNING" and r["node"] == "local-1"
        assert isinstance(r["port"], int) and answers(r["port"])
        pid = r["pid"]
        stopped = c.service_ctl("web", "stop")
        assert stopped["state"] == "STOPPED"
        assert pid_gone(pid) and not answers(r["port"])
        time.sleep(0.5)                  # nothing restarts a stopped service
        assert row(c, "web")["state"] == "STOPPED"


def test_a_crashing_service_restarts_with_growing_delays_then_goes_fatal(cluster: Any) -> None:
    local = cluster(workers=1)
    with Client(local.address, token="") as c:
        c.deploy("echo starting; exit 3", name="crashy", backoff_s=0.1, backoff_max_s=5, max_restarts=3,
                 restart_window_s=60)
        r = wait_service(local.address, "crashy", lambda r: r["state"] == "FATAL")
        assert r["restarts"] == 3
        assert "exit code 3" in r["reason"] and "gave up: 3 restarts within 60s" in r["reason"]
        log = b"".join(c.logs("crashy")).decode()
    # The log keeps every instance's output and the delays, which grow
    assert log.count("starting") == 4
    delays = [float(line.rsplit(" in ", 1)[1].rstrip("s]")) for line in log.splitlines() if "; restart " in line]
    assert len(delays) == 3 and delays[0] < delays[1] < delays[2]
    assert "FATAL" in log


def test_a_busy_port_fails_the_deploy_at_once_and_is_not_retried(cluster: Any) -> None:
    local = cluster(workers=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with Client(local.address, token="") as c:
            started = time.monotonic()
            r = c.deploy(HTTP_SERVE, name="web", port=port)
            assert time.monotonic() - started < 5
            assert r["state"] == "FATAL"
            assert f"port {port} is already in use" in r["reason"]
            time.sleep(0.5)
            assert row(c, "web")["restarts"] == 0 and row(c, "web")["state"] == "FATAL"


HANGING = r"""
import http.server, os, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(sys.argv[2]):
            time.sleep(3600)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_hung_service_whose_health_check_fails_is_restarted(cluster: Any, tmp_path: Path) -> None:
    local = cluster(workers=1)
    script, flag = tmp_path / "hang.py", tmp_path / "hang-now"
    script.write_text(HANGING)
    with Client(local.address, token="") as c:
        r = c.deploy([sys.executable, str(script), "$PORT", str(flag)], name="api", port="auto",
                     health="http://127.0.0.1:$PORT/", health_interval_s=0.2, health_timeout_s=0.3,
                     health_failures=2, backoff_s=0.1)
        assert r["state"] == "RUNNING"
        first_pid = r["pid"]
        flag.write_text("")              # from now on it accepts connections but never answers
        r = wait_service(local.address, "api", lambda r: r["restarts"] >= 1, what="a health restart")
        flag.unlink()
        r = wait_service(local.address, "api", lambda r: r["state"] == "RUNNING" and r["pid"] != first_pid)
        assert pid_gone(first_pid)
        log = b"".join(c.logs("api")).decode()
    # The marker the restart left in its log says why
    assert "service api unhealthy: 2 health checks failed in a row: no answer within 0.3s" in log


def test_stop_kills_the_whole_process_group(cluster: Any, tmp_path: Path) -> None:
    local = cluster(workers=1)
    pids = tmp_path / "pids"
    with Client(local.address, token="") as c:
        c.deploy(f"sleep 300 & echo $! > {pids}; sleep 300", name="pair")
        wait_until(lambda: pids.exists() and pids.read_text().strip(), 10, "the service to start")
        child = int(pids.read_text())
        leader = row(c, "pair")["pid"]
        assert c.service_ctl("pair", "stop")["state"] == "STOPPED"
        wait_until(lambda: pid_gone(child) and pid_gone(leader), 10, "both processes to die")


def test_bad_deployments_get_clear_errors_and_disturb_nothing(cluster: Any) -> None:
    local = cluster(workers=1)
    with Client(local.address, token="") as c:
        c.deploy("sleep 300", name="calm")
        with pytest.raises(RemoteError, match="bad port"):
            c.deploy("sleep 1", name="x", port="eighty")
        with pytest.raises(RemoteError, match="no node 'nowhere'"):
            c.deploy("sleep 1", name="x", node="nowhere")
        with pytest.raises(RemoteError, match="no service 'ghost'"):
            c.service_ctl("ghost", "stop")
        assert [r["name"] for r in c.services()] == ["calm"]
        assert row(c, "calm")["state"] == "RUNNING"


def test_services_survive_a_master_kill_and_are_readopted_with_the_same_pid(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "w1")
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        r = c.deploy(HTTP_SERVE, name="web", port="auto", health="tcp")
    assert r["state"] == "RUNNING"
    master = titan_procs.restart_master(master)          # kill -9, then start again
    assert answers(r["port"])                            # it kept serving meanwhile
    again = wait_service(master.address, "web", lambda x: x["state"] == "RUNNING", what="re-adoption")
    assert again["pid"] == r["pid"] and again["port"] == r["port"] and again["node"] == "w1"
    assert "adopted on w1" in (titan_procs.base_dir / "master.log").read_text()


def test_a_killed_workers_service_and_task_move_to_another_worker(titan_procs: TitanProcs,
                                                                  leftovers: List[int]) -> None:
    master = titan_procs.start_master("--lost-grace", "1")
    doomed = titan_procs.start_worker(master.address, "w1")
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        r = c.deploy(HTTP_SERVE, name="web", port="auto", health="tcp")
        task = c.submit("sleep 2; echo done")
        wait_until(lambda: c.status(task.id)["state"] == "RUNNING", 10, "the task to start")
        titan_procs.start_worker(master.address, "w2")
        titan_procs.wait_ready(master.address, ["w1", "w2"])
        leftovers.append(r["pid"])                       # it outlives its kill -9'd worker
        titan_procs.kill(doomed)
        moved = wait_service(master.address, "web", lambda x: x["state"] == "RUNNING" and x["node"] == "w2",
                             what="the service on w2")
        assert answers(moved["port"])
        result = task.result(timeout=30)
    # The task was re-queued without using a retry and ran again, on w2
    assert result.state == "SUCCEEDED" and result.node == "w2" and "done" in result.output


def test_the_cli_deploys_lists_follows_stops_and_restarts_a_service(cluster: Any) -> None:
    local = cluster(workers=1)
    m = ("--master", local.address)
    res = run_cli(*m, "deploy", "--name", "web", "--port", "auto", "--health", "tcp", "--", *SERVER, "$PORT")
    assert res.code == 0 and res.stdout.startswith("web: RUNNING (on local-1, pid "), res
    port = int(res.stdout.split("port ")[1].split(")")[0])
    ps = run_cli(*m, "ps")
    assert ps.code == 0
    header, line = ps.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "STATE", "NODE", "PID", "PORT", "UPTIME", "RESTARTS", "HEALTH", "NOTE"]
    assert line.split()[:5] == ["web", "RUNNING", "local-1", line.split()[3], str(port)]
    assert line.split()[7] == "ok"                       # its tcp check passes
    assert answers(port)
    logs = run_cli(*m, "logs", "web")
    assert logs.code == 0 and "Serving HTTP" in logs.stdout + logs.stderr, logs
    res = run_cli(*m, "stop", "web")
    assert res.code == 0 and res.stdout.strip() == "web: STOPPED"
    assert not answers(port)
    res = run_cli(*m, "restart", "web")                  # port = auto keeps its port on the same node
    assert res.code == 0 and f"port {port})" in res.stdout, res
    assert answers(port)
    res = run_cli(*m, "stop", "web", "--remove")
    assert res.code == 0 and run_cli(*m, "--json", "ps").stdout.strip() == "[]"


def test_the_cli_reports_a_fatal_deploy_with_exit_code_1(cluster: Any) -> None:
    local = cluster(workers=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli("--master", local.address, "deploy", "--name", "web", "--port", str(port), "--",
                      *SERVER, str(port))
    assert res.code == 1 and f"port {port} is already in use on local-1" in res.stderr, res
    res = run_cli("--master", local.address, "deploy", "--name", "x", "--port", "eighty", "--", "true")
    assert res.code == 2 and "bad port" in res.stderr


JOB = """\
[job]
name = site
env.GREETING = hello

[service:web]
run = {server} $PORT
port = auto
health = tcp

[task:check]
run = echo $GREETING
"""


def test_a_job_files_services_deploy_with_submit_and_alone_with_deploy(cluster: Any, tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = tmp_path / "site.ini"
    job.write_text(JOB.format(server=" ".join(SERVER)))
    m = ("--master", local.address)
    res = run_cli(*m, "submit", str(job), "--wait")
    assert res.code == 0 and "SUCCEEDED" in res.stdout, res
    assert "titan: site#1 started: 1 task\n" in res.stderr, res
    web = wait_service(local.address, "web", lambda r: r["state"] == "RUNNING")
    assert web["job"] == "site" and answers(web["port"])
    res = run_cli(*m, "deploy", str(job))                # the same spec: unchanged, same pid
    assert res.code == 0 and f"pid {web['pid']}," in res.stdout, res
    with Client(local.address, token="") as c:
        assert len(c.runs("site")) == 1                  # deploy runs no tasks


def test_drain_moves_a_service_to_another_worker(cluster: Any) -> None:
    local = cluster(workers=2)
    with Client(local.address, token="") as c:
        first = c.deploy(HTTP_SERVE, name="web", port="auto", health="tcp", node=None)
        c.drain(first["node"])
        other = ({"local-1", "local-2"} - {first["node"]}).pop()
        moved = wait_service(local.address, "web", lambda r: r["state"] == "RUNNING" and r["node"] == other)
        assert pid_gone(first["pid"]) and answers(moved["port"])


def test_a_worker_that_comes_back_within_the_grace_keeps_its_running_task(titan_procs: TitanProcs,
                                                                        tmp_path: Path) -> None:
    master = titan_procs.start_master("--heartbeat-timeout", "1", "--lost-grace", "30")
    worker = titan_procs.start_worker(master.address, "w1", "--master-timeout", "30")
    titan_procs.wait_ready(master.address, ["w1"])
    starts = tmp_path / "starts"
    with Client(master.address, token="") as c:
        task = c.submit(f"echo $TITAN_ATTEMPT >> {starts}; sleep 4; echo finished")
        wait_until(starts.exists, 10, "the task to start")
        os.kill(worker.pid, signal.SIGSTOP)              # silent: the master drops it after 1 s
        try:
            wait_until(lambda: "w1 disconnected" in (titan_procs.base_dir / "master.log").read_text(), 10,
                       "the master to give up on w1")
        finally:
            os.kill(worker.pid, signal.SIGCONT)          # back well within the 30 s grace
        result = task.result(timeout=30)
    assert result.state == "SUCCEEDED" and result.attempts == 1 and "finished" in result.output
    assert starts.read_text().split() == ["1"]           # it ran once


def test_restarting_or_changing_a_running_service_replaces_its_process(cluster: Any) -> None:
    local = cluster(workers=1)
    with Client(local.address, token="") as c:
        first = c.deploy("echo one; exec sleep 300", name="svc")
        again = c.service_ctl("svc", "restart")
        assert again["state"] == "RUNNING" and again["pid"] != first["pid"] and pid_gone(first["pid"])
        changed = c.deploy("echo two; exec sleep 300", name="svc")
        assert changed["state"] == "RUNNING" and changed["pid"] != again["pid"] and pid_gone(again["pid"])
        assert changed["gen"] == 3
        assert b"".join(c.logs("svc")).decode().split() == ["two"]        # one log per deployment
        assert b"".join(c.logs("svc", attempt=1)).decode().split() == ["one"]
        c.service_ctl("svc", "remove")
        reborn = c.deploy("echo three; exec sleep 300", name="svc")
        assert reborn["gen"] == 4                                          # numbering goes on
        assert b"".join(c.logs("svc")).decode().split() == ["three"]


TRAP = r"""
import signal, sys, time
def bye(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, bye)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_stop_sends_the_stop_signal_and_a_deaf_service_is_killed_after_the_grace(cluster: Any,
                                                                                tmp_path: Path) -> None:
    local = cluster(workers=1)
    script = tmp_path / "trap.py"
    script.write_text(TRAP)
    with Client(local.address, token="") as c:
        c.deploy([sys.executable, "-u", str(script)], name="polite", stop_signal="INT")
        wait_until(lambda: "ready" in b"".join(c.logs("polite")).decode(), 10, "the service to start")
        assert c.service_ctl("polite", "stop")["state"] == "STOPPED"
        assert "got SIGINT" in b"".join(c.logs("polite")).decode()
        deaf = c.deploy("trap '' TERM; echo ready; while true; do sleep 0.1; done", name="deaf", stop_grace_s=0.5)
        started = time.monotonic()
        assert c.service_ctl("deaf", "stop")["state"] == "STOPPED"
        assert 0.4 < time.monotonic() - started < 10 and pid_gone(deaf["pid"])


def test_a_service_runs_only_where_its_required_tags_are_and_waits_for_them(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "plain")
    titan_procs.wait_ready(master.address, ["plain"])
    with Client(master.address, token="") as c:
        r = c.deploy("exec sleep 300", name="gpu-svc", requires=["gpu"])
        assert r["state"] == "PENDING" and "waiting for a worker with tags gpu" in r["reason"]
        titan_procs.start_worker(master.address, "gpu-1", tags=["gpu"])
        r = wait_service(master.address, "gpu-svc", lambda x: x["state"] == "RUNNING")
        assert r["node"] == "gpu-1"


def test_following_a_service_log_streams_its_output_as_it_comes(cluster: Any) -> None:
    local = cluster(workers=1)
    with Client(local.address, token="") as c:
        c.deploy("i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done", name="ticker")
        seen = b""
        with Client(local.address, token="") as follower:
            for chunk in follower.logs("ticker", follow=True, timeout=20):
                seen += chunk
                if seen.count(b"tick") >= 5:
                    break
    assert b"tick 1\n" in seen and b"tick 5" in seen


def test_a_service_stopped_while_its_worker_was_away_is_stopped_when_it_returns(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master("--heartbeat-timeout", "1", "--lost-grace", "60")
    worker = titan_procs.start_worker(master.address, "w1", "--master-timeout", "60")
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        r = c.deploy("exec sleep 300", name="quiet")
        os.kill(worker.pid, signal.SIGSTOP)              # away: the master drops it after 1 s
        try:
            wait_service(master.address, "quiet", lambda x: x["state"] == "LOST", what="the service to be LOST")
            assert c.service_ctl("quiet", "stop")["state"] == "STOPPED"
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_until(lambda: pid_gone(r["pid"]), 20, "the returning worker to stop it")
        assert wait_service(master.address, "quiet", lambda x: x["state"] == "STOPPED")["desired"] == "stopped"


def test_titan_up_runs_a_job_files_tasks_then_serves_its_services_until_interrupted(tmp_path: Path) -> None:
    job = tmp_path / "site.ini"
    job.write_text(JOB.format(server=" ".join(SERVER)))
    err = tmp_path / "up.err"
    with open(err, "wb") as stderr:
        up = subprocess.Popen(cli_argv("up", str(job)), stdout=subprocess.PIPE, stderr=stderr,
                              env=child_env(), cwd=str(tmp_path), start_new_session=True)
    try:
        wait_until(lambda: "local cluster up: master" in err.read_text(), 60, lambda: err.read_text())
        address = err.read_text().split("master ", 1)[1].split(",")[0]
        web = wait_service(address, "web", lambda r: r["state"] == "RUNNING")
        assert answers(web["port"])
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert up.returncode == 0 and "site#1  SUCCEEDED" in out.decode()
    # the service's line says the port it was given (though the job's task ran at the same time)
    assert re.search(rf"^service web: (STARTING|RUNNING) on port {web['port']}$", err.read_text(), re.M), \
        err.read_text()
    wait_until(lambda: pid_gone(web["pid"]), 10, "the service to stop with the cluster")


SERVE = r"""
import http.server, sys
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_a_services_files_are_shipped_to_its_workspace(cluster: Any, tmp_path: Path) -> None:
    local = cluster(workers=1)
    (tmp_path / "serve.py").write_text(SERVE)
    (tmp_path / "index.html").write_text("hello from a shipped file\n")
    job = tmp_path / "site.ini"
    job.write_text(f"[job]\nname = site\n\n[service:files]\nrun = {sys.executable} serve.py $PORT\n"
                   "port = auto\nhealth = tcp\nfiles = serve.py index.html\n")
    res = run_cli("--master", local.address, "deploy", str(job))
    assert res.code == 0 and "files: RUNNING" in res.stdout, res
    port = int(res.stdout.split("port ")[1].split(")")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        reply = b""
        while True:
            data = s.recv(4096)
            if not data:
                break
            reply += data
    assert b"hello from a shipped file" in reply


def test_a_worker_that_shuts_down_hands_its_services_to_another(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    first = titan_procs.start_worker(master.address, "w1")
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        r = c.deploy(HTTP_SERVE, name="web", port="auto", health="tcp")
    titan_procs.start_worker(master.address, "w2")
    titan_procs.wait_ready(master.address, ["w1", "w2"])
    titan_procs.kill(first, signal.SIGTERM)              # a clean stop: its services stop with it ...
    assert pid_gone(r["pid"])
    moved = wait_service(master.address, "web", lambda x: x["state"] == "RUNNING" and x["node"] == "w2",
                         what="the service on w2")        # ... and start at once on the other worker
    assert answers(moved["port"])
