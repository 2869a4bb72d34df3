"""Titan's error hierarchy: one root, one subclass per kind of failure.

Every error a user can see derives from :class:`TitanError`, so callers can
catch one type.  Messages say what was wrong, where it came from and, when the
fix is obvious, how to fix it.
"""
from __future__ import annotations

__all__ = [
    "TitanError",
    "ProtocolError",
    "CodecError",
    "AuthError",
    "ConnectionLost",
    "RemoteError",
    "UnknownTask",
    "UnknownJob",
    "InvalidTransition",
    "UsageError",
]


class TitanError(Exception):
    """Root of every error Titan raises on purpose."""


class ProtocolError(TitanError):
    """Raised when bytes from a peer do not form a valid TITAN_PROTO frame.

    ``code`` is a short machine-readable tag (``frame_too_large``,
    ``bad_version``, ``bad_body`` ...); ``req_id`` is the request id of the
    offending frame when the header could be read, else 0.
    """

    def __init__(self, code: str, message: str, *, req_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id


class CodecError(ProtocolError):
    """Raised when a frame body cannot be encoded or decoded."""

    def __init__(self, message: str, *, req_id: int = 0) -> None:
        super().__init__("bad_body", message, req_id=req_id)


class AuthError(TitanError):
    """Raised when the handshake fails: wrong or missing token, bad proof."""


class ConnectionLost(TitanError):
    """Raised by the SDK when the connection to the master closes or cannot be made."""


class RemoteError(TitanError):
    """Raised by the SDK when the master answers a request with an ERROR frame.

    ``code`` is the master's error code (``unknown_task``, ``bad_request`` ...).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownTask(RemoteError):
    """Raised when a task id names no task the master knows."""


class UnknownJob(RemoteError):
    """Raised when a job name names no job the master has registered (``remove_job``)."""


class InvalidTransition(TitanError):
    """Raised when a state machine is asked for a move its table forbids."""


class UsageError(TitanError):
    """Raised for bad user input to the CLI or SDK (bad flag, empty command)."""
