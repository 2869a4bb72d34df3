"""The cluster token end to end: who gets into a master that has one, and how each side is given it.

A worker with a wrong token or none never joins (and says why in its log);
the SDK takes ``TITAN_TOKEN`` when no token is passed; the CLI takes
``--master`` and ``--token`` after the verb as well as before it.
"""
from __future__ import annotations

import json
from typing import Callable, List

import pytest

import titan
from conftest import TitanProcs, run_cli, wait_until
from titan.errors import AuthError
from titan.roles.local import LocalCluster
from titan.sdk.client import Client

TOKEN = "s3cret-token"
RESULT_TIMEOUT_S = 30.0

Cluster = Callable[..., LocalCluster]


def node_names(address: str) -> List[str]:
    with Client(address, token=TOKEN, timeout=5) as c:
        return sorted(n["name"] for n in c.nodes())


def test_a_worker_with_a_wrong_or_missing_token_never_joins_and_says_why(titan_procs: TitanProcs) -> None:
    # Given a master with a token
    master = titan_procs.start_master(token=TOKEN)
    # When three workers dial it: one with the token, one with a wrong one, one with none
    titan_procs.start_worker(master.address, "good", token=TOKEN)
    wrong = titan_procs.start_worker(master.address, "wrong", token="not-the-token")
    missing = titan_procs.start_worker(master.address, "missing")
    titan_procs.wait_ready(master.address, ["good"], token=TOKEN)
    logs = titan_procs.base_dir

    def refused(name: str, words: str) -> bool:
        path = logs / f"{name}.log"
        return path.exists() and words in path.read_text()

    # Then the two without the right token each name the token problem in their log
    wait_until(lambda: refused("wrong", "wrong cluster token"), 15,
               lambda: "the wrong-token worker to log its refusal\n" + titan_procs.logs())
    wait_until(lambda: refused("missing", "requires a cluster token"), 15,
               lambda: "the token-less worker to log its refusal\n" + titan_procs.logs())
    # And, though both are still running and retrying, neither appears among the master's nodes
    assert node_names(master.address) == ["good"]
    out = run_cli("--master", master.address, "nodes", token=TOKEN)
    assert out.code == 0, out
    assert "good" in out.stdout and "wrong" not in out.stdout and "missing" not in out.stdout, out
    assert wrong.poll() is None and missing.poll() is None
    for name in ("wrong", "missing"):
        assert TOKEN not in (logs / f"{name}.log").read_text()


def test_the_sdk_takes_the_token_from_titan_token_when_given_none(cluster: Cluster,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a cluster with a token
    for name in ("TITAN_MASTER", "TITAN_TOKEN", "TITAN_TLS", "TITAN_TLS_CA", "TITAN_TLS_CERT", "TITAN_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    local = cluster(workers=1, token=TOKEN)
    # When a program connects without a token and TITAN_TOKEN unset, it is refused
    with pytest.raises(AuthError, match="requires a cluster token"):
        titan.connect(local.address, timeout=5)
    # Then with TITAN_TOKEN set, titan.connect(address) gets in and runs a task
    monkeypatch.setenv("TITAN_TOKEN", TOKEN)
    with titan.connect(local.address, timeout=5) as c:
        result = c.submit(["echo", "in"]).result(RESULT_TIMEOUT_S)
    assert (result.state, result.output) == ("SUCCEEDED", "in\n"), result


def test_master_and_token_options_work_after_the_verb(cluster: Cluster) -> None:
    # Given a cluster with a token, a finished task, and an environment with neither TITAN_MASTER nor TITAN_TOKEN
    local = cluster(workers=1, token=TOKEN)
    with local.client() as c:
        task_id = c.submit(["echo", "hi"]).result(RESULT_TIMEOUT_S).id
    after = ["--master", local.address, "--token", TOKEN]
    # When a user puts --master and --token after the verb
    nodes = run_cli("nodes", "--json", *after)
    status = run_cli("status", task_id, *after)
    status_json = run_cli("status", task_id, "--json", *after)
    # Then each command reached the master and was let in
    assert nodes.code == 0, nodes
    assert [n["name"] for n in json.loads(nodes.stdout)] == ["local-1"]
    assert status.code == 0 and task_id in status.stdout and "SUCCEEDED" in status.stdout, status
    assert status_json.code == 0, status_json
    assert (json.loads(status_json.stdout)["id"], json.loads(status_json.stdout)["state"]) == (task_id, "SUCCEEDED")
    # And a wrong --token after the verb is used too: refused with the auth exit code
    wrong = run_cli("nodes", "--master", local.address, "--token", "wrong")
    assert wrong.code == 5 and "wrong cluster token" in wrong.stderr, wrong
