"""The HELLO handshake as two small pure state machines, one per side.

    client                                  server
      HELLO {proto, role, name, nonce, ...} ->
                                            <- WELCOME {name, proto}            (no token)
                                            <- CHALLENGE {nonce}                (token set)
      AUTH {proof}                          ->
                                            <- WELCOME {name, proto, proof}     (or ERROR auth_failed)

Neither side touches a socket: each is fed frames and returns the frames to
send.  The token never crosses the wire; both nonces are fresh per
connection, so a recorded handshake cannot be replayed.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from titan.errors import AuthError, ProtocolError
from titan.wire import auth
from titan.wire.frames import Frame, Op

__all__ = ["PROTO", "ROLES", "ClientHandshake", "ServerHandshake"]

PROTO = 1
ROLES = ("client", "worker")

Out = List[Tuple[int, Dict[str, Any]]]


class ClientHandshake:
    """The dialling side: builds HELLO, answers CHALLENGE, checks WELCOME."""

    def __init__(self, *, role: str, name: str, token: Optional[str],
                 extra: Optional[Dict[str, Any]] = None) -> None:
        self.role = role
        self.name = name
        self.token = token or None
        self.extra = dict(extra or {})
        self.nonce = auth.new_nonce()
        self.server_nonce = b""
        self.done = False
        self.welcome: Dict[str, Any] = {}

    def hello(self) -> Dict[str, Any]:
        body = dict(self.extra)
        body.update(proto=PROTO, role=self.role, name=self.name, nonce=self.nonce)
        return body

    def on_frame(self, frame: Frame) -> Out:
        """Feed a frame from the server; return frames to send. Raises AuthError."""
        body = frame.body if isinstance(frame.body, dict) else {}
        if frame.opcode == Op.ERROR:
            raise AuthError(f"the master refused the connection: {body.get('message', body)}")
        if frame.opcode == Op.CHALLENGE:
            return self._answer(body)
        if frame.opcode == Op.WELCOME:
            self._check_welcome(body)
            return []
        raise AuthError(f"unexpected opcode 0x{frame.opcode:02x} during the handshake")

    def _answer(self, body: Dict[str, Any]) -> Out:
        if self.token is None:
            raise AuthError("the master requires a cluster token: set TITAN_TOKEN or pass --token")
        nonce = body.get("nonce")
        if not isinstance(nonce, bytes) or len(nonce) < 16:
            raise AuthError("the master sent a malformed challenge")
        self.server_nonce = nonce
        proof = auth.client_proof(self.token, server_nonce=nonce, client_nonce=self.nonce,
                                  role=self.role, name=self.name)
        return [(Op.AUTH, {"proof": proof})]

    def _check_welcome(self, body: Dict[str, Any]) -> None:
        if self.server_nonce:
            expected = auth.server_proof(self.token or "", server_nonce=self.server_nonce,
                                         client_nonce=self.nonce)
            got = body.get("proof")
            if not isinstance(got, bytes) or not auth.proofs_equal(expected, got):
                raise AuthError("the master could not prove it knows the cluster token")
        self.done = True
        self.welcome = body


class ServerHandshake:
    """The listening side: checks HELLO, challenges, verifies AUTH."""

    def __init__(self, *, name: str, token: Optional[str], roles: Tuple[str, ...] = ROLES,
                 features: Tuple[str, ...] = ()) -> None:
        self.name = name
        self.token = token or None
        self.roles = roles
        self.features = features    # named in WELCOME: what this server accepts beyond version 1's first form
        self.nonce = b""
        self.hello: Dict[str, Any] = {}
        self.done = False

    def on_frame(self, frame: Frame) -> Out:
        """Feed a frame from the client; return frames to send.

        Raises ProtocolError (code ``bad_hello``, ``bad_proto``,
        ``auth_failed``) when the peer must be refused.
        """
        body = frame.body if isinstance(frame.body, dict) else {}
        if not self.hello:
            return self._on_hello(frame, body)
        if frame.opcode != Op.AUTH or not self.nonce:
            raise ProtocolError("auth_failed", "expected AUTH with a proof", req_id=frame.req_id)
        return self._on_auth(frame, body)

    def _on_hello(self, frame: Frame, body: Dict[str, Any]) -> Out:
        if frame.opcode != Op.HELLO:
            raise ProtocolError("bad_hello", f"the first frame must be HELLO, not opcode 0x{frame.opcode:02x}",
                                req_id=frame.req_id)
        proto, role, name = body.get("proto"), body.get("role"), body.get("name")
        if proto != PROTO:
            raise ProtocolError("bad_proto", f"protocol version {proto!r} is not supported (this master speaks {PROTO})",
                                req_id=frame.req_id)
        if role not in self.roles:
            raise ProtocolError("bad_hello", f"unknown role {role!r}; expected one of {', '.join(self.roles)}",
                                req_id=frame.req_id)
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ProtocolError("bad_hello", f"bad peer name {name!r}", req_id=frame.req_id)
        nonce = body.get("nonce")
        if self.token is not None and (not isinstance(nonce, bytes) or len(nonce) < 16):
            raise ProtocolError("bad_hello", "HELLO needs a nonce of at least 16 bytes", req_id=frame.req_id)
        self.hello = body
        if self.token is None:
            self.done = True
            return [(Op.WELCOME, self._welcome())]
        self.nonce = auth.new_nonce()
        return [(Op.CHALLENGE, {"nonce": self.nonce})]

    def _on_auth(self, frame: Frame, body: Dict[str, Any]) -> Out:
        assert self.token is not None
        expected = auth.client_proof(self.token, server_nonce=self.nonce, client_nonce=self.hello["nonce"],
                                     role=self.hello["role"], name=self.hello["name"])
        got = body.get("proof")
        if not isinstance(got, bytes) or not auth.proofs_equal(expected, got):
            raise ProtocolError("auth_failed", "authentication failed: wrong cluster token", req_id=frame.req_id)
        self.done = True
        proof = auth.server_proof(self.token, server_nonce=self.nonce, client_nonce=self.hello["nonce"])
        return [(Op.WELCOME, dict(self._welcome(), proof=proof))]

    def _welcome(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"name": self.name, "proto": PROTO}
        if self.features:
            body["features"] = list(self.features)
        return body
