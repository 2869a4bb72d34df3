"""Elasticity end to end: ephemeral workers retire when idle, and busy pools fork child workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import Raw, TitanProcs, child_env, wait_until
from titan.errors import TitanError
from titan.sdk.client import Client
from titan.wire.frames import Op


def nodes(address: str) -> Dict[str, Dict[str, Any]]:
    with Client(address, token="", timeout=2.0) as c:
        return {n["name"]: n for n in c.nodes()}


def test_a_busy_one_slot_worker_forks_children_that_drain_the_backlog_then_retire(
        titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master("--scale-after", "0.3", "--scale-cooldown", "0.5")
    titan_procs.start_worker(master.address, "p1", "--max-children", "2", "--idle-timeout", "1.5", slots=1,
                             tags=["gpu"])
    titan_procs.wait_ready(master.address, ["p1"])
    with Client(master.address, token="") as c:
        tasks = [c.submit("sleep 1", requires={"gpu"}) for _ in range(8)]
        # While the backlog waits, p1 forks ephemeral children that show it as their parent
        seen = wait_until(lambda: {n: v for n, v in nodes(master.address).items() if v.get("parent") == "p1"}
                          or None, 20, lambda: "children of p1\n" + titan_procs.logs(), interval_s=0.1,
                          ignore=(TitanError, OSError))
        assert all(v["ephemeral"] and v["tags"] == ["gpu"] for v in seen.values())   # the parent's tags
        ran_on = {t.result(timeout=60).node for t in tasks}
    assert "p1" in ran_on and len(ran_on) >= 2, f"ran on {ran_on}\n{titan_procs.logs()}"   # children helped
    # Idle, the children retire; the permanent parent stays
    wait_until(lambda: set(nodes(master.address)) == {"p1"}, 20,
               lambda: "the children to retire\n" + titan_procs.logs(), ignore=(TitanError, OSError))
    wait_until(lambda: "exited (retired)" in (titan_procs.base_dir / "p1.log").read_text(), 10,
               "the parent to reap its children")


def test_an_ephemeral_worker_retires_when_idle_and_a_permanent_one_never(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    titan_procs.start_worker(master.address, "eph", "--ephemeral", "--idle-timeout", "1", slots=1)
    keeper = titan_procs.start_worker(master.address, "perm", "--permanent", "--idle-timeout", "1", slots=1)
    titan_procs.wait_ready(master.address, ["eph", "perm"])
    assert nodes(master.address)["eph"]["ephemeral"] is True
    wait_until(lambda: "eph" not in nodes(master.address), 15, "the ephemeral worker to retire",
               ignore=(TitanError, OSError))
    time.sleep(1.5)
    assert "perm" in nodes(master.address) and keeper.poll() is None


def test_the_master_refuses_to_retire_a_worker_while_it_places_work_on_it(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    fake = Raw(master.address)
    try:
        fake.hello_as_worker("eph", ephemeral=True)
        with Client(master.address, token="") as c:
            task = c.submit("echo hi")
            dispatch = fake.read_frame_where(lambda f: f.opcode == Op.DISPATCH).body
            assert dispatch["task"] == task.id
            # It asks to retire with the task in flight: refused
            fake.send_frame(Op.RETIRE, 7, {"idle_s": 99})
            assert fake.read_frame_where(lambda f: f.req_id == 7).body == {"retire": False}
            fake.send_frame(Op.FINISHED, 0, {"task": task.id, "attempt": dispatch["attempt"], "exit_code": 0,
                                             "reason": ""})
            assert task.result(timeout=10).state == "SUCCEEDED"
            # Idle now: granted, and once it leaves it is gone from the cluster, not "lost"
            fake.send_frame(Op.RETIRE, 9, {"idle_s": 99})
            assert fake.read_frame_where(lambda f: f.req_id == 9).body == {"retire": True}
            fake.close()
            wait_until(lambda: "eph" not in nodes(master.address), 10, "the retired worker to be forgotten",
                       ignore=(TitanError, OSError))
    finally:
        fake.close()


@pytest.fixture
def pyz_cluster(tmp_path: Path) -> Iterator[List[subprocess.Popen]]:
    procs: List[subprocess.Popen] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait(10)


def test_inception_works_the_same_from_the_zipapp(tmp_path: Path, pyz_cluster: List[subprocess.Popen]) -> None:
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    try:
        import zipapp_build
    finally:
        sys.path.remove(str(repo))
    pyz = zipapp_build.build(tmp_path / "dist" / "titan.pyz")
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}     # only the archive's code
    data = tmp_path / "run"
    data.mkdir()

    def start(*args: str, log: str) -> subprocess.Popen:
        with open(data / log, "wb") as out:
            proc = subprocess.Popen([sys.executable, str(pyz), *args], cwd=str(data), env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pyz_cluster.append(proc)
        return proc

    start("master", "--bind", "127.0.0.1:0", "--data", "m", "--scale-after", "0.3", "--scale-cooldown", "0.5",
          log="master.log")
    addr_file = data / "m" / "master.addr"
    wait_until(addr_file.exists, 20, "the master to listen")
    address = addr_file.read_text().strip()
    start("worker", "--master", address, "--name", "z1", "--slots", "1", "--max-children", "1",
          "--idle-timeout", "1", "--data", "z1", "--heartbeat-interval", "0.3", log="z1.log")
    wait_until(lambda: "z1" in nodes(address), 20, "z1 to join", ignore=(TitanError, OSError))
    with Client(address, token="") as c:
        tasks = [c.submit("sleep 1") for _ in range(4)]
        wait_until(lambda: "z1.1" in nodes(address), 30,
                   lambda: "a child from the zipapp\n" + (data / "z1.log").read_text(), ignore=(TitanError, OSError))
        assert nodes(address)["z1.1"]["parent"] == "z1"
        assert all(t.result(timeout=60).state == "SUCCEEDED" for t in tasks)
    wait_until(lambda: "z1.1" not in nodes(address), 20, "the child to retire", ignore=(TitanError, OSError))


def test_a_killed_ephemeral_worker_is_forgotten_after_the_grace_a_permanent_one_is_not(
        titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master("--lost-grace", "1", "--heartbeat-timeout", "1")
    eph = titan_procs.start_worker(master.address, "eph", "--ephemeral", slots=1)
    perm = titan_procs.start_worker(master.address, "perm", slots=1)
    titan_procs.wait_ready(master.address, ["eph", "perm"])
    titan_procs.kill(eph)
    titan_procs.kill(perm)
    wait_until(lambda: "eph" not in nodes(master.address), 20, "the lost ephemeral worker to be forgotten",
               ignore=(TitanError, OSError))
    assert nodes(master.address)["perm"]["state"] == "lost"
