"""The worker's link to the master: nothing waits forever on an answer that cannot come."""
from __future__ import annotations

from conftest import FakeMaster, TitanProcs
from titan.wire.frames import Op


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
