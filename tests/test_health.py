"""Health probes against real loopback servers, driven through a real Loop.

Every server here is a tiny thread on 127.0.0.1 port 0 that answers each
connection with canned bytes (or never answers).  The loop is a
:class:`WatchingLoop`, which remembers what is registered, so each test can
check that a finished probe left nothing behind in the loop.
"""
from __future__ import annotations

import gc
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from titan.io.health import Probe, check, probe
from titan.io.loop import Loop, Timer

Result = Tuple[bool, str]


class WatchingLoop(Loop):
    """A Loop that remembers which file objects are registered right now, and every timer."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: Dict[int, Any] = {}
        self.timers: List[Timer] = []

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = super().call_at(when, callback)
        self.timers.append(timer)
        return timer

    def pending_timers(self) -> List[Timer]:
        """Timers neither cancelled nor due yet."""
        now = self.clock()
        return [t for t in self.timers if not t.cancelled and t.when > now]

    def register(self, fileobj: Any, events: int, callback: Callable[[int], None]) -> None:
        super().register(fileobj, events, callback)
        self.watched[id(fileobj)] = fileobj

    def unregister(self, fileobj: Any) -> None:
        super().unregister(fileobj)
        self.watched.pop(id(fileobj), None)


@pytest.fixture(autouse=True)
def no_unclosed_sockets() -> Iterator[None]:
    """Fail a test that leaves a socket for the garbage collector to close."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == [], "sockets left for the garbage collector to close"


@pytest.fixture
def loop() -> Iterator[WatchingLoop]:
    loop = WatchingLoop()
    try:
        yield loop
    finally:
        loop.close()


def drive(loop: Loop, until: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        loop.run_once(0.05)


def settle(loop: WatchingLoop, check: Probe, results: List[Result], timeout_s: float) -> Result:
    """Run the loop until ``done`` was called; then check it was called once and left the loop clean."""
    drive(loop, lambda: bool(results), timeout_s)
    assert results, f"done was not called within {timeout_s:g}s"
    for _ in range(3):                      # a second call would come within a few passes
        loop.run_once(0.01)
    assert len(results) == 1, f"done was called {len(results)} times: {results}"
    assert loop.watched == {}, f"the probe left {list(loop.watched.values())} registered"
    assert loop.pending_timers() == [], "the probe left its timeout timer running"
    check.cancel()                          # after done: harmless
    return results[0]


def run_probe(loop: WatchingLoop, target: str, port: Optional[int] = None, timeout_s: float = 2.0,
              **options: Any) -> Result:
    results: List[Result] = []
    check = probe(loop, target, port, timeout_s, lambda ok, detail: results.append((ok, detail)), **options)
    return settle(loop, check, results, timeout_s + 3.0)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_resolver(*hosts: str) -> Callable[..., List[Tuple[Any, ...]]]:
    """A getaddrinfo that answers every name with ``hosts`` (IPv4 literals), in order."""
    def resolve(host: str, port: int, **_: Any) -> List[Tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (h, port)) for h in hosts]
    return resolve


def failing_resolver(host: str, port: int, **_: Any) -> List[Tuple[Any, ...]]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class TinyServer:
    """Answers each connection on 127.0.0.1:``port`` from a thread.

    It reads the request (up to the blank line, or ``read_timeout_s``), then
    sends ``chunks`` with a short pause between them and closes; with
    ``hold`` it keeps the connection open instead.  No chunks and ``hold``:
    a server that accepts and never answers.  ``tls``: a server context
    that wraps each connection.
    """

    def __init__(self, chunks: Sequence[bytes] = (), *, hold: bool = False,
                 tls: Optional[ssl.SSLContext] = None, read_timeout_s: float = 2.0) -> None:
        self.chunks = list(chunks)
        self.hold = hold
        self.tls = tls
        self.read_timeout_s = read_timeout_s
        self.requests: List[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._conns: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tiny-server", daemon=True)
        self._thread.start()

    def __enter__(self) -> "TinyServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str = "/health", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()
        for conn in self._conns:
            conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)
            try:
                self._answer(conn)
            except (OSError, ValueError):
                conn.close()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(self.read_timeout_s)
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
            self._conns.append(conn)
        self.requests.append(self._read_request(conn))
        for i, chunk in enumerate(self.chunks):
            if i:
                time.sleep(0.05)
            conn.sendall(chunk)
        if not self.hold:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        return data


def reply(status: str, body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


# ----- tcp -------------------------------------------------------------------
def test_tcp_probe_passes_when_the_port_accepts(loop: WatchingLoop) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        assert run_probe(loop, "tcp", port) == (True, "ok")


def test_tcp_probe_fails_on_a_closed_port_naming_it(loop: WatchingLoop) -> None:
    port = closed_port()
    assert run_probe(loop, "tcp", port) == (False, f"connection refused on 127.0.0.1:{port}")


def test_tcp_probe_without_a_port_fails_with_a_reason(loop: WatchingLoop) -> None:
    ok, detail = run_probe(loop, "tcp", None)
    assert not ok
    assert "needs a port" in detail


# ----- http --------------------------------------------------------------------
def test_http_200_passes_and_the_request_is_a_plain_get(loop: WatchingLoop) -> None:
    with TinyServer([reply("200 OK", b"fine")]) as server:
        assert run_probe(loop, server.url("/health?full=1")) == (True, "HTTP 200")
    request = server.requests[0]
    assert request.startswith(b"GET /health?full=1 HTTP/1.1\r\n")
    lines = request.split(b"\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Connection: close" in lines
    assert b"User-Agent: titan-health" in lines


def test_http_503_fails_with_the_code_and_url(loop: WatchingLoop) -> None:
    with TinyServer([reply("503 Service Unavailable")]) as server:
        assert run_probe(loop, server.url()) == (False, f"HTTP 503 from {server.url()}")


def test_http_404_fails(loop: WatchingLoop) -> None:
    with TinyServer([reply("404 Not Found")]) as server:
        assert run_probe(loop, server.url()) == (False, f"HTTP 404 from {server.url()}")


def test_http_302_passes(loop: WatchingLoop) -> None:
    with TinyServer([b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n"]) as server:
        assert run_probe(loop, server.url()) == (True, "HTTP 302")


def test_http_passes_on_the_status_line_alone_without_waiting_for_the_rest(loop: WatchingLoop) -> None:
    # Given a server that sends its status line in two pieces, then nothing more
    with TinyServer([b"HTTP/1.0 2", b"04 No Content\r\n"], hold=True) as server:
        started = time.monotonic()
        # When probed with a long timeout, Then it passes as soon as the line is complete
        assert run_probe(loop, server.url(), timeout_s=5.0) == (True, "HTTP 204")
        assert time.monotonic() - started < 2.0


def test_http_silent_server_fails_after_the_timeout(loop: WatchingLoop) -> None:
    with TinyServer(hold=True) as server:
        started = time.monotonic()
        ok, detail = run_probe(loop, server.url(), timeout_s=0.3)
        elapsed = time.monotonic() - started
    assert not ok
    assert detail.startswith(f"no answer within 0.3s ({server.url()})"), detail
    assert "status line" in detail
    assert 0.3 <= elapsed < 2.0


@pytest.mark.parametrize("chunks, hold, shown", [
    ([b"SSH-2.0-OpenSSH_9.6\r\n"], False, b"SSH-2.0-OpenSSH_9.6"),
    ([b"HTTP/1.1 OK\r\n"], False, b"HTTP/1.1 OK"),
    ([b"\x00\x01garbage without a line end"], False, b"\x00\x01garbage without a line end"),
    ([b"x" * 9000], True, b"x" * 60),
], ids=["ssh-banner", "no-code", "closed-mid-line", "endless-line"])
def test_http_garbage_fails_quoting_it(loop: WatchingLoop, chunks: List[bytes], hold: bool, shown: bytes) -> None:
    with TinyServer(chunks, hold=hold) as server:
        ok, detail = run_probe(loop, server.url(), timeout_s=5.0)
    assert not ok
    assert detail.startswith(f"bad status line {shown!r} from {server.url()}"), detail


def test_http_server_closing_without_a_word_fails(loop: WatchingLoop) -> None:
    with TinyServer() as server:
        assert run_probe(loop, server.url()) == (False, f"{server.url()} closed the connection without answering")


def test_http_refused_names_the_address(loop: WatchingLoop) -> None:
    port = closed_port()
    assert run_probe(loop, f"http://127.0.0.1:{port}/") == (False, f"connection refused on 127.0.0.1:{port}")


def test_http_localhost_reaches_a_server_on_127_0_0_1(loop: WatchingLoop) -> None:
    # localhost may resolve to ::1 first; the probe then tries the next address
    with TinyServer([reply("200 OK")]) as server:
        assert run_probe(loop, f"http://localhost:{server.port}/") == (True, "HTTP 200")


def test_every_resolved_address_is_tried_in_turn(loop: WatchingLoop) -> None:
    # Given a name resolving to 127.0.0.2 (nothing listens there) and then 127.0.0.1 (the server)
    with TinyServer([reply("200 OK")]) as server:
        resolve = fake_resolver("127.0.0.2", "127.0.0.1")
        # When probed, Then the second address answers
        assert run_probe(loop, f"http://service.test:{server.port}/", resolve=resolve) == (True, "HTTP 200")
    assert f"Host: service.test:{server.port}".encode() in server.requests[0].split(b"\r\n")


def test_when_every_address_fails_each_is_named(loop: WatchingLoop) -> None:
    port = closed_port()
    resolve = fake_resolver("127.0.0.2", "127.0.0.1")
    assert run_probe(loop, "http://service.test:%d/" % port, resolve=resolve) == (
        False, f"connection refused on 127.0.0.2:{port}; connection refused on 127.0.0.1:{port}")


def test_a_name_that_does_not_resolve_fails_naming_it(loop: WatchingLoop) -> None:
    url = "http://service.test:8000/health"
    assert run_probe(loop, url, resolve=failing_resolver) == (
        False, f"cannot resolve host 'service.test' ({url}): name or service not known")


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/", "http://127.0.0.1:$PORT/", "not a url"])
def test_bad_targets_fail_with_a_reason(loop: WatchingLoop, target: str) -> None:
    ok, detail = run_probe(loop, target)
    assert not ok
    assert "bad health check" in detail and repr(target) in detail, detail


# ----- https -------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d: Path = tmp_path_factory.mktemp("health-cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=d, check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
    return context


def test_https_passes_against_a_self_signed_server(loop: WatchingLoop, server_tls: ssl.SSLContext) -> None:
    with TinyServer([reply("200 OK")], tls=server_tls) as server:
        assert run_probe(loop, server.url(scheme="https")) == (True, "HTTP 200")
    assert server.requests[0].startswith(b"GET /health HTTP/1.1\r\n")


def test_https_against_a_plain_http_server_fails_in_the_handshake(loop: WatchingLoop) -> None:
    with TinyServer([reply("200 OK")], read_timeout_s=0.2) as server:
        ok, detail = run_probe(loop, server.url(scheme="https"))
    assert not ok
    assert detail.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed"), detail


# ----- the contract --------------------------------------------------------------
@pytest.mark.parametrize("target, port, resolve", [
    ("tcp", "closed", socket.getaddrinfo),
    ("tcp", None, socket.getaddrinfo),
    ("http://127.0.0.1:1/", None, socket.getaddrinfo),
    ("gopher://x/", None, socket.getaddrinfo),
    ("http://service.test/", None, failing_resolver),
], ids=["refused", "no-port", "refused-url", "bad-scheme", "unresolvable"])
def test_done_never_runs_inside_probe(loop: WatchingLoop, target: str, port: Any, resolve: Any) -> None:
    results: List[Result] = []
    check = probe(loop, target, closed_port() if port == "closed" else port, 1.0,
                  lambda ok, detail: results.append((ok, detail)), resolve=resolve)
    assert results == [], "done ran synchronously inside probe()"
    ok, _ = settle(loop, check, results, 4.0)
    assert not ok


def test_cancel_prevents_done_and_closes_the_socket(loop: WatchingLoop) -> None:
    with TinyServer(hold=True) as server:
        results: List[Result] = []
        check = probe(loop, server.url(), None, 0.2, lambda ok, detail: results.append((ok, detail)))
        drive(loop, lambda: bool(server.requests), 3.0)   # the request is out: the probe waits to read
        assert server.requests, "the probe never sent its request"
        check.cancel()
        check.cancel()                                     # twice: harmless
        assert loop.watched == {}
        assert loop.pending_timers() == []
        drive(loop, lambda: bool(results), 0.6)            # well past the 0.2s timeout
        assert results == []


def test_cancel_of_an_immediate_failure_prevents_done(loop: WatchingLoop) -> None:
    results: List[Result] = []
    check = probe(loop, "tcp", None, 1.0, lambda ok, detail: results.append((ok, detail)))
    check.cancel()
    drive(loop, lambda: bool(results), 0.3)
    assert results == []


def test_a_failing_done_callback_does_not_break_the_loop(loop: WatchingLoop) -> None:
    calls: List[Result] = []

    def done(ok: bool, detail: str) -> None:
        calls.append((ok, detail))
        raise RuntimeError("supervisor bug")

    port = closed_port()
    probe(loop, "tcp", port, 1.0, done)
    drive(loop, lambda: bool(calls), 3.0)                  # run_once would raise here if it leaked
    assert calls == [(False, f"connection refused on 127.0.0.1:{port}")]


def drain_backlog(listener: socket.socket) -> int:
    """Accept and close every connection waiting on ``listener``; return how many."""
    listener.settimeout(0.1)
    accepted = 0
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            return accepted
        conn.close()
        accepted += 1


def test_no_file_descriptors_leak_on_any_path(loop: WatchingLoop) -> None:
    # Five rounds of every way a probe can end; the fd count must not move
    refused = closed_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        tcp_port = listener.getsockname()[1]
        before = open_fds()
        for _ in range(5):
            assert run_probe(loop, "tcp", tcp_port)[0]
            assert not run_probe(loop, "tcp", refused)[0]
            assert not run_probe(loop, f"http://127.0.0.1:{refused}/")[0]
            assert not run_probe(loop, "tcp", None)[0]
            assert not run_probe(loop, f"http://127.0.0.1:{tcp_port}/", timeout_s=0.1)[0]  # never answers
            results: List[Result] = []
            check = probe(loop, f"http://127.0.0.1:{tcp_port}/", None, 1.0, lambda ok, d: results.append((ok, d)))
            loop.run_once(0.01)
            check.cancel()
            assert results == []
        assert drain_backlog(listener) >= 15   # the server ends of the connections that got through
        assert open_fds() == before
        assert loop.watched == {}


def test_check_runs_one_probe_to_its_end_without_a_loop_of_the_callers() -> None:
    before = open_fds()
    with TinyServer([reply("200 OK")]) as server:
        assert check(server.url()) == (True, "HTTP 200")
    with TinyServer(hold=True) as server:
        ok, detail = check(server.url(), timeout_s=0.3)
        assert not ok and "no answer within 0.3s" in detail
    port = closed_port()
    assert check("tcp", port) == (False, f"connection refused on 127.0.0.1:{port}")
    assert open_fds() == before                     # its loop and sockets are closed
