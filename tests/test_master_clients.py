"""What the master keeps per client connection: only what is still to come.

A client that stays connected for days and submits a task every second must
not make the master grow: once a task has ended, nothing about who waited
on it is left, and a client that goes away leaves no trace at all.
"""
from __future__ import annotations

from typing import Any

from conftest import Recorder
from titan.roles.master.server import Master
from titan.wire.frames import Frame, Op


def _request(master: Master, conn: Recorder, req_id: int, opcode: int, body: Any) -> None:
    master.on_frame(conn, Frame(opcode, 0, req_id, body))   # type: ignore[arg-type]
    master._end_of_pass()


def _results(conn: Recorder) -> dict:
    return {body["result"]["id"]: body["result"]["state"] for op, _, body in conn.frames
            if op == Op.EVENT and body.get("kind") == "result"}


def test_a_long_lived_client_leaves_nothing_behind_for_tasks_that_ended(master: Master) -> None:
    # Given a client that submits 300 tasks (a third of them also asking for the output) and waits on them
    client = Recorder()
    for n in range(1, 301):
        _request(master, client, n, Op.SUBMIT, {"command": "true", "name": f"t{n}", "follow": n % 3 == 0})
    _request(master, client, 301, Op.WAIT, {"task": "t1#1"})      # a second wait on one of them
    _request(master, client, 302, Op.LOGS, {"task": "t2#1", "follow": True})
    assert len(client.state.watching) == 301 and len(master.watchers) == 300
    # When every one of them ends (cancelled while queued: no worker is connected)
    for n in range(1, 301):
        _request(master, client, 1000 + n, Op.CANCEL, {"task": f"t{n}#1"})
    # Then the client heard every result, twice for the task it waited on twice
    assert len(_results(client)) == 300 and set(_results(client).values()) == {"CANCELLED"}
    assert sum(1 for op, rid, _ in client.frames if op == Op.EVENT and rid == 301) == 1
    # And the master keeps nothing about who waited on or followed them
    assert not client.state.watching and not client.state.following
    assert master.watchers == {} and master.followers == {}


def test_a_client_that_goes_away_leaves_no_entries_for_the_tasks_it_waited_on(master: Master) -> None:
    # Given two clients waiting on queued tasks, one of them following the output too
    leaving, staying = Recorder(), Recorder()
    for n in range(1, 51):
        _request(master, leaving, n, Op.SUBMIT, {"command": "true", "name": f"t{n}"})
    _request(master, leaving, 51, Op.LOGS, {"task": "t1#1", "follow": True})
    _request(master, staying, 1, Op.WAIT, {"task": "t1#1"})
    # When the first one disconnects
    master.on_close(leaving, "gone")   # type: ignore[arg-type]
    # Then only the other client's wait is left
    assert master.watchers == {"t1#1": [(staying, 1)]} and master.followers == {}
    assert not leaving.state.watching and not leaving.state.following
    # And it still hears the result
    _request(master, staying, 2, Op.CANCEL, {"task": "t1#1"})
    assert _results(staying) == {"t1#1": "CANCELLED"} and master.watchers == {}


def test_two_subscriptions_of_one_client_each_get_their_own_messages(master: Master) -> None:
    # Given one client with two subscriptions whose request ids are 4096 apart
    client, publisher = Recorder(), Recorder()
    _request(master, client, 5, Op.SUBSCRIBE, {"channels": ["first"]})
    _request(master, client, 5 + 4096, Op.SUBSCRIBE, {"channels": ["second"]})
    # When a message is published on each channel
    _request(master, publisher, 1, Op.KV, {"op": "publish", "channel": "first", "message": b"one"})
    _request(master, publisher, 2, Op.KV, {"op": "publish", "channel": "second", "message": b"two"})
    # Then each arrives on the request that subscribed to its channel
    messages = [(rid, body["channel"], body["data"]) for op, rid, body in client.frames if op == Op.EVENT]
    assert messages == [(5, "first", b"one"), (4101, "second", b"two")]
    assert publisher.reply(1)[1] == {"receivers": 1} and publisher.reply(2)[1] == {"receivers": 1}


def test_a_stop_that_waits_is_answered_when_the_service_is_removed_meanwhile(master: Master) -> None:
    # Given a service running on a worker
    worker = Recorder()
    worker.state.role, worker.state.name = "worker", "w1"
    master.worker_conns["w1"] = worker   # type: ignore[assignment]
    master._admit_worker(worker, worker.state, {"role": "worker", "name": "w1", "slots": 2, "tags": []})
    admin, other = Recorder(), Recorder()
    _request(master, admin, 1, Op.DEPLOY, {"services": [{"name": "web", "command": "sleep 1000"}]})
    _request(master, worker, 0, Op.SVC_STATE, {"name": "web", "gen": 1, "state": "RUNNING", "pid": 5})
    # When one client stops it (the answer waits for the worker) and another removes it meanwhile
    _request(master, admin, 2, Op.SERVICE_CTL, {"name": "web", "action": "stop"})
    assert admin.frames[-1][1] != 2
    _request(master, other, 3, Op.SERVICE_CTL, {"name": "web", "action": "remove"})
    _request(master, worker, 0, Op.SVC_STATE, {"name": "web", "gen": 1, "state": "STOPPED"})
    # Then both are answered, and nothing waits any more
    assert other.reply(3)[0] == Op.OK
    assert admin.reply(2)[0] == Op.OK
    assert master.services.waiters == []



def test_following_a_service_log_ends_when_the_service_is_removed(master: Master) -> None:
    # Given a client following a deployed service's log
    admin, follower = Recorder(), Recorder()
    _request(master, admin, 1, Op.DEPLOY, {"services": [{"name": "web", "command": "sleep 1000"}]})
    _request(master, follower, 7, Op.LOGS, {"task": "web", "follow": True})
    assert [f for f in follower.frames if f[1] == 7 and f[0] == Op.OK] == []
    # When the service is removed, then the follow ends with a final OK, and nothing is kept for it
    _request(master, admin, 2, Op.SERVICE_CTL, {"name": "web", "action": "remove"})
    assert follower.reply(7)[0] == Op.OK
    assert "@web" not in master.followers and not follower.state.following


def test_cancelling_a_run_says_what_state_it_was_in(master: Master) -> None:
    client = Recorder()
    _request(master, client, 1, Op.RUN, {"job": {"name": "j", "tasks": [{"name": "a", "command": ["true"]}]},
                                         "watch": False})
    # When a run is cancelled, then cancelled again once it has ended
    _request(master, client, 2, Op.CANCEL, {"task": "j#1"})
    _request(master, client, 3, Op.CANCEL, {"task": "j#1"})
    # Then each answer says what the run was before it
    assert client.reply(2)[1]["was"] == "RUNNING" and client.reply(3)[1]["was"] == "CANCELLED"
    assert client.reply(3)[1]["cancelling"] is False
