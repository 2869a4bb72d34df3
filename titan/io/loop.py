"""One ``selectors`` event loop per process, and framed TITAN_PROTO connections.

The loop owns the role's sockets, timers and end-of-pass hooks, all on one
thread::

    select(timeout = next timer)  ->  readable / writable callbacks
                                  ->  due timers
                                  ->  pass hooks (flush every dirty connection)

A :class:`Connection` turns a non-blocking socket into frames in and frames
out.  Frames sent during a pass are buffered and written once at the end of
the pass, so a burst of replies costs one ``send``.  A malformed frame gets an
ERROR reply naming the problem, then that connection alone is closed.
"""
from __future__ import annotations

import errno
import heapq
import ipaddress
import itertools
import logging
import select
import selectors
import signal
import socket
import ssl
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from titan.errors import ProtocolError
from titan.wire.frames import DEFAULT_MAX_BODY_BYTES, Frame, FrameDecoder, Op, error_body, pack

__all__ = ["Loop", "Timer", "Connection", "Handler", "Listener", "RecvBuffer", "parse_address", "format_address",
           "is_loopback", "shut", "prepare_socket"]

logger = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024
FRAMES_PER_PASS = 64    # frames one connection gets handled per loop pass; the rest wait their turn

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# epoll: any bit but "in" (out, error, hang-up) makes an fd writable, any but "out" readable
_NOT_EPOLLIN = ~getattr(select, "EPOLLIN", 0)
_NOT_EPOLLOUT = ~getattr(select, "EPOLLOUT", 0)


class RecvBuffer:
    """One receive buffer, reused for every read.

    ``sock.recv(n)`` allocates ``n`` bytes per call and shrinks them to what
    arrived.  Past malloc's mmap threshold (128 KiB) that is an mmap, a page
    fault, an mremap and a munmap per read: about 13 us for a small message,
    against about 1.5 us for reading into this buffer and copying out what
    arrived.  Not thread-safe: one per loop, or one per lock holder.
    """

    def __init__(self, size: int) -> None:
        self._view = memoryview(bytearray(size))

    def recv(self, sock: socket.socket, flags: int = 0) -> bytes:
        """Like ``sock.recv(size, flags)``: b"" when the peer closed."""
        count = sock.recv_into(self._view, len(self._view), flags)   # the size given, for ssl sockets too
        return self._view[:count].tobytes()


def parse_address(text: str, default_port: int = 9090) -> Tuple[str, int]:
    """``"HOST:PORT"``, ``"HOST"`` or ``":PORT"`` -> ``(host, port)``."""
    text = text.strip()
    if text.startswith("["):                      # [::1]:9090
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} in address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9090")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def prepare_socket(sock: socket.socket) -> str:
    """Make an accepted or dialled socket ready for a loop: non-blocking, no Nagle delay.

    Returns the peer's address for logs ("?" if it is already gone).
    """
    try:
        peer = format_address(sock.getpeername())
    except OSError:
        peer = "?"
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return peer


def format_address(addr: Tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Timer:
    """A pending call; :meth:`cancel` stops it from running."""

    __slots__ = ("when", "callback", "cancelled", "loop")

    def __init__(self, when: float, callback: Callable[[], None], loop: Optional["Loop"] = None) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.loop = loop

    @property
    def done(self) -> bool:
        """It ran, or it was cancelled."""
        return self.cancelled or self.loop is None

    def cancel(self) -> None:
        """Stop it; what the callback refers to is let go now, not when it would have been due."""
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _nothing
        if self.loop is not None:
            self.loop._cancelled_one()


def _nothing() -> None:
    pass


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


class _EpollPoller:
    """``selectors``' register/modify/unregister/select over a bare epoll.

    The loop spends most of its passes here, so it skips the selectors
    module's key objects; readiness is reported with the same EVENT_READ /
    EVENT_WRITE masks (an error or hang-up reports both, as selectors does).
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._entries: Dict[int, Tuple[Any, int, Callable[[int], None]]] = {}

    # epoll bits for selectors' EVENT_READ (1), EVENT_WRITE (2) and both (3)
    _BITS = (0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT)

    def register(self, fileobj: Any, events: int, callback: Callable[[int], None]) -> None:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        if fd in self._entries:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._epoll.register(fd, self._BITS[events & 3])
        self._entries[fd] = (fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: Callable[[int], None]) -> None:
        fd = _fd(fileobj)
        self._epoll.modify(fd, self._BITS[events & 3])
        self._entries[fd] = (fileobj, events, callback)

    def unregister(self, fileobj: Any) -> None:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        if fd < 0:   # closed already: find it by identity
            fd = next((k for k, v in self._entries.items() if v[0] is fileobj), -1)
        if self._entries.pop(fd, None) is None:
            return
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def select(self, timeout: float) -> List[Tuple[Callable[[int], None], int]]:
        ready = []
        entries = self._entries
        for fd, bits in self._epoll.poll(timeout):
            entry = entries.get(fd)
            if entry is None:
                continue
            mask = (_WRITE if bits & _NOT_EPOLLIN else 0) | (_READ if bits & _NOT_EPOLLOUT else 0)
            ready.append((entry[2], mask & entry[1]))
        return ready

    def close(self) -> None:
        self._epoll.close()


class _SelectorPoller:
    """The portable poller: the selectors module, for systems without epoll."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, callback: Callable[[int], None]) -> None:
        self._selector.register(fileobj, events, callback)

    def modify(self, fileobj: Any, events: int, callback: Callable[[int], None]) -> None:
        self._selector.modify(fileobj, events, callback)

    def unregister(self, fileobj: Any) -> None:
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def select(self, timeout: float) -> List[Tuple[Callable[[int], None], int]]:
        return [(key.data, mask) for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


class Loop:
    """A selectors-style loop with timers and end-of-pass hooks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.selector = _EpollPoller() if hasattr(select, "epoll") else _SelectorPoller()
        # register(fileobj, events, callback), modify(...) and unregister(fileobj) are
        # the poller's own: no wrapper call per fd, per task.
        self.register: Callable[[Any, int, Callable[[int], None]], None] = self.selector.register
        self.modify: Callable[[Any, int, Callable[[int], None]], None] = self.selector.modify
        self.unregister: Callable[[Any], None] = self.selector.unregister
        self.clock = clock
        self._timers: List[Tuple[float, int, Timer]] = []
        self._cancelled = 0                     # cancelled timers still in the heap
        self._count = itertools.count()
        self._hooks: List[Callable[[], None]] = []
        self._dirty: "set[Connection]" = set()
        self._urgent: "list[Connection]" = []   # flushed first: frames on someone's critical path
        self._lazy: "set[Connection]" = set()     # frames that may wait for company (mark_lazy)
        self._soon: "set[Connection]" = set()     # frames that may wait a moment (mark_soon)
        self._behind: "list[Connection]" = []     # read more frames than one pass handles
        self._gather_s = 0.0
        self._saturated: Callable[[], bool] = lambda: False
        self.running = False
        self.recv_buffer = RecvBuffer(RECV_BYTES)   # the loop reads one socket at a time

    @property
    def replies_waiting(self) -> bool:
        """True while frames queued in this pass (neither urgent, lazy nor soon) wait for its end."""
        return bool(self._dirty)

    @property
    def frames_held(self) -> bool:
        """True while a connection has frames read but left for the next passes (FRAMES_PER_PASS)."""
        return bool(self._behind)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.clock() + max(0.0, delay_s), callback)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback, self)
        heapq.heappush(self._timers, (when, next(self._count), timer))
        return timer

    def _cancelled_one(self) -> None:
        """Drop cancelled timers once they are most of the heap (an hour-long timeout per
        finished task would otherwise stay for the hour)."""
        self._cancelled += 1
        if self._cancelled > 64 and 2 * self._cancelled > len(self._timers):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def gather_while(self, saturated: Callable[[], bool], seconds: float) -> None:
        """While ``saturated()`` holds, let events gather ``seconds`` before each pass.

        For a loop whose peers have work queued with them anyway: one pass
        then takes many events, and each costs a fraction of a pass.
        """
        self._saturated, self._gather_s = saturated, seconds

    def add_pass_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the end of every pass: after reads, timers and urgent
        writes, before the other writes (so an fsync there precedes the replies)."""
        self._hooks.append(hook)

    def change_events(self, fileobj: Any, old: int, new: int, callback: Callable[[int], None]) -> int:
        """Watch ``fileobj`` for ``new`` events instead of ``old`` (0: not watched); returns ``new``."""
        if new != old:
            if old and new:
                self.modify(fileobj, new, callback)
            elif new:
                self.register(fileobj, new, callback)
            else:
                self.unregister(fileobj)
        return new

    def mark_dirty(self, conn: "Connection", urgent: bool = False) -> None:
        if urgent:
            self._urgent.append(conn)
        else:
            self._dirty.add(conn)

    LAZY_S = 0.02

    def mark_lazy(self, conn: "Connection") -> None:
        """Flush ``conn`` within LAZY_S even if nothing else is written to it."""
        if not self._lazy:
            self.call_later(self.LAZY_S, self._flush_lazy)
        self._lazy.add(conn)

    # A busy worker's reports wait this long for company.  It has work of its own
    # queued then, so the master is in no hurry for them (its first report once
    # that queue is empty goes out at once, with the rest), and a client waiting
    # for one of those results gets it at most this much later.  Fewer, fuller
    # writes cost the worker, the master and the clients less: under load about
    # 10% less of Titan's CPU per `true` task than with 1 ms.
    SOON_S = 0.005

    def mark_soon(self, conn: "Connection") -> None:
        """Flush ``conn`` within SOON_S, or with its next write: long enough for more frames to join."""
        if not self._soon:
            self.call_later(self.SOON_S, self._flush_soon)
        self._soon.add(conn)

    def _flush_soon(self) -> None:
        soon, self._soon = self._soon, set()
        for conn in soon:
            conn.flush()

    def _flush_lazy(self) -> None:
        lazy, self._lazy = self._lazy, set()
        for conn in lazy:
            conn.flush()

    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        self.running = True
        while self.running:
            self.run_once()
        self._flush_soon()          # what was waiting for company goes out before the end
        self._flush_lazy()

    def run_until_signalled(self, on_signal: Optional[Callable[[], None]] = None) -> None:
        """Run until :meth:`stop`; SIGTERM and SIGINT call ``on_signal`` (default: stop).

        A wakeup fd makes a signal end the current ``select`` at once, so
        shutdown never waits for a timer.
        """
        rfd, wfd = socket.socketpair()
        rfd.setblocking(False)
        wfd.setblocking(False)
        old_fd = signal.set_wakeup_fd(wfd.fileno())
        self.register(rfd, selectors.EVENT_READ, lambda mask: rfd.recv(4096))
        handler = on_signal or self.stop
        old = {sig: signal.signal(sig, lambda *_: handler()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.run()
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, previous in old.items():
                signal.signal(sig, previous)
            self.unregister(rfd)
            rfd.close()
            wfd.close()

    def run_once(self, max_wait_s: float = 1.0) -> None:
        behind_count = len(self._behind)    # held back in earlier passes: they get their share of this one
        if self._gather_s and not behind_count and self._saturated():   # held frames: the work is here
            time.sleep(self._gather_s)
        timeout = max_wait_s
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - self.clock()))
        if behind_count or self._dirty or self._urgent:
            timeout = 0.0
        for callback, mask in self.selector.select(timeout):
            callback(mask)
        if behind_count:                # taken out only now: a pass cut short above keeps them all
            behind = self._behind[:behind_count]
            del self._behind[:behind_count]
            for conn in behind:         # (_handle keeps a handler's failure to its own connection)
                conn._handle_held()
        if self._timers:                # most passes have nothing to do here: no calls then
            self._run_timers()
        if self._urgent:
            self._flush_urgent()
        for hook in self._hooks:
            hook()
        if self._dirty or self._urgent:
            self.flush_dirty()

    def _flush_urgent(self) -> None:
        while self._urgent:
            self._urgent.pop(0).flush()

    def flush_dirty(self) -> None:
        """Write every connection's queued frames: urgent ones first.

        Urgent frames (a dispatch, a result: someone's critical path, and no
        promise of durability) are written before the pass hooks run, so
        before an fsync; the rest after them.  Writing to a local peer can
        hand it the CPU at once, so the frame that starts work goes first.
        """
        self._flush_urgent()
        while self._dirty:
            conn = self._dirty.pop()
            conn.flush()

    def _run_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            timer.loop = None               # done: a late cancel() has nothing to count
            if timer.cancelled:
                self._cancelled -= 1
            else:
                try:
                    timer.callback()
                except Exception:  # a timer's failure must not stop the loop
                    logger.exception("timer callback failed")

    def close(self) -> None:
        self.selector.close()


class Handler:
    """What a :class:`Connection` calls; roles subclass it per peer kind."""

    def on_frame(self, conn: "Connection", frame: Frame) -> None:
        raise NotImplementedError

    def on_close(self, conn: "Connection", reason: str) -> None:
        pass

    def on_drain(self, conn: "Connection") -> None:
        """The outbound buffer fell below the low-water mark."""


class Connection:
    """A framed, non-blocking socket owned by a :class:`Loop`."""

    def __init__(self, loop: Loop, sock: socket.socket, handler: Handler, *,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_out_bytes: int = 256 * 1024 * 1024, low_water_bytes: int = 512 * 1024) -> None:
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self.decoder = FrameDecoder(max_body_bytes=max_body_bytes)
        self.max_body_bytes = max_body_bytes
        self.max_out_bytes = max_out_bytes
        self.low_water_bytes = low_water_bytes
        self._out: List[bytes] = []
        self._out_bytes = 0
        self._events = selectors.EVENT_READ
        self._reading = True
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._handshaking = self._tls      # TLS: no frames move until the handshake is done
        self.closed = False
        self.close_reason = ""
        self.last_progress = loop.clock()
        self.opened_at = self.last_progress
        self.frame_started_at = 0.0     # when the partial frame now buffered began
        self._held: List[Frame] = []    # frames read but left for later passes (FRAMES_PER_PASS)
        self.state: Any = None          # the role's per-connection state
        self.peer = prepare_socket(sock)
        loop.register(sock, self._events, self._on_events)
        if self._handshaking:
            self._tls_handshake()     # a client sends its hello now; a server waits for one

    # ----- outbound ------------------------------------------------------
    @property
    def out_bytes(self) -> int:
        return self._out_bytes

    def send(self, opcode: int, req_id: int, body: object = None, flags: int = 0,
             urgent: bool = False, lazy: bool = False, soon: bool = False) -> None:
        """Queue one frame; it is written at the end of this loop pass (urgent ones first).

        A ``lazy`` frame waits for the connection's next write, or at most
        ``Loop.LAZY_S``: bookkeeping (an ACK, an OK nobody blocks on) rides
        along with work instead of costing a write of its own.  A ``soon``
        frame waits at most ``Loop.SOON_S``: a busy peer's reports, batched.
        """
        if self.closed:
            return
        data = pack(opcode, req_id, body, flags, max_body_bytes=self.max_body_bytes)
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > self.max_out_bytes:
            self.close(f"peer is not reading: more than {self.max_out_bytes} bytes queued")
            return
        if lazy:
            self.loop.mark_lazy(self)
        elif soon:
            self.loop.mark_soon(self)
        elif urgent:
            self.loop._urgent.append(self)      # Loop.mark_dirty, without a call per frame
        else:
            self.loop._dirty.add(self)

    def send_error(self, req_id: int, code: str, message: str) -> None:
        self.send(Op.ERROR, req_id, error_body(code, message))

    def flush(self) -> None:
        if self.closed or not self._out or self._handshaking:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            if self._held:      # the peer is gone, but what it sent is handled first; a read after it closes
                self._out, self._out_bytes = [], 0
                return
            self.close(f"send failed: {exc}")
            return
        rest = data[sent:]
        self._out = [rest] if rest else []
        was = self._out_bytes
        self._out_bytes = len(rest)
        # _want_write(bool(rest)), without its calls when the events stay the same (nearly always)
        events = (_READ if self._reading else 0) | (_WRITE if rest else 0)
        if events != self._events:
            self._set_events(events)
        if was > self.low_water_bytes >= self._out_bytes:
            self.handler.on_drain(self)

    def _want_write(self, want: bool) -> None:
        self._set_events((_READ if self._reading else 0) | (_WRITE if want else 0))

    def _set_events(self, events: int) -> None:
        if not self.closed:
            self._events = self.loop.change_events(self.sock, self._events, events, self._on_events)

    def pause_reading(self) -> None:
        self._reading = False
        self._want_write(bool(self._out))

    def resume_reading(self) -> None:
        self._reading = True
        self._want_write(bool(self._out))

    # ----- inbound -------------------------------------------------------
    def _on_events(self, mask: int) -> None:
        if self._handshaking:
            self._tls_handshake()
            return
        if mask & _WRITE:
            self.flush()
        if mask & _READ and not self.closed and not self._held:   # held frames go first
            self._read()

    def _tls_handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            logger.warning("TLS handshake with %s failed: %s", self.peer, exc)
            self.close(f"TLS handshake failed: {exc}")
            return
        self._handshaking = False
        self._want_write(bool(self._out))
        self.flush()

    def _with_tls_pending(self, data: bytes) -> bytes:
        """``data`` and the decrypted bytes ssl already holds, which never wake the selector."""
        pending = self.sock.pending()  # type: ignore[attr-defined]
        while pending:
            data += self.sock.recv(pending)
            pending = self.sock.pending()  # type: ignore[attr-defined]
        return data

    def _read(self) -> None:
        decoder = self.decoder
        try:
            data = self.loop.recv_buffer.recv(self.sock)
            if self._tls and data:
                data = self._with_tls_pending(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            self.close(f"receive failed: {exc}")
            return
        if not data:
            reason = "peer closed the connection"
            if decoder.mid_frame:
                reason += f" in the middle of a frame ({decoder.buffered_bytes} bytes buffered)"
            self.close(reason)
            return
        now = self.last_progress = self.loop.clock()
        was_mid = decoder.mid_frame
        try:
            frames = decoder.feed(data)
        except ProtocolError as exc:
            self.fail(exc.req_id, exc.code, exc.message)
            return
        if decoder.mid_frame and (frames or not was_mid):
            self.frame_started_at = now
        self._handle(frames)

    def _handle_held(self) -> None:
        if not self.closed:
            frames, self._held = self._held, []
            self._handle(frames)

    def _handle(self, frames: List[Frame]) -> None:
        """Hand ``frames`` to the handler, at most FRAMES_PER_PASS of them this pass.

        A peer that sends many frames at once (a thousand submissions) so
        cannot hold up everyone else for the whole batch.
        """
        if len(frames) > FRAMES_PER_PASS:
            self._held = frames[FRAMES_PER_PASS:]
            frames = frames[:FRAMES_PER_PASS]
            self.loop._behind.append(self)
        for frame in frames:
            if self.closed:
                return
            try:
                self.handler.on_frame(self, frame)
            except Exception as exc:  # one bad handler call closes only this peer
                logger.exception("error handling %s from %s", _op_name(frame.opcode), self.peer)
                self.fail(frame.req_id, "internal", f"internal error: {exc}")
                return

    def fail(self, req_id: int, code: str, message: str) -> None:
        """Send an ERROR frame, flush what we can, and close."""
        logger.warning("closing connection from %s: %s", self.peer, message)
        self.send_error(req_id, code, message)
        self.flush()
        self.close(message)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._held = []
        shut(self, reason)


def shut(conn: Any, reason: str) -> None:
    """Take ``conn.sock`` out of its loop, close it, and tell ``conn.handler``.

    Shared by every connection kind (TITAN_PROTO here, RESP in titan.io.respconn);
    a failing ``on_close`` is logged, never raised into the loop.
    """
    conn.loop.unregister(conn.sock)
    conn._events = 0
    try:
        conn.sock.close()
    except OSError:
        pass
    try:
        conn.handler.on_close(conn, reason)
    except Exception:
        logger.exception("on_close handler failed for %s", conn.peer)


def _op_name(opcode: int) -> str:
    try:
        return Op(opcode).name
    except ValueError:
        return f"opcode 0x{opcode:02x}"


class Listener:
    """Accepts connections and wraps each in a :class:`Connection`."""

    def __init__(self, loop: Loop, sock: socket.socket,
                 on_accept: Callable[[socket.socket], None]) -> None:
        self.loop = loop
        self.sock = sock
        self.on_accept = on_accept
        sock.setblocking(False)
        loop.register(sock, selectors.EVENT_READ, self._on_ready)

    @classmethod
    def bind(cls, loop: Loop, addr: Tuple[str, int], on_accept: Callable[[socket.socket], None],
             backlog: int = 512) -> "Listener":
        infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(infos[0][4])
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return cls(loop, sock, on_accept)

    @property
    def address(self) -> Tuple[str, int]:
        name = self.sock.getsockname()
        return name[0], name[1]

    def _on_ready(self, mask: int) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.error("cannot accept a connection: %s", exc)
                    return
                raise
            self.on_accept(sock)

    def close(self) -> None:
        self.loop.unregister(self.sock)
        self.sock.close()
