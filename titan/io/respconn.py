"""A non-blocking RESP connection on the :class:`~titan.io.loop.Loop`.

What this module owns: one client socket of ``titan store``: bytes in ->
commands (via the pure ``RespParser``) -> the handler; replies out, staged
until the end of the loop pass so they leave only after the AOF is safe::

    readable -> parser.feed -> handler.on_commands(conn, [args, ...]) -> conn.reply(...)
    pass hook (the role's): aof.flush() -> conn.commit(ok)   staged -> outbound
    end of pass (loop.flush_dirty): one send() per connection

Limits: a connection whose outbound queue passes ``pause_out_bytes`` stops
being read until the client catches up (backpressure for pipelines); one
whose queue passes ``max_out_bytes`` (a subscriber that does not read) is
closed.  Malformed RESP gets ``-ERR Protocol error: ...`` and closes that
connection alone.
"""
from __future__ import annotations

import logging
import selectors
import socket
from typing import Any, List, Optional

from titan.io.loop import Loop, prepare_socket, shut
from titan.store.resp import RespError, RespParser

__all__ = ["RespHandler", "RespConnection"]

logger = logging.getLogger(__name__)

SEND_BYTES = 4 * 1024 * 1024


class RespHandler:
    """What a :class:`RespConnection` calls; the store role implements it."""

    def on_commands(self, conn: "RespConnection", commands: List[List[bytes]]) -> None:
        raise NotImplementedError

    def on_close(self, conn: "RespConnection", reason: str) -> None:
        pass


class RespConnection:
    """One client: parsed commands in, staged replies out."""

    def __init__(self, loop: Loop, sock: socket.socket, handler: RespHandler, parser: RespParser,
                 staged_set: "set[RespConnection]", *, max_out_bytes: int = 64 * 1024 * 1024,
                 pause_out_bytes: int = 4 * 1024 * 1024) -> None:
        self.loop = loop
        self.staged_set = staged_set                # connections with staged replies, for the role's hook
        self.sock = sock
        self.handler = handler
        self.parser = parser
        self.max_out_bytes = max_out_bytes
        self.pause_out_bytes = pause_out_bytes
        self._staged: List[bytes] = []             # replies of this pass, not yet safe to send
        self._durable: List[int] = []              # indexes in _staged that wait for the AOF
        self._out: List[bytes] = []
        self._out_offset = 0                       # bytes of _out[0] already sent
        self._out_bytes = 0
        self._events = selectors.EVENT_READ
        self._reading = True
        self._close_after_flush = ""
        self.closed = False
        self.close_reason = ""
        self.state: Any = None                     # the role's per-client state
        self.peer = prepare_socket(sock)
        loop.register(sock, self._events, self._on_events)

    # ----- outbound ------------------------------------------------------
    @property
    def out_bytes(self) -> int:
        return self._out_bytes

    def reply(self, data: bytes, *, durable: bool = False) -> None:
        """Stage ``data``; ``durable`` replies are swapped for an error if the AOF flush fails."""
        if self.closed:
            return
        if not self._staged:
            self.staged_set.add(self)
        if durable:
            self._durable.append(len(self._staged))
        self._staged.append(data)

    def commit(self, failure: Optional[bytes] = None) -> None:
        """Move staged replies to the outbound queue (called once the AOF flush is done).

        ``failure``, when given, replaces every durable reply of this pass.
        """
        if failure is not None:
            for index in self._durable:
                self._staged[index] = failure
        self._durable.clear()
        staged, self._staged = self._staged, []
        if self.closed or not staged:
            return
        data = b"".join(staged)
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > self.max_out_bytes:
            self.close(f"client is not reading: more than {self.max_out_bytes} bytes queued")
            return
        if self._out_bytes > self.pause_out_bytes and self._reading:
            self._reading = False
        self.loop.mark_dirty(self)  # type: ignore[arg-type]

    def _coalesce(self) -> None:
        """Join small queued pieces so one send() carries up to SEND_BYTES; big ones go as they are."""
        out = self._out
        if len(out) < 2 or len(out[0]) - self._out_offset >= SEND_BYTES:
            return
        count, size = 0, -self._out_offset
        while count < len(out) and size < SEND_BYTES:
            size += len(out[count])
            count += 1
        if count > 1:
            out[:count] = [b"".join(out[:count])]

    def close_after_flush(self, reason: str) -> None:
        """Close once everything queued so far has been sent (QUIT, protocol errors)."""
        self._close_after_flush = reason
        self._reading = False

    @property
    def closing(self) -> bool:
        """Closed, or closing once its replies are out: no further command is run."""
        return self.closed or bool(self._close_after_flush)

    def flush(self) -> None:
        if self.closed:
            return
        if self._out:
            self._coalesce()
            head = self._out[0]
            try:
                sent = self.sock.send(memoryview(head)[self._out_offset:])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.close(f"send failed: {exc}")
                return
            self._out_offset += sent
            self._out_bytes -= sent
            if self._out_offset == len(head):
                self._out.pop(0)
                self._out_offset = 0
        if not self._out and self._close_after_flush:
            self.close(self._close_after_flush)
            return
        if not self._reading and not self._close_after_flush and self._out_bytes <= self.pause_out_bytes // 4:
            self._reading = True
        self._update_events()

    def _update_events(self) -> None:
        events = (selectors.EVENT_READ if self._reading else 0) | (selectors.EVENT_WRITE if self._out else 0)
        if not self.closed:
            self._events = self.loop.change_events(self.sock, self._events, events, self._on_events)

    # ----- inbound -------------------------------------------------------
    def _on_events(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if mask & selectors.EVENT_READ and self._reading and not self.closed:
            self._read()

    def _read(self) -> None:
        try:
            data = self.loop.recv_buffer.recv(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"receive failed: {exc}")
            return
        if not data:
            self.close("client closed the connection")
            return
        try:
            commands = self.parser.feed(data)
        except RespError as exc:
            self.protocol_error(str(exc))
            return
        if commands:
            try:
                self.handler.on_commands(self, commands)
            except Exception as exc:  # one bad command closes only this client
                logger.exception("error handling a command from %s", self.peer)
                self.reply(b"-ERR internal error: " + _one_line(str(exc)) + b"\r\n")
                self.close_after_flush(f"internal error: {exc}")

    def protocol_error(self, message: str) -> None:
        """Reply ``-ERR Protocol error: ...`` and close after it is sent."""
        logger.info("closing connection from %s: protocol error: %s", self.peer, message)
        self.reply(b"-ERR Protocol error: " + _one_line(message) + b"\r\n")
        self.close_after_flush(f"protocol error: {message}")
        self._update_events()

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._staged.clear()
        self._out.clear()
        shut(self, reason)


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
