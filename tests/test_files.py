"""Files shipped with a job: stored once by content, fetched once per worker, copied into each workspace."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli
from titan.errors import RemoteError
from titan.roles.local import LocalCluster

Cluster = Callable[..., LocalCluster]


def test_files_reach_every_attempt_and_cross_the_network_once_per_worker(cluster: Cluster, tmp_path: Path) -> None:
    # Given a job whose tasks use a script and a nested data file shipped with it
    (tmp_path / "data").mkdir()
    (tmp_path / "count.py").write_text("import sys\nprint(len(open(sys.argv[1]).read().split()))\n")
    (tmp_path / "data" / "words.txt").write_text("one two three\n")
    job = tmp_path / "ship.ini"
    job.write_text("[job]\nname = ship\n" + "".join(
        f"[task:t{i}]\nfiles = count.py, data/words.txt\n"
        f"run = python3 count.py data/words.txt; echo changed > data/words.txt\n" for i in range(6)))
    local = cluster(workers=1, slots=2)
    # When it runs
    with local.client() as c:
        result = c.submit_file(str(job)).wait(timeout=60)
        outputs = {t: b"".join(c.logs(t)) for t in result.tasks}
    # Then every task saw the original files, although each one changed its own copy
    assert result.ok, result
    assert set(outputs.values()) == {b"3\n"}
    # And each file is stored once on the master and once in the worker's cache
    words = hashlib.sha256(b"one two three\n").hexdigest()
    assert (local.data_dir / "master" / "files" / words).read_bytes() == b"one two three\n"
    assert (local.data_dir / "local-1" / "cache" / words).read_bytes() == b"one two three\n"


def test_a_missing_file_is_reported_with_its_line_and_nothing_is_submitted(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = tmp_path / "bad.ini"
    job.write_text("[job]\nname = bad\n[task:a]\nfiles = nowhere.py\nrun = python3 nowhere.py\n")
    res = run_cli("--master", local.address, "submit", str(job))
    assert res.code == 2 and "bad.ini:4" in res.stderr and "no such file 'nowhere.py'" in res.stderr, res
    assert "bad" not in run_cli("--master", local.address, "jobs").stdout


def test_a_path_that_would_leave_the_workspace_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    local = cluster(workers=1)
    job = tmp_path / "escape.ini"
    job.write_text("[job]\nname = escape\n[task:a]\nfiles = ../secret\nrun = true\n")
    res = run_cli("check", str(job))
    assert res.code == 2 and "files" in res.stderr, res
    # and the master refuses one sent by hand, whatever the client checked
    sha = hashlib.sha256(b"x").hexdigest()
    with local.client() as c:
        with pytest.raises(RemoteError, match="inside the workspace"):
            c.submit_job({"name": "escape", "tasks": [
                {"name": "a", "command": "true", "files": {"../../etc/passwd": [sha, False]}}]},
                blobs={sha: b"x"})
