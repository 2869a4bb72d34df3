"""TLS for the listening side: a server context with optional client certificates.

The master wraps each accepted socket with this context (the handshake runs
inside the event loop, see :class:`titan.io.loop.Connection`).  When a CA
file for clients is given, every peer must present a certificate it signed
(mutual TLS).  Clients build their side with :mod:`titan.sdk.tls`.
"""
from __future__ import annotations

import ssl
from typing import Optional

from titan.errors import UsageError

__all__ = ["server_context"]


def server_context(cert_file: str, key_file: Optional[str] = None,
                   client_ca_file: Optional[str] = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context; raise UsageError naming an unreadable file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert_file!r} / key {key_file!r}: {exc}") from None
    if client_ca_file:
        try:
            ctx.load_verify_locations(client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the client CA file {client_ca_file!r}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
