"""Per-attempt log files on the master, each with a size cap, plus a tail in memory.

Layout: ``ROOT/<task id, %-quoted>/<attempt>.log`` holding stdout and stderr
interleaved as they arrived.  Once a file reaches ``max_bytes`` one marker
line is written and further output is counted but dropped, so a chatty task
can never fill the master's disk.  While an attempt runs, its last
``tail_bytes`` are also kept in memory for the result a client receives.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple
from urllib.parse import quote

__all__ = ["LogStore"]

logger = logging.getLogger(__name__)

Key = Tuple[str, int]


class _Open:
    __slots__ = ("file", "written", "dropped", "tail")

    def __init__(self, file: Optional[BinaryIO], written: int) -> None:
        self.file = file
        self.written = written
        self.dropped = 0
        self.tail = bytearray()


class LogStore:
    """Writes and reads attempt logs under ``root``."""

    def __init__(self, root: Path, *, max_bytes: int = 64 * 1024 * 1024,
                 tail_bytes: int = 1024 * 1024) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.tail_bytes = tail_bytes
        self._open: Dict[Key, _Open] = {}

    def path(self, task_id: str, attempt: int) -> Path:
        return self.root / quote(task_id, safe="") / f"{attempt}.log"

    def append(self, task_id: str, attempt: int, data: bytes) -> Tuple[bytes, bytes]:
        """Store ``data``; return the part kept (empty once the cap is hit) and, where this
        call reaches the cap, the line written after it that says so (else b"")."""
        entry = self._entry(task_id, attempt)
        room = self.max_bytes - entry.written
        kept = data[:room] if room > 0 else b""
        entry.dropped += len(data) - len(kept)
        if kept:
            self._write(entry, task_id, attempt, kept)
        note = b""
        if entry.dropped and len(data) > len(kept) and room > 0:
            note = self._write_marker(entry, task_id, attempt)
        self._keep_tail(entry, kept + note)
        return kept, note

    def _keep_tail(self, entry: _Open, data: bytes) -> None:
        entry.tail += data
        excess = len(entry.tail) - self.tail_bytes
        if excess > 0:
            del entry.tail[:excess]

    def _write_marker(self, entry: _Open, task_id: str, attempt: int) -> bytes:
        marker = f"\n[titan: log reached its {self.max_bytes}-byte cap; further output is dropped]\n".encode()
        self._write(entry, task_id, attempt, marker)
        return marker

    def _entry(self, task_id: str, attempt: int) -> _Open:
        key = (task_id, attempt)
        entry = self._open.get(key)
        if entry is None:
            entry = self._open[key] = _Open(None, 0)
        return entry

    def _write(self, entry: _Open, task_id: str, attempt: int, data: bytes) -> None:
        try:
            if entry.file is None:
                path = self.path(task_id, attempt)
                path.parent.mkdir(parents=True, exist_ok=True)
                entry.file = open(path, "ab")
            entry.file.write(data)
            entry.file.flush()
            entry.written += len(data)
        except OSError as exc:
            logger.error("cannot write the log of %s attempt %d: %s", task_id, attempt, exc)

    def finish(self, task_id: str, attempt: int) -> bytes:
        """Close the attempt's file; return its in-memory tail."""
        entry = self._open.pop((task_id, attempt), None)
        if entry is None:
            return b""
        if entry.file is not None:
            entry.file.close()
        return bytes(entry.tail)

    def tail(self, task_id: str, attempt: int) -> bytes:
        """The last ``tail_bytes`` of the attempt's output, running or not."""
        entry = self._open.get((task_id, attempt))
        if entry is not None:
            return bytes(entry.tail)
        return self.read(task_id, attempt, offset=-self.tail_bytes)

    def read(self, task_id: str, attempt: int, offset: int = 0, max_bytes: int = -1) -> bytes:
        """Bytes of the log from ``offset`` (negative: from the end)."""
        try:
            with open(self.path(task_id, attempt), "rb") as f:
                if offset < 0:
                    size = f.seek(0, os.SEEK_END)
                    offset = max(0, size + offset)
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return b""

    def written(self, task_id: str, attempt: int) -> Optional[int]:
        """Bytes written to an attempt's log in this process's life; None if nothing came (no stat)."""
        entry = self._open.get((task_id, attempt))
        return entry.written if entry is not None else None

    def size(self, task_id: str, attempt: int) -> int:
        entry = self._open.get((task_id, attempt))
        if entry is not None:
            return entry.written
        try:
            return self.path(task_id, attempt).stat().st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        for key in list(self._open):
            self.finish(*key)
