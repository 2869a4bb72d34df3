"""Files shipped with jobs, stored once by content: ``DIR/<sha256>``.

The master keeps what clients send (``put`` checks the hash); a worker
keeps what it fetched, so each file crosses the network once per worker.
Writes are atomic (temp file, fsync, rename), so a crash never leaves a
torn file under a valid name.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from titan.errors import UsageError

__all__ = ["BlobStore", "sha256_of"]

_SHA = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Content-addressed files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        if not _SHA.match(sha):
            raise UsageError(f"bad file hash {sha!r}: expected 64 hex digits")
        return self.root / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, sha: str, data: bytes) -> None:
        """Store ``data`` under ``sha`` (UsageError if they do not match)."""
        if sha256_of(data) != sha:
            raise UsageError(f"file content does not match its hash {sha[:12]}...; it was damaged on the way")
        target = self.path(sha)
        if target.is_file():
            return
        tmp = target.with_name(f".{sha}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def get(self, sha: str) -> Optional[bytes]:
        try:
            return self.path(sha).read_bytes()
        except FileNotFoundError:
            return None
