"""What arrives for a client's tasks and runs: kept while a handle can ask for it, never lost.

The master pushes every watched task's result to the client. A program that
submits work for hours without keeping the Task objects (fire and forget)
must not collect all those results in memory: once a handle is gone, what
arrives for it is dropped. And a user's output callback that raises must not
take other tasks' results down with it.
"""
from __future__ import annotations

import contextlib
import shlex
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from conftest import FakeMaster, wait_until
from titan.roles.local import LocalCluster
from titan.sdk.client import Client, Task
from titan.wire.frames import FLAG_MORE, Op, pack

Cluster = Callable[..., LocalCluster]
RESULT_TIMEOUT_S = 30.0


def gated(gate: Path, before: str = "", after: str = "") -> List[str]:
    """argv of a task that prints ``before``, waits for the file ``gate``, then prints ``after``."""
    wait = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"
    return ["sh", "-c", f"printf %s {shlex.quote(before)}; {wait}; printf %s {shlex.quote(after)}"]


def test_results_of_dropped_task_handles_are_not_kept(cluster: Cluster) -> None:
    # Given a client on a cluster of one worker with one slot (tasks end in the order submitted)
    local = cluster(workers=1, slots=1)
    with local.client() as c:
        # When it submits 60 tasks without keeping their handles, and keeps one more
        for _ in range(60):
            c.submit(["true"], name="dropped")
        kept = c.submit(["true"], name="kept")
        # Then the kept one still gets its result, after all the dropped ones ran
        assert kept.result(timeout=60).state == "SUCCEEDED"
        assert c.status("dropped#60")["state"] == "SUCCEEDED"
        # And after one more request the client holds nothing for any of them
        c.nodes()
        assert c._pending == {}


def test_a_dropped_run_handle_is_forgotten_and_a_kept_one_still_waits(cluster: Cluster) -> None:
    local = cluster(workers=1, slots=2)
    job = {"name": "pair", "tasks": [{"name": "a", "command": ["true"]},
                                     {"name": "b", "command": ["true"], "after": ["a"]}]}
    with local.client() as c:
        # Given a run whose handle is dropped at once and one whose handle is kept
        c.submit_job(job)
        kept = c.submit_job(job)
        # When both have ended
        assert kept.wait(timeout=60).state == "SUCCEEDED"
        wait_until(lambda: all(r["state"] == "SUCCEEDED" for r in c.runs("pair")), 30, "both runs to end")
        # Then the client keeps nothing for either of them
        assert c._pending == {}


def test_messages_for_a_dropped_subscription_are_not_kept(cluster: Cluster) -> None:
    local = cluster(workers=1, slots=1)
    with local.client() as listener, local.client() as talker:
        # Given a subscription that is dropped without being closed, and one that is kept
        listener.kv.subscribe("news")
        kept = listener.kv.subscribe("weather")
        # When messages keep coming on both channels
        for n in range(20):
            talker.kv.publish("news", f"n{n}".encode())
            talker.kv.publish("weather", f"w{n}".encode())
        # Then the kept one gets its messages in order
        assert [kept.get(timeout=10) for _ in range(20)] == [("weather", f"w{n}".encode()) for n in range(20)]
        # And the client holds nothing for the dropped one
        assert list(listener._pending) == [kept.req_id]


@contextlib.contextmanager
def client_of_fake_master() -> Iterator[Tuple[FakeMaster, Client]]:
    """A real client connected to a fake master that sends exactly what the test says."""
    fake = FakeMaster()
    accepting = threading.Thread(target=fake.accept)
    accepting.start()
    try:
        with Client(fake.address, token="") as c:
            accepting.join()
            yield fake, c
    finally:
        accepting.join()
        fake.close()


def test_an_output_callback_that_raises_loses_no_other_result() -> None:
    # Given a client whose first task's output callback fails, and a second task
    with client_of_fake_master() as (fake, c):
        def broken(stream: str, data: bytes) -> None:
            raise ValueError("the callback failed")
        first = c.submit(["echo", "hi"], on_output=broken)
        second = c.submit(["true"])
        submits = [fake.read_frame_where(lambda f: f.opcode == Op.SUBMIT) for _ in range(2)]
        r1, r2 = (f.req_id for f in submits)
        result = {"state": "SUCCEEDED", "exit_code": 0, "node": "w", "attempts": 1}
        # When the first one's output and both results arrive in one read
        fake.sock.sendall(pack(Op.OK, r1, {"id": "echo#1"}, FLAG_MORE) + pack(Op.OK, r2, {"id": "true#1"}, FLAG_MORE)
                          + pack(Op.EVENT, r1, {"kind": "output", "stream": "out", "data": b"hi\n"}, FLAG_MORE)
                          + pack(Op.EVENT, r2, {"kind": "result", "result": {"id": "true#1", **result}})
                          + pack(Op.EVENT, r1, {"kind": "result", "result": {"id": "echo#1", **result}}))
        # Then the callback's error reaches the call that ran it
        with pytest.raises(ValueError, match="the callback failed"):
            second.result(timeout=5)
        # And nothing that came with it was lost: both results are there
        assert second.result(timeout=5).id == "true#1"
        assert first.result(timeout=5).id == "echo#1"


def test_a_result_that_comes_before_the_reply_still_names_the_task() -> None:
    # Given a master that holds the reply to a submission until its disk has it,
    # and sends the (quick) task's result meanwhile
    with client_of_fake_master() as (fake, c):
        task = c.submit(["true"])
        req = fake.read_frame_where(lambda f: f.opcode == Op.SUBMIT).req_id
        result = {"id": "true#7", "state": "SUCCEEDED", "exit_code": 0, "node": "w", "attempts": 1}
        fake.sock.sendall(pack(Op.EVENT, req, {"kind": "result", "result": result}))
        # When the client takes the result, then asks for the task's id
        assert task.result(timeout=5).state == "SUCCEEDED"
        # Then it knows the id without waiting for the reply
        assert task.id == "true#7"


# ----- what a handle tells about its task ---------------------------------------
def test_done_is_false_while_a_task_runs_and_true_once_it_ended_for_every_kind_of_handle(
        cluster: Cluster, tmp_path: Path) -> None:
    # Given three tasks waiting on a gate file, held by a watching handle, a handle from
    # submit(watch=False), and one from c.task(id) for a task submitted by another client
    local = cluster(workers=1, slots=3)
    gate = tmp_path / "gate"
    with local.client() as c, local.client() as other:
        watched = c.submit(gated(gate), name="watched")
        unwatched = c.submit(gated(gate), name="unwatched", watch=False)
        looked_up = c.task(other.submit(gated(gate), name="looked-up", watch=False).id)
        handles: List[Task] = [watched, unwatched, looked_up]
        wait_until(lambda: all(c.status(t.id)["state"] == "RUNNING" for t in handles), 15,
                   "all three tasks to run")
        # Then while they run, none of them is done
        assert [t.done() for t in handles] == [False, False, False]
        # When the gate opens and the tasks end
        gate.touch()
        # Then every handle says done, and each result says the task succeeded
        wait_until(lambda: all(t.done() for t in handles), 10,
                   lambda: f"done() for every handle; done: {[(t.id, t.done()) for t in handles]}")
        assert [t.result(RESULT_TIMEOUT_S).state for t in handles] == ["SUCCEEDED"] * 3
        assert all(t.done() for t in handles)


def test_task_logs_return_the_output_so_far_while_it_runs_and_all_of_it_after(
        cluster: Cluster, tmp_path: Path) -> None:
    # Given a task that printed a first line and waits for a gate file before the second
    local = cluster(workers=1)
    gate = tmp_path / "gate"
    with local.client() as c:
        task = c.submit(gated(gate, before="first\n", after="second\n"))
        # When its logs are read while it runs
        wait_until(lambda: task.logs() == "first\n", 15, lambda: f"the first line; logs: {task.logs()!r}")
        # Then they hold the first line only, and the task is still running
        assert c.status(task.id)["state"] == "RUNNING"
        assert task.logs() == "first\n"
        # And once it has ended, they hold everything it printed
        gate.touch()
        assert task.result(RESULT_TIMEOUT_S).output == "first\nsecond\n"
        assert task.logs() == "first\nsecond\n"


def test_a_wait_that_times_out_says_the_task_or_run_is_still_going_and_can_be_waited_on_again(
        cluster: Cluster, tmp_path: Path) -> None:
    # Given a task and a one-task run, both waiting on a gate file
    local = cluster(workers=1, slots=2)
    gate = tmp_path / "gate"
    with local.client() as c:
        task = c.submit(gated(gate), name="slow")
        run = c.submit_job({"name": "slowjob", "tasks": [{"name": "a", "command": gated(gate)}]})
        # When each is waited on for 0.3 s
        with pytest.raises(TimeoutError, match=r"^task slow#1 has not ended after 0.3s$"):
            task.result(timeout=0.3)
        with pytest.raises(TimeoutError, match=r"^run slowjob#1 still running after 0.3s$"):
            run.wait(timeout=0.3)
        # Then, once they end, the same handles give their results
        gate.touch()
        assert task.result(RESULT_TIMEOUT_S).state == "SUCCEEDED"
        assert run.wait(RESULT_TIMEOUT_S).state == "SUCCEEDED"


def test_a_scheduled_job_submitted_starts_no_run_and_its_handle_says_how_to_start_one(
        cluster: Cluster, tmp_path: Path) -> None:
    from titan.errors import UsageError
    local = cluster(workers=1)
    path = tmp_path / "nightly.ini"
    path.write_text("[job]\nname = nightly\nschedule = 0 3 * * *\n[task:a]\nrun = true\n")
    with local.client() as c:
        run = c.submit_file(str(path))
        assert run.id is None
        for call in (run.wait, run.tasks, run.status):
            with pytest.raises(UsageError, match=r"no run was started: nightly has a schedule.*"
                                                 r"trigger\('nightly'\) starts a run now"):
                call()
        assert c.trigger("nightly").wait(RESULT_TIMEOUT_S).state == "SUCCEEDED"


def test_requires_takes_a_set_a_list_or_one_comma_separated_string() -> None:
    from titan.errors import UsageError
    from titan.sdk.services import tag_list
    assert tag_list({"gpu"}) == tag_list(["gpu"]) == tag_list("gpu") == ["gpu"]
    assert tag_list("gpu, cuda") == tag_list(["cuda", "gpu", "gpu"]) == ["cuda", "gpu"]
    assert tag_list(None) == tag_list("") == []
    with pytest.raises(UsageError, match="requires takes tag names"):
        tag_list([1, 2])
