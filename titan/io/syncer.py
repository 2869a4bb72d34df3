"""fsync off the loop thread: the loop writes, a helper thread waits for the disk.

    loop:   write(fd, data) ── request(fd) ──▶ [thread] fsync(fd) ──▶ pipe byte
    loop:   pipe readable ──▶ on_done(error or None)   (still on the loop thread)

The thread owns no state: it takes a descriptor, calls fsync, and reports
the outcome through a pipe the loop watches, so every decision stays on the
loop thread.  While one fsync runs, the loop keeps reading, writing and
deciding; the next fsync covers everything written meanwhile (group commit).
"""
from __future__ import annotations

import collections
import os
import queue
import selectors
import threading
from typing import Callable, Deque, Optional

from titan.io.loop import Loop

__all__ = ["Syncer"]


class Syncer:
    """One background thread that fsyncs descriptors on request, in order."""

    def __init__(self, loop: Loop, on_done: Callable[[Optional[OSError]], None],
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.loop = loop
        self.on_done = on_done
        self._fsync = fsync
        self._requests: "queue.SimpleQueue[Optional[int]]" = queue.SimpleQueue()
        self._results: Deque[Optional[OSError]] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        loop.register(self._read_fd, selectors.EVENT_READ, self._ready)
        self._thread = threading.Thread(target=self._run, name="titan-fsync", daemon=True)
        self._thread.start()

    def request(self, fd: int) -> None:
        """fsync ``fd`` on the thread; ``on_done`` runs on the loop when it is done."""
        self._requests.put(fd)

    def _run(self) -> None:
        while True:
            fd = self._requests.get()
            if fd is None:
                return
            try:
                self._fsync(fd)
                self._results.append(None)
            except OSError as exc:
                self._results.append(OSError(exc.errno, exc.strerror or str(exc)))
            os.write(self._write_fd, b"x")

    def _ready(self, mask: int) -> None:
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass
        while self._results:
            self.on_done(self._results.popleft())

    def close(self) -> None:
        """Finish the requests already made, then stop the thread."""
        self._requests.put(None)
        self._thread.join(30)
        self._ready(0)
        self.loop.unregister(self._read_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
