"""Files shipped with a job: stored once by content, fetched once per worker, copied into each workspace.

How often a worker asks the master for a file is read off the wire, by a relay
(:class:`WireTap`) that the workers dial instead of the master.
"""
from __future__ import annotations

import hashlib
import selectors
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from conftest import TitanProcs, run_cli
from titan.errors import RemoteError
from titan.roles.local import LocalCluster
from titan.sdk.client import Client
from titan.wire.frames import Frame, FrameDecoder, Op

Cluster = Callable[..., LocalCluster]


class WireTap:
    """A TCP relay in front of a master that keeps the frames its clients send, by the name they say HELLO with.

    One thread relays every connection; :meth:`close` stops it and closes them all.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent: List[List[Frame]] = []          # per connection: the frames the client sent
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="wiretap", daemon=True)
        self.thread.start()

    def fetched(self, name: str) -> List[str]:
        """The file hashes the client named ``name`` asked for with FETCH, on all its connections."""
        return [f.body["sha"] for frames in list(self.sent) if frames and frames[0].body.get("name") == name
                for f in list(frames) if f.opcode == Op.FETCH]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()         # type: ignore[union-attr]
        self.selector.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.05):
                if key.fileobj.fileno() == -1:       # type: ignore[union-attr]
                    continue                        # closed earlier in this batch with its pair
                if key.data is None:
                    self._accept()
                else:
                    self._relay(key.fileobj, *key.data)   # type: ignore[arg-type]

    def _accept(self) -> None:
        down, _ = self.listener.accept()
        down.setblocking(True)
        up = socket.create_connection(self.upstream, timeout=10)
        frames: List[Frame] = []
        self.sent.append(frames)
        self.selector.register(down, selectors.EVENT_READ, (up, (FrameDecoder(), frames)))
        self.selector.register(up, selectors.EVENT_READ, (down, None))

    def _relay(self, src: socket.socket, dst: socket.socket,
               tap: Optional[Tuple[FrameDecoder, List[Frame]]]) -> None:
        try:
            data = src.recv(65536)
            if data:
                dst.sendall(data)
        except OSError:
            data = b""
        if not data:                    # one side closed: so does the other
            for sock in (src, dst):
                self.selector.unregister(sock)
                sock.close()
            return
        if tap is not None:
            decoder, frames = tap
            frames.extend(decoder.feed(data))


@pytest.fixture
def wiretap() -> Iterator[Callable[[str], WireTap]]:
    made: List[WireTap] = []

    def start(upstream: str) -> WireTap:
        made.append(WireTap(upstream))
        return made[-1]

    try:
        yield start
    finally:
        for tap in made:
            tap.close()


def test_files_reach_every_attempt_and_cross_the_network_once_per_worker(
        titan_procs: TitanProcs, wiretap: Callable[[str], WireTap], tmp_path: Path) -> None:
    # Given two workers that reach the master through a relay which reads what they send,
    # and a job of eight tasks, four pinned to each worker, using a script and a nested data file
    master = titan_procs.start_master()
    tap = wiretap(master.address)
    for name in ("w1", "w2"):
        titan_procs.start_worker(tap.address, name, slots=2)
    titan_procs.wait_ready(master.address, ["w1", "w2"])
    (tmp_path / "data").mkdir()
    script = b"import sys\nprint(len(open(sys.argv[1]).read().split()))\n"
    (tmp_path / "count.py").write_bytes(script)
    (tmp_path / "data" / "words.txt").write_text("one two three\n")
    job = tmp_path / "ship.ini"
    job.write_text("[job]\nname = ship\n" + "".join(
        f"[task:t{i}]\nnode = w{1 + i % 2}\nfiles = count.py, data/words.txt\n"
        f"run = python3 count.py data/words.txt; echo changed > data/words.txt\n" for i in range(8)))
    # When it runs
    with Client(master.address, token="") as c:
        result = c.submit_file(str(job)).wait(timeout=60)
        outputs = {t: b"".join(c.logs(t)) for t in result.tasks}
        nodes = {t["node"] for t in c.status(result.id)["tasks"]}
    # Then every task saw the original files, although each one changed its own copy
    assert result.ok, result
    assert set(outputs.values()) == {b"3\n"} and nodes == {"w1", "w2"}
    # And each file is stored once on the master and once in each worker's cache
    words = hashlib.sha256(b"one two three\n").hexdigest()
    count = hashlib.sha256(script).hexdigest()
    assert (master.data_dir / "files" / words).read_bytes() == b"one two three\n"
    for name in ("w1", "w2"):
        assert (titan_procs.base_dir / name / "cache" / words).read_bytes() == b"one two three\n"
        # And each worker asked the master for each file once, for all four of its tasks
        assert sorted(tap.fetched(name)) == sorted([words, count]), tap.fetched(name)


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
