"""Tests for titan.wire.auth: HMAC proofs bind token, nonces and identity."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from titan.errors import AuthError
from titan.wire.auth import MIN_NONCE_BYTES, NONCE_BYTES, client_proof, new_nonce, proofs_equal, server_proof

SERVER_NONCE = bytes(range(32))
CLIENT_NONCE = bytes(range(32, 64))


def proof(token: str = "s3cret", server_nonce: bytes = SERVER_NONCE, client_nonce: bytes = CLIENT_NONCE,
          role: str = "worker", name: str = "w1") -> bytes:
    return client_proof(token, server_nonce=server_nonce, client_nonce=client_nonce, role=role, name=name)


def test_nonces_are_fresh_and_sized() -> None:
    a, b = new_nonce(), new_nonce()
    assert len(a) == len(b) == NONCE_BYTES == 32 and a != b


def test_client_proof_matches_the_documented_construction() -> None:
    message = b"titan-client\0" + SERVER_NONCE + CLIENT_NONCE + b"worker\0" + "wörker-1".encode()
    want = hmac.new(b"s3cret", message, hashlib.sha256).digest()
    assert proof(name="wörker-1") == want


def test_server_proof_matches_the_documented_construction() -> None:
    want = hmac.new(b"s3cret", b"titan-server\0" + CLIENT_NONCE + SERVER_NONCE, hashlib.sha256).digest()
    assert server_proof("s3cret", server_nonce=SERVER_NONCE, client_nonce=CLIENT_NONCE) == want


def test_client_proof_depends_on_every_input() -> None:
    base = proof()
    variants = [proof(token="other"), proof(server_nonce=new_nonce()), proof(client_nonce=new_nonce()),
                proof(role="client"), proof(name="w2")]
    assert all(len(v) == 32 for v in variants)
    assert len({base, *variants}) == len(variants) + 1


def test_server_and_client_proofs_differ() -> None:
    assert server_proof("s3cret", server_nonce=SERVER_NONCE, client_nonce=CLIENT_NONCE) != proof()
    swapped = server_proof("s3cret", server_nonce=CLIENT_NONCE, client_nonce=SERVER_NONCE)
    assert swapped != server_proof("s3cret", server_nonce=SERVER_NONCE, client_nonce=CLIENT_NONCE)


def test_recorded_proof_does_not_verify_against_a_new_nonce() -> None:
    recorded = proof(server_nonce=SERVER_NONCE)
    fresh = new_nonce()
    expected = proof(server_nonce=fresh)
    assert not proofs_equal(recorded, expected)
    recorded_server = server_proof("s3cret", server_nonce=SERVER_NONCE, client_nonce=CLIENT_NONCE)
    assert not proofs_equal(
        recorded_server, server_proof("s3cret", server_nonce=SERVER_NONCE, client_nonce=new_nonce()))


def test_proofs_equal() -> None:
    assert proofs_equal(proof(), proof())
    assert not proofs_equal(proof(), proof(token="x"))
    assert not proofs_equal(proof(), proof()[:-1])
    assert not proofs_equal(proof(), "not bytes")  # type: ignore[arg-type]
    assert not proofs_equal(None, proof())  # type: ignore[arg-type]


@pytest.mark.parametrize("nonce", [b"", b"x" * 15])
def test_short_nonce_is_an_auth_error(nonce: bytes) -> None:
    with pytest.raises(AuthError, match=f"server nonce must be at least 16 bytes, got {len(nonce)}"):
        proof(server_nonce=nonce)
    with pytest.raises(AuthError, match="client nonce"):
        server_proof("t", server_nonce=SERVER_NONCE, client_nonce=nonce)


def test_non_bytes_nonce_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="client nonce must be bytes, got str"):
        proof(client_nonce="x" * 32)  # type: ignore[arg-type]


def test_nonces_of_other_lengths_are_accepted() -> None:
    assert MIN_NONCE_BYTES == 16
    assert proof(client_nonce=b"c" * 16) != proof(client_nonce=b"c" * 64)


def test_role_with_nul_is_rejected() -> None:
    with pytest.raises(AuthError, match="role 'a\\\\x00b'"):
        proof(role="a\0b")
