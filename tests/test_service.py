"""Service specs from the wire and the restart policy, driven with a fake clock."""
from __future__ import annotations

import pytest

from titan.core.service import (ServiceSpec, ServiceState, Supervision, service_from_wire, service_to_wire)
from titan.errors import InvalidTransition, UsageError

V = ServiceState


def spec(**kw: object) -> ServiceSpec:
    body = {"name": "web", "command": "serve", **kw}
    return service_from_wire(body)


def no_jitter() -> float:
    return 0.0


def crash(sup: Supervision, now: float, how: str = "exit code 1") -> object:
    sup.start(now)
    return sup.exited(how, True, now + 0.1)


# ----- specs -------------------------------------------------------------------
def test_a_spec_survives_the_wire_both_ways() -> None:
    s = spec(port="auto", requires=["gpu"], env={"A": "1"}, restart="on-failure", backoff_s=0.5,
             health="http://127.0.0.1:$PORT/", stop_signal="INT", files={"a.txt": ["0" * 64, False]})
    assert s.port == 0 and s.stop_signal == "SIGINT" and s.restart == "on-failure"
    assert service_from_wire(service_to_wire(s)) == s


@pytest.mark.parametrize("body, words", [
    ({"name": "bad name!", "command": "x"}, "bad service name"),
    ({"name": "web", "command": ""}, "empty command"),
    ({"name": "web", "command": "x", "port": "eighty"}, "bad port"),
    ({"name": "web", "command": "x", "port": 70000}, "port must be a number"),
    ({"name": "web", "command": "x", "restart": "sometimes"}, "restart policy"),
    ({"name": "web", "command": "x", "health": "tcp"}, "needs a port"),
    ({"name": "web", "command": "x", "health": "ftp://x"}, "health check"),
    ({"name": "web", "command": "x", "stop_signal": "SIGFOO"}, "signal"),
    ({"name": "web", "command": "x", "backoff_s": 5, "backoff_max_s": 1}, "longer than backoff_max"),
    ({"name": "web", "command": "x", "max_restarts": -1}, "max_restarts"),
    ({"name": "web", "command": "x", "stop_grace_s": "soon"}, "stop_grace_s must be a number"),
])
def test_bad_specs_are_refused_with_the_reason(body: dict, words: str) -> None:
    with pytest.raises(UsageError) as info:
        service_from_wire(body)
    assert words in str(info.value)


# ----- restarts ----------------------------------------------------------------
def test_restart_delays_grow_exponentially_up_to_the_cap() -> None:
    sup = Supervision(spec(backoff_s=1, backoff_max_s=5, max_restarts=100, restart_window_s=1000), no_jitter)
    delays = [crash(sup, t * 10.0) for t in range(6)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert sup.state is V.BACKOFF and sup.restarts == 6


def test_jitter_only_shortens_a_delay() -> None:
    sup = Supervision(spec(backoff_s=1, max_restarts=100), lambda: 0.999)
    delay = crash(sup, 0.0)
    assert isinstance(delay, float) and 0.8 <= delay < 1.0


def test_a_stable_run_starts_the_growth_over() -> None:
    sup = Supervision(spec(backoff_s=1, stable_s=30, max_restarts=100, restart_window_s=10), no_jitter)
    assert crash(sup, 0.0) == 1.0
    assert crash(sup, 10.0) == 2.0
    sup.start(20.0)
    sup.up(21.0)
    assert sup.exited("exit code 1", True, 60.0) == 1.0      # it ran 40 s >= stable


def test_too_many_restarts_within_the_window_is_fatal_with_the_reason() -> None:
    sup = Supervision(spec(backoff_s=0.1, max_restarts=2, restart_window_s=60), no_jitter)
    assert crash(sup, 0.0) is not None
    assert crash(sup, 1.0) is not None
    assert crash(sup, 2.0, "exit code 7") is None
    assert sup.state is V.FATAL
    assert "exit code 7" in sup.reason and "gave up: 2 restarts within 60s" in sup.reason


def test_restarts_outside_the_window_do_not_count() -> None:
    sup = Supervision(spec(backoff_s=0.1, max_restarts=1, restart_window_s=10), no_jitter)

    def crash_after_coming_up(now: float) -> object:
        sup.start(now)
        sup.up(now + 0.05)
        return sup.exited("exit code 1", True, now + 0.1)
    assert crash_after_coming_up(0.0) is not None
    assert crash_after_coming_up(20.0) is not None        # the first restart left the window
    assert crash_after_coming_up(21.0) is None and sup.state is V.FATAL


def test_max_restarts_zero_means_the_first_crash_is_fatal() -> None:
    sup = Supervision(spec(max_restarts=0), no_jitter)
    assert crash(sup, 0.0) is None and sup.state is V.FATAL


@pytest.mark.parametrize("policy, failed, restarts", [
    ("always", False, True), ("always", True, True),
    ("on-failure", False, False), ("on-failure", True, True),
    ("never", True, False), ("never", False, False),
])
def test_the_restart_policy_decides_after_an_exit(policy: str, failed: bool, restarts: bool) -> None:
    sup = Supervision(spec(restart=policy), no_jitter)
    sup.start(0.0)
    delay = sup.exited("exit code 1" if failed else "exit code 0", failed, 5.0)
    assert (delay is not None) is restarts
    assert sup.state is (V.BACKOFF if restarts else V.EXITED)


def test_a_stop_never_triggers_a_restart() -> None:
    sup = Supervision(spec(restart="always"), no_jitter)
    sup.start(0.0)
    sup.up(1.0)
    sup.stopping("stop")
    assert sup.exited("killed by SIGTERM", True, 2.0) is None
    assert sup.state is V.STOPPED and sup.restarts == 0


def test_a_stop_during_backoff_ends_it() -> None:
    sup = Supervision(spec(), no_jitter)
    crash(sup, 0.0)
    sup.stopped()
    assert sup.state is V.STOPPED


def test_illegal_moves_name_both_states() -> None:
    sup = Supervision(spec(), no_jitter)
    with pytest.raises(InvalidTransition) as info:
        sup.stopping("stop")
    assert "STOPPED" in str(info.value) and "STOPPING" in str(info.value)


# ----- health --------------------------------------------------------------------
def test_consecutive_health_failures_ask_for_a_restart_that_counts_as_a_failure() -> None:
    sup = Supervision(spec(port=80, health="tcp", health_failures=3, backoff_s=1), no_jitter)
    sup.start(0.0)
    assert sup.healthy is None
    assert sup.health(True, "ok", 0.5) is False and sup.state is V.RUNNING and sup.healthy is True
    assert sup.health(False, "refused", 5.0) is False and sup.healthy is False
    assert sup.health(True, "ok", 10.0) is False            # a pass resets the count
    assert [sup.health(False, "refused", t) for t in (15.0, 20.0, 25.0)] == [False, False, True]
    assert "3 health checks failed" in sup.health_note
    sup.stopping("restart")
    assert sup.exited("killed by SIGTERM", False, 26.0) == 1.0
    assert sup.state is V.BACKOFF


def test_a_service_never_healthy_is_restarted_after_its_startup_limit() -> None:
    sup = Supervision(spec(port=80, health="tcp", health_interval_s=1, health_failures=3, health_grace_s=2),
                      no_jitter)
    sup.start(0.0)
    assert sup.health(False, "refused", 1.0) is False      # still starting: within max(2 s, 3 x 1 s)
    assert sup.health(False, "refused", 3.0) is True
    assert "not healthy within 3s" in sup.health_note


def test_a_service_that_never_comes_up_goes_fatal_however_slowly_it_fails() -> None:
    sup = Supervision(spec(backoff_s=1, max_restarts=2, restart_window_s=10), no_jitter)
    for t in (0.0, 100.0):                  # far apart: the window alone would never trip
        sup.start(t)
        assert sup.exited("unhealthy: no answer", True, t + 15) is not None
    sup.start(200.0)
    assert sup.exited("unhealthy: no answer", True, 215.0) is None
    assert sup.state is V.FATAL and "never came up in 3 starts" in sup.reason


def test_a_run_that_came_up_resets_the_count_of_failed_starts() -> None:
    sup = Supervision(spec(backoff_s=1, max_restarts=1, restart_window_s=10), no_jitter)
    sup.start(0.0)
    assert sup.exited("exit code 1", True, 1.0) is not None       # never up: 1 failed start
    sup.start(100.0)
    sup.up(101.0)
    assert sup.exited("exit code 1", True, 200.0) is not None     # it was up: the count starts over
    sup.start(300.0)
    assert sup.exited("exit code 1", True, 301.0) is not None

