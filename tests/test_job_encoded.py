"""RUN with ``job_encoded``: a job sent again byte for byte is taken as registered, anything else is checked."""
from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

import titan.roles.master.runs as master_runs
from conftest import FakeMaster, Recorder
from titan.roles.master.server import Master
from titan.sdk.client import Client
from titan.wire.codec import encode
from titan.wire.frames import Frame, Op

JOB = {"name": "nightly", "tasks": [{"name": "a", "command": ["true"]},
                                    {"name": "b", "command": ["true"], "after": ["a"]}]}


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The names of the jobs the master checks (and so decoded), in order."""
    seen: List[str] = []
    real = master_runs.check_job

    def counting(job: Any, specs: Any) -> Any:
        seen.append(job.get("name") if isinstance(job, dict) else repr(job))
        return real(job, specs)

    monkeypatch.setattr(master_runs, "check_job", counting)
    return seen


def _run(master: Master, client: Recorder, req_id: int, **body: Any) -> Dict[str, Any]:
    master.on_frame(client, Frame(Op.RUN, 0, req_id, body))   # type: ignore[arg-type]
    master._end_of_pass()
    op, reply = client.reply(req_id)
    return {"op": op, **reply}


def test_a_job_sent_again_byte_for_byte_is_not_decoded_or_checked_again(master: Master,
                                                                         checks: List[str]) -> None:
    client = Recorder(master.loop)
    # When the same encoded job is sent three times
    replies = [_run(master, client, n, job_encoded=encode(JOB)) for n in (1, 2, 3)]
    # Then three runs start, with the job's tasks, and it was checked only the first time
    assert [r["run"] for r in replies] == ["nightly#1", "nightly#2", "nightly#3"]
    assert replies[2]["tasks"] == ["nightly#3/a", "nightly#3/b"]
    assert list(master.sched.tasks["nightly#3/b"].after) == ["nightly#3/a"]
    assert checks == ["nightly"]
    # When it changes, the change is checked and registered, and the old bytes are not that job any more
    changed = {**JOB, "tasks": [{"name": "a", "command": ["echo", "changed"]}]}
    assert _run(master, client, 4, job_encoded=encode(changed))["tasks"] == ["nightly#4/a"]
    assert _run(master, client, 5, job_encoded=encode(JOB))["tasks"] == ["nightly#5/a", "nightly#5/b"]
    assert checks == ["nightly", "nightly", "nightly"]
    # And a job sent decoded is checked as always
    _run(master, client, 6, job=JOB)
    assert len(checks) == 4


def test_a_bad_job_under_a_registered_name_is_refused(master: Master, checks: List[str]) -> None:
    client = Recorder(master.loop)
    _run(master, client, 1, job_encoded=encode(JOB))
    bad = {"name": "nightly", "tasks": [{"name": "a", "command": ["true"]}, {"name": "a", "command": ["true"]}]}
    reply = _run(master, client, 2, job_encoded=encode(bad))
    assert reply["op"] == Op.ERROR and reply["code"] == "bad_request"
    assert "two tasks are named 'a'" in reply["message"]
    assert master.runs.jobs["nightly"] == JOB                   # the registered job is untouched
    assert _run(master, client, 3, job_encoded=encode(JOB))["run"] == "nightly#2"
    assert checks == ["nightly", "nightly"]                     # the good bytes are still known


def test_job_encoded_that_is_not_a_job_gets_a_clear_error(master: Master) -> None:
    client = Recorder(master.loop)
    garbage = _run(master, client, 1, job_encoded=b"\x09\x00\x00\x00\x05")
    assert garbage["op"] == Op.ERROR and garbage["code"] == "bad_request"
    assert garbage["message"].startswith("job_encoded is not a job: ")
    text = _run(master, client, 2, job_encoded="nightly")
    assert text["op"] == Op.ERROR and "job_encoded must be bytes" in text["message"]
    assert _run(master, client, 3, job_encoded=encode(JOB))["run"] == "nightly#1"   # and it serves on


def test_a_removed_job_sent_again_is_checked_and_registered_afresh(master: Master, checks: List[str]) -> None:
    client = Recorder(master.loop)
    _run(master, client, 1, job_encoded=encode(JOB), start=False)
    master.on_frame(client, Frame(Op.REMOVE_JOB, 0, 2, {"job": "nightly"}))   # type: ignore[arg-type]
    master._end_of_pass()
    assert "nightly" not in master.runs.jobs
    assert _run(master, client, 3, job_encoded=encode(JOB))["run"] == "nightly#1"
    assert checks == ["nightly", "nightly"] and master.runs.jobs["nightly"] == JOB


def test_the_sdk_sends_the_job_decoded_to_a_master_that_does_not_name_job_encoded(fake_master: FakeMaster) -> None:
    # Given a master whose WELCOME names no features, as one from before job_encoded
    seen: Dict[str, Any] = {}

    def client() -> None:
        with Client(fake_master.address, token="") as c:
            seen["features"] = c.master_features
            seen["run"] = c.submit_job(JOB, watch=False).id

    thread = threading.Thread(target=client)
    thread.start()
    try:
        fake_master.accept()
        # When the SDK submits a job to it
        run = fake_master.read_frame_where(lambda f: f.opcode == Op.RUN, 10)
        fake_master.send_frame(Op.OK, run.req_id, {"job": "nightly", "run": "nightly#1", "tasks": [], "services": []})
    finally:
        thread.join(10)
    # Then the RUN carries the job itself, which such a master reads
    assert seen == {"features": frozenset(), "run": "nightly#1"}
    assert run.body["job"] == JOB and "job_encoded" not in run.body
