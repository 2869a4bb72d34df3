"""A peer that sends many frames at once gets them handled a share per loop pass.

One read can bring a thousand frames (a client submitting in a batch); the
loop hands at most ``FRAMES_PER_PASS`` of them to the handler per pass, so
every other peer is served in between, and the held frames keep their order.
"""
from __future__ import annotations

import socket
import time
from typing import List, Tuple

import pytest

from titan.io.loop import FRAMES_PER_PASS, Connection, Handler, Loop
from titan.wire.frames import Frame, Op, pack


class Recorder(Handler):
    def __init__(self, seen: List[Tuple[str, int, int]], name: str, loop: Loop) -> None:
        self.seen, self.name, self.loop = seen, name, loop
        self.passes = 0
        self.closed_after = -1

    def on_frame(self, conn: Connection, frame: Frame) -> None:
        self.seen.append((self.name, frame.req_id, self.passes))

    def on_close(self, conn: Connection, reason: str) -> None:
        self.closed_after = sum(1 for name, _, _ in self.seen if name == self.name)


@pytest.fixture
def pairs():
    made = []

    def make() -> Tuple[socket.socket, socket.socket]:
        with socket.create_server(("127.0.0.1", 0)) as server:
            far = socket.create_connection(server.getsockname())
            near, _ = server.accept()
        made.extend((near, far))
        return near, far

    yield make
    for sock in made:
        sock.close()


def run_passes(loop: Loop, handlers: List[Recorder], until, deadline_s: float = 10.0) -> int:
    passes = 0
    deadline = time.monotonic() + deadline_s
    while not until():
        assert time.monotonic() < deadline, "the frames were not all handled"
        loop.run_once(max_wait_s=0.05)
        passes += 1
        for handler in handlers:
            handler.passes = passes
    return passes


def frames(first: int, count: int) -> bytes:
    return b"".join(pack(Op.PING, req_id, {}) for req_id in range(first, first + count))


def test_a_burst_is_handled_a_share_per_pass_and_the_other_peer_is_served_at_once(pairs) -> None:
    loop = Loop()
    seen: List[Tuple[str, int, int]] = []
    burst_near, burst_far = pairs()
    quiet_near, quiet_far = pairs()
    burst = Recorder(seen, "burst", loop)
    quiet = Recorder(seen, "quiet", loop)
    Connection(loop, burst_near, burst)
    Connection(loop, quiet_near, quiet)
    count = 10 * FRAMES_PER_PASS
    burst_far.sendall(frames(1, count))
    quiet_far.sendall(frames(1, 1))
    try:
        run_passes(loop, [burst, quiet], lambda: len(seen) == count + 1)
        burst_seen = [(req, at) for name, req, at in seen if name == "burst"]
        assert [req for req, _ in burst_seen] == list(range(1, count + 1))      # all of them, in order
        per_pass = {}
        for _, at in burst_seen:
            per_pass[at] = per_pass.get(at, 0) + 1
        assert max(per_pass.values()) == FRAMES_PER_PASS
        assert len(per_pass) >= count // FRAMES_PER_PASS
        quiet_at = [at for name, _, at in seen if name == "quiet"]
        assert quiet_at == [0]                      # in the first pass, not after the burst
        assert seen.index(("quiet", 1, 0)) <= FRAMES_PER_PASS
    finally:
        loop.close()


def test_frames_sent_after_a_burst_and_the_close_come_after_every_held_frame(pairs) -> None:
    loop = Loop()
    seen: List[Tuple[str, int, int]] = []
    near, far = pairs()
    handler = Recorder(seen, "peer", loop)
    Connection(loop, near, handler)
    count = 3 * FRAMES_PER_PASS + 5
    far.sendall(frames(1, count))
    try:
        run_passes(loop, [handler], lambda: len(seen) >= FRAMES_PER_PASS)   # the burst is being worked off
        far.sendall(frames(count + 1, 3))       # read only once the held frames are handled
        far.close()
        run_passes(loop, [handler], lambda: handler.closed_after >= 0)
        assert [req for _, req, _ in seen] == list(range(1, count + 4))
        assert handler.closed_after == count + 3    # the close came after every frame
    finally:
        loop.close()
