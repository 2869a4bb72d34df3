"""HMAC-SHA256 challenge-response proofs for the connection handshake.

This module owns the cryptographic half of the handshake; the roles own the
frames.  It is pure apart from ``os.urandom``.  The flow (see
``docs/protocol.md``)::

    client                                   server (with a token)
    HELLO {proto, role, name, nonce=Nc}  -->
                                         <-- CHALLENGE {nonce=Ns}
    AUTH {proof=client_proof(Ns, Nc)}    -->
                                         <-- WELCOME {name, proto, proof=server_proof(Ns, Nc)}
                                             or ERROR {code: "auth_failed"} + close

The token itself never crosses the wire.  Both proofs cover both nonces, so
a recorded handshake is useless against a fresh nonce, and the client checks
the server's proof, so authentication is mutual.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from titan.errors import AuthError

__all__ = [
    "NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "new_nonce",
    "client_proof",
    "server_proof",
    "proofs_equal",
]

NONCE_BYTES = 32  # what new_nonce() makes
MIN_NONCE_BYTES = 16  # the least a proof accepts from a peer

_CLIENT_LABEL = b"titan-client\0"
_SERVER_LABEL = b"titan-server\0"


def new_nonce() -> bytes:
    """A fresh random nonce of :data:`NONCE_BYTES` bytes."""
    return os.urandom(NONCE_BYTES)


def client_proof(
    token: str, *, server_nonce: bytes, client_nonce: bytes, role: str, name: str
) -> bytes:
    """The client's proof that it knows ``token``, bound to both nonces and its identity.

    HMAC-SHA256(token, "titan-client\\0" + server_nonce + client_nonce + role + "\\0" + name).
    Raises :class:`AuthError` if a nonce is not bytes of at least
    MIN_NONCE_BYTES (too easy to guess) or ``role`` contains NUL (which would
    make the role/name split ambiguous).
    """
    _check_nonce("server nonce", server_nonce)
    _check_nonce("client nonce", client_nonce)
    if "\0" in role:
        raise AuthError(f"role {role!r} contains a NUL character")
    message = b"".join(
        (_CLIENT_LABEL, server_nonce, client_nonce, role.encode("utf-8"), b"\0", name.encode("utf-8"))
    )
    return _hmac(token, message)


def server_proof(token: str, *, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The server's proof that it knows ``token``, bound to both nonces.

    HMAC-SHA256(token, "titan-server\\0" + client_nonce + server_nonce).
    Raises :class:`AuthError` if a nonce is not bytes of at least MIN_NONCE_BYTES.
    """
    _check_nonce("server nonce", server_nonce)
    _check_nonce("client nonce", client_nonce)
    return _hmac(token, b"".join((_SERVER_LABEL, client_nonce, server_nonce)))


def proofs_equal(a: bytes, b: bytes) -> bool:
    """Compare two proofs in constant time.

    Returns False rather than raising when either side is not bytes, since a
    proof taken from a peer's frame body may be any decoded value.
    """
    if not isinstance(a, (bytes, bytearray)) or not isinstance(b, (bytes, bytearray)):
        return False
    return hmac.compare_digest(a, b)


def _hmac(token: str, message: bytes) -> bytes:
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).digest()


def _check_nonce(name: str, nonce: bytes) -> None:
    if not isinstance(nonce, (bytes, bytearray)):
        raise AuthError(f"{name} must be bytes, got {type(nonce).__name__}")
    if len(nonce) < MIN_NONCE_BYTES:
        raise AuthError(f"{name} must be at least {MIN_NONCE_BYTES} bytes, got {len(nonce)}")
