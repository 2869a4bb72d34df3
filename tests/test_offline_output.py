"""Output a worker keeps while its master is away: capped per attempt and in all, and the loss is told.

The worker keeps its tasks running when the master goes away, and holds
their output to send when it is back.  Held output is bounded (per attempt
and in all), and an attempt that lost some says how much in its log.
"""
from __future__ import annotations

from pathlib import Path

from titan.roles.worker.server import Worker, WorkerConfig
from titan.wire.frames import Op


def _chunk(task: str, size: int) -> dict:
    return {"task": task, "attempt": 1, "stream": "out", "data": b"x" * size}


def test_output_held_while_the_master_is_away_is_capped_and_the_loss_is_noted(tmp_path: Path) -> None:
    # Given a worker with no master, keeping at most 1,000 bytes per attempt and 1,500 in all
    config = WorkerConfig(master=("127.0.0.1", 9), name="w", data_dir=tmp_path / "w",
                          offline_output_bytes=1000, offline_total_bytes=1500)
    worker = Worker(config)
    try:
        # When two attempts print 800 bytes at a time, three times each, and end
        for _ in range(3):
            for task in ("a", "b"):
                worker._report(Op.OUTPUT, _chunk(task, 800), (task, 1))
        for task in ("a", "b"):
            worker._finish_now((task, 1), 0, "")
        # Then only a's first chunk is held (a second would pass a's cap; b's first, the total's)
        held = {t: sum(len(b["data"]) for b in worker.outbox if b["task"] == t and b["stream"] == "out")
                for t in ("a", "b")}
        assert held == {"a": 800, "b": 0}
        # And each attempt's log says what it lost, although the caps are reached
        notes = {b["task"]: b["data"].decode() for b in worker.outbox if b["stream"] == "err"}
        assert "1600 bytes of output dropped" in notes["a"] and "2400 bytes of output dropped" in notes["b"]
        # And nothing is left counting against them
        assert worker.dropped == {} and worker.outbox_bytes == {}
    finally:
        worker.ledger.close()
        worker.loop.close()
