"""Services: what a user deploys (a frozen spec) and how one is supervised (pure policy).

A service is a long-running process the cluster keeps alive.  The master
decides *where* it runs; the worker that runs it decides *when to restart it*,
so supervision goes on while the master is away::

    DEPLOY {services: [...]} --service_from_wire--> ServiceSpec --master--> SVC_START to a worker
    worker: Supervision(spec) -- start / up / exited / health --> restart delay, or an end state

States (one table, :data:`TRANSITIONS`; the worker's supervision follows it)::

    STOPPED|EXITED|FATAL -> STARTING -> RUNNING -> STOPPING -> STOPPED   (stop asked)
                            STARTING|RUNNING -> BACKOFF -> STARTING      (crashed; restart later)
                            STARTING|RUNNING|STOPPING -> FATAL | EXITED  (crash-loop limit; restart policy)
    PENDING (no eligible worker yet) and LOST (its worker is gone) are the master's view only.

Restart policy: ``always`` restarts after any exit, ``on-failure`` after a
non-zero exit or a failed health check, ``never`` not at all.  Delays grow
exponentially from ``backoff_s`` to ``backoff_max_s`` with jitter that only
shortens them; a process that ran ``stable_s`` starts the growth over.  More
than ``max_restarts`` restarts within ``restart_window_s`` ends in FATAL, and
so do more than ``max_restarts`` starts in a row that never reach RUNNING
(however far apart: a service that never becomes healthy gives up).
Pure: the caller passes ``now`` and a random source.
"""
from __future__ import annotations

import collections
import enum
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, Optional, Tuple

from titan.core import convert
from titan.core.convert import ConvertError
from titan.core.model import NAME_RE, argv_from_wire, env_from_wire, files_from_wire
from titan.errors import InvalidTransition, UsageError

__all__ = ["ServiceState", "TRANSITIONS", "LIVE", "ServiceSpec", "service_from_wire", "service_to_wire",
           "Supervision", "STARTUP_S", "JITTER", "STARTING_PROBE_S"]

STARTUP_S = 1.0          # without a health check, alive this long = RUNNING
STARTING_PROBE_S = 0.25  # with one, how often it is checked until it first passes
JITTER = 0.2             # a restart delay is shortened by up to this fraction


class ServiceState(str, enum.Enum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FATAL = "FATAL"
    LOST = "LOST"

    def __str__(self) -> str:
        return self.value


V = ServiceState
TRANSITIONS: Dict[ServiceState, FrozenSet[ServiceState]] = {
    V.STOPPED: frozenset({V.STARTING, V.FATAL}),
    V.EXITED: frozenset({V.STARTING, V.FATAL}),
    V.FATAL: frozenset({V.STARTING}),
    V.STARTING: frozenset({V.RUNNING, V.BACKOFF, V.STOPPING, V.FATAL, V.EXITED}),
    V.RUNNING: frozenset({V.BACKOFF, V.STOPPING, V.FATAL, V.EXITED}),
    V.BACKOFF: frozenset({V.STARTING, V.STOPPED, V.FATAL}),
    V.STOPPING: frozenset({V.STOPPED, V.BACKOFF, V.FATAL, V.EXITED}),
    V.PENDING: frozenset(),
    V.LOST: frozenset(),
}
LIVE: FrozenSet[ServiceState] = frozenset({V.STARTING, V.RUNNING, V.BACKOFF, V.STOPPING})


@dataclass(frozen=True)
class ServiceSettings:
    """Where a service may run and how it is supervised, with the defaults; times in seconds.

    Shared by a job file's ``[service:NAME]`` section
    (:class:`titan.core.jobfile.ServiceDef`) and a deployed :class:`ServiceSpec`.
    ``port``: None, 0 (``auto``) or 1..65535.
    """

    name: str
    port: Optional[int] = None
    requires: FrozenSet[str] = frozenset()
    node: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    restart: str = "always"
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_s: float = 30.0
    max_restarts: int = 5
    restart_window_s: float = 60.0
    health: Optional[str] = None
    health_interval_s: float = 5.0
    health_timeout_s: float = 2.0
    health_failures: int = 3
    health_grace_s: float = 10.0
    stop_signal: str = "SIGTERM"
    stop_grace_s: float = 10.0


@dataclass(frozen=True)
class ServiceSpec(ServiceSettings):
    """One service as deployed: its settings, its command and its files (with their hashes)."""

    argv: Tuple[str, ...] = ()
    files: Tuple[Tuple[str, str, bool], ...] = ()

    @property
    def startup_limit_s(self) -> float:
        """With a health check: how long it may take to pass the first time."""
        return max(self.health_grace_s, self.health_interval_s * self.health_failures)


_DEFAULTS = ServiceSpec(name="x", argv=("x",))
_DURATIONS = ("backoff_s", "backoff_max_s", "stable_s", "restart_window_s", "health_interval_s",
              "health_timeout_s", "health_grace_s", "stop_grace_s")
_POSITIVE = frozenset({"backoff_max_s", "restart_window_s", "health_interval_s", "health_timeout_s"})


def _want(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


def _seconds(body: Mapping[str, Any], key: str, where: str) -> float:
    value = body.get(key)
    if value is None:
        return float(getattr(_DEFAULTS, key))
    _want(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
          f"{where}: {key} must be a number of seconds, not {value!r}")
    _want(key not in _POSITIVE or value > 0, f"{where}: {key} must be greater than 0")
    return float(value)


def _integer(body: Mapping[str, Any], key: str, low: int, high: int, where: str) -> int:
    value = body.get(key, getattr(_DEFAULTS, key))
    _want(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
          f"{where}: {key} must be an integer {low}..{high}, not {value!r}")
    return int(value)


def _word(body: Mapping[str, Any], key: str, conv: Callable[[str], Any], where: str) -> Any:
    value = body.get(key)
    if value is None:
        return getattr(_DEFAULTS, key)
    _want(isinstance(value, str), f"{where}: {key} must be text, not {value!r}")
    try:
        return conv(value)
    except ConvertError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _port(value: Any, where: str) -> Optional[int]:
    if value is None or value == "auto":
        return None if value is None else convert.PORT_AUTO
    if isinstance(value, str):
        try:
            return convert.port(value)
        except ConvertError as exc:
            raise UsageError(f"{where}: {exc}") from None
    _want(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535,
          f"{where}: port must be a number from 1 to 65535 or 'auto', not {value!r}")
    return int(value)


def service_from_wire(body: Any) -> ServiceSpec:
    """Build a :class:`ServiceSpec` from a DEPLOY entry; raise UsageError naming the problem."""
    _want(isinstance(body, dict), f"a service must be a map of settings, not {body!r}")
    name = body.get("name")
    _want(isinstance(name, str) and bool(NAME_RE.fullmatch(name)),
          f"bad service name {name!r}: use letters, digits, '_', '.', '-' (at most 64), starting with a letter or digit")
    where = f"service {name}"
    try:
        argv, _ = argv_from_wire(body.get("command"))
        env = env_from_wire(body.get("env"))
        files = files_from_wire(body.get("files"))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    requires = body.get("requires") or []
    _want(isinstance(requires, list) and all(isinstance(t, str) and t for t in requires),
          f"{where}: requires must be a list of tag names, not {requires!r}")
    node = body.get("node")
    _want(node is None or (isinstance(node, str) and bool(node)), f"{where}: node must be a worker name, not {node!r}")
    times = {key: _seconds(body, key, where) for key in _DURATIONS}
    _want(times["backoff_max_s"] >= times["backoff_s"],
          f"{where}: backoff ({times['backoff_s']:g}s) is longer than backoff_max ({times['backoff_max_s']:g}s)")
    spec = ServiceSpec(
        name=name, argv=argv, port=_port(body.get("port"), where), requires=frozenset(requires), node=node,
        env=env, files=files, restart=_word(body, "restart", convert.restart_policy, where),
        max_restarts=_integer(body, "max_restarts", 0, 10000, where),
        health=_word(body, "health", convert.health, where),
        health_failures=_integer(body, "health_failures", 1, 100, where),
        stop_signal=_word(body, "stop_signal", convert.signal_name, where), **times)
    _want(spec.health != "tcp" or spec.port is not None,
          f"{where}: health check 'tcp' needs a port: set port = NUMBER or port = auto")
    return spec


def service_to_wire(spec: ServiceSpec) -> Dict[str, Any]:
    """The DEPLOY entry (and stored form) of ``spec``; ``service_from_wire`` reads it back."""
    body: Dict[str, Any] = {
        "name": spec.name, "command": list(spec.argv), "port": spec.port, "requires": sorted(spec.requires),
        "node": spec.node, "env": dict(spec.env), "restart": spec.restart, "max_restarts": spec.max_restarts,
        "health": spec.health, "health_failures": spec.health_failures, "stop_signal": spec.stop_signal,
        "files": {path: [sha, executable] for path, sha, executable in spec.files},
    }
    for key in _DURATIONS:
        body[key] = getattr(spec, key)
    return body


class Supervision:
    """One deployed service on its worker: its state and the restart decisions.

    The worker calls :meth:`start` when it spawns the process, :meth:`up` when
    it counts as running, :meth:`exited` when it ends, :meth:`health` with
    each check's outcome, and :meth:`stopping` / :meth:`stopped` around a stop.
    """

    def __init__(self, spec: ServiceSpec, rand: Callable[[], float]) -> None:
        self.spec = spec
        self.rand = rand
        self.state = V.STOPPED
        self.started_at: Optional[float] = None
        self.restarts = 0
        self.reason = ""
        self.health_note = ""
        self.healthy: Optional[bool] = None   # the last check's outcome; None before the first
        self.failures = 0                     # consecutive failed health checks
        self.intent = ""                      # while STOPPING: "stop" or "restart"
        self._streak = 0                      # restarts since the last stable run
        self._came_up = False                 # this process reached RUNNING
        self._failed_starts = 0               # processes in a row that never reached RUNNING
        self._recent: Deque[float] = collections.deque()

    def _move(self, new: ServiceState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"service {self.spec.name!r} cannot move from {self.state.value} to {new.value}")
        self.state = new

    def start(self, now: float) -> None:
        """STOPPED|EXITED|FATAL|BACKOFF -> STARTING: the process was spawned."""
        self._move(V.STARTING)
        self.started_at = now
        self._came_up = False
        self.failures = 0
        self.health_note = ""
        self.healthy = None
        self.intent = ""

    def up(self, now: float) -> None:
        """STARTING -> RUNNING: it stayed up (or passed its first health check)."""
        if self.state is V.STARTING:
            self._move(V.RUNNING)
            self.reason = ""
            self._came_up = True

    def fatal(self, reason: str) -> None:
        """Give up at once (a busy port, a command that cannot start): no restart."""
        self._move(V.FATAL)
        self.reason = reason

    def stopping(self, intent: str) -> None:
        """STARTING|RUNNING -> STOPPING; ``intent`` is ``stop`` (no restart) or ``restart``."""
        self._move(V.STOPPING)
        self.intent = intent

    def stopped(self) -> None:
        """BACKOFF|STOPPING -> STOPPED: a stop ended it; nothing restarts it."""
        self._move(V.STOPPED)
        self.reason = "stopped"

    def exited(self, how: str, failed: bool, now: float) -> Optional[float]:
        """The process ended (``how``: "exit code 1"); return the restart delay, or None.

        None leaves the service STOPPED (a stop was asked), EXITED (its
        restart policy says so) or FATAL (too many restarts in the window).
        """
        if self.state is V.STOPPING and self.intent == "stop":
            self.stopped()
            return None
        if self.state is V.STOPPING:           # killed to be restarted: a failure
            failed = True
        if self.spec.restart == "never" or (self.spec.restart == "on-failure" and not failed):
            self._move(V.EXITED)
            self.reason = how or "exited"
            return None
        give_up = self._give_up(now)
        if give_up:
            self._move(V.FATAL)
            self.reason = f"{how or 'exited'}; gave up: {give_up} (max_restarts = {self.spec.max_restarts})"
            return None
        self._recent.append(now)
        self._move(V.BACKOFF)
        self.reason = how or "exited"
        self.restarts += 1
        return self._delay(now)

    def _give_up(self, now: float) -> str:
        """Why another restart is one too many (crash loop, or never up), or ""."""
        while self._recent and self._recent[0] <= now - self.spec.restart_window_s:
            self._recent.popleft()
        self._failed_starts = 0 if self._came_up else self._failed_starts + 1
        if len(self._recent) >= self.spec.max_restarts:
            return f"{len(self._recent)} restarts within {self.spec.restart_window_s:g}s"
        if self._failed_starts > self.spec.max_restarts:    # however slowly: it never comes up
            return f"it never came up in {self._failed_starts} starts"
        return ""

    def _delay(self, now: float) -> float:
        if self.started_at is not None and now - self.started_at >= self.spec.stable_s:
            self._streak = 0                   # it ran long enough: the growth starts over
        delay = min(self.spec.backoff_max_s, self.spec.backoff_s * (2.0 ** min(self._streak, 60)))
        self._streak += 1
        return delay * (1.0 - JITTER * self.rand())

    def health(self, ok: bool, detail: str, now: float) -> bool:
        """One check's outcome; True when the process must be killed and restarted."""
        self.health_note = detail
        self.healthy = ok
        if ok:
            self.failures = 0
            self.up(now)
            return False
        if self.state is V.STARTING:           # not up yet: only its startup limit counts
            if self.started_at is not None and now - self.started_at >= self.spec.startup_limit_s:
                self.health_note = f"not healthy within {self.spec.startup_limit_s:g}s of start: {detail}"
                return True
            return False
        if self.state is not V.RUNNING:
            return False
        self.failures += 1
        if self.failures >= self.spec.health_failures:
            self.health_note = f"{self.failures} health checks failed in a row: {detail}"
            return True
        return False

    def view(self) -> Dict[str, Any]:
        """What the worker reports about it (the master adds node, pid and port)."""
        return {"state": self.state.value, "started_at": self.started_at, "restarts": self.restarts,
                "reason": self.reason, "health": self.health_note, "healthy": self.healthy}


def describe(spec: ServiceSpec) -> List[str]:
    """Short facts for logs: ``port 8000``, ``health tcp``, ``restart always``."""
    out = [f"restart {spec.restart}"]
    if spec.port is not None:
        out.append("port auto" if spec.port == 0 else f"port {spec.port}")
    if spec.health:
        out.append(f"health {spec.health}")
    return out
