"""Job files run as DAGs on a real cluster: order, skips, cancel, CLI, restart."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable

import pytest

from conftest import THREE_PROBLEMS, Raw, TitanProcs, pid_gone, run_cli, wait_until, write_job
from titan.errors import RemoteError
from titan.roles.local import LocalCluster
from titan.sdk.client import Client
from titan.wire.frames import Op

REPO = Path(__file__).resolve().parent.parent
Cluster = Callable[..., LocalCluster]



def test_up_runs_the_hello_diamond_and_shows_each_tasks_output() -> None:
    res = run_cli("up", str(REPO / "examples" / "hello.ini"), timeout_s=120)
    assert res.code == 0, res
    assert "--- hello#1/left\nleft\nhello from local-" in res.stdout
    assert "both branches are done" in res.stdout and res.stdout.rstrip().endswith("hello#1  SUCCEEDED")
    # progress lines on stderr: each task starts, then ends, the join last
    lines = [line.split()[:2] for line in res.stderr.splitlines() if line.startswith("hello#1/")]
    assert lines[0] == ["hello#1/hello", "RUNNING"] and lines[-1] == ["hello#1/join", "SUCCEEDED"], res
    assert sorted(lines) == sorted([[f"hello#1/{name}", state] for name in ("hello", "left", "right", "join")
                                    for state in ("RUNNING", "SUCCEEDED")]), res


def test_a_failed_task_skips_its_dependants_and_fails_the_run(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=2)
    job = write_job(tmp_path, "etl.ini", """
[job]
name = etl
[task:extract]
run = echo extracted
[task:transform]
after = extract
run = exit 3
[task:load]
after = transform
run = echo never
[task:report]
after = extract
run = echo report
""")
    with local.client() as c:
        run = c.submit_file(job)
        result = run.wait(timeout=60)
    assert run.id == "etl#1"
    assert result.state == "FAILED"
    assert result.tasks == {"etl#1/extract": "SUCCEEDED", "etl#1/transform": "FAILED",
                            "etl#1/load": "SKIPPED", "etl#1/report": "SUCCEEDED"}
    # the CLI shows the graph, and exits 1 for a failed run
    res = run_cli("--master", local.address, "status", "etl#1")
    assert "load             SKIPPED" in res.stdout and "upstream task etl#1/transform FAILED" in res.stdout
    assert "transform        FAILED     1 attempt  on local-" in res.stdout, res
    for verb in ("wait", "logs"):           # they take a task: a run's id gets a pointer to its tasks
        res = run_cli("--master", local.address, verb, "etl#1")
        assert res.code == 2 and res.stderr == ("titan: etl#1 is a run, not a task: `titan status etl#1` shows "
                                                "its tasks, whose ids read etl#1/TASK\n"), res
    res = run_cli("--master", local.address, "trigger", "etl", "--wait")
    assert res.code == 1 and "etl#2  FAILED" in res.stdout, res
    assert res.stderr.splitlines()[0] == "titan: etl#2 started: 4 tasks", res
    # progress events come to those who ask for them; the final result carries every task's state
    seen: list = []
    with local.client() as c:
        result = c.trigger("etl", on_task=seen.append).wait(timeout=60)
        quiet = c.trigger("etl").wait(timeout=60)
    ends = {e["id"]: e["state"] for e in seen if e["state"] not in ("QUEUED", "RUNNING")}
    assert ends == result.tasks and len(ends) == 4
    started = [e["id"] for e in seen if e["state"] == "RUNNING"]
    assert sorted(started) == [f"{result.id}/{name}" for name in ("extract", "report", "transform")], seen
    assert sorted(quiet.tasks.values()) == ["FAILED", "SKIPPED", "SUCCEEDED", "SUCCEEDED"]


def test_cancelling_a_run_kills_its_running_task_and_cancels_the_rest(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=1)
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    job = write_job(tmp_path, "slow.ini", f"""
[job]
name = slow
[task:wait]
run = echo $$ > {pidfile}; sleep 300 & echo $! > {childfile}; wait
[task:after]
after = wait
run = echo never
""")
    with local.client() as c:
        run = c.submit_file(job)
        wait_until(lambda: childfile.exists() and childfile.read_text().strip(), 30, "the first task to start")
        pid, grandchild = int(pidfile.read_text()), int(childfile.read_text())
        c.cancel(run.id)
        result = run.wait(timeout=30)
    assert result.state == "CANCELLED"
    assert result.tasks == {"slow#1/wait": "CANCELLED", "slow#1/after": "CANCELLED"}
    wait_until(lambda: pid_gone(pid) and pid_gone(grandchild), 10, "the cancelled task's processes to die")


def test_submit_wait_runs_and_lists(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=2)
    job = write_job(tmp_path, "fan.ini", "[job]\nname = fan\n[task:a]\nrun = true\n" + "".join(
        f"[task:m{i}]\nafter = a\nrun = echo {i}\n" for i in range(100)) +
        "[task:z]\nafter = " + ", ".join(f"m{i}" for i in range(100)) + "\nrun = true\n")
    m = ("--master", local.address)
    res = run_cli(*m, "submit", job, "--wait")
    assert res.code == 0 and res.stdout.strip() == "fan#1  SUCCEEDED", res
    assert "fan#1/z  SUCCEEDED" in res.stderr
    assert "fan#1" in run_cli(*m, "runs").stdout
    jobs = run_cli(*m, "jobs").stdout
    assert "fan" in jobs and "SUCCEEDED" in jobs
    bad = write_job(tmp_path, "bad.ini", "[job]\nname = bad\n[task:a]\nrun = true\nretires = 3\n")
    res = run_cli(*m, "submit", bad)
    assert res.code == 2 and "did you mean 'retries'" in res.stderr


def test_submit_of_a_file_with_several_problems_prints_each_and_registers_nothing(cluster: Cluster,
                                                                                  tmp_path: Path) -> None:
    # Given a cluster where the job `good` has run once
    local = cluster(workers=1)
    m = ("--master", local.address)
    good = write_job(tmp_path, "good.ini", "[job]\nname = good\n[task:a]\nrun = true\n")
    assert run_cli(*m, "submit", good, "--wait").code == 0
    # When a job file with three problems is submitted
    bad = write_job(tmp_path, "bad.ini", THREE_PROBLEMS.replace("NAME", "bad"))
    res = run_cli(*m, "submit", bad)
    # Then it exits 2 with one line per problem on stderr, and nothing on stdout
    assert res.code == 2 and res.stdout == "", res
    assert res.stderr.splitlines() == [
        f"{bad}:5: [task:a] after: dependency cycle a -> b -> a (each task is after the next); remove one of these "
        "dependencies",
        f"{bad}:6: [task:a] retires: unknown key 'retires' in [task:a]; did you mean 'retries'?",
        f"{bad}:12: [service:s] port: bad port '99999': expected a port number from 1 to 65535, or 'auto'"], res
    # And the master knows no job `bad` and no run of it: only `good` and its one run
    jobs = json.loads(run_cli(*m, "jobs", "--json").stdout)
    runs = json.loads(run_cli(*m, "runs", "--json").stdout)
    assert [j["name"] for j in jobs] == ["good"], jobs
    assert [r["id"] for r in runs] == ["good#1"], runs


def test_a_run_survives_a_master_kill_9(titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a run whose second task waits for its first, and a master that is killed meanwhile
    gate = tmp_path / "gate"
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "w1", slots=2)
    titan_procs.wait_ready(master.address, ["w1"])
    job = write_job(tmp_path, "two.ini", f"""
[job]
name = two
[task:first]
run = while [ ! -e {gate} ]; do sleep 0.05; done; echo first
[task:second]
after = first
run = echo second
""")
    with Client(master.address, token="") as c:
        run_id = c.submit_file(job, watch=False).id
    master = titan_procs.restart_master(master)
    gate.touch()
    # Then the run completes, in order, each task once
    with Client(master.address, token="") as c:
        wait_until(lambda: c.status(run_id)["state"] != "RUNNING", 60, "the run to end")
        view = c.status(run_id)
        outputs = [b"".join(c.logs(t["id"])) for t in view["tasks"]]
    assert view["state"] == "SUCCEEDED", view
    assert outputs == [b"first\n", b"second\n"]


def test_the_shared_directory_is_removed_when_the_run_ends(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = write_job(tmp_path, "share.ini", """
[job]
name = share
[task:write]
run = echo data > "$TITAN_SHARED/f"; echo "$TITAN_SHARED"
[task:read]
after = write
affinity = write
run = cat "$TITAN_SHARED/f"
""")
    with local.client() as c:
        run = c.submit_file(job)
        assert run.wait(timeout=60).ok
        shared = b"".join(c.logs("share#1/write")).decode().strip()
        assert b"".join(c.logs("share#1/read")) == b"data\n"
    wait_until(lambda: not os.path.exists(shared), 10, "the run's shared directory to go")


def test_two_runs_of_one_job_on_one_node_never_share_a_shared_directory(cluster: Cluster, tmp_path: Path) -> None:
    # Given a job pinned to local-1 whose first task writes its run's id into $TITAN_SHARED, then waits
    local = cluster(workers=2, slots=2)
    gate = tmp_path / "gate"
    job = write_job(tmp_path, "pin.ini", f"""
[job]
name = pin
[task:write]
node = local-1
run = echo "$TITAN_RUN" > "$TITAN_SHARED/f"; echo "$TITAN_SHARED"; while [ ! -e {gate} ]; do sleep 0.02; done
[task:read]
after = write
node = local-1
run = cat "$TITAN_SHARED/f"
""")
    with local.client() as c:
        # When two runs of it have both written before either reads
        runs = [c.submit_file(job), c.trigger("pin")]
        def written(run_id: str) -> str:
            return b"".join(c.logs(f"{run_id}/write")).decode().strip()
        wait_until(lambda: all(written(r.id) for r in runs), 30, "both runs' first tasks to write",
                   ignore=(RemoteError,))
        paths = [written(r.id) for r in runs]
        gate.touch()
        results = [r.wait(timeout=60) for r in runs]
        # Then each run had its own directory, and read back only what it wrote there
        assert [r.id for r in runs] == ["pin#1", "pin#2"] and all(r.ok for r in results), results
        assert paths[0] != paths[1], paths
        assert [b"".join(c.logs(f"{r.id}/read")) for r in runs] == [b"pin#1\n", b"pin#2\n"]
        assert {t["node"] for r in runs for t in r.tasks()} == {"local-1"}


def test_a_task_that_removes_the_shared_directory_leaves_one_for_the_next(cluster: Cluster,
                                                                          tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = write_job(tmp_path, "gone.ini", """
[job]
name = gone
[task:first]
run = echo a > "$TITAN_SHARED/a"
[task:remove]
after = first
run = rm -rf "$TITAN_SHARED"
[task:last]
after = remove
run = echo b > "$TITAN_SHARED/b" && ls "$TITAN_SHARED"
""")
    with local.client() as c:
        result = c.submit_file(job).wait(timeout=60)
        assert result.ok, result
        assert b"".join(c.logs("gone#1/last")) == b"b\n"


def test_a_worker_away_when_the_run_ended_removes_its_shared_directory_when_it_is_back(
        titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a run whose first task writes into $TITAN_SHARED on worker wa, and whose second waits on wb
    gate = tmp_path / "gate"
    master = titan_procs.start_master()
    wa = titan_procs.start_worker(master.address, "wa", slots=1)
    titan_procs.start_worker(master.address, "wb", slots=1)
    titan_procs.wait_ready(master.address, ["wa", "wb"])
    job = write_job(tmp_path, "away.ini", f"""
[job]
name = away
[task:write]
node = wa
run = echo data > "$TITAN_SHARED/f"
[task:wait]
node = wb
run = while [ ! -e {gate} ]; do sleep 0.05; done
""")
    shared_a = titan_procs.base_dir / "wa" / "shared" / "away%231"
    shared_b = titan_procs.base_dir / "wb" / "shared" / "away%231"
    with Client(master.address, token="") as c:
        run_id = c.submit_file(job, watch=False).id
        wait_until(lambda: c.status(f"{run_id}/write")["state"] == "SUCCEEDED", 30, "the first task to end")
        # When wa stops before the run ends, and the run ends while it is away
        titan_procs.kill(wa, signal.SIGTERM)
        assert (shared_a / "f").read_text() == "data\n"
        gate.touch()
        wait_until(lambda: c.status(run_id)["state"] == "SUCCEEDED", 30, "the run to end")
    wait_until(lambda: not shared_b.exists(), 10, "wb's shared directory to go")
    assert shared_a.exists(), "wa removed its shared directory while it was away"
    # Then wa, started again with the same name and data, removes its shared directory once it registers
    titan_procs.start_worker(master.address, "wa", slots=1)
    titan_procs.wait_ready(master.address, ["wa"])
    wait_until(lambda: not shared_a.exists(), 10, "wa's shared directory to go")


def test_the_master_tells_a_joining_worker_which_listed_runs_are_over(titan_procs: TitanProcs) -> None:
    # Given a master with a live run (its task waits for a tag nobody has)
    master = titan_procs.start_master()
    with Client(master.address, token="") as c:
        live = c.submit_job({"name": "live", "tasks": [{"name": "a", "command": ["true"],
                                                        "requires": ["nowhere"]}]}, watch=False).id
    # When a worker registers listing run directories: that live run, an unknown one, and junk
    raw = Raw(master.address)
    try:
        raw.hello_as_worker("fake", shared=[live, 7, None, ["x"], "", "gone#3"])
        raw.send_frame(Op.PING, 9, {})
        done = []
        while True:
            frame = raw.read_frame()
            if frame.opcode == Op.PONG:
                break
            if frame.opcode == Op.RUN_DONE:
                done.append(frame.body["run"])
    finally:
        raw.close()
    # Then only the run it does not know as live is over; the junk is ignored and the master serves on
    assert done == ["gone#3"]
    with Client(master.address, token="") as c:
        assert c.status(live)["state"] == "RUNNING"


def _fails_until(tmp_path: Path, name: str, fixed: Path, *, retries: int) -> str:
    """A job whose task ``try`` fails until ``fixed`` exists (``retries`` retries, 0.1 s apart);
    its task ``next`` runs after it."""
    return write_job(tmp_path, f"{name}.ini", f"""
[job]
name = {name}
[task:try]
run = test -e {fixed}
retries = {retries}
retry_backoff = 0.1s
[task:next]
after = try
run = echo next
""")


def test_retries_then_dead_then_retry_of_the_run(cluster: Cluster, tmp_path: Path) -> None:
    # Given a task that fails until a file appears, with 2 retries and a short backoff
    local = cluster(workers=1)
    fixed = tmp_path / "fixed"
    job = _fails_until(tmp_path, "flaky", fixed, retries=2)
    m = ("--master", local.address)
    with local.client() as c:
        result = c.submit_file(job).wait(timeout=60)
        # Then it was tried three times, went DEAD, and its dependant was skipped
        assert result.tasks == {"flaky#1/try": "DEAD", "flaky#1/next": "SKIPPED"}
        assert len(c.status("flaky#1/try")["attempts"]) == 3
    assert "try              DEAD       3 attempts on local-1" in run_cli(*m, "status", "flaky#1").stdout
    assert "flaky#1/try" in run_cli(*m, "dead").stdout
    # When the cause is fixed and the run is retried, the rest of the run goes on
    fixed.touch()
    assert run_cli(*m, "retry", "flaky#1").code == 0
    with local.client() as c:
        wait_until(lambda: c.status("flaky#1")["state"] != "RUNNING", 30, "the retried run to end")
        assert c.status("flaky#1")["state"] == "SUCCEEDED"
    assert "flaky#1/try" not in run_cli(*m, "dead").stdout


def test_retry_of_one_dead_task_from_the_cli_lets_its_run_finish(cluster: Cluster, tmp_path: Path) -> None:
    # Given a run whose task went DEAD (its one retry failed too) and whose dependant was skipped
    local = cluster(workers=1)
    fixed = tmp_path / "fixed"
    job = _fails_until(tmp_path, "one", fixed, retries=1)
    m = ("--master", local.address)
    with local.client() as c:
        result = c.submit_file(job).wait(timeout=60)
    assert result.tasks == {"one#1/try": "DEAD", "one#1/next": "SKIPPED"}, result
    assert "one#1/try" in run_cli(*m, "dead").stdout
    # When the cause is fixed and that task alone is retried from the CLI
    fixed.touch()
    res = run_cli(*m, "retry", "one#1/try")
    # Then it is re-queued, its dependant runs, the run succeeds and the task leaves the dead-letter list
    assert res.code == 0 and res.stdout.startswith("one#1/try: "), res
    with local.client() as c:
        wait_until(lambda: c.status("one#1")["state"] != "RUNNING", 30, "the retried run to end")
        view = c.status("one#1")
    assert view["state"] == "SUCCEEDED", view
    assert {t["id"]: (t["state"], len(t["attempts"])) for t in view["tasks"]} == {
        "one#1/try": ("SUCCEEDED", 3), "one#1/next": ("SUCCEEDED", 1)}, view
    assert "one#1/try" not in run_cli(*m, "dead").stdout
    # And retrying a task that succeeded is refused with exit 2, saying which states can be retried
    res = run_cli(*m, "retry", "one#1/try")
    assert res.code == 2 and res.stdout == "" and len(res.stderr.splitlines()) == 1, res
    assert "task one#1/try is SUCCEEDED; only FAILED, DEAD, CANCELLED or SKIPPED tasks can be retried" \
        in res.stderr, res


def test_affinity_holds_across_three_workers(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=3, slots=2)
    job = write_job(tmp_path, "aff.ini", "[job]\nname = aff\n" + "".join(
        f"[task:src{i}]\nrun = echo $TITAN_NODE\n[task:dst{i}]\nafter = src{i}\naffinity = src{i}\n"
        f"run = echo $TITAN_NODE\n" for i in range(6)))
    with local.client() as c:
        assert c.submit_file(job).wait(timeout=60).ok
        view = c.status("aff#1")
    nodes = {t["id"].rsplit("/", 1)[1]: t["node"] for t in view["tasks"]}
    assert all(nodes[f"dst{i}"] == nodes[f"src{i}"] for i in range(6)), nodes
    assert len(set(nodes.values())) > 1, "every task ran on one node; affinity was not put to the test"


def test_affinity_fails_the_task_and_the_run_when_the_anchor_node_is_gone(cluster: Cluster, tmp_path: Path) -> None:
    # Given a run where `a` runs on local-1, `slow` on local-2 until a gate opens,
    # and `b`, after both, must run where `a` ran
    local = cluster(workers=2)
    gate = tmp_path / "gate"
    job = write_job(tmp_path, "anchor.ini", f"""
[job]
name = anchor
[task:a]
node = local-1
run = true
[task:slow]
node = local-2
run = while [ ! -e {gate} ]; do sleep 0.02; done
[task:b]
after = a, slow
affinity = a
run = true
""")
    with local.client() as c:
        run = c.submit_file(job)

        def states() -> dict:
            return {t["id"]: t for t in c.status(run.id)["tasks"]}
        wait_until(lambda: states()["anchor#1/a"]["state"] == "SUCCEEDED", 30, "`a` to succeed")
        # When local-1 is stopped (its process group terminated) and the master has seen it go
        worker = local.worker_procs[0]
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
        wait_until(lambda: {n["name"]: n["state"] for n in c.nodes()}.get("local-1") == "lost", 10,
                   "the master to see local-1 gone")
        # And `slow` ends, so `b` may start
        gate.touch()
        result = run.wait(timeout=30)
        # Then, once local-1 stayed away past the master's lost grace, `b` failed without
        # running, naming the gone node, and so did the run
        assert result.state == "FAILED", result
        assert result.tasks == {"anchor#1/a": "SUCCEEDED", "anchor#1/slow": "SUCCEEDED",
                                "anchor#1/b": "FAILED"}, result
        b = states()["anchor#1/b"]
        assert b["reason"] == "affinity: node local-1, which ran anchor#1/a, is gone", b
        assert b["attempts"] == [], b


def test_a_task_no_worker_can_take_never_blocks_the_others(cluster: Cluster) -> None:
    local = cluster(workers=2)
    with local.client() as c:
        stuck = c.submit("echo gpu", requires={"gpu"}, priority=100)
        others = [c.submit(["echo", str(i)]) for i in range(10)]
        assert [t.result(timeout=30).state for t in others] == ["SUCCEEDED"] * 10
        assert c.status(stuck.id)["state"] == "QUEUED"
        c.cancel(stuck.id)


def test_the_examples_run(tmp_path: Path) -> None:
    res = run_cli("up", str(REPO / "examples" / "nightly-etl.ini"), timeout_s=120)
    assert res.code == 0 and "total" in res.stdout and "nightly-etl#1  SUCCEEDED" in res.stdout, res
    res = run_cli("up", str(REPO / "examples" / "mapreduce" / "wordcount.ini"), timeout_s=120)
    assert res.code == 0 and "total words: 3000" in res.stdout, res
    res = run_cli("up", "--tags", "gpu", str(REPO / "examples" / "gpu-routing.ini"), timeout_s=60)
    assert res.code == 0 and "training on local-" in res.stdout and "model trained" in res.stdout, res


def test_up_gives_the_tags_a_job_requires_to_its_first_worker() -> None:
    res = run_cli("up", str(REPO / "examples" / "gpu-routing.ini"), timeout_s=60)
    assert res.code == 0 and "local-1 gets the tags gpu" in res.stderr, res
    # the gpu tasks ran on local-1, the only gpu worker; the report could go to either
    assert "training on local-1 with" in res.stdout and "model trained" in res.stdout, res
    assert "gpu-routing#1/prepare  SUCCEEDED on local-1" in res.stderr, res


def test_wait_shows_each_attempt_starting_failing_and_waiting_for_its_retry(cluster: Cluster,
                                                                            tmp_path: Path) -> None:
    local = cluster(workers=1)
    marker = tmp_path / "failed-once"
    job = write_job(tmp_path, "once.ini", f"""
[job]
name = once
[task:try]
run = test -e {marker} || {{ touch {marker}; exit 3; }}
retries = 1
retry_backoff = 0.5s
[task:next]
after = try
run = echo next
""")
    res = run_cli("--master", local.address, "submit", job, "--wait")
    assert res.code == 0 and "once#1  SUCCEEDED" in res.stdout, res
    lines = [line for line in res.stderr.splitlines() if line.startswith(("once#1/", "titan: "))]
    assert lines == ["titan: once#1 started: 2 tasks",
                     "once#1/try  RUNNING on local-1",
                     "once#1/try  QUEUED (attempt 1 failed with exit code 3; next attempt in 0.5s)",
                     "once#1/try  RUNNING on local-1 (attempt 2)",
                     "once#1/try  SUCCEEDED on local-1",
                     "once#1/next  RUNNING on local-1",
                     "once#1/next  SUCCEEDED on local-1"], res
    assert "try              SUCCEEDED  2 attempts on local-1" in run_cli("--master", local.address, "status",
                                                                         "once#1").stdout


def test_progress_says_when_no_worker_has_the_tags_a_queued_task_requires(cluster: Cluster,
                                                                         tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = write_job(tmp_path, "gpu.ini", "[job]\nname = gpu\n[task:train]\nrequires = gpu\nrun = true\n")
    seen: list = []
    with local.client() as c:
        run = c.submit_file(job, on_task=seen.append)
        with pytest.raises(TimeoutError):
            run.wait(timeout=1.0)              # the event arrives while we wait
        assert [(e["id"], e["state"]) for e in seen] == [("gpu#1/train", "QUEUED")], seen
        assert seen[0]["reason"] == "no connected worker has tags gpu: start one with --tags gpu"
        # `titan status RUN` says it too, as does its --json
        res = run_cli("--master", local.address, "status", run.id)
        assert res.stdout.splitlines()[1] == ("  train            QUEUED                 (waiting: no connected worker has "
                                              "tags gpu: start one with --tags gpu)"), res
        view = json.loads(run_cli("--master", local.address, "status", run.id, "--json").stdout)
        assert view["tasks"][0]["waiting"] == "no connected worker has tags gpu: start one with --tags gpu"
        c.cancel(run.id)
        assert run.wait(timeout=30).state == "CANCELLED"


def test_a_job_submitted_again_unchanged_is_stored_once(titan_procs: TitanProcs, tmp_path: Path) -> None:
    # Given a master that stores its state in an append-only file
    master = titan_procs.start_master()
    job = {"name": "again", "tasks": [{"name": "a", "command": ["true"]}]}
    changed = {"name": "again", "tasks": [{"name": "a", "command": ["echo", "changed"]}]}
    with Client(master.address, token="") as c:
        assert "job_encoded" in c.master_features      # so the SDK sends each job encoded
        # When the same job is submitted three times, then once changed
        for body in (job, job, job, changed):
            c.submit_job(body, start=False)
        # Then it was written twice (the first time and the change), and the master knows the changed one
        jobs = {j["name"]: j for j in c.jobs()}
        assert jobs["again"]["tasks"] == 1
    aof = b"".join(path.read_bytes() for path in sorted(master.data_dir.rglob("*.aof")))
    assert aof.count(b"titan:job:again") == 2
    # and after a kill -9 the master runs the changed one
    master = titan_procs.restart_master(master)
    titan_procs.start_worker(master.address, "w1")
    titan_procs.wait_ready(master.address, ["w1"])
    with Client(master.address, token="") as c:
        run = c.trigger("again")
        assert run.wait(timeout=30).state == "SUCCEEDED"
        task = run.tasks()[0]
        assert b"".join(c.logs(task["id"])) == b"changed\n"


def test_a_bad_job_from_the_sdk_is_refused_whole_and_changes_nothing(cluster: Cluster) -> None:
    local = cluster(workers=1, slots=1)
    ok = {"name": "a", "command": ["true"]}
    bad_jobs = {
        "two tasks are named 'a'": {"name": "bad", "tasks": [ok, ok]},
        "after must be a list of task names": {"name": "bad", "tasks": [ok, {**ok, "name": "b", "after": 5}]},
        "delay_s must be a number": {"name": "bad", "tasks": [{**ok, "delay_s": "soon"}]},
        "catchup_limit must be a whole number": {"name": "bad", "catchup_limit": "x", "tasks": [ok]},
        "task 'b': command is missing": {"name": "bad", "tasks": [ok, {"name": "b"}]},
        "bad job name 'bad name!'": {"name": "bad name!", "tasks": [ok]},
        "overlap must be one of skip, queue, allow, not 'bogus'": {"name": "bad", "overlap": "bogus", "tasks": [ok]},
        "catchup must be one of none, latest, all": {"name": "bad", "catchup": "every", "tasks": [ok]},
        "catchup_limit must be a whole number from 1 to 1000": {"name": "bad", "catchup_limit": 5000, "tasks": [ok]},
        "task 'a' has the name of a service": {"name": "bad", "tasks": [ok],
                                                "services": [{"name": "a", "command": "sleep 9"}]},
        "affinity 'a' must be upstream": {"name": "bad", "tasks": [ok, {**ok, "name": "b", "affinity": "a"}]},
        "affinity and node cannot both be set": {"name": "bad", "tasks": [
            ok, {**ok, "name": "b", "after": ["a"], "affinity": "a", "node": "w1"}]},
        "priority must be an integer from -1000 to 1000": {"name": "bad", "tasks": [{**ok, "priority": 5000}]},
        "TITAN_RUN is set by Titan": {"name": "bad", "tasks": [{**ok, "env": {"TITAN_RUN": "x"}}]},
    }
    with local.client() as c:
        # When jobs with a problem in a later task are submitted
        for words, job in bad_jobs.items():
            with pytest.raises(RemoteError, match=words) as err:
                c.submit_job(job)
            assert err.value.code == "bad_request"
        # Then none of them was stored, and no task of theirs runs
        assert c.jobs() == [] and c.runs() == []
        # And the connection serves a good job as usual
        assert c.submit_job({"name": "good", "tasks": [ok]}).wait(timeout=30).state == "SUCCEEDED"


def test_progress_says_an_attempt_was_lost_when_its_task_starts_again_elsewhere(cluster: Cluster,
                                                                               tmp_path: Path) -> None:
    # Given a watched run whose one task runs on one of two workers
    local = cluster(workers=2, master_args=("--lost-grace", "0.5"))
    pids = tmp_path / "pids"
    job = write_job(tmp_path, "lost.ini", f"[job]\nname = lost\n[task:long]\nrun = echo $$ >> {pids}; exec sleep 300\n")
    seen: list = []

    def wait_for(check: Callable[[], bool], what: str) -> None:
        def arrived() -> bool:
            try:
                run.wait(timeout=0.2)          # takes in the events that came meanwhile
            except TimeoutError:
                pass
            return check()
        wait_until(arrived, 30, what)

    try:
        with local.client() as c:
            run = c.submit_file(job, on_task=seen.append)
            wait_for(lambda: any(e["state"] == "RUNNING" for e in seen), "the task to start")
            first = seen[-1]["node"]
            # When that worker is killed
            worker = local.worker_procs[int(first.rsplit("-", 1)[1]) - 1]
            os.killpg(worker.pid, signal.SIGKILL)
            # Then the task starts again on the other worker, and the line says why
            wait_for(lambda: seen[-1]["state"] == "RUNNING" and seen[-1]["attempt"] == 2, "attempt 2")
            assert seen[-1]["node"] != first
            assert seen[-1]["reason"].startswith("attempt 1 lost (") and \
                seen[-1]["reason"].endswith("; no retry used"), seen
            c.cancel(run.id)
            assert run.wait(timeout=30).state == "CANCELLED"
    finally:
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_delay_counts_from_when_the_task_became_ready(cluster: Cluster, tmp_path: Path) -> None:
    # Given a task held 1 s after `first`, which takes about 1.5 s
    local = cluster(workers=1)
    job = write_job(tmp_path, "dl.ini", """
[job]
name = dl
[task:first]
run = sleep 1.5
[task:d]
after = first
delay = 1s
run = true
""")
    m = ("--master", local.address)
    # When the job runs with --wait
    res = run_cli(*m, "submit", job, "--wait")
    assert res.code == 0 and "dl#1  SUCCEEDED" in res.stdout, res
    # Then the progress line says the delay as set, not counted from the submission
    lines = [line for line in res.stderr.splitlines() if line.startswith("dl#1/")]
    assert lines == ["dl#1/first  RUNNING on local-1",
                     "dl#1/first  SUCCEEDED on local-1",
                     "dl#1/d  QUEUED (delayed: starts in 1s)",
                     "dl#1/d  RUNNING on local-1",
                     "dl#1/d  SUCCEEDED on local-1"], res
    # And d's attempt started at least 1 s after `first` ended (so about 2.5 s after the submission)
    view = json.loads(run_cli(*m, "status", "dl#1", "--json").stdout)
    tasks = {t["id"]: t for t in view["tasks"]}
    first, d = tasks["dl#1/first"]["attempts"][0], tasks["dl#1/d"]["attempts"][0]
    assert first["finished_at"] - first["started_at"] >= 1.4, first
    held_s = d["started_at"] - first["finished_at"]
    assert 1.0 - 1e-3 <= held_s < 2.5, (first, d)
    assert d["started_at"] - tasks["dl#1/d"]["submitted_at"] >= 2.4, (first, tasks["dl#1/d"])
