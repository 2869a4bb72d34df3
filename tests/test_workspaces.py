"""The worker's pool of attempt workspaces: reused while empty, removed once something is left in them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from titan.roles.worker import workspaces
from titan.roles.worker.workspaces import WorkspacePool


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Every directory the pool lists."""
    seen: List[str] = []
    real = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        seen.append(str(path))
        return real(path)
    monkeypatch.setattr(workspaces.os, "scandir", scandir)
    return seen


def test_an_untouched_workspace_is_reused_after_one_listing(tmp_path: Path, listings: List[str]) -> None:
    # Given a pool and an attempt that leaves its workspace as it found it
    pool = WorkspacePool(tmp_path / "work", keep=2)
    first = pool.acquire()
    # When that happens three times
    for _ in range(3):
        pool.release(first)
        assert pool.acquire() == first
    # Then the directory was listed only the first time: it kept the empty mark since
    assert listings == [str(first)]
    assert os.stat(first).st_mtime_ns == workspaces.EMPTY_MARK_NS


def test_a_workspace_emptied_again_by_its_task_is_listed_and_reused(tmp_path: Path, listings: List[str]) -> None:
    pool = WorkspacePool(tmp_path / "work", keep=2)
    ws = pool.acquire()
    pool.release(ws)
    assert pool.acquire() == ws
    # When a task creates a file and removes it before it ends
    (ws / "scratch").write_text("x")
    (ws / "scratch").unlink()
    pool.release(ws)
    # Then the pool looked again (the mtime moved), found it empty, and hands it out again
    assert listings == [str(ws), str(ws)]
    assert pool.acquire() == ws and not any(ws.iterdir())


@pytest.mark.parametrize("leave", ["file", "directory"])
def test_a_workspace_with_something_left_in_it_is_removed(tmp_path: Path, leave: str) -> None:
    pool = WorkspacePool(tmp_path / "work", keep=2)
    ws = pool.acquire()
    pool.release(ws)
    assert pool.acquire() == ws            # marked empty
    # When a task leaves something behind
    if leave == "file":
        (ws / "left").write_text("x")
    else:
        (ws / "sub" / "deeper").mkdir(parents=True)
    pool.release(ws)
    # Then that directory is gone and the next attempt gets a new, empty one
    assert not ws.exists()
    fresh = pool.acquire()
    assert fresh != ws and not any(fresh.iterdir())


def test_a_workspace_that_cannot_be_marked_is_still_reused(tmp_path: Path, listings: List[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a file system that refuses to set the mark
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(workspaces.os, "utime", refuse)
    pool = WorkspacePool(tmp_path / "work", keep=2)
    ws = pool.acquire()
    # When an untouched workspace is released twice
    pool.release(ws)
    assert pool.acquire() == ws
    pool.release(ws)
    # Then it is reused each time, found empty by a listing each time
    assert pool.acquire() == ws and listings == [str(ws), str(ws)]
