"""Where there is no pidfd, a task that closed its output is polled for its exit without piling up timers."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from titan.io.proc import OsProcesses, Spawned
from titan.roles.worker.server import Worker, WorkerConfig


class NoPidfd(OsProcesses):
    """Real processes, on a system without pidfd_open."""

    def watch_exit(self, spawned: Spawned) -> Optional[int]:
        return None


def test_a_task_that_closed_its_pipes_is_polled_with_one_timer_at_a_time(tmp_path: Path) -> None:
    worker = Worker(WorkerConfig(master=("127.0.0.1", 9), name="w", data_dir=tmp_path / "w"), procs=NoPidfd())
    try:
        # Given a task that closes its output and runs on for a while
        workspace = worker.spaces.acquire()
        job = worker.spawn_job(("t", 1), ["sh", "-c", "exec >&- 2>&-; sleep 0.6"], workspace, dict(os.environ))
        most = 0
        deadline = time.monotonic() + 10
        # When the worker's loop runs until the task has ended
        while ("t", 1) in worker.jobs and time.monotonic() < deadline:
            worker.loop.run_once(0.05)
            most = max(most, len(job.timers))
        # Then it was seen to end, with never more than one poll waiting at a time
        assert ("t", 1) not in worker.jobs and job.exit_code == 0
        assert most == 1
    finally:
        worker.ledger.close()
        worker.loop.close()
