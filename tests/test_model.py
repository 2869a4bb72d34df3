"""The task model: the transition table, SUBMIT validation and default names."""
from __future__ import annotations

import itertools
from typing import Any, Dict

import pytest

from titan.core.model import (
    TERMINAL, TRANSITIONS, TaskRecord, TaskState, default_task_name,
    spec_from_wire, spec_to_wire, transition,
)
from titan.errors import InvalidTransition, TitanError, UsageError
from titan.testing import FakeClock, make_spec

S = TaskState

# The table the design asks for, written out independently of the code's own.
EXPECTED_LEGAL = {
    (S.WAITING, S.QUEUED), (S.WAITING, S.CANCELLED), (S.WAITING, S.SKIPPED),
    (S.WAITING, S.FAILED),        # its affinity node is gone
    (S.SKIPPED, S.WAITING),       # its failed upstream task was retried
    (S.CANCELLED, S.WAITING),     # retried while a task it waits for has not succeeded
    (S.QUEUED, S.RUNNING), (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.FAILED),         # its affinity node stayed away past the grace period
    (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.QUEUED),
    (S.FAILED, S.QUEUED), (S.FAILED, S.DEAD),
    (S.DEAD, S.QUEUED), (S.CANCELLED, S.QUEUED), (S.SKIPPED, S.QUEUED),
}
ALL_PAIRS = list(itertools.product(TaskState, TaskState))
ILLEGAL = [p for p in ALL_PAIRS if p not in EXPECTED_LEGAL]


def record_in(state: TaskState) -> TaskRecord:
    record = TaskRecord("job#1", make_spec("true"), seq=1, submitted_at=0.0)
    record.state = state
    return record


def pair_ids(pairs: Any) -> list:
    return [f"{old.value}->{new.value}" for old, new in pairs]


# ----- transitions ----------------------------------------------------------

def test_given_the_table_then_it_is_exactly_the_designed_one() -> None:
    table = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert table == EXPECTED_LEGAL
    assert set(TRANSITIONS) == set(TaskState)


LEGAL = sorted(EXPECTED_LEGAL)


@pytest.mark.parametrize("old, new", LEGAL, ids=pair_ids(LEGAL))
def test_given_a_legal_move_when_transitioning_then_state_changes(old: TaskState, new: TaskState) -> None:
    record = record_in(old)
    assert transition(record, new) is old
    assert record.state is new


@pytest.mark.parametrize("old, new", ILLEGAL, ids=pair_ids(ILLEGAL))
def test_given_an_illegal_move_when_transitioning_then_it_raises_naming_both(
        old: TaskState, new: TaskState) -> None:
    record = record_in(old)
    with pytest.raises(InvalidTransition) as caught:
        transition(record, new)
    message = str(caught.value)
    assert f"from {old.value} to {new.value}" in message
    assert "job#1" in message
    assert record.state is old
    assert isinstance(caught.value, TitanError)


def test_terminal_states_are_the_ends_of_the_graph() -> None:
    assert TERMINAL == {S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED}
    assert TRANSITIONS[S.SUCCEEDED] == frozenset()
    assert str(S.RUNNING) == "RUNNING"


# ----- spec_from_wire validation --------------------------------------------

@pytest.mark.parametrize("body, needle", [
    ({"command": ""}, "empty command"),
    ({"command": "   "}, "empty command"),
    ({"command": []}, "empty command"),
    ({"command": [""]}, "argv[0]"),
    ({}, "command is missing: give a shell string or an argv list"),
    ({"command": 7}, "command must be a string or a list, not int"),
    ({"command": 42}, "not int"),
    ({"command": ["ls", 3]}, "every argv element must be a string"),
    ({"command": "ls", "requires": "gpu"}, "requires must be a list of tag names, not 'gpu'"),
    ({"command": "ls", "requires": ["gpu", ""]}, "requires must be a list of tag names"),
    ({"command": "ls", "requires": ["gpu", 1]}, "requires must be a list of tag names"),
    ({"command": "ls", "priority": "high"}, "priority must be an integer from -1000 to 1000, not 'high'"),
    ({"command": "ls", "priority": 1.5}, "priority must be an integer from -1000 to 1000, not 1.5"),
    ({"command": "ls", "priority": True}, "priority must be an integer from -1000 to 1000, not True"),
    ({"command": "ls", "priority": 1001}, "priority must be an integer from -1000 to 1000, not 1001"),
    ({"command": "ls", "timeout_s": -1}, "timeout_s must be at least 0, not -1"),
    ({"command": "ls", "timeout_s": 0}, "timeout_s must be greater than 0"),
    ({"command": "ls", "timeout_s": "10m"}, "timeout_s must be a number, not '10m'"),
    ({"command": "ls", "kill_grace_s": -0.5}, "kill_grace_s must be at least 0"),
    ({"command": "ls", "retry_backoff_s": -1}, "retry_backoff_s must be at least 0"),
    ({"command": "ls", "retries": -1}, "retries must be an integer 0..1000, not -1"),
    ({"command": "ls", "retries": 1001}, "retries must be an integer 0..1000"),
    ({"command": "ls", "retries": "3"}, "retries must be an integer 0..1000, not '3'"),
    ({"command": "ls", "retries": True}, "retries must be an integer 0..1000, not True"),
    ({"command": "ls", "name": "bad name"}, "bad task name 'bad name'"),
    ({"command": "ls", "name": "-leading-dash"}, "bad task name"),
    ({"command": "ls", "name": "x" * 65}, "at most 64"),
    ({"command": "ls", "name": "ok\n"}, "bad task name 'ok\\n'"),
    ({"command": "ls", "name": 7}, "bad task name 7"),
    ({"command": "ls", "env": {"A": 1}}, "env must map names to string values"),
    ({"command": "ls", "env": ["A=1"]}, "env must map names to string values"),
    ({"command": "ls", "node": ""}, "node must be a worker name, not ''"),
    ({"command": "ls", "node": 3}, "node must be a worker name, not 3"),
], ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_given_a_bad_submit_body_when_parsing_then_a_clear_usage_error(body: Dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        spec_from_wire(body)
    assert needle in str(caught.value)


def test_given_a_64_char_name_then_it_is_accepted() -> None:
    assert spec_from_wire({"command": "ls", "name": "a" * 64}).name == "a" * 64


def test_given_a_string_command_then_it_runs_through_the_shell() -> None:
    spec = spec_from_wire({"command": "echo 'a|b;c[d]' && exit 3"})
    assert spec.argv == ("/bin/sh", "-c", "echo 'a|b;c[d]' && exit 3")
    assert spec.shell is True
    assert spec.command_text == "echo 'a|b;c[d]' && exit 3"
    assert spec.name == "echo"


def test_given_an_argv_list_then_it_is_taken_literally() -> None:
    spec = spec_from_wire({"command": ["python3", "x.py", "a b", "it's"]})
    assert spec.argv == ("python3", "x.py", "a b", "it's")
    assert spec.shell is False
    assert spec.command_text == "python3 x.py 'a b' 'it'\\''s'"


def test_given_a_minimal_body_then_defaults_apply() -> None:
    spec = spec_from_wire({"command": ["true"]})
    assert (spec.name, spec.requires, spec.node, spec.timeout_s) == ("true", frozenset(), None, None)
    assert (spec.priority, spec.retries, spec.kill_grace_s, spec.retry_backoff_s) == (0, 0, 5.0, 1.0)
    assert spec.env == ()


def test_given_every_field_then_the_spec_carries_them() -> None:
    spec = spec_from_wire({
        "command": ["train"], "name": "train.v2", "requires": ["gpu", "highmem", "gpu"],
        "node": "box-1", "timeout_s": 30, "kill_grace_s": 0, "priority": -3, "retries": 4,
        "retry_backoff_s": 0.5, "env": {"B": "2", "A": "1"},
    })
    assert spec.requires == frozenset({"gpu", "highmem"})
    assert spec.node == "box-1"
    assert spec.timeout_s == 30.0 and isinstance(spec.timeout_s, float)
    assert spec.kill_grace_s == 0.0
    assert (spec.priority, spec.retries, spec.retry_backoff_s) == (-3, 4, 0.5)
    assert spec.env == (("A", "1"), ("B", "2"))


@pytest.mark.parametrize("body", [
    {"command": "python3 x.py | tee out"},
    {"command": ["/usr/bin/env", "python3", "-c", "print(1)"]},
    {"command": ["x"], "name": "n", "requires": ["gpu", "a"], "node": "w1", "timeout_s": 2.5,
     "kill_grace_s": 1, "priority": 9, "retries": 3, "retry_backoff_s": 0, "env": {"K": "v"}},
])
def test_given_a_spec_when_round_tripped_through_the_wire_then_it_is_equal(body: Dict[str, Any]) -> None:
    spec = spec_from_wire(body)
    again = spec_from_wire(spec_to_wire(spec))
    assert again == spec
    assert again.shell is spec.shell


def test_spec_is_frozen() -> None:
    spec = make_spec("true")
    with pytest.raises(AttributeError):
        spec.priority = 3  # type: ignore[misc]


# ----- default names --------------------------------------------------------

@pytest.mark.parametrize("argv, shell, expected", [
    (("/bin/sh", "-c", "python3 x.py"), True, "python3"),
    (("python3", "x.py"), False, "python3"),
    (("/usr/bin/env",), False, "env"),
    (("/bin/sh", "-c", "  ./run.sh --fast"), True, "run.sh"),
    (("/bin/sh", "-c", "$(which ls)"), True, "which"),
    (("...hidden",), False, "hidden"),
    (("日本語",), False, "task"),
    (("/bin/sh", "-c", "'%&*'"), True, "task"),
    (("a" * 50,), False, "a" * 32),
    (("C:\\Tools\\x.exe",), False, "CToolsx.exe"),
])
def test_default_task_name(argv: tuple, shell: bool, expected: str) -> None:
    assert default_task_name(argv, shell) == expected


@pytest.mark.parametrize("command", ["日本語 x", ["-x"], "__init__.py", ["/"], "a" * 100])
def test_given_any_command_then_the_default_name_passes_validation(command: Any) -> None:
    spec = spec_from_wire({"command": command})
    assert spec_from_wire({"command": command, "name": spec.name}).name == spec.name


# ----- records and the fake clock -------------------------------------------

def test_record_starts_queued_without_attempts() -> None:
    record = TaskRecord("t#1", make_spec(["ls"]), seq=3, submitted_at=12.0)
    assert record.state is S.QUEUED
    assert (record.current, record.exit_code, record.node) == (None, None, None)
    wire = record.to_wire()
    assert wire["state"] == "QUEUED" and wire["attempts"] == [] and wire["command"] == "ls"


def test_make_spec_applies_overrides_as_a_submit_would() -> None:
    spec = make_spec("run it", requires=["gpu"], env={"B": "1", "A": "2"}, priority=2)
    assert spec.requires == frozenset({"gpu"})
    assert spec.env == (("A", "2"), ("B", "1"))
    assert spec.argv == ("/bin/sh", "-c", "run it") and spec.name == "run"
    with pytest.raises(UsageError):
        make_spec("")


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock() == 100.0
    assert clock.advance(2.5) == 102.5 and clock() == 102.5
    assert clock.set(50) == 50.0 and clock() == 50.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock() == 50.0


def test_identical_bodies_share_one_spec_and_different_ones_do_not() -> None:
    from titan.core.model import SpecCache
    cache = SpecCache()
    first = cache.get({"command": ["true"], "env": {"A": "1", "B": "2"}, "requires": ["gpu"]})
    # The same body again, with its keys (and its env's keys) in another order: the same spec object
    assert cache.get({"requires": ["gpu"], "env": {"B": "2", "A": "1"}, "command": ["true"]}) is first
    # Any difference, deep inside included, is another spec
    assert cache.get({"command": ["true"], "env": {"A": "1", "B": "3"}, "requires": ["gpu"]}) is not first
    assert cache.get({"command": "true", "env": {"A": "1", "B": "2"}, "requires": ["gpu"]}) is not first
    # Keys that are not part of a spec do not split the cache
    assert cache.get({"command": ["true"], "env": {"A": "1", "B": "2"}, "requires": ["gpu"], "watch": False}) is first
