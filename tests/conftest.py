"""Fixtures for the end-to-end tests: real masters and workers on 127.0.0.1.

    cluster(workers=2, slots=2, ...)  -> a started LocalCluster; stopped at teardown
    titan_procs                       -> TitanProcs: standalone `titan master` / `titan worker`
                                         subprocesses, each in its own session, killed by
                                         process group at teardown
    run_cli(*argv, ...)               -> run the `titan` CLI as a subprocess, with a timeout
    wait_until(pred, timeout_s, msg)  -> poll a condition against a deadline
    dump_logs(*dirs)                  -> the tail of every *.log file, for assertion messages

Every process these fixtures start is reaped, also when the test fails.  When
a test fails, the log files of the clusters and processes it used are added
to its report (section "titan logs").  Nothing here kills by name, and
everything listens on loopback only.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import pytest

from titan.errors import TitanError
from titan.io.proc import titan_command, titan_env
from titan.roles.local import LocalCluster
from titan.roles.master.server import Master, MasterConfig, Peer
from titan.sdk.client import Client
from titan.wire.frames import Frame, FrameDecoder, Op, pack
from titan.wire.handshake import ClientHandshake, ServerHandshake

# Short timeouts so failures and restarts are noticed within a second or two.
FAST_MASTER_ARGS: Tuple[str, ...] = ("--heartbeat-timeout", "5", "--lost-grace", "5")
FAST_WORKER_ARGS: Tuple[str, ...] = ("--heartbeat-interval", "0.5", "--master-timeout", "5")
START_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 6000

Message = Union[str, Callable[[], str]]


# ----- waiting ---------------------------------------------------------------
def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, message: Message = "a condition",
               *, interval_s: float = 0.02, ignore: Tuple[Type[BaseException], ...] = ()) -> Any:
    """Call ``predicate`` until it returns something truthy; return that.

    Raises AssertionError naming ``message`` (a string, or a callable that
    builds one, e.g. with :func:`dump_logs`) when ``timeout_s`` passes first.
    Exceptions listed in ``ignore`` count as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {text}")
        time.sleep(interval_s)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited.

    A zombie counts as gone: in this container PID 1 does not reap orphans,
    so a killed grandchild can stay a zombie (state Z) for good.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# A job file with three problems in three sections: a cycle (a <-> b), a misspelt key
# (`retires`) and a port out of range.  NAME is the job's name.
THREE_PROBLEMS = """\
    [job]
    name = NAME
    [task:a]
    run = true
    after = b
    retires = 2
    [task:b]
    run = true
    after = a
    [service:s]
    run = ./serve
    port = 99999
    """


def write_job(tmp_path: Path, name: str, text: str) -> str:
    """Write a job file (its text dedented) into ``tmp_path``; return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- logs ------------------------------------------------------------------
def dump_logs(*dirs: Path) -> str:
    """The last lines of every ``*.log`` file directly in ``dirs``."""
    parts: List[str] = []
    for directory in dirs:
        for path in sorted(Path(directory).glob("*.log")):
            try:
                text = path.read_text(errors="replace")
            except OSError as exc:
                text = f"<unreadable: {exc}>"
            if len(text) > LOG_TAIL_CHARS:
                text = "...\n" + text[-LOG_TAIL_CHARS:]
            parts.append(f"----- {path} -----\n{text}")
    return "\n".join(parts) or "(no log files)"


def register_logs(node: Any, directory: Path) -> None:
    """Attach the *.log files in ``directory`` to the report of a failed test under ``node``."""
    dirs = getattr(node, "_titan_log_dirs", None)
    if dirs is None:
        dirs = []
        setattr(node, "_titan_log_dirs", dirs)
    dirs.append(directory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        dirs = [d for node in item.listchain() for d in getattr(node, "_titan_log_dirs", [])]
        if dirs:
            report.sections.append(("titan logs", dump_logs(*dirs)))


# ----- subprocesses ----------------------------------------------------------
def child_env(token: Optional[str] = None) -> Dict[str, str]:
    """titan_env() without the caller's TITAN_MASTER/TITAN_TOKEN, plus ``token``."""
    env = titan_env()
    env.pop("TITAN_MASTER", None)
    env.pop("TITAN_TOKEN", None)
    if token:
        env["TITAN_TOKEN"] = token
    return env


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """TERM each process group, wait up to ``grace_s``, then KILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class StandaloneMaster:
    """A `titan master` subprocess and how to reach it."""

    proc: subprocess.Popen
    address: str
    data_dir: Path
    args: List[str]
    token: Optional[str] = None

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass
class TitanProcs:
    """Standalone master and worker subprocesses under ``base_dir``; :meth:`cleanup` reaps them."""

    base_dir: Path
    procs: List[subprocess.Popen] = field(default_factory=list)

    def spawn(self, args: Sequence[str], *, log_name: str, token: Optional[str] = None) -> subprocess.Popen:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / log_name, "ab") as log:
            proc = subprocess.Popen(titan_command() + list(args), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=child_env(token), start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_master(self, *args: str, bind: str = "127.0.0.1:0", data_dir: Optional[Path] = None,
                     token: Optional[str] = None, timeout_s: float = START_TIMEOUT_S) -> StandaloneMaster:
        """Start a master; return once it has written its address."""
        data_dir = data_dir or self.base_dir / "master"
        addr_file = data_dir / "master.addr"
        if addr_file.exists():
            addr_file.unlink()
        argv = ["master", "--bind", bind, "--data", str(data_dir), *FAST_MASTER_ARGS, *args]
        proc = self.spawn(argv, log_name="master.log", token=token)
        wait_until(lambda: addr_file.exists() or proc.poll() is not None, timeout_s,
                   lambda: "the master to listen\n" + dump_logs(self.base_dir))
        assert proc.poll() is None, f"the master exited with {proc.returncode}\n{dump_logs(self.base_dir)}"
        return StandaloneMaster(proc, addr_file.read_text().strip(), data_dir, list(args), token)

    def restart_master(self, master: StandaloneMaster) -> StandaloneMaster:
        """kill -9 the master, then start it again on the same port and data directory."""
        self.kill(master.proc)
        return self.start_master(*master.args, bind=master.address, data_dir=master.data_dir,
                                 token=master.token)

    def start_worker(self, master: str, name: str, *args: str, slots: int = 2, tags: Sequence[str] = (),
                     token: Optional[str] = None) -> subprocess.Popen:
        argv = ["worker", "--master", master, "--name", name, "--slots", str(slots),
                "--data", str(self.base_dir / name), *FAST_WORKER_ARGS, *args]
        if tags:
            argv += ["--tags", ",".join(tags)]
        return self.spawn(argv, log_name=f"{name}.log", token=token)

    def wait_ready(self, address: str, names: Sequence[str], *, token: Optional[str] = None,
                   timeout_s: float = START_TIMEOUT_S) -> List[Dict[str, Any]]:
        """Wait until every worker in ``names`` is ``ready`` at the master; return the nodes."""
        def ready() -> Optional[List[Dict[str, Any]]]:
            with Client(address, token=token or "", timeout=2.0) as c:
                nodes = c.nodes()
            states = {n["name"]: n["state"] for n in nodes}
            return nodes if all(states.get(n) == "ready" for n in names) else None
        return wait_until(ready, timeout_s, lambda: f"workers {list(names)} to be ready\n{self.logs()}",
                          interval_s=0.05, ignore=(TitanError, OSError))

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal ``proc``'s whole process group and reap the leader."""
        _signal_group(proc.pid, sig)
        proc.wait(10)

    def logs(self) -> str:
        return dump_logs(self.base_dir)

    def cleanup(self) -> None:
        _reap(self.procs, grace_s=5.0)
        self.procs.clear()


@pytest.fixture
def titan_procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TitanProcs]:
    procs = TitanProcs(tmp_path / "procs")
    register_logs(request.node, procs.base_dir)
    try:
        yield procs
    finally:
        procs.cleanup()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """A factory: ``cluster(workers=2, slots=2, worker_tags=(), master_args=(), worker_args=(), token=None)``.

    Starts a LocalCluster (master on 127.0.0.1:0, data under ``tmp_path``)
    and returns it once its workers are ready.  Every cluster it made is
    stopped at teardown, whatever happened in the test.
    """
    made: List[LocalCluster] = []

    def start(*, workers: int = 2, slots: int = 2, worker_tags: Sequence[str] = (),
              master_args: Sequence[str] = (), worker_args: Sequence[str] = (),
              token: Optional[str] = None, timeout_s: float = START_TIMEOUT_S) -> LocalCluster:
        data_dir = tmp_path / f"cluster-{len(made) + 1}"
        local = LocalCluster(workers=workers, slots=slots, data_dir=data_dir, token=token,
                             bind="127.0.0.1:0", master_args=[*FAST_MASTER_ARGS, *master_args],
                             worker_args=[*FAST_WORKER_ARGS, *worker_args], worker_tags=worker_tags)
        made.append(local)
        register_logs(request.node, data_dir)
        local.start(timeout_s)
        return local

    try:
        yield start
    finally:
        for local in made:
            local.stop()


# ----- the CLI ---------------------------------------------------------------
@dataclass(frozen=True)
class CliResult:
    """What a person sees after running `titan ...`."""

    code: int
    stdout: str
    stderr: str


def cli_argv(*args: str) -> List[str]:
    return titan_command() + [str(a) for a in args]


def run_cli(*args: str, token: Optional[str] = None, cwd: Optional[Path] = None,
            timeout_s: float = CLI_TIMEOUT_S, argv: Optional[Sequence[str]] = None,
            env: Optional[Dict[str, str]] = None) -> CliResult:
    """Run `titan ARGS` (or ``argv``) and wait at most ``timeout_s``.

    On a timeout the CLI first gets SIGINT, so `titan up` can stop the
    cluster it started, then its process group is killed.
    """
    proc = subprocess.Popen(list(argv) if argv else cli_argv(*args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env if env is not None else child_env(token),
                            cwd=str(cwd) if cwd else None, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"`titan {' '.join(args)}` did not finish in {timeout_s:g}s\n"
                             f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}")
    return CliResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


# ----- speaking TITAN_PROTO by hand --------------------------------------------
READ_TIMEOUT_S = 5.0


class Raw:
    """A bare TCP connection to the master that speaks frames by hand."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S)
        self.decoder = FrameDecoder()
        self.frames: List[Frame] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, req_id: int, body: object = None) -> None:
        self.send(pack(opcode, req_id, body))

    def hello(self, **overrides: Any) -> Optional[Frame]:
        body = ClientHandshake(role="client", name="raw-test", token=None).hello()
        body.update(overrides)
        self.send_frame(Op.HELLO, 1, body)
        if overrides:
            return None
        welcome = self.read_frame()
        assert welcome.opcode == Op.WELCOME, welcome
        return welcome

    def read_frame(self, timeout_s: float = READ_TIMEOUT_S) -> Frame:
        deadline = time.monotonic() + timeout_s
        while not self.frames:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no frame from the master within {timeout_s:g}s") from None
            assert data, "the master closed the connection without a reply"
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def expect_error(self, code: str, *words: str, req_id: Optional[int] = None,
                     timeout_s: float = READ_TIMEOUT_S) -> str:
        """Read one frame: an ERROR with ``code`` whose message holds ``words``; return the message."""
        frame = self.read_frame(timeout_s)
        assert frame.opcode == Op.ERROR, frame
        body = frame.body
        assert isinstance(body, dict) and body.get("code") == code, body
        message = body.get("message")
        assert isinstance(message, str)
        for word in words:
            assert word in message, (word, message)
        if req_id is not None:
            assert frame.req_id == req_id, frame
        return message

    def expect_closed(self, timeout_s: float = READ_TIMEOUT_S) -> None:
        """The master closes the connection (EOF or reset) within ``timeout_s``."""
        assert not self.frames, f"unexpected frames before the close: {self.frames}"
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return
        except socket.timeout:
            raise AssertionError(f"the master kept the connection open for {timeout_s:g}s") from None
        assert data == b"", f"expected the connection to close, got {data!r}"

    def read_frame_where(self, wanted: Callable[[Frame], bool], timeout_s: float = READ_TIMEOUT_S) -> Frame:
        """The next frame ``wanted`` accepts; the ones before it are dropped."""
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if wanted(frame):
                return frame

    def hello_as_worker(self, name: str, **extra: Any) -> None:
        """Register as a worker (slots 1, nothing running unless ``extra`` says so)."""
        shake = ClientHandshake(role="worker", name=name, token=None,
                                extra={"slots": 1, "tags": [], "running": [], "finished": [], **extra})
        self.send_frame(Op.HELLO, 1, shake.hello())
        while not shake.done:
            for opcode, body in shake.on_frame(self.read_frame()):
                self.send_frame(opcode, 1, body)

    def ping(self, req_id: int) -> None:
        self.send_frame(Op.PING, req_id, {})
        pong = self.read_frame()
        assert (pong.opcode, pong.req_id) == (Op.PONG, req_id), pong


class FakeMaster(Raw):
    """A listening socket that plays the master for one real worker, frame by frame."""

    def __init__(self) -> None:   # noqa: super().__init__ dials; this one listens
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.decoder = FrameDecoder()
        self.frames: List[Frame] = []
        self.hello: Dict[str, Any] = {}

    def accept(self) -> Dict[str, Any]:
        """Take the worker's (next) connection and complete its handshake; return its HELLO."""
        self.listener.settimeout(READ_TIMEOUT_S)
        self.sock, _ = self.listener.accept()
        self.decoder, self.frames = FrameDecoder(), []      # nothing carries over from an earlier connection
        shake = ServerHandshake(name="fake-master", token=None)
        while not shake.done:
            frame = self.read_frame()
            if frame.opcode == Op.HELLO:
                self.hello = frame.body
            for opcode, body in shake.on_frame(frame):
                self.send_frame(opcode, frame.req_id, body)
        return self.hello

    def close(self) -> None:
        if getattr(self, "sock", None) is not None:
            self.sock.close()
        self.listener.close()

    def dispatch(self, task: str, argv: List[str]) -> None:
        self.send_frame(Op.DISPATCH, 0, {"task": task, "attempt": 1, "argv": argv, "kill_grace_s": 1.0})

    def finished(self, timeout_s: float = READ_TIMEOUT_S) -> Dict[str, Any]:
        """The next FINISHED report (heartbeats and output are skipped)."""
        frame = self.read_frame_where(lambda f: f.opcode == Op.FINISHED, timeout_s)
        return frame.body


@pytest.fixture
def fake_master(titan_procs: TitanProcs) -> Iterator[FakeMaster]:
    fake = FakeMaster()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    """A Master in this process, no sockets: give it frames with ``on_frame``, end a pass with ``_end_of_pass``."""
    m = Master(MasterConfig(data_dir=tmp_path / "m"))
    try:
        yield m
    finally:
        m.close()


class Recorder:
    """Stands in for a client connection of an in-process Master: keeps every frame it is sent.

    Given the master's ``loop``, it tells the loop of the frames that wait for the
    end of the pass, as a real connection does (the frames are kept at once all the same).
    """

    closed = False
    peer = "test"

    def __init__(self, loop: Any = None) -> None:
        self.state = Peer(ServerHandshake(name="m", token=None))
        self.state.handshake.done = True
        self.state.role, self.state.name = "client", "tester"
        self.frames: List[Tuple[int, int, Any]] = []
        self.loop = loop

    def send(self, opcode: int, req_id: int, body: Any = None, flags: int = 0, urgent: bool = False,
             lazy: bool = False) -> None:
        self.frames.append((opcode, req_id, body))
        if self.loop is not None and not lazy:
            self.loop.mark_dirty(self, urgent)

    def flush(self) -> None:
        pass

    def send_error(self, req_id: int, code: str, message: str) -> None:
        self.frames.append((Op.ERROR, req_id, {"code": code, "message": message}))

    def reply(self, req_id: int) -> Tuple[int, Any]:
        return next((op, body) for op, rid, body in self.frames if rid == req_id)
