"""Hostile and broken input against a real master, over raw sockets.

One master (``--frame-timeout 1 --handshake-timeout 2``) and one worker serve
the whole module.  Each test sends one kind of bad input, reads the master's
ERROR frames with the real :class:`FrameDecoder`, checks the error ``code``
and that the message names the problem, and then checks that the master
still serves a normal SDK client whose task runs on the worker.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import Raw, StandaloneMaster, TitanProcs, register_logs, run_cli
from titan.errors import RemoteError, UnknownTask, UsageError
from titan.sdk.client import Client
from titan.wire.frames import HEADER, PROTOCOL_VERSION, Op, pack
from titan.wire.handshake import ClientHandshake

FRAME_TIMEOUT_S = 1.0
HANDSHAKE_TIMEOUT_S = 2.0


@dataclass
class Served:
    procs: TitanProcs
    master: StandaloneMaster
    bystander: Client           # connected before any bad input, and kept open throughout
    worker_address: str         # where the master sees the worker's connection come from


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    procs = TitanProcs(tmp_path_factory.mktemp("bad-input"))
    register_logs(request.node, procs.base_dir)
    try:
        master = procs.start_master("--frame-timeout", f"{FRAME_TIMEOUT_S:g}",
                                    "--handshake-timeout", f"{HANDSHAKE_TIMEOUT_S:g}")
        procs.start_worker(master.address, "w1", slots=2)
        procs.wait_ready(master.address, ["w1"])
        with Client(master.address, token="", timeout=5) as bystander:
            yield Served(procs, master, bystander, _address_of_w1(bystander))
    finally:
        procs.cleanup()


@pytest.fixture
def raw(served: Served) -> Iterator[Raw]:
    conn = Raw(served.master.address)
    try:
        yield conn
    finally:
        conn.close()


def assert_still_serving(served: Served) -> None:
    """A new client and the one connected all along both get a task run on the worker,
    which kept its connection (it never had to dial again)."""
    assert served.master.proc.poll() is None, f"the master died\n{served.procs.logs()}"
    with Client(served.master.address, token="", timeout=5) as c:
        result = c.submit(["echo", "still here"]).result(timeout=20)
    assert (result.state, result.node, result.output) == ("SUCCEEDED", "w1", "still here\n"), result
    result = served.bystander.submit(["echo", "me too"]).result(timeout=20)
    assert (result.state, result.output) == ("SUCCEEDED", "me too\n"), result
    assert _address_of_w1(served.bystander) == served.worker_address


def _address_of_w1(c: Client) -> str:
    return next(n["address"] for n in c.nodes() if n["name"] == "w1")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# ----- framing ---------------------------------------------------------------
def test_garbage_bytes_get_bad_version_and_are_closed(served: Served, raw: Raw) -> None:
    # When a peer speaks HTTP to the master
    raw.send(b"GET / HTTP/1.1\r\nHost: titan\r\n\r\n")
    # Then it gets ERROR bad_version naming the version byte it sent ('G' = 71), then EOF
    raw.expect_error("bad_version", "protocol version 71 is not supported", req_id=0)
    raw.expect_closed()
    assert_still_serving(served)


def test_wrong_protocol_version_in_a_well_formed_header(served: Served, raw: Raw) -> None:
    body = pack(Op.HELLO, 7, ClientHandshake(role="client", name="v2", token=None).hello())[HEADER.size:]
    raw.send(HEADER.pack(PROTOCOL_VERSION + 1, Op.HELLO, 0, 7, len(body)) + body)
    raw.expect_error("bad_version", f"protocol version {PROTOCOL_VERSION + 1} is not supported",
                     f"speaks {PROTOCOL_VERSION}")
    raw.expect_closed()
    assert_still_serving(served)


def test_undecodable_body_gets_bad_body(served: Served, raw: Raw) -> None:
    raw.hello()
    raw.send(HEADER.pack(PROTOCOL_VERSION, Op.STATUS, 0, 4, 1) + b"\x7f")
    raw.expect_error("bad_body", "unknown type tag 0x7f", "request 4", req_id=4)
    raw.expect_closed()
    assert_still_serving(served)


def test_unknown_opcode_after_hello_gets_an_error_and_the_connection_stays(served: Served, raw: Raw) -> None:
    # Given a client past HELLO
    raw.hello()
    # When it sends an opcode nobody defined, and one only workers may send
    raw.send_frame(0x7E, 5, {})
    raw.send_frame(Op.DISPATCH, 6, {})
    # Then each gets ERROR unknown_opcode on its own request id
    raw.expect_error("unknown_opcode", "unknown opcode 0x7e", req_id=5)
    raw.expect_error("unknown_opcode", "DISPATCH", "client", req_id=6)
    # And the connection still answers
    raw.ping(7)
    assert_still_serving(served)


def test_a_4_gib_length_is_refused_before_anything_is_allocated(served: Served, raw: Raw) -> None:
    pid = served.master.proc.pid
    before = rss_bytes(pid)
    raw.hello()
    raw.send(HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 9, 0xFFFFFFFF))
    raw.expect_error("frame_too_large", "4294967295", "limit", req_id=9)
    raw.expect_closed()
    assert rss_bytes(pid) - before < 32 * 1024 * 1024, (before, rss_bytes(pid))
    assert_still_serving(served)


def test_a_client_that_disconnects_mid_frame(served: Served) -> None:
    # A partial header before HELLO, and a partial body after it
    early = Raw(served.master.address)
    early.send(HEADER.pack(PROTOCOL_VERSION, Op.HELLO, 0, 1, 50)[:7])
    early.close()
    late = Raw(served.master.address)
    late.hello()
    late.send(HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 2, 100) + b"\x09\x00\x00")
    late.close()
    assert_still_serving(served)


def test_a_frame_that_never_completes_is_closed_after_the_frame_timeout(served: Served, raw: Raw) -> None:
    raw.hello()
    raw.send(HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 3, 100) + b"\x09\x00")
    sent_at = time.monotonic()
    # While that frame hangs open, everyone else is served
    during = served.bystander.submit(["echo", "meanwhile"]).result(timeout=20)
    assert (during.state, during.output) == ("SUCCEEDED", "meanwhile\n"), during
    raw.expect_error("frame_timeout", "incomplete frame", f"{FRAME_TIMEOUT_S:g}s",
                     timeout_s=FRAME_TIMEOUT_S + 3)
    waited = time.monotonic() - sent_at
    raw.expect_closed()
    assert FRAME_TIMEOUT_S - 0.1 <= waited <= FRAME_TIMEOUT_S + 2.5, waited
    assert_still_serving(served)


# ----- handshake -------------------------------------------------------------
def test_a_connection_that_never_says_hello_is_closed_after_the_handshake_timeout(served: Served,
                                                                                 raw: Raw) -> None:
    opened_at = time.monotonic()
    raw.expect_error("handshake_timeout", f"within {HANDSHAKE_TIMEOUT_S:g}s", timeout_s=HANDSHAKE_TIMEOUT_S + 3)
    waited = time.monotonic() - opened_at
    raw.expect_closed()
    assert HANDSHAKE_TIMEOUT_S - 0.1 <= waited <= HANDSHAKE_TIMEOUT_S + 2.5, waited
    assert_still_serving(served)


def test_a_first_frame_that_is_not_hello(served: Served, raw: Raw) -> None:
    raw.send_frame(Op.PING, 3, {})
    raw.expect_error("bad_hello", "first frame must be HELLO", "0x08", req_id=3)
    raw.expect_closed()
    assert_still_serving(served)


def test_hello_with_a_wrong_protocol_version(served: Served, raw: Raw) -> None:
    raw.hello(proto=99)
    raw.expect_error("bad_proto", "protocol version 99 is not supported", req_id=1)
    raw.expect_closed()
    assert_still_serving(served)


# ----- requests --------------------------------------------------------------
@pytest.mark.parametrize("opcode", [Op.STATUS, Op.CANCEL, Op.LOGS, Op.WAIT, Op.RETRY])
def test_unknown_task_ids_get_unknown_task(served: Served, raw: Raw, opcode: Op) -> None:
    # Given a client past HELLO
    raw.hello()
    # When it names tasks the master never had (a plausible id, a number, a list, none at all)
    raw.send_frame(opcode, 10, {"task": "nosuch#1"})
    raw.send_frame(opcode, 11, {"task": 42})
    raw.send_frame(opcode, 12, {})
    raw.send_frame(opcode, 14, {"task": ["x"]})
    # Then each gets ERROR unknown_task naming the id, and the connection stays usable
    raw.expect_error("unknown_task", "'nosuch#1'", req_id=10)
    raw.expect_error("unknown_task", "42", req_id=11)
    raw.expect_error("unknown_task", "None", req_id=12)
    raw.expect_error("unknown_task", "['x']", req_id=14)
    raw.ping(13)
    # And the SDK raises UnknownTask for the same id
    with Client(served.master.address, token="") as c, pytest.raises(UnknownTask, match="nosuch#1"):
        if opcode == Op.STATUS:
            c.status("nosuch#1")
        elif opcode == Op.CANCEL:
            c.cancel("nosuch#1")
        elif opcode == Op.LOGS:
            list(c.logs("nosuch#1"))
        elif opcode == Op.RETRY:
            c.retry("nosuch#1")
        else:
            c.task("nosuch#1").result(timeout=5)
    assert_still_serving(served)


@pytest.mark.parametrize("command, words", [
    ("", "empty command"), ("   ", "empty command"), ([], "empty command"),
    ([""], "(argv[0]) is empty"), (None, "command is missing"), ([1, 2], "must be a string"),
])
def test_empty_or_malformed_commands_are_refused(served: Served, raw: Raw, command: object, words: str) -> None:
    # Given a client past HELLO
    raw.hello()
    # When it submits a command that cannot run
    raw.send_frame(Op.SUBMIT, 20, {"command": command})
    # Then it gets ERROR bad_request saying why, and the connection stays usable
    raw.expect_error("bad_request", words, req_id=20)
    raw.ping(21)
    assert_still_serving(served)


@pytest.mark.parametrize("command, env, words", [
    (["echo", "a\x00b"], None, "NUL byte"),
    (["echo", "x"], {"A\x00": "1"}, "bad environment variable name"),
    (["echo", "x"], {"A": "1\x00"}, "contains a NUL byte"),
    (["echo", "x"], {"A=B": "1"}, "bad environment variable name"),
])
def test_a_command_no_program_could_receive_is_refused_at_submit(
        served: Served, command: List[str], env: Optional[Dict[str, str]], words: str) -> None:
    # Given the worker's current connection to the master
    with Client(served.master.address, token="") as c:
        before = {n["name"]: n["address"] for n in c.nodes()}
        # When a task's argv or env holds what exec cannot take
        with pytest.raises(RemoteError) as caught:
            c.submit(command, env=env).result(timeout=20)
        after = {n["name"]: n["address"] for n in c.nodes()}
    # Then the master refuses it with a reason naming the problem
    assert caught.value.code == "bad_request" and words in caught.value.message, caught.value
    # And the worker kept its connection (it did not drop and dial again)
    assert after == before
    assert_still_serving(served)


def test_a_frame_trickled_a_byte_at_a_time_is_closed_after_the_frame_timeout(served: Served, raw: Raw) -> None:
    # Given a client that keeps one frame open by sending a byte now and then
    raw.hello()
    trickle = HEADER.pack(PROTOCOL_VERSION, Op.SUBMIT, 0, 4, 100) + b"\x09" * 20
    started = time.monotonic()
    for byte in trickle:
        if time.monotonic() - started > 2 * FRAME_TIMEOUT_S + 1:
            break
        try:
            raw.send(bytes([byte]))
        except OSError:          # the master already closed it
            break
        time.sleep(FRAME_TIMEOUT_S / 5)
    # Then progress alone does not keep it open: the frame must be whole in time
    raw.expect_error("frame_timeout", "not completed within", timeout_s=FRAME_TIMEOUT_S + 3)
    raw.expect_closed()
    assert_still_serving(served)


def test_the_sdk_and_cli_refuse_empty_commands_before_sending(served: Served) -> None:
    with Client(served.master.address, token="") as c:
        for command in ("", " ", []):
            with pytest.raises(UsageError, match="empty command"):
                c.submit(command)  # type: ignore[arg-type]
    out = run_cli("--master", served.master.address, "run", "--")
    assert out.code == 2, out
    assert "no command given" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert_still_serving(served)


@pytest.mark.parametrize("opcode, body, words", [
    (Op.DEPLOY, {}, "non-empty list of services"),
    (Op.DEPLOY, {"services": "web"}, "non-empty list of services"),
    (Op.DEPLOY, {"services": ["web"]}, "a service must be a map"),
    (Op.DEPLOY, {"services": [{"name": ["web"], "command": "x"}]}, "bad service name"),
    (Op.DEPLOY, {"services": [{"name": "web"}]}, "command is missing"),
    (Op.DEPLOY, {"services": [{"name": "web", "command": "x", "env": {"TITAN_SERVICE": "y"}}]},
     "TITAN_SERVICE is set by Titan (the service's name)"),
    (Op.DEPLOY, {"services": [{"name": "web", "command": "x", "port": 0.5}]}, "port must be a number"),
    (Op.DEPLOY, {"services": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]}, "same name"),
    (Op.SERVICE_CTL, {"name": "nosuch", "action": "stop"}, "no service 'nosuch'"),
    (Op.SERVICE_CTL, {"name": ["x"], "action": "stop"}, "no service"),
    (Op.SERVICES, {"name": "nosuch"}, "no service 'nosuch'"),
])
def test_malformed_service_requests_get_bad_request(served: Served, raw: Raw, opcode: Op, body: Dict[str, Any],
                                                    words: str) -> None:
    raw.hello()
    raw.send_frame(opcode, 30, body)
    raw.expect_error("bad_request", words, req_id=30)
    raw.ping(31)
    assert_still_serving(served)


@pytest.mark.parametrize("body, words", [
    ({"channels": 5}, "channels must be a list of names, not int"),
    ({"channels": "news"}, "channels must be a list of names, not str"),
    ({"patterns": {"a": 1}}, "patterns must be a list of names, not dict"),
    ({}, "subscribe needs channels or patterns"),
])
def test_malformed_subscriptions_get_bad_request(served: Served, raw: Raw, body: Dict[str, Any], words: str) -> None:
    raw.hello()
    raw.send_frame(Op.SUBSCRIBE, 40, body)
    raw.expect_error("bad_request", words, req_id=40)
    raw.ping(41)
    assert_still_serving(served)


def test_a_worker_reporting_nonsense_about_services_disturbs_nothing(served: Served) -> None:
    # Given a peer that registers as a worker with junk in its service list, then sends junk states
    peer = Raw(served.master.address)
    try:
        peer.hello_as_worker("junk-w", services=[7, {"name": ["x"]}, {"name": "ghost", "gen": "1"}])
        for junk in ({"name": 5}, {"name": "ghost", "gen": 1, "state": "DANCING"}, {"state": None}):
            peer.send_frame(Op.SVC_STATE, 0, junk)
        peer.send_frame(Op.PING, 9, {})
        peer.read_frame_where(lambda f: f.opcode == Op.PONG)    # it may also be asked to stop 'ghost'
    finally:
        peer.close()
    assert_still_serving(served)
