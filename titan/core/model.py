"""The task model: what a user asked for (specs) and where it stands (states).

Specs are frozen dataclasses built once from user input and never changed;
runtime status lives in :class:`TaskRecord`, owned by the scheduler.  Every
state change goes through :func:`transition`, which checks the one table of
legal moves::

    WAITING -> QUEUED -> RUNNING -> SUCCEEDED
                           |  \\-> FAILED -> QUEUED (retries left) | DEAD
                           \\-> QUEUED (its worker was lost; no retry used)
    any live state -> CANCELLED;  WAITING -> SKIPPED (an upstream task failed)
    WAITING -> FAILED (the node its affinity names is gone); SKIPPED -> WAITING (upstream retried)
    CANCELLED -> WAITING (retried while a task it waits for has not succeeded)

A failed task that was given no retries ends in FAILED; one that used up its
retries ends in DEAD (the dead-letter set).  ``titan retry`` moves FAILED,
DEAD, CANCELLED and SKIPPED tasks back to QUEUED (a cancelled one whose
dependencies have not all succeeded back to WAITING).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, cast

from titan.errors import InvalidTransition, UsageError

__all__ = [
    "TaskState",
    "TERMINAL",
    "TRANSITIONS",
    "transition",
    "TaskSpec",
    "TaskRecord",
    "Attempt",
    "spec_from_wire",
    "spec_to_wire",
    "SpecCache",
    "default_task_name",
    "argv_from_wire",
    "env_from_wire", "SET_BY_TITAN",
    "files_from_wire",
    "NAME_RE",
]


class TaskState(str, enum.Enum):
    WAITING = "WAITING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    def __str__(self) -> str:
        return self.value


S = TaskState
TRANSITIONS: Dict[TaskState, FrozenSet[TaskState]] = {
    S.WAITING: frozenset({S.QUEUED, S.CANCELLED, S.SKIPPED, S.FAILED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),   # FAILED: its affinity node is gone
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED, S.DEAD}),
    S.DEAD: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED, S.WAITING}),
    S.SKIPPED: frozenset({S.QUEUED, S.WAITING}),
    S.SUCCEEDED: frozenset(),
}
TERMINAL: FrozenSet[TaskState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED}
)


def transition(record: "TaskRecord", new: TaskState) -> TaskState:
    """Move ``record`` to ``new``; raise :class:`InvalidTransition` if illegal."""
    old = record.state
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(
            f"task {record.id!r} cannot move from {old.value} to {new.value}"
        )
    record.state = new
    return old


KILL_GRACE_S = 5.0     # TERM to KILL, unless a task says otherwise
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: "$" would allow a trailing "\n"


@dataclass(frozen=True)
class TaskSpec:
    """What the user asked to run; immutable once submitted."""

    argv: Tuple[str, ...]
    name: str = "task"
    requires: FrozenSet[str] = frozenset()
    node: Optional[str] = None
    timeout_s: Optional[float] = None
    kill_grace_s: float = KILL_GRACE_S
    priority: int = 0
    retries: int = 0
    retry_backoff_s: float = 1.0
    env: Tuple[Tuple[str, str], ...] = ()
    files: Tuple[Tuple[str, str, bool], ...] = ()   # (path in the workspace, sha256, executable)
    shell: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def command_text(self) -> str:
        """The command as a person would type it."""
        if self.shell:
            return self.argv[-1]
        return " ".join(_quote(a) for a in self.argv)


def _quote(arg: str) -> str:
    if arg and re.fullmatch(r"[A-Za-z0-9_./=:,+@%-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def default_task_name(argv: Tuple[str, ...], shell: bool) -> str:
    """A readable task name from a command: ``python3 x.py`` -> ``python3``."""
    words = argv[-1].split() if shell else list(argv)
    first = words[0].rsplit("/", 1)[-1] if words else ""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "", first)[:32].lstrip("._-")
    return cleaned or "task"


def _want(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


def argv_from_wire(command: object) -> Tuple[Tuple[str, ...], bool]:
    if isinstance(command, str):
        _want(bool(command.strip()), "empty command: give a shell string or an argv list")
        return ("/bin/sh", "-c", command), True
    _want(command is not None, "command is missing: give a shell string or an argv list")
    _want(isinstance(command, list), f"command must be a string or a list, not {type(command).__name__}")
    _want(len(command) > 0, "empty command: give a shell string or an argv list")
    _want(all(isinstance(a, str) for a in command), "every argv element must be a string")
    _want(bool(command[0]), "empty command: the program name (argv[0]) is empty")
    return tuple(command), False


def _number(body: Mapping[str, Any], key: str, default: Optional[float], *, low: float = 0.0) -> Optional[float]:
    value = body.get(key, default)
    if value is None:
        return None
    _want(isinstance(value, (int, float)) and not isinstance(value, bool),
          f"{key} must be a number, not {value!r}")
    _want(value >= low, f"{key} must be at least {low:g}, not {value!r}")
    return float(value)


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def safe_relative_path(path: object) -> bool:
    """True for a relative path that stays inside the directory it is joined to."""
    if not isinstance(path, str) or not path or "\0" in path or path.startswith("/") or "\\" in path:
        return False
    parts = path.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def files_from_wire(files: object) -> Tuple[Tuple[str, str, bool], ...]:
    if not files:
        return ()
    _want(isinstance(files, dict), f"files must map workspace paths to [sha256, executable], not {files!r}")
    out = []
    for path, entry in sorted(files.items()):   # type: ignore[union-attr]
        _want(safe_relative_path(path), f"file path {path!r} must be relative and stay inside the workspace")
        _want(isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
              and bool(_SHA_RE.match(entry[0])), f"file {path!r}: expected [sha256 hex, executable]")
        out.append((path, entry[0], bool(entry[1])))
    return tuple(out)


# Environment variables a worker sets for each attempt (or service instance), over the job's own.
SET_BY_TITAN = {"TITAN_RUN": "the run's id", "TITAN_TASK": "the task's id",
                "TITAN_ATTEMPT": "the attempt's number", "TITAN_SHARED": "the run's shared directory",
                "TITAN_WORKSPACE": "the attempt's own directory", "TITAN_SERVICE": "the service's name"}


def env_from_wire(env: object) -> Tuple[Tuple[str, str], ...]:
    """A wire ``env`` map, checked, as sorted (name, value) pairs."""
    env = env or {}
    _want(isinstance(env, dict) and all(isinstance(v, str) for v in env.values()),  # type: ignore[union-attr]
          "env must map names to string values")
    for key, value in env.items():  # type: ignore[union-attr]
        _want(key not in SET_BY_TITAN, f"{key} is set by Titan ({SET_BY_TITAN.get(key)}) and cannot be set here; "
                                       "choose another name")
        _want(isinstance(key, str) and bool(key) and "=" not in key and "\0" not in key,
              f"bad environment variable name {key!r}: it must be non-empty without '=' or NUL")
        _want("\0" not in value, f"environment variable {key!r} contains a NUL byte")
    return tuple(sorted(env.items()))  # type: ignore[union-attr]


def spec_from_wire(body: Mapping[str, Any]) -> TaskSpec:
    """Build a :class:`TaskSpec` from a SUBMIT body; raise UsageError on bad input."""
    argv, shell = argv_from_wire(body.get("command"))
    name = body.get("name") or default_task_name(argv, shell)
    _want(isinstance(name, str) and bool(NAME_RE.fullmatch(name)),
          f"bad task name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    requires = body.get("requires") or []
    _want(isinstance(requires, list) and all(isinstance(t, str) and t for t in requires),
          f"requires must be a list of tag names, not {requires!r}")
    env = env_from_wire(body.get("env"))
    _want(all("\0" not in a for a in argv), "the command contains a NUL byte, which no program can receive")
    node = body.get("node")
    _want(node is None or (isinstance(node, str) and bool(node)), f"node must be a worker name, not {node!r}")
    priority = body.get("priority", 0)
    _want(isinstance(priority, int) and not isinstance(priority, bool) and -1000 <= priority <= 1000,
          f"priority must be an integer from -1000 to 1000, not {priority!r}")
    retries = body.get("retries", 0)
    _want(isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries <= 1000, f"retries must be an integer 0..1000, not {retries!r}")
    timeout_s = _number(body, "timeout_s", None)
    _want(timeout_s is None or timeout_s > 0, "timeout_s must be greater than 0")
    return TaskSpec(
        files=files_from_wire(body.get("files")),
        argv=argv, name=name, requires=frozenset(requires), node=node,
        timeout_s=timeout_s, kill_grace_s=_number(body, "kill_grace_s", KILL_GRACE_S) or 0.0,
        priority=priority, retries=retries,
        retry_backoff_s=_number(body, "retry_backoff_s", 1.0) or 0.0,
        env=env, shell=shell,
    )


_SPEC_KEYS = frozenset({"command", "name", "requires", "node", "timeout_s", "kill_grace_s", "priority",
                        "retries", "retry_backoff_s", "env", "files"})


def _frozen(value: Any) -> Any:
    if type(value) is list:
        return tuple(map(_frozen, value))
    if type(value) is dict:
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


class SpecCache:
    """Builds specs like :func:`spec_from_wire`, sharing one among identical bodies.

    A fan-out of a thousand identical tasks then costs one validation and
    one spec object.  Bounded: it forgets everything when it fills up.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._specs: Dict[Any, TaskSpec] = {}

    def get(self, body: Mapping[str, Any]) -> TaskSpec:
        try:
            items = [(k, v if type(v) is str else _frozen(v)) for k, v in body.items() if k in _SPEC_KEYS]
            items.sort()             # keys are distinct: only they are compared
            key = tuple(items)
            spec = self._specs.get(key)
        except TypeError:            # odd value types: validate without caching
            return spec_from_wire(body)
        if spec is None:
            spec = spec_from_wire(body)
            if len(self._specs) >= self.max_entries:
                self._specs.clear()
            self._specs[key] = spec
        return spec


def spec_to_wire(spec: TaskSpec) -> Dict[str, Any]:
    """The SUBMIT body that :func:`spec_from_wire` turns back into ``spec``."""
    return {
        "command": spec.argv[-1] if spec.shell else list(spec.argv),
        "name": spec.name,
        "requires": sorted(spec.requires),
        "node": spec.node,
        "timeout_s": spec.timeout_s,
        "kill_grace_s": spec.kill_grace_s,
        "priority": spec.priority,
        "retries": spec.retries,
        "retry_backoff_s": spec.retry_backoff_s,
        "env": dict(spec.env),
        "files": {path: [sha, executable] for path, sha, executable in spec.files},
    }


class Attempt:
    """One execution of a task on one worker."""

    __slots__ = ("number", "worker", "started_at", "finished_at", "exit_code", "reason", "state", "log_bytes")

    def __init__(self, number: int, worker: str, started_at: float) -> None:
        self.number = number
        self.worker = worker
        self.started_at = started_at
        self.finished_at: Optional[float] = None
        self.exit_code: Optional[int] = None
        self.reason: str = ""
        self.state: TaskState = TaskState.RUNNING
        self.log_bytes = 0       # size of the attempt's log file on the master

    def to_wire(self) -> Dict[str, Any]:
        return {
            "attempt": self.number, "node": self.worker, "state": self.state.value,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "exit_code": self.exit_code, "reason": self.reason, "log_bytes": self.log_bytes,
        }


class TaskRecord:
    """Runtime status of one task; the scheduler owns and mutates it."""

    __slots__ = ("id", "spec", "state", "seq", "submitted_at", "finished_at",
                 "attempts", "ready_at", "cancel_requested", "retry_base", "saved",
                 "after", "affinity", "run", "pin", "note", "delay_s", "qgen")

    def __init__(self, task_id: str, spec: TaskSpec, seq: int, submitted_at: float) -> None:
        self.id = task_id
        self.spec = spec
        self.state = TaskState.QUEUED
        self.seq = seq
        self.submitted_at = submitted_at
        self.finished_at: Optional[float] = None
        self.attempts: Sequence[Attempt] = ()   # a list from the first attempt on (see add_attempt)
        self.ready_at = submitted_at
        self.cancel_requested = False
        self.retry_base = 0      # attempts made before the last manual retry
        self.saved: Optional[Tuple[TaskState, int]] = None   # (state, attempts) last written to the store
        self.after: Tuple[str, ...] = ()       # ids of the tasks this one waits for
        self.affinity: Optional[str] = None    # run on the node that ran this task
        self.run: Optional[str] = None         # the run it belongs to (None: a task of its own)
        self.pin: Optional[str] = None         # the node its affinity resolved to
        self.note = ""                         # why it ended without an attempt (SKIPPED, affinity)
        self.delay_s = 0.0                     # held this long once ready
        self.qgen = 0                          # which of its queue entries is current (others are stale)

    def add_attempt(self, attempt: "Attempt") -> None:
        """Record a new attempt.  A task that has none holds the shared empty tuple, not a
        list of its own: 56 bytes less for each of the many a long queue can hold."""
        if self.attempts:
            cast(List[Attempt], self.attempts).append(attempt)
        else:
            self.attempts = [attempt]

    @property
    def current(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    @property
    def exit_code(self) -> Optional[int]:
        return self.attempts[-1].exit_code if self.attempts else None

    @property
    def node(self) -> Optional[str]:
        return self.attempts[-1].worker if self.attempts else None

    def to_wire(self) -> Dict[str, Any]:
        last = self.current
        return {
            "id": self.id, "name": self.spec.name, "state": self.state.value,
            "command": self.spec.command_text, "requires": sorted(self.spec.requires),
            "priority": self.spec.priority, "submitted_at": self.submitted_at,
            "finished_at": self.finished_at, "exit_code": self.exit_code,
            "node": self.node, "reason": self.note or (last.reason if last else ""),
            "attempts": [a.to_wire() for a in self.attempts],
            "run": self.run, "after": list(self.after),
        }
