"""Health checks of supervised services, run inside the worker's event loop.

What this module owns: one check in flight per :class:`Probe`: its socket,
its timeout timer, and the single call of ``done(ok, detail)``.  A check
never blocks the loop (name resolution aside, see below)::

    probe()  -> resolve -> non-blocking connect_ex                  CONNECTING
      writable, SO_ERROR == 0  (an error: try the next address, else fail)
        tcp:    done(True, "ok")
        https:  wrap, do_handshake until it stops wanting I/O       HANDSHAKING
        http(s): send "GET PATH HTTP/1.1" + Host, Connection: close SENDING
      readable until the first line end: "HTTP/1.1 200 OK"          READING
        done(2xx or 3xx, "HTTP 200" | "HTTP 503 from URL" | "bad status line ...")
    timer (timeout_s), whatever the phase  -> done(False, "no answer within ...")

Every path out (success, failure, timeout, :meth:`Probe.cancel`) cancels the
timer, takes the socket out of the loop and closes it.  ``done`` always runs
from the loop, never inside :func:`probe`, even for an error found at once
(a refused connect, a bad target, a name that does not resolve).

Name resolution uses :func:`socket.getaddrinfo` on the loop's thread.  For
IP literals it does no I/O and ``localhost`` is normally answered from the hosts file, so
health checks (which normally name 127.0.0.1) never wait on it; any other
host name works but may block the loop for as long as DNS takes to answer.
``https://`` is a liveness probe, not a security check: the certificate and
host name are not verified.
"""
from __future__ import annotations

import enum
import errno
import functools
import logging
import os
import re
import selectors
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from titan.errors import InvalidTransition
from titan.io.loop import Loop, Timer, format_address

__all__ = ["Probe", "probe", "check", "TCP_HOST", "USER_AGENT", "MAX_STATUS_LINE_BYTES"]

logger = logging.getLogger(__name__)

TCP_HOST = "127.0.0.1"             # where a "tcp" check connects
USER_AGENT = "titan-health"
MAX_STATUS_LINE_BYTES = 8192       # an answer with no line end this far in is not HTTP
RECV_BYTES = 4096
CLIP_BYTES = 60                    # how much of a bad status line a detail quotes

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
_WAIT = object()                    # Probe._io: the call would block, or the probe has ended
_IN_PROGRESS = frozenset({0, errno.EINPROGRESS, errno.EINTR})   # EINTR: it goes on in the background
Resolver = Callable[..., Sequence[Tuple[Any, ...]]]   # socket.getaddrinfo's shape
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?: .*)?")


class _Phase(str, enum.Enum):
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    SENDING = "sending"
    READING = "reading"
    DONE = "done"


P = _Phase
_MOVES: Dict[_Phase, FrozenSet[_Phase]] = {
    P.CONNECTING: frozenset({P.HANDSHAKING, P.SENDING, P.DONE}),
    P.HANDSHAKING: frozenset({P.SENDING, P.DONE}),
    P.SENDING: frozenset({P.READING, P.DONE}),
    P.READING: frozenset({P.DONE}),
    P.DONE: frozenset(),
}
_WAITING = {   # completes "no answer within 2s (URL) ..."
    P.CONNECTING: "while connecting",
    P.HANDSHAKING: "during the TLS handshake",
    P.SENDING: "while sending the request",
    P.READING: "waiting for the status line",
}


@dataclass(frozen=True)
class _Target:
    """What one check dials and asks for; ``label`` is how details name it."""

    scheme: str          # "tcp", "http" or "https"
    host: str
    port: int
    label: str           # "127.0.0.1:8000" or the URL
    path: str = ""       # the request target, query included: "/health?full=1"
    host_header: str = ""


def _parse_target(target: str, port: Optional[int]) -> _Target:
    """``"tcp"`` (with ``port``) or an http(s) URL -> a :class:`_Target`; ValueError says what is wrong."""
    text = target.strip()
    if text.lower() == "tcp":
        if port is None or not 0 < port <= 65535:
            raise ValueError(f"health check 'tcp' needs a port from 1 to 65535, got {port!r}")
        return _Target("tcp", TCP_HOST, port, f"{TCP_HOST}:{port}")
    try:
        parts = urlsplit(text)
        url_port = parts.port
    except ValueError as exc:
        hint = ": was $PORT substituted?" if "$PORT" in text else ""
        raise ValueError(f"bad health check URL {text!r}: {exc}{hint}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad health check {text!r}: use 'tcp' or an http:// or https:// URL, "
                         "e.g. 'http://127.0.0.1:8000/health'")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    if any(not 32 < ord(c) < 127 for c in path + host_header):
        raise ValueError(f"bad health check URL {text!r}: percent-encode spaces and non-ASCII characters")
    default_port = 443 if scheme == "https" else 80
    return _Target(scheme, parts.hostname, default_port if url_port is None else url_port, text, path, host_header)


def _request_bytes(target: _Target) -> bytes:
    return (f"GET {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\nConnection: close\r\n"
            f"User-Agent: {USER_AGENT}\r\n\r\n").encode("ascii")


def _judge_status_line(line: bytes, label: str) -> Tuple[bool, str]:
    """``b"HTTP/1.1 200 OK"`` -> ``(True, "HTTP 200")``; 2xx and 3xx are healthy."""
    line = line.rstrip(b"\r")
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        return False, f"bad status line {line[:CLIP_BYTES]!r} from {label}"
    code = int(match.group(1))
    if 200 <= code < 400:
        return True, f"HTTP {code}"
    return False, f"HTTP {code} from {label}"


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The client context of every https probe, built once (loading the system CAs reads files)."""
    context = ssl.create_default_context()
    context.check_hostname = False      # a liveness probe, not a security check
    context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: BaseException) -> str:
    """``connection reset by peer`` for a plain OSError; the full text for TLS errors."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _connect_error(err: int, where: str) -> str:
    if err == errno.ECONNREFUSED:
        return f"connection refused on {where}"
    return f"cannot connect to {where}: {_reason(OSError(err, os.strerror(err)))}"


class Probe:
    """One health check in flight; calls ``done(ok: bool, detail: str)`` exactly once.

    Made by :func:`probe`.  :meth:`cancel` stops it without calling ``done``.
    """

    def __init__(self, loop: Loop, timeout_s: float, done: Callable[[bool, str], None],
                 resolve: Resolver = socket.getaddrinfo) -> None:
        self._loop = loop
        self._resolve_with = resolve
        self._timeout_s = timeout_s
        self._done = done
        self._target: Optional[_Target] = None
        self._phase = P.CONNECTING
        self._settled = False              # done called, or cancelled: nothing more is said
        self._in_probe = False             # inside probe(): done must wait for the loop
        self._timer: Optional[Timer] = None
        self._sock: Optional[socket.socket] = None
        self._events = 0
        self._where = ""                   # the address now dialled, e.g. "127.0.0.1:8000"
        self._addrs: List[Tuple[Any, ...]] = []
        self._errors: List[str] = []       # one per address that failed
        self._out = b""
        self._in = b""

    def cancel(self) -> None:
        """Stop without calling ``done``: cancel the timer, close the socket.  Safe to repeat, or after done."""
        self._settled = True
        self._close()
        if self._phase is not P.DONE:
            self._move(P.DONE)

    # ----- start ---------------------------------------------------------
    def _start(self, target: str, port: Optional[int]) -> None:
        self._in_probe = True
        try:
            self._target = _parse_target(target, port)
            self._timer = self._loop.call_later(self._timeout_s, self._on_timeout)
            self._addrs = self._resolve(self._target)
            self._connect_next()
        except ValueError as exc:
            self._finish(False, str(exc))
        finally:
            self._in_probe = False

    def _resolve(self, target: _Target) -> List[Tuple[Any, ...]]:
        try:
            return list(self._resolve_with(target.host, target.port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:   # socket.gaierror is an OSError
            raise ValueError(f"cannot resolve host {target.host!r} ({target.label}): {_reason(exc)}") from None

    def _connect_next(self) -> None:
        """Dial the next resolved address; with none left, fail naming every address tried."""
        while self._addrs:
            family, kind, proto, _, addr = self._addrs.pop(0)
            error = self._dial(family, kind, proto, addr)
            if error is None:
                return                          # in progress: wait until writable
            self._errors.append(error)
        self._finish(False, "; ".join(self._errors) or f"no address for {self._label()}")

    def _dial(self, family: int, kind: int, proto: int, addr: Tuple[Any, ...]) -> Optional[str]:
        """Start a non-blocking connect to ``addr``: None while it is under way, else why it failed."""
        where = format_address(addr)
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            return f"cannot open a socket for {where}: {_reason(exc)}"
        try:
            sock.setblocking(False)
            err = sock.connect_ex(addr)
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        if err not in _IN_PROGRESS:
            sock.close()
            return _connect_error(err, where)
        self._sock, self._where = sock, where
        self._watch(WRITE)                      # 0 (connected at once) also turns writable
        return None

    # ----- loop callbacks ------------------------------------------------
    def _on_events(self, mask: int) -> None:
        try:
            self._step()
        except Exception as exc:  # a bug here must not escape into the loop
            logger.exception("health probe of %s failed", self._label())
            self._finish(False, f"internal error probing {self._label()}: {exc!r}")

    def _step(self) -> None:
        if self._phase is P.CONNECTING:
            self._connected()
        elif self._phase is P.HANDSHAKING:
            self._handshake()
        elif self._phase is P.SENDING:
            self._send()
        elif self._phase is P.READING:
            self._read()

    def _on_timeout(self) -> None:
        self._timer = None
        waiting = _WAITING.get(self._phase, "")
        self._finish(False, f"no answer within {self._timeout_s:g}s ({self._label()}) {waiting}".rstrip())

    # ----- the steps ------------------------------------------------------
    def _connected(self) -> None:
        assert self._sock is not None and self._target is not None
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._errors.append(_connect_error(err, self._where))
            self._drop_socket()
            self._connect_next()                # CONNECTING -> CONNECTING: the next address
        elif self._target.scheme == "tcp":
            self._finish(True, "ok")
        elif self._target.scheme == "https":
            self._start_tls()
        else:
            self._send_request()

    def _start_tls(self) -> None:
        """CONNECTING -> HANDSHAKING: wrap the socket (a new object for the same fd) and shake hands."""
        assert self._sock is not None and self._target is not None
        self._move(P.HANDSHAKING)
        plain = self._sock
        self._watch(0)                          # the loop knows the fd by its old object
        self._sock = None
        try:
            self._sock = _tls_context().wrap_socket(plain, server_hostname=self._target.host,
                                                   do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:    # ssl.SSLError is an OSError
            plain.close()
            self._finish(False, f"TLS setup for {self._label()} failed: {_reason(exc)}")
            return
        self._handshake()

    def _io(self, call: Callable[[], Any], blocked: int, failed: str) -> Any:
        """One non-blocking socket call: its result, or :data:`_WAIT` once the probe waits
        for the socket (``blocked``: what a plain would-block waits for) or has ended with
        ``failed: reason``."""
        try:
            return call()
        except (BlockingIOError, InterruptedError):
            self._watch(blocked)
        except ssl.SSLWantReadError:
            self._watch(READ)
        except ssl.SSLWantWriteError:
            self._watch(WRITE)
        except (OSError, ValueError) as exc:    # ssl.SSLError is an OSError
            self._finish(False, f"{failed}: {_reason(exc)}")
        return _WAIT

    def _handshake(self) -> None:
        assert isinstance(self._sock, ssl.SSLSocket)
        if self._io(self._sock.do_handshake, READ, f"TLS handshake with {self._where} failed") is _WAIT:
            return
        self._send_request()

    def _send_request(self) -> None:
        """CONNECTING|HANDSHAKING -> SENDING."""
        assert self._target is not None
        self._move(P.SENDING)
        self._out = _request_bytes(self._target)
        self._send()

    def _send(self) -> None:
        sock = self._sock
        assert sock is not None
        sent = self._io(lambda: sock.send(self._out), WRITE, f"sending the request to {self._label()} failed")
        if sent is _WAIT:
            return
        self._out = self._out[sent:]
        if self._out:
            self._watch(WRITE)
            return
        self._move(P.READING)                   # SENDING -> READING
        self._watch(READ)

    def _read(self) -> None:
        data = self._io(self._recv, READ, f"reading the answer from {self._label()} failed")
        if data is _WAIT:
            return
        self._watch(READ)
        self._in += data
        line_end = self._in.find(b"\n")
        if line_end >= 0:
            self._finish(*_judge_status_line(self._in[:line_end], self._label()))
        elif not data:
            self._finish(False, self._closed_early())
        elif len(self._in) > MAX_STATUS_LINE_BYTES:
            self._finish(False, f"bad status line {self._in[:CLIP_BYTES]!r} from {self._label()}: "
                                f"no line end in the first {MAX_STATUS_LINE_BYTES} bytes")

    def _recv(self) -> bytes:
        assert self._sock is not None
        data = self._sock.recv(RECV_BYTES)
        if isinstance(self._sock, ssl.SSLSocket):
            # Decrypted bytes already inside ssl never wake the loop: take them now.
            while data and b"\n" not in data and self._sock.pending():
                data += self._sock.recv(self._sock.pending())
        return data

    def _closed_early(self) -> str:
        if not self._in:
            return f"{self._label()} closed the connection without answering"
        return (f"bad status line {self._in[:CLIP_BYTES]!r} from {self._label()}: "
                "the connection closed before the line ended")

    # ----- the end ----------------------------------------------------------
    def _finish(self, ok: bool, detail: str) -> None:
        """Any phase -> DONE: release everything, then tell ``done`` (from the loop, later, if inside probe())."""
        if self._phase is P.DONE:
            return
        self._move(P.DONE)
        self._close()
        if self._in_probe:
            self._timer = self._loop.call_later(0, lambda: self._report(ok, detail))
        else:
            self._report(ok, detail)

    def _report(self, ok: bool, detail: str) -> None:
        self._timer = None
        if self._settled:
            return
        self._settled = True
        logger.debug("health probe of %s: %s, %s", self._label(), "ok" if ok else "failed", detail)
        try:
            self._done(ok, detail)
        except Exception:  # the caller's bug must not escape into the loop
            logger.exception("health probe callback failed for %s", self._label())

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drop_socket()

    def _drop_socket(self) -> None:
        if self._sock is None:
            return
        self._watch(0)
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None

    def _watch(self, events: int) -> None:
        """Ask the loop for ``events`` on the current socket (0: out of the loop)."""
        if self._sock is not None:
            self._events = self._loop.change_events(self._sock, self._events, events, self._on_events)

    def _move(self, new: _Phase) -> None:
        if new not in _MOVES[self._phase]:
            raise InvalidTransition(f"health probe of {self._label()} cannot move from "
                                    f"{self._phase.value} to {new.value}")
        self._phase = new

    def _label(self) -> str:
        return self._target.label if self._target is not None else "a health check"


def probe(loop: Loop, target: str, port: Optional[int], timeout_s: float,
          done: Callable[[bool, str], None], *, resolve: Resolver = socket.getaddrinfo) -> Probe:
    """Check ``target`` without blocking: ``"tcp"`` (connects to 127.0.0.1:``port``) or an http(s) URL.

    Returns at once; ``done(ok, detail)`` runs later from ``loop``, exactly
    once unless the probe is cancelled.  An http(s) check is healthy when the
    status line arrives within ``timeout_s`` with a 2xx or 3xx code.  ``port``
    is used only for ``"tcp"``: a URL carries its own (``$PORT`` substituted
    by the caller).  ``resolve`` stands in for :func:`socket.getaddrinfo`
    (tests pass a fake); every address it returns is tried in turn.
    """
    check = Probe(loop, timeout_s, done, resolve)
    check._start(target, port)
    return check


def check(target: str, port: Optional[int] = None, timeout_s: float = 1.0) -> Tuple[bool, str]:
    """The same check, blocking, on a loop of its own: ``(ok, detail)``.

    For code that has no loop to share (scripts, benchmarks, tests).
    """
    loop = Loop()
    outcome: List[Tuple[bool, str]] = []
    try:
        probe(loop, target, port, timeout_s, lambda ok, detail: outcome.append((ok, detail)))
        while not outcome:
            loop.run_once(timeout_s)
    finally:
        loop.close()
    return outcome[0]
