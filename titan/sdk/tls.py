"""TLS for the dialling side (SDK, CLI and workers).

    client_context(ca_file=None, cert_file=None, key_file=None)

verifies the master's certificate against ``ca_file`` (default: the system's
CAs) and its host name, and presents ``cert_file`` when the master asks for a
client certificate (mutual TLS).
"""
from __future__ import annotations

import ssl
from typing import Optional

from titan.errors import UsageError

__all__ = ["client_context"]


def client_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                   key_file: Optional[str] = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context; raise UsageError naming an unreadable file."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA file {ca_file!r}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the TLS client certificate {cert_file!r}: {exc}") from None
    return ctx
