"""A master whose disk fills up acknowledges nothing it has not stored, and keeps serving reads.

The master runs in-process with its connections replaced by recorders, and
its AOF's file operations by a seam that can refuse writes with ENOSPC.
"""
from __future__ import annotations

import errno
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from conftest import Recorder, child_env, cli_argv, wait_until
from titan.errors import UsageError
from titan.io.aof import FileOps
from titan.roles.master.server import Master, MasterConfig
from titan.wire.frames import Frame, Op


class FullDisk(FileOps):
    """Real file operations, except that writes fail while ``full`` is set."""

    full = False

    def write(self, fd: int, data: memoryview) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)


def _master(data_dir: Path) -> Tuple[Master, FullDisk]:
    master = Master(MasterConfig(data_dir=data_dir))
    ops = FullDisk()
    master.durable.aof.ops = ops
    return master, ops


def _request(master: Master, conn: Recorder, req_id: int, opcode: int, body: Any) -> None:
    master.on_frame(conn, Frame(opcode, 0, req_id, body))   # type: ignore[arg-type]
    master._end_of_pass()


def test_a_full_disk_refuses_submissions_and_keeps_answering_reads(tmp_path: Path) -> None:
    # Given a master whose disk is full when a submission arrives
    master, disk = _master(tmp_path / "m")
    client = Recorder()
    disk.full = True
    _request(master, client, 1, Op.SUBMIT, {"command": "true", "name": "first", "watch": False})
    # Then it is not acknowledged: nothing acknowledged is missing from disk
    assert [f for f in client.frames if f[1] == 1] == []
    # And the next submission is refused with a reason a person can act on
    _request(master, client, 2, Op.SUBMIT, {"command": "true", "name": "second", "watch": False})
    opcode, body = client.reply(2)
    assert opcode == Op.ERROR and body["code"] == "store_unavailable"
    assert "No space left on device" in body["message"] and "free space" in body["message"]
    # And reads are still served
    _request(master, client, 3, Op.NODES, {})
    assert client.reply(3)[0] == Op.OK
    # When the disk has room again, the held OK goes out once the data is stored
    disk.full = False
    wait_until(lambda: _request(master, client, 4, Op.PING, {}) or any(f[1] == 1 for f in client.frames),
               5, "the held OK to be released")
    assert client.reply(1) == (Op.OK, {"id": "first#1"})
    master.close()
    # And a master started on the same directory has the acknowledged task
    again, _ = _master(tmp_path / "m")
    assert "first#1" in again.sched.tasks and "second#1" not in again.sched.tasks
    again.close()


class CountingDisk(FileOps):
    """Real file operations that count fsyncs."""

    fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


def _aof_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((data_dir / "store" / "appendonlydir").iterdir()))


def test_a_pass_of_results_is_written_at_once_and_fsynced_a_moment_later(tmp_path: Path) -> None:
    master = Master(MasterConfig(data_dir=tmp_path / "m"))
    disk = CountingDisk()
    master.durable.aof.ops = disk
    client, worker = Recorder(master.loop), Recorder(master.loop)
    worker.state.role, worker.state.name = "worker", "w1"
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    try:
        master._admit_worker(worker, worker.state, {"role": "worker", "name": "w1", "slots": 2, "tags": []})
        master._end_of_pass()
        # Given two watched submissions, each fsynced before its OK, as always, and a third
        # that stays queued (no worker has its tag)
        for req_id in (1, 2):
            _request(master, client, req_id, Op.SUBMIT, {"command": "true", "name": "t"})
            assert client.reply(req_id) == (Op.OK, {"id": f"t#{req_id}"})
        _request(master, client, 9, Op.SUBMIT, {"command": "true", "name": "q", "requires": ["nowhere"]})
        dispatched = [body for op, _, body in worker.frames if op == Op.DISPATCH]
        assert [d["task"] for d in dispatched] == ["t#1", "t#2"]
        fsyncs = disk.fsyncs
        # When a pass reads a result and nothing else
        _request(master, worker, 0, Op.FINISHED, {"task": "t#1", "attempt": 1, "exit_code": 0, "seq": 1})
        # Then the client has the result at once, the record is in the file (a kill -9 cannot
        # lose it), but it is not fsynced yet, and the worker's ACK waits for that fsync
        assert any(op == Op.EVENT and body["result"]["id"] == "t#1" for op, _, body in client.frames)
        assert b"t#1" in _aof_bytes(tmp_path / "m") and disk.fsyncs == fsyncs
        assert not any(op == Op.ACK for op, _, _ in worker.frames)
        # And the loop fsyncs it within LAZY_SYNC_S and sends the ACK
        wait_until(lambda: master.loop.run_once(0.005) or any(op == Op.ACK for op, _, _ in worker.frames), 5,
                   "the ACK after the deferred fsync")
        assert disk.fsyncs == fsyncs + 1
        assert [body for op, _, body in worker.frames if op == Op.ACK] == [{"upto": 1}]
        # When a result is read in the same pass as a request whose answer goes out with the
        # pass (a cancel), then one fsync, in that pass, comes before that answer
        master.on_frame(worker, Frame(Op.FINISHED, 0, 0, {"task": "t#2", "attempt": 1, "exit_code": 0, "seq": 2}))
        _request(master, client, 3, Op.CANCEL, {"task": "q#1"})
        assert disk.fsyncs == fsyncs + 2
        assert client.reply(3) == (Op.OK, {"id": "q#1", "was": "QUEUED", "state": "CANCELLED", "cancelling": False})
        # And the worker's ACK of that result follows within ACK_EVERY_S
        wait_until(lambda: master.loop.run_once(0.005) or len(_acks(worker)) == 2, 5, "the second ACK")
        assert _acks(worker) == [{"upto": 1}, {"upto": 2}]
    finally:
        master.close()


def _acks(worker: Recorder) -> List[Any]:
    return [body for op, _, body in worker.frames if op == Op.ACK]


def test_results_read_in_several_passes_share_one_ack(tmp_path: Path) -> None:
    master = Master(MasterConfig(data_dir=tmp_path / "m"))
    client, worker = Recorder(master.loop), Recorder(master.loop)
    worker.state.role, worker.state.name = "worker", "w1"
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    try:
        master._admit_worker(worker, worker.state, {"role": "worker", "name": "w1", "slots": 3, "tags": []})
        for req_id in (1, 2, 3):
            _request(master, client, req_id, Op.SUBMIT, {"command": "true", "name": "t"})
        # When three results arrive in three passes, one after the other
        for seq in (1, 2, 3):
            _request(master, worker, 0, Op.FINISHED, {"task": f"t#{seq}", "attempt": 1, "exit_code": 0, "seq": seq})
        # Then no ACK has gone out yet, and a moment later one ACK answers all three
        assert _acks(worker) == []
        wait_until(lambda: master.loop.run_once(0.005) or _acks(worker), 5, "the ACK")
        for _ in range(5):
            master.loop.run_once(0.005)
        assert _acks(worker) == [{"upto": 3}]
        assert all(master.sched.tasks[f"t#{n}"].state.value == "SUCCEEDED" for n in (1, 2, 3))
    finally:
        master.close()


def test_a_second_master_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    master, _ = _master(tmp_path / "m")
    try:
        proc = subprocess.run(cli_argv("master", "--bind", "127.0.0.1:0", "--data", str(tmp_path / "m")),
                              env=child_env(), capture_output=True, text=True, timeout=60)
    finally:
        master.close()
    assert proc.returncode != 0
    assert "lock" in proc.stderr.lower() and str(tmp_path / "m") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_finished_tasks_are_forgotten_after_the_retention_period(tmp_path: Path) -> None:
    # Given a master that keeps finished tasks for one second
    master = Master(MasterConfig(data_dir=tmp_path / "m", retention_s=1.0))
    client = Recorder()
    _request(master, client, 1, Op.SUBMIT, {"command": "true", "name": "brief", "watch": False})
    master.sched.worker_joined("w1", [], 1, master.clock())
    master.apply(master.sched.attempt_finished("w1", "brief#1", 1, 0, "", master.clock()))
    master._end_of_pass()
    assert master.sched.tasks["brief#1"].state.value == "SUCCEEDED"
    # When the retention period has passed
    time.sleep(1.1)
    master._purged_at = 0.0
    master._housekeeping()
    # Then the task is gone from memory and from the store
    assert "brief#1" not in master.sched.tasks
    assert master.durable.engine.execute([b"EXISTS", b"titan:task:brief#1"], int(time.time() * 1000))[0] == 0
    master.close()


def test_a_run_is_forgotten_with_its_tasks_and_listing_runs_shows_the_newest(tmp_path: Path) -> None:
    # Given a master that keeps finished tasks for one minute, on a clock the test moves
    now = [1_000_000.0]
    master = Master(MasterConfig(data_dir=tmp_path / "m", retention_s=60.0), clock=lambda: now[0])
    client = Recorder()
    job = {"name": "nightly", "tasks": [{"name": "a", "command": ["true"]},
                                        {"name": "b", "command": ["true"], "after": ["a"]}]}
    # And three runs of a job, the first two cancelled (ended) long ago, the third still waiting
    for n in (1, 2):
        _request(master, client, n, Op.RUN, {"job": job, "watch": False})
        _request(master, client, 10 + n, Op.CANCEL, {"task": f"nightly#{n}"})
    now[0] += 3600
    _request(master, client, 3, Op.RUN, {"job": job, "watch": False})
    _request(master, client, 4, Op.RUNS, {"job": "nightly", "limit": 2})
    opcode, body = client.reply(4)
    assert [r["id"] for r in body["runs"]] == ["nightly#3", "nightly#2"] and body["total"] == 3
    # When the housekeeping forgets what ended more than a minute ago
    master._purged_at = float("-inf")
    master._housekeeping()
    # Then the old runs are gone with their tasks, and the live one stays
    _request(master, client, 5, Op.RUNS, {})
    opcode, body = client.reply(5)
    assert [r["id"] for r in body["runs"]] == ["nightly#3"] and body["total"] == 1
    assert body["runs"][0]["state"] == "RUNNING" and body["runs"][0]["tasks"] == 2
    master.close()


def test_a_finished_task_another_still_waits_for_is_kept_past_the_retention(tmp_path: Path) -> None:
    # Given a run where c waits for a and b; a ended long ago, b runs longer than the retention
    now = [1_000_000.0]
    master = Master(MasterConfig(data_dir=tmp_path / "m", retention_s=60.0), clock=lambda: now[0])
    client = Recorder()
    worker = Recorder()
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    master.sched.worker_joined("w1", [], 2, now[0])
    job = {"name": "slow", "tasks": [{"name": "a", "command": ["true"]}, {"name": "b", "command": ["true"]},
                                     {"name": "c", "command": ["true"], "after": ["a", "b"]}]}
    _request(master, client, 1, Op.RUN, {"job": job, "watch": False})
    master.apply(master.sched.attempt_finished("w1", "slow#1/a", 1, 0, "", now[0]))
    now[0] += 3600
    master._purged_at = float("-inf")
    master._housekeeping()
    # When b ends after the housekeeping ran
    master.apply(master.sched.attempt_finished("w1", "slow#1/b", 1, 0, "", now[0]))
    master._end_of_pass()
    # Then c is dispatched (a was kept: c still needed its state)
    assert master.sched.tasks["slow#1/c"].state.value == "RUNNING"
    assert [body["task"] for op, _, body in worker.frames if op == Op.DISPATCH][-1] == "slow#1/c"
    master.close()


def test_a_master_on_a_non_loopback_address_needs_a_token_or_insecure(tmp_path: Path) -> None:
    # Checked before anything is bound: nothing listens beyond loopback in this test
    with pytest.raises(UsageError, match="without a cluster token"):
        Master(MasterConfig(data_dir=tmp_path / "m", bind=("0.0.0.0", 0)))
    assert not (tmp_path / "m").exists()


class SlowDisk(FileOps):
    """fsync takes ``delay`` seconds (``off_loop_delay`` more off the main thread); notes the thread.

    It does not call the real fsync: how long that takes is the host's disk
    (over a millisecond on a busy one), and only the simulated time may count.
    """

    def __init__(self) -> None:
        self.delay = self.off_loop_delay = 0.0
        self.threads: List[int] = []

    def fsync(self, fd: int) -> None:
        self.threads.append(threading.get_ident())
        off_loop = threading.get_ident() != threading.main_thread().ident
        delay = self.delay + (self.off_loop_delay if off_loop else 0.0)
        if delay:
            time.sleep(delay)


def test_fsyncs_run_on_the_loop_while_the_disk_is_fast_and_on_the_helper_thread_while_it_is_slow(
        tmp_path: Path) -> None:
    from titan.core.model import SpecCache
    from titan.io.loop import Loop
    from titan.roles.master.durable import TIMED_FSYNCS, Durable
    disk = SlowDisk()
    durable = Durable(tmp_path / "store", fsync="always")
    durable.aof.ops = disk
    durable.open(time.time(), SpecCache())
    loop = Loop()
    durable.start_syncer(loop, lambda: None)
    me = threading.get_ident()
    try:
        # A fast disk: the fsync runs inline and the data is durable when flush returns
        durable.execute([b"SET", b"a", b"1"], time.time())
        assert durable.flush() and durable.durable_total == durable.appended_total
        assert disk.threads[-1] == me
        # It turns slow: once the recent ones on the loop were all slow, the next ones go to the
        # thread, and still complete
        disk.delay = 0.01
        for _ in range(TIMED_FSYNCS):
            assert disk.threads[-1] == me
            durable.execute([b"SET", b"b", b"2"], time.time())
            assert durable.flush() and durable.durable_total == durable.appended_total
        assert durable.fsync_s >= 0.01
        durable.execute([b"SET", b"c", b"3"], time.time())
        durable.flush()
        deadline = time.monotonic() + 5
        while durable.durable_total < durable.appended_total and time.monotonic() < deadline:
            loop.run_once(0.05)
        assert durable.durable_total == durable.appended_total
        assert disk.threads[-1] != me
        # It turns fast again, though the thread's fsyncs still look slow (on a busy host they wait
        # for a CPU): within a second one fsync is timed on the loop, and they stay there
        disk.delay, disk.off_loop_delay = 0.0, 0.01
        moved_back = time.monotonic() + 5
        while disk.threads[-1] != me and time.monotonic() < moved_back:
            durable.execute([b"SET", b"d", b"4"], time.time())
            durable.flush()
            loop.run_once(0.01)
        while durable.aof.syncing and time.monotonic() < moved_back:     # the thread's last one ends
            loop.run_once(0.05)
        for key in range(5):
            durable.execute([b"SET", b"k%d" % key, b"v"], time.time())
            assert durable.flush() and durable.durable_total == durable.appended_total
        assert disk.threads[-5:] == [me] * 5, f"fsync_s={durable.fsync_s:.4f}"
    finally:
        durable.close()
        loop.close()


def test_a_batch_of_submissions_read_at_once_is_fsynced_once_not_once_per_share(tmp_path: Path) -> None:
    from titan.io.loop import FRAMES_PER_PASS
    from titan.sdk.client import Client
    master = Master(MasterConfig(data_dir=tmp_path / "m", bind=("127.0.0.1", 0)))
    disk = CountingDisk()
    master.durable.aof.ops = disk
    host, port = master.start()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            master.loop.run_once(0.02)

    server = threading.Thread(target=serve)
    server.start()
    try:
        with Client(f"{host}:{port}") as client:
            count = 10 * FRAMES_PER_PASS
            before = disk.fsyncs
            # Given a client that sends a batch of submissions in one write (no worker: they stay queued)
            with client.batch():
                tasks = [client.submit(["true"], name="batch") for _ in range(count)]
            # Then each is acknowledged once it is on disk...
            ids = [task.id for task in tasks]
            assert ids == [f"batch#{n}" for n in range(1, count + 1)]
            # ...and the master took it in 64 frames per pass but fsynced for the batch,
            # not for each share of it (it would be 10 fsyncs then)
            assert disk.fsyncs - before <= 3
    finally:
        stop.set()
        server.join()
        master.close()


def test_a_result_waits_until_its_task_s_submission_is_fsynced(tmp_path: Path) -> None:
    # Given a master whose disk is slow: fsyncs are started but do not finish until the test says so
    master = Master(MasterConfig(data_dir=tmp_path / "m"))
    client, worker = Recorder(master.loop), Recorder(master.loop)
    worker.state.role, worker.state.name = "worker", "w1"
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    durable = master.durable
    in_flight: List[int] = []
    try:
        master._admit_worker(worker, worker.state, {"role": "worker", "name": "w1", "slots": 2, "tags": []})
        master._end_of_pass()
        durable._syncer = object()                          # type: ignore[assignment]   # fsyncs go to a helper...
        durable._inline_now = lambda: False                 # type: ignore[method-assign]
        durable._request_fsync = in_flight.append           # type: ignore[method-assign]   # ...that is slow
        # When a watched task is submitted, dispatched (before its fsync, as always) and ends at once
        _request(master, client, 1, Op.SUBMIT, {"command": "true", "name": "t"})
        assert [body["task"] for op, _, body in worker.frames if op == Op.DISPATCH] == ["t#1"]
        _request(master, worker, 0, Op.FINISHED, {"task": "t#1", "attempt": 1, "exit_code": 0, "seq": 1})
        # Then the client hears nothing yet: after a kill -9 now, the master would not know the task
        assert [f for f in client.frames if f[1] == 1] == []
        # When the fsyncs finish
        while in_flight:
            durable.aof.ops.fsync(in_flight.pop())
            durable.aof.sync_done(None, in_flight.append)
        master._release()
        # Then the client gets its OK and the result
        assert client.reply(1) == (Op.OK, {"id": "t#1"})
        results = [body["result"] for op, rid, body in client.frames if rid == 1 and op == Op.EVENT]
        assert [(r["id"], r["state"]) for r in results] == [("t#1", "SUCCEEDED")]
    finally:
        durable._syncer = None
        master.close()
