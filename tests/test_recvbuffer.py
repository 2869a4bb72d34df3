"""The loop's reused receive buffer: what a read returns stays as it was after the next read."""
from __future__ import annotations

import socket

from titan.io.loop import RecvBuffer


def test_each_read_returns_its_own_bytes_and_the_end_of_stream_as_empty() -> None:
    a, b = socket.socketpair()
    try:
        buffer = RecvBuffer(8)
        a.sendall(b"first")
        first = buffer.recv(b)
        a.sendall(b"second-and-more")          # longer than the buffer: it takes two reads
        second = buffer.recv(b)
        rest = buffer.recv(b)
        assert (first, second, rest) == (b"first", b"second-a", b"nd-more")
        a.close()
        assert buffer.recv(b) == b""
    finally:
        a.close()
        b.close()
