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

import titan.io.loop as loop_module
from titan.io.loop import FRAMES_PER_PASS, Connection, Handler, Loop
from titan.wire.frames import Frame, Op, pack


class Recorder(Handler):
    def __init__(self, seen: List[Tuple[str, int, int]], name: str) -> None:
        self.seen, self.name = seen, name
        self.passes = 0
        self.closed_after = -1

    def on_frame(self, conn: Connection, frame: Frame) -> None:
        self.seen.append((self.name, frame.req_id, self.passes))

    def on_close(self, conn: Connection, reason: str) -> None:
        self.closed_after = sum(1 for name, _, _ in self.seen if name == self.name)


class Answering(Recorder):
    """Answers every frame, as the master does: the replies go to a peer that may be gone."""

    def on_frame(self, conn: Connection, frame: Frame) -> None:
        super().on_frame(conn, frame)
        conn.send(Op.PONG, frame.req_id, {})


class Peers:
    """A loop, and peers connected to it over loopback TCP; ``seen`` is every frame handled, in order."""

    def __init__(self) -> None:
        self.loop = Loop()
        self.seen: List[Tuple[str, int, int]] = []
        self.sockets: List[socket.socket] = []

    def connect(self, name: str, kind: type = Recorder) -> Tuple[socket.socket, Recorder, Connection]:
        """The far end of a new connection, its handler, and the loop's connection."""
        with socket.create_server(("127.0.0.1", 0)) as server:
            far = socket.create_connection(server.getsockname())
            near, _ = server.accept()
        self.sockets += [near, far]
        handler = kind(self.seen, name)
        return far, handler, Connection(self.loop, near, handler)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.loop.close()


@pytest.fixture
def peers():
    made = Peers()
    yield made
    made.close()


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


def test_a_burst_is_handled_a_share_per_pass_and_the_other_peer_is_served_at_once(peers) -> None:
    seen = peers.seen
    burst_far, burst, _ = peers.connect("burst")
    quiet_far, quiet, _ = peers.connect("quiet")
    count = 10 * FRAMES_PER_PASS
    burst_far.sendall(frames(1, count))
    quiet_far.sendall(frames(1, 1))
    run_passes(peers.loop, [burst, quiet], lambda: len(seen) == count + 1)
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


def test_frames_sent_after_a_burst_and_the_close_come_after_every_held_frame(peers) -> None:
    seen = peers.seen
    far, handler, _ = peers.connect("peer")
    count = 3 * FRAMES_PER_PASS + 5
    far.sendall(frames(1, count))
    run_passes(peers.loop, [handler], lambda: len(seen) >= FRAMES_PER_PASS)   # the burst is being worked off
    far.sendall(frames(count + 1, 3))       # read only once the held frames are handled
    far.close()
    run_passes(peers.loop, [handler], lambda: handler.closed_after >= 0)
    assert [req for _, req, _ in seen] == list(range(1, count + 4))
    assert handler.closed_after == count + 3    # the close came after every frame


def test_a_peer_that_sends_a_batch_and_goes_away_has_every_frame_handled(peers) -> None:
    far, handler, conn = peers.connect("peer", Answering)
    count = 3 * FRAMES_PER_PASS + 7
    # Given a peer that sends a batch and closes without reading the replies (its
    # kernel answers them with a reset, so a later write fails)
    far.sendall(frames(1, count))
    far.close()
    run_passes(peers.loop, [handler], lambda: conn.closed)
    # Then every frame it sent was handled before the connection was closed
    assert [req for _, req, _ in peers.seen] == list(range(1, count + 1))
    assert handler.closed_after == count


def test_a_saturated_loop_does_not_wait_for_events_while_it_holds_frames(peers, monkeypatch) -> None:
    far, handler, _ = peers.connect("peer")
    sleeps: List[float] = []
    monkeypatch.setattr(loop_module.time, "sleep", sleeps.append)
    # Given a loop that lets events gather before each pass while saturated
    peers.loop.gather_while(lambda: True, 0.001)
    count = 10 * FRAMES_PER_PASS
    far.sendall(frames(1, count))
    run_passes(peers.loop, [handler], lambda: len(peers.seen) == count)
    # Then only the pass before the burst was read waited: the passes that
    # work off the held frames have their work at hand already
    assert len(sleeps) == 1


def test_a_pass_cut_short_by_a_failing_callback_keeps_the_held_frames(peers) -> None:
    loop, seen = peers.loop, peers.seen
    far, handler, _ = peers.connect("peer")
    count = 5 * FRAMES_PER_PASS
    far.sendall(frames(1, count))
    run_passes(loop, [handler], lambda: len(seen) >= FRAMES_PER_PASS)      # the rest is held
    failing_r, failing_w = socket.socketpair()
    peers.sockets += [failing_r, failing_w]

    def fails_once(mask: int) -> None:
        failing_r.recv(1)
        loop.unregister(failing_r)
        raise RuntimeError("a callback failed")

    # Given another callback that raises in the middle of a pass (and a caller that goes on)
    loop.register(failing_r, 1, fails_once)
    failing_w.send(b"x")
    with pytest.raises(RuntimeError):
        run_passes(loop, [handler], lambda: False, deadline_s=5.0)
    # Then the held frames are still handed over, all of them and in order
    run_passes(loop, [handler], lambda: len(seen) == count)
    assert [req for _, req, _ in seen] == list(range(1, count + 1))
