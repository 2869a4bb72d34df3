"""A worker on its own: a master that does not answer or hangs up, a disk that refuses writes, a run that ends first."""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Callable, List

from conftest import FakeMaster, TitanProcs, wait_until
from titan.wire.frames import Op

# The worker waits 0.1 s before its first redial and doubles the wait each time, up to 5 s,
# each wait drawn within +-20% of that (titan/roles/worker/server.py, Worker._retry_later).
FIRST_BACKOFF_S, MAX_BACKOFF_S, JITTER = 0.1, 5.0, 0.2


def test_a_master_that_never_answers_hello_is_dialled_again(titan_procs: TitanProcs,
                                                            fake_master: FakeMaster) -> None:
    # Given a worker whose master accepts its connection but never answers its HELLO
    titan_procs.start_worker(fake_master.address, "w", "--master-timeout", "1")
    fake_master.listener.settimeout(10)
    silent, _ = fake_master.listener.accept()
    try:
        # When the master timeout passes, then the worker gives up on it and dials again
        again, _ = fake_master.listener.accept()
        again.close()
    finally:
        silent.close()


def test_a_worker_waits_longer_before_each_redial_of_a_master_that_hangs_up(titan_procs: TitanProcs,
                                                                             fake_master: FakeMaster) -> None:
    # Given a worker whose master hangs up on every connection before the handshake ends
    titan_procs.start_worker(fake_master.address, "w")
    fake_master.listener.settimeout(10)
    accepted: List[float] = []
    # When it has dialled six times (waits of about 0.1, 0.2, 0.4, 0.8 and 1.6 s between them)
    for _ in range(6):
        sock, _ = fake_master.listener.accept()
        accepted.append(time.monotonic())
        sock.close()
    gaps = [later - earlier for earlier, later in zip(accepted, accepted[1:])]
    # Then the waits double: each gap is at least its backoff (a slow host only lengthens gaps),
    # and the first is short (a fixed long delay would pass the lower bounds alone)
    for i, gap in enumerate(gaps):
        assert gap >= (1 - JITTER) * FIRST_BACKOFF_S * 2 ** i, gaps
    assert gaps[0] < 1.0, gaps


def test_the_redial_delay_doubles_from_a_tenth_of_a_second_up_to_five(tmp_path: Path) -> None:
    from titan.roles.worker.server import Worker, WorkerConfig
    # Given a worker whose timers are recorded instead of run
    worker = Worker(WorkerConfig(master=("127.0.0.1", 9), name="w", data_dir=tmp_path / "w"))
    real_loop = worker.loop
    timers = TimerRecorder()
    worker.loop = timers        # type: ignore[assignment]
    try:
        # When the master cannot be reached ten times in a row
        for _ in range(10):
            worker._retry_later("test")
    finally:
        worker.loop = real_loop
        worker.ledger.close()
        real_loop.close()
    # Then each redial waits twice as long as the one before, within the jitter, until the cap
    nominal = [min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** n) for n in range(10)]
    for delay, expected in zip(timers.delays, nominal):
        assert (1 - JITTER) * expected <= delay <= (1 + JITTER) * expected, (timers.delays, nominal)
    assert len(timers.delays) == 10 and all(fn == worker._dial for fn in timers.callbacks)


class TimerRecorder:
    """Stands in for the worker's loop: keeps the timers it is asked for, runs none."""

    def __init__(self) -> None:
        self.delays: List[float] = []
        self.callbacks: List[Callable[[], None]] = []

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.delays.append(delay_s)
        self.callbacks.append(callback)


def test_an_ephemeral_worker_asks_to_retire_again_after_a_reconnect(titan_procs: TitanProcs,
                                                                    fake_master: FakeMaster) -> None:
    # Given an idle ephemeral worker that asked to retire, and lost its master before the answer
    titan_procs.start_worker(fake_master.address, "w", "--ephemeral", "--idle-timeout", "0.3")
    fake_master.accept()
    fake_master.read_frame_where(lambda f: f.opcode == Op.RETIRE, 10)
    fake_master.sock.close()
    # When it is connected again
    fake_master.accept()
    # Then it asks again (the question on the lost connection can never be answered)
    fake_master.read_frame_where(lambda f: f.opcode == Op.RETIRE, 10)


def test_a_task_runs_and_is_reported_once_when_its_record_cannot_be_written(titan_procs: TitanProcs,
                                                                           fake_master: FakeMaster) -> None:
    # Given a worker that can no longer write its record of process groups (no file may grow)
    worker = titan_procs.start_worker(fake_master.address, "w", slots=1)
    fake_master.accept()
    fake_master.dispatch("t1", ["true"])
    assert fake_master.finished()["exit_code"] == 0
    resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (1, 1))
    # When a task is dispatched, then it runs to its end and is reported once
    fake_master.dispatch("t2", ["sh", "-c", "sleep 0.3; exit 3"])
    report = fake_master.finished()
    assert (report["task"], report["exit_code"]) == ("t2", 3), report
    fake_master.dispatch("t3", ["true"])
    report = fake_master.finished()
    assert (report["task"], report["exit_code"]) == ("t3", 0), report
    assert worker.poll() is None


def test_a_runs_shared_directory_goes_when_its_last_task_here_ends_after_the_run(
        titan_procs: TitanProcs, fake_master: FakeMaster) -> None:
    # Given a task of run r#1 that writes to $TITAN_SHARED and is still running when the run ends
    titan_procs.start_worker(fake_master.address, "w", slots=1)
    fake_master.accept()
    shared = titan_procs.base_dir / "w" / "shared" / "r%231"
    fake_master.send_frame(Op.DISPATCH, 0, {"task": "r#1/a", "attempt": 1, "run": "r#1",
                                            "argv": ["sh", "-c", 'echo x > "$TITAN_SHARED/f"; sleep 0.5']})
    wait_until(lambda: (shared / "f").exists(), 10, "the task to write into its shared directory")
    fake_master.send_frame(Op.RUN_DONE, 0, {"run": "r#1"})
    # When the task ends, then the run's shared directory goes with it
    assert fake_master.finished()["task"] == "r#1/a"
    wait_until(lambda: not shared.exists(), 10, "the shared directory to be removed")


def test_a_worker_lists_only_run_directories_and_never_removes_one_above_them(tmp_path) -> None:
    from titan.roles.worker.server import Worker, WorkerConfig
    worker = Worker(WorkerConfig(master=("127.0.0.1", 9), name="w", data_dir=tmp_path / "w"))
    try:
        # Given its shared directory holds a run's directory, and names a task could have made
        shared = tmp_path / "w" / "shared"
        for name in ("etl%231", "%2E", "%2E%2E", "not%2fquoted%23"):
            (shared / name).mkdir()
        (shared / "etl%231" / "f").write_text("data")
        # Then its HELLO lists the run, and only names that are what a run's directory is called
        assert sorted(worker._hello_extra()["shared"]) == ["etl#1"]
        # And a RUN_DONE for "." or ".." removes nothing
        worker._run_done(".")
        worker._run_done("..")
        assert (shared / "etl%231" / "f").exists() and (tmp_path / "w").is_dir()
        # While one for the run removes its directory
        worker._run_done("etl#1")
        assert not (shared / "etl%231").exists()
    finally:
        worker.ledger.close()
