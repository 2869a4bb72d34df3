"""Job files on a worker: fetched from the master once (by content hash), copied into workspaces.

    DISPATCH / SVC_START naming files ──▶ missing from the cache? ──FETCH {sha}──▶ master
                                          ◀── OK {sha, data} ── cached ──▶ the attempt or service starts

The cache lives in ``DATA/cache`` (content-addressed, shared by every
attempt); each attempt gets its own copies, so a task may change them.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from titan.core.model import safe_relative_path
from titan.errors import UsageError
from titan.io.blobs import BlobStore
from titan.wire.frames import Op

if TYPE_CHECKING:
    from titan.roles.worker.server import Worker

__all__ = ["JobFiles"]

Key = Tuple[str, int]


class JobFiles:
    """The worker's file cache and the starts waiting for files."""

    def __init__(self, worker: "Worker", root: Path) -> None:
        self.w = worker
        self.cache = BlobStore(root)
        self.reqs: Dict[int, str] = {}                                  # request id -> file hash asked for
        self.waiting: Dict[Key, Tuple[Dict[str, Any], "set[str]"]] = {}  # starts waiting for files

    def missing(self, files: Dict[str, Any]) -> List[str]:
        return sorted({entry[0] for entry in files.values()
                       if isinstance(entry, list) and entry and not self.cache.has(entry[0])})

    def fetch_for(self, key: Key, body: Dict[str, Any], missing: List[str]) -> None:
        """Fetch these files, then start what ``body`` describes (see :meth:`fetched`)."""
        self.waiting[key] = (body, set(missing))
        for sha in missing:
            self._ask(sha)

    def _ask(self, sha: str) -> None:
        conn = self.w.ready_conn()
        if conn is None or sha in self.reqs.values():
            return                      # asked again once registered
        req = self.w.new_request_id()
        self.reqs[req] = sha
        conn.send(Op.FETCH, req, {"sha": sha}, urgent=True)

    def ask_again(self) -> None:
        """A new connection: what was asked on the old one is asked again."""
        self.reqs.clear()
        for sha in sorted({s for _, want in self.waiting.values() for s in want}):
            self._ask(sha)

    def fetched(self, req_id: int, opcode: int, body: Dict[str, Any]) -> None:
        sha = self.reqs.pop(req_id)
        data = body.get("data")
        error = ""
        if opcode == Op.OK and isinstance(data, bytes):
            try:
                self.cache.put(sha, data)
            except (UsageError, OSError) as exc:
                error = str(exc)
        else:
            error = str(body.get("message") or "the master did not send it")
        for key, (start, want) in list(self.waiting.items()):
            if sha not in want:
                continue
            want.discard(sha)
            if error or not want:
                del self.waiting[key]
                self.w.files_ready(key, start, f"cannot fetch the job's file {sha[:12]}...: {error}" if error else "")

    def materialise(self, files: Dict[str, Any], workspace: Path) -> None:
        """Copy the job's files into the attempt's workspace (copies: tasks may change them)."""
        for rel, (sha, executable) in sorted(files.items()):
            if not safe_relative_path(rel):
                raise OSError(errno.EINVAL, f"file path {rel!r} would leave the workspace")
            dest = workspace / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.cache.path(sha), dest)
            if executable:
                os.chmod(dest, 0o755)
