"""Attempt workspaces on a worker: empty directories, reused when they stay empty."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

__all__ = ["WorkspacePool"]


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
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
        except OSError:
            return
        if empty and len(self.free) < self.keep:
            self.free.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
