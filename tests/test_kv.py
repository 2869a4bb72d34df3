"""The data bus: tasks and clients share keys and messages through the master's store."""
from __future__ import annotations

import json
import sys
import threading
from typing import Callable

import pytest

from conftest import TitanProcs, run_cli, wait_until
from titan.errors import RemoteError
from titan.roles.local import LocalCluster
from titan.sdk.client import Client


def test_values_round_trip_and_commands_behave_like_redis(cluster: Callable[..., LocalCluster]) -> None:
    local = cluster(workers=1)
    with local.client() as c:
        kv = c.kv
        kv.set("greeting", "Grüße, 世界 ✓")
        assert kv.get("greeting") == "Grüße, 世界 ✓".encode()
        kv.set("blob", bytes(range(256)))
        assert kv.get("blob") == bytes(range(256))
        assert kv.get("missing") is None
        assert [kv.incr("n"), kv.incr("n", 5)] == [1, 6]
        assert kv.sadd("seen", "a", "b", "a") == 2 and kv.smembers("seen") == {b"a", b"b"}
        assert kv.srem("seen", "a") == 1
        assert kv.expire("greeting", 60) and 0 < kv.ttl("greeting") <= 60
        assert kv.keys("g*") == ["greeting"]
        assert kv.delete("greeting", "nope") == 1
        with pytest.raises(RemoteError, match="WRONGTYPE"):
            kv.incr("seen")
        # the master's own records stay out of sight
        c.submit("true").result(timeout=30)
        assert all(not k.startswith("titan:") for k in kv.keys())


def test_tasks_use_the_store_from_inside_the_cluster(cluster: Callable[..., LocalCluster]) -> None:
    # Given ten tasks that each increment one counter and add their id to a set
    local = cluster(workers=2)
    script = ("import os, titan\n"
              "with titan.connect() as c:\n"
              "    c.kv.incr('hits')\n"
              "    c.kv.sadd('who', os.environ['TITAN_TASK'])\n")
    with local.client() as c:
        tasks = [c.submit([sys.executable, "-c", script], name="bump") for _ in range(10)]
        results = [t.result(timeout=60) for t in tasks]
        # Then every task saw the same store
        assert [r.state for r in results] == ["SUCCEEDED"] * 10, [r.output for r in results]
        assert c.kv.get("hits") == b"10"
        assert c.kv.smembers("who") == {t.id.encode() for t in tasks}


def test_publish_reaches_every_subscriber_including_patterns(cluster: Callable[..., LocalCluster]) -> None:
    local = cluster(workers=1)
    with local.client() as sub_client, local.client() as pattern_client, local.client() as pub:
        sub = sub_client.kv.subscribe("events")
        psub = pattern_client.kv.subscribe(patterns=("ev*",))
        assert pub.kv.publish("events", "first") == 2
        assert pub.kv.publish("other", "nobody") == 0
        assert sub.get(timeout=10) == ("events", b"first")
        assert psub.get(timeout=10) == ("events", b"first")
        assert sub.get(timeout=0.2) is None


def test_a_subscriber_gets_messages_while_it_waits(cluster: Callable[..., LocalCluster]) -> None:
    local = cluster(workers=1)
    with local.client() as sub_client, local.client() as pub:
        sub = sub_client.kv.subscribe("jobs")
        timer = threading.Timer(0.3, lambda: pub.kv.publish("jobs", b"late"))
        timer.start()
        try:
            assert sub.get(timeout=10) == ("jobs", b"late")
        finally:
            timer.join()


def test_acknowledged_writes_survive_a_kill_9(titan_procs: TitanProcs) -> None:
    master = titan_procs.start_master()
    with Client(master.address, token="") as c:
        c.kv.set("kept", "yes")
        c.kv.set("short", "gone soon", ttl_s=0.2)
    master = titan_procs.restart_master(master)
    with Client(master.address, token="") as c:
        assert c.kv.get("kept") == b"yes"
        # and the expiry came back as an absolute time: the short-lived key still expires
        wait_until(lambda: c.kv.get("short") is None, 10, "the short-lived key to expire")


def test_cli_get_set_del_keys(cluster: Callable[..., LocalCluster]) -> None:
    local = cluster(workers=1)
    m = ("--master", local.address)
    assert run_cli(*m, "kv", "set", "colour", "blue").code == 0
    got = run_cli(*m, "kv", "get", "colour")
    assert (got.code, got.stdout) == (0, "blue\n"), got
    assert run_cli(*m, "kv", "keys").stdout.split() == ["colour"]
    # the global options work after the action too, as after any verb
    assert json.loads(run_cli("kv", "keys", "--json", *m).stdout) == ["colour"]
    assert json.loads(run_cli("kv", "get", "colour", "--master", local.address, "--json").stdout) == "blue"
    assert run_cli(*m, "kv", "del", "colour").stdout.strip() == "1"
    missing = run_cli(*m, "kv", "get", "colour")
    assert missing.code == 4 and "no key 'colour'" in missing.stderr
    missing = run_cli(*m, "kv", "get", "colour", "--json")     # null, and still exit 4
    assert (missing.code, json.loads(missing.stdout)) == (4, None), missing
