"""A busy worker's reports wait a moment for company, and never longer than that.

A worker with attempts queued locally sends its OUTPUT and FINISHED frames
with ``soon=True``: they wait up to ``Loop.SOON_S`` so that one write carries
several.  Its first report once nothing is queued there flushes the
connection, and everything that waited goes out with it.
"""
from __future__ import annotations

import socket
import time
from typing import Iterator, List, Tuple

import pytest

from titan.io.loop import Connection, Handler, Loop
from titan.wire.frames import Frame, FrameDecoder, Op


class Quiet(Handler):
    def on_frame(self, conn: Connection, frame: Frame) -> None:
        pass


@pytest.fixture
def link() -> Iterator[Tuple[List[float], Loop, Connection, socket.socket]]:
    """A loop on a fake clock, one of its connections, and that connection's far end (loopback TCP)."""
    now = [100.0]
    loop = Loop(clock=lambda: now[0])
    with socket.create_server(("127.0.0.1", 0)) as server:
        far = socket.create_connection(server.getsockname())
        near, _ = server.accept()
    conn = Connection(loop, near, Quiet())
    try:
        yield now, loop, conn, far
    finally:
        conn.close("test over")
        far.close()
        loop.selector.close()


def arrived(far: socket.socket) -> List[Tuple[int, int]]:
    """(opcode, request id) of the frames already sent to ``far``; waits for none."""
    data = b""
    while True:
        try:
            chunk = far.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return [(f.opcode, f.req_id) for f in FrameDecoder().feed(data)]


def wait_for(far: socket.socket, count: int, deadline_s: float = 10.0) -> List[Tuple[int, int]]:
    """The frames sent to ``far``, once ``count`` of them are there (loopback: no waiting in practice)."""
    got: List[Tuple[int, int]] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count and time.monotonic() < deadline:
        got += arrived(far)
        if len(got) < count:
            time.sleep(0.001)
    return got


def test_soon_frames_wait_up_to_soon_s_and_then_go_out_together(link) -> None:
    now, loop, conn, far = link
    # Given three reports a busy worker sends in one pass
    for n in (1, 2, 3):
        conn.send(Op.OUTPUT, n, {"data": b"x"}, soon=True)
    # When passes run before SOON_S is up
    loop.run_once(0)
    now[0] += Loop.SOON_S / 2
    loop.run_once(0)
    # Then nothing is written yet
    assert arrived(far) == []
    # When SOON_S is up
    now[0] += Loop.SOON_S / 2
    loop.run_once(0)
    # Then all three go out, in order
    assert wait_for(far, 3) == [(Op.OUTPUT, 1), (Op.OUTPUT, 2), (Op.OUTPUT, 3)]


def test_a_flush_sends_what_waits_at_once_and_the_timer_finds_nothing_more(link) -> None:
    now, loop, conn, far = link
    # Given a report waiting for company
    conn.send(Op.OUTPUT, 1, {"data": b"x"}, soon=True)
    loop.run_once(0)
    # When the worker's queue is empty: its FINISHED is sent and the connection flushed
    conn.send(Op.FINISHED, 2, {"task": "t#1", "attempt": 1, "exit_code": 0}, soon=True)
    conn.flush()
    # Then both are written at once, without waiting for SOON_S
    assert wait_for(far, 2) == [(Op.OUTPUT, 1), (Op.FINISHED, 2)]
    # And the timer, when it comes, sends nothing twice
    now[0] += Loop.SOON_S
    loop.run_once(0)
    assert arrived(far) == []
