"""Attempt workspaces on a worker: empty directories, reused when they stay empty."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

__all__ = ["WorkspacePool", "EMPTY_MARK_NS"]

# The mtime a workspace is given once it is known to be empty.  Adding,
# removing or renaming an entry sets a directory's mtime to the current time,
# which is never this, so a workspace that still has it is still empty: one
# stat instead of an open, two directory reads and a close per attempt.
EMPTY_MARK_NS = 0


class WorkspacePool:
    """Empty directories for attempts, reused so a quiet task costs no mkdir/rmdir.

    An attempt gets a fresh-looking empty directory; when it ends, an empty
    directory goes back to the pool and one with files in it is removed.
    """

    def __init__(self, root: Path, *, keep: int) -> None:
        self.root = root
        self.keep = keep
        self.free: List[Path] = []
        self.count = 0
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> Path:
        if self.free:
            return self.free.pop()
        while True:
            self.count += 1
            path = self.root / f"ws-{self.count}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue

    def release(self, path: Path) -> None:
        try:
            empty = os.stat(path).st_mtime_ns == EMPTY_MARK_NS or _still_empty(path)
        except OSError:
            return
        if empty and len(self.free) < self.keep:
            self.free.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _still_empty(path: Path) -> bool:
    """List ``path``; if it is empty, mark it so (see EMPTY_MARK_NS)."""
    with os.scandir(path) as entries:
        if next(entries, None) is not None:
            return False
    try:
        os.utime(path, ns=(EMPTY_MARK_NS, EMPTY_MARK_NS))
    except OSError:
        pass                    # not marked: it is listed again next time
    return True
