"""TLS end to end: an encrypted cluster, mutual TLS, and peers that get it wrong.

Certificates are made for each test run with the `openssl` command (the
tests skip where it is missing): a CA, a server certificate for 127.0.0.1,
a client certificate signed by the same CA, and a second, unrelated CA.
"""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from conftest import TitanProcs, run_cli, wait_until
from titan.errors import ConnectionLost
from titan.sdk.client import Client
from titan.sdk.tls import client_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=cwd)


def _signed(name: str, ca: str, cwd: Path, san: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("certs")
    _ca("ca", d)
    _ca("other-ca", d)
    _signed("server", "ca", d, "IP:127.0.0.1,DNS:localhost")
    _signed("client", "ca", d, "DNS:titan-client")
    return {n: str(d / n) for n in ("ca", "other-ca", "server", "client")}


def test_a_tls_cluster_runs_tasks_and_the_cli_reaches_it(titan_procs: TitanProcs, certs: Dict[str, str]) -> None:
    # Given a master serving TLS and a worker that dials it with the CA
    master = titan_procs.start_master("--tls-cert", certs["server"] + ".pem", "--tls-key", certs["server"] + ".key")
    titan_procs.start_worker(master.address, "w1", "--tls-ca", certs["ca"] + ".pem")
    ctx = client_context(certs["ca"] + ".pem")
    wait_until(lambda: _ready(master.address, ctx), 20, "the TLS worker to register",
               ignore=(ConnectionLost, OSError))
    # When a client submits over TLS
    with Client(master.address, token="", tls=ctx) as c:
        result = c.submit("echo over-tls").result(timeout=30)
    # Then the task runs on the worker
    assert (result.state, result.output, result.node) == ("SUCCEEDED", "over-tls\n", "w1")
    # And the CLI does the same with --tls-ca
    res = run_cli("--master", master.address, "--tls-ca", certs["ca"] + ".pem", "run", "--", "echo", "cli")
    assert (res.code, res.stdout) == (0, "cli\n"), res


def _ready(address: str, ctx: ssl.SSLContext) -> bool:
    with Client(address, token="", tls=ctx, timeout=2.0) as c:
        return any(n["state"] == "ready" for n in c.nodes())


def test_plain_tcp_and_untrusted_peers_are_refused_and_the_master_keeps_serving(
        titan_procs: TitanProcs, certs: Dict[str, str]) -> None:
    # Given a TLS master
    master = titan_procs.start_master("--tls-cert", certs["server"] + ".pem", "--tls-key", certs["server"] + ".key")
    good = client_context(certs["ca"] + ".pem")
    # When a client speaks plain TCP to it, it gets a clear connection error
    with pytest.raises(ConnectionLost):
        Client(master.address, token="", timeout=3.0)
    # When a client trusts a different CA, verification fails
    with pytest.raises(ConnectionLost, match="TLS handshake"):
        Client(master.address, token="", tls=client_context(certs["other-ca"] + ".pem"), timeout=3.0)
    # When raw garbage arrives instead of a TLS hello, only that connection suffers
    host, _, port = master.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as raw:
        raw.sendall(b"\x00" * 64)
        raw.settimeout(5)
        try:
            assert raw.recv(4096) is not None
        except OSError:
            pass
    # Then a correct client is still served
    with Client(master.address, token="", tls=good) as c:
        assert c.ping() >= 0


def test_mutual_tls_requires_a_client_certificate_signed_by_the_ca(
        titan_procs: TitanProcs, certs: Dict[str, str]) -> None:
    # Given a master that requires client certificates signed by the CA
    master = titan_procs.start_master("--tls-cert", certs["server"] + ".pem", "--tls-key", certs["server"] + ".key",
                                      "--tls-ca", certs["ca"] + ".pem")
    # When a client presents no certificate, it is refused
    with pytest.raises(ConnectionLost):
        with Client(master.address, token="", tls=client_context(certs["ca"] + ".pem"), timeout=3.0) as c:
            c.ping()
    # When it presents one signed by the CA, it is served
    ctx = client_context(certs["ca"] + ".pem", certs["client"] + ".pem", certs["client"] + ".key")
    with Client(master.address, token="", tls=ctx) as c:
        assert c.ping() >= 0
    # And a worker with a client certificate registers and runs work
    titan_procs.start_worker(master.address, "w1", "--tls-ca", certs["ca"] + ".pem",
                             "--tls-cert", certs["client"] + ".pem", "--tls-key", certs["client"] + ".key")
    wait_until(lambda: _ready(master.address, ctx), 20, "the mTLS worker to register",
               ignore=(ConnectionLost, OSError))
    with Client(master.address, token="", tls=ctx) as c:
        assert c.submit("echo mutual").result(timeout=30).output == "mutual\n"


def test_a_tls_master_without_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    res = run_cli("master", "--bind", "127.0.0.1:0", "--data", str(tmp_path / "m"), "--tls")
    assert res.code == 2 and "--tls-cert" in res.stderr, res


def test_child_workers_of_an_mtls_worker_dial_with_its_certificates(titan_procs: TitanProcs,
                                                                    certs: Dict[str, str]) -> None:
    master = titan_procs.start_master("--tls-cert", certs["server"] + ".pem", "--tls-key", certs["server"] + ".key",
                                      "--tls-ca", certs["ca"] + ".pem", "--scale-after", "0.3")
    titan_procs.start_worker(master.address, "p1", "--tls-ca", certs["ca"] + ".pem",
                             "--tls-cert", certs["client"] + ".pem", "--tls-key", certs["client"] + ".key",
                             "--max-children", "1", "--idle-timeout", "1", slots=1)
    ctx = client_context(certs["ca"] + ".pem", certs["client"] + ".pem", certs["client"] + ".key")
    wait_until(lambda: _ready(master.address, ctx), 20, "p1 to register", ignore=(ConnectionLost, OSError))
    with Client(master.address, token="", tls=ctx) as c:
        tasks = [c.submit("sleep 0.5") for _ in range(6)]
        assert {t.result(timeout=60).node for t in tasks} == {"p1", "p1.1"}
