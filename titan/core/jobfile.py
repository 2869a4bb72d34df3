"""Job files: INI text in, a frozen :class:`JobSpec` out, or every problem at once.

The flow, all pure (the caller reads the file and passes its text)::

    text --_read--> sections of key entries, each with its line number
         --_Builder--> converters (titan.core.convert) per key -> TaskDef / ServiceDef
         --graph checks--> unknown dependencies, cycles, affinity
         --> JobSpec, or JobFileError listing every Problem in line order

The syntax is configparser's with ``interpolation=None`` (``%`` and ``$`` are
literal), read by a small line-aware reader that follows its rules so that
every problem can name its line: ``key = value`` or ``key: value``; keys are
case-insensitive (``env.NAME`` keeps the case of NAME); a line indented
deeper than its key line continues the value; ``#`` or ``;`` at the start of
a line, or after whitespace, starts a comment; duplicate sections and keys
are errors.  The sections are ``[job]``, ``[task:NAME]`` and
``[service:NAME]``; ``docs/jobfiles.md`` lists every key.
"""
from __future__ import annotations

import heapq
import re
import shlex
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from titan.core import convert
from titan.core.convert import ConvertError, closest, suggest
from titan.core.model import SET_BY_TITAN
from titan.core.service import ServiceSettings
from titan.errors import UsageError

__all__ = ["parse", "check_files", "Problem", "JobFileError", "JobSpec", "TaskDef", "ServiceDef", "upstream"]

Env = Tuple[Tuple[str, str], ...]


# ----- specs -------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskDef:
    """One ``[task:NAME]`` section; times in seconds.  ``line`` is its header's line."""

    name: str
    run: str
    after: Tuple[str, ...] = ()
    requires: FrozenSet[str] = frozenset()
    affinity: Optional[str] = None
    node: Optional[str] = None
    files: Tuple[str, ...] = ()
    retries: int = 0
    retry_backoff_s: float = 1.0
    timeout_s: Optional[float] = None
    priority: int = 0
    delay_s: float = 0.0
    env: Env = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ServiceDef(ServiceSettings):
    """One ``[service:NAME]`` section: its settings (``port`` 0 is
    :data:`titan.core.convert.PORT_AUTO`), its command and the files it names."""

    run: str = ""
    files: Tuple[str, ...] = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class JobSpec:
    """A whole job file.  ``tasks`` and ``services`` keep file order; ``key_lines``
    maps ``(section, key)`` (e.g. ``("task:load", "files")``) to its line."""

    name: str
    schedule: Optional[str] = None
    timezone: str = "UTC"
    overlap: str = "skip"
    catchup: str = "latest"
    catchup_limit: int = 10
    jitter_s: float = 0.0
    env: Env = ()
    tasks: Mapping[str, TaskDef] = field(default_factory=lambda: MappingProxyType({}))
    services: Mapping[str, ServiceDef] = field(default_factory=lambda: MappingProxyType({}))
    filename: str = field(default="<job>", compare=False)
    key_lines: Mapping[Tuple[str, str], int] = field(default_factory=dict, compare=False, repr=False)

    def topological_order(self) -> List[str]:
        """Task names, each after its dependencies; ties keep file order."""
        return _topological(list(self.tasks), {name: task.after for name, task in self.tasks.items()})

    def environment(self, name: str) -> Dict[str, str]:
        """The job-wide ``env.*`` overlaid with task or service ``name``'s own."""
        unit = self.tasks.get(name) or self.services[name]
        return {**dict(self.env), **dict(unit.env)}

    def summary(self) -> str:
        """``job NAME: 2 tasks, 1 service, schedule '0 2 * * *' Europe/Berlin``."""
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"
        when = f"schedule {self.schedule!r} {self.timezone}" if self.schedule else "no schedule"
        return f"job {self.name}: {count(len(self.tasks), 'task')}, {count(len(self.services), 'service')}, {when}"


# ----- problems ------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One mistake in a job file; prints as ``FILE:LINE: [section] key: message``
    (``FILE: message`` for the whole file, line 0: it could not be read)."""

    filename: str
    line: int
    section: Optional[str]
    key: Optional[str]
    message: str

    def __str__(self) -> str:
        section = f" [{self.section}]" if self.section is not None else ""
        key = f" {self.key}:" if self.key is not None else ""
        line = f":{self.line}" if self.line else ""
        return f"{self.filename}{line}:{section}{key} {self.message}"


class JobFileError(UsageError):
    """Raised by :func:`parse` when a job file has problems; ``problems`` holds all of
    them in line order, and the message is one line per problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# ----- the line-aware reader ---------------------------------------------------------
_OPTION_RE = re.compile(r"(?P<key>.*?)\s*[=:]\s*(?P<value>.*)$")
_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")
Report = Callable[[int, Optional[str], Optional[str], str], None]


@dataclass
class _Entry:
    key: str
    line: int
    lines: List[str]
    raw_lines: List[str]  # the same lines with their inline comments left in
    cut: bool = False     # an inline comment was removed from one of the lines

    @property
    def value(self) -> str:
        return "\n".join(self.lines).rstrip()

    @property
    def raw_value(self) -> str:
        return "\n".join(self.raw_lines).rstrip()


@dataclass
class _Section:
    header: str
    line: int
    entries: Dict[str, _Entry] = field(default_factory=dict)


def _strip_comment(line: str) -> Tuple[str, bool]:
    """The line without its comment, stripped; and whether a comment was removed."""
    stripped = line.strip()
    if stripped.startswith(("#", ";")):
        return "", True
    for i, char in enumerate(line):
        if char in "#;" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), True
    return stripped, False


def _normal_key(key: str) -> str:
    if key.lower().startswith("env."):
        return "env." + key[4:].strip()
    return key.lower()


class _Reader:
    """Splits text into sections and entries the way configparser would, reporting bad lines."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.sections: List[_Section] = []
        self.section: Optional[_Section] = None
        self.entry: Optional[_Entry] = None
        self.absorbing = False  # swallow the continuation lines of a rejected line
        self.indent = 0

    def read(self, text: str) -> List[_Section]:
        if text.startswith("\ufeff"):
            text = text[1:]
        for number, line in enumerate(_LINE_SPLIT_RE.split(text), 1):
            self.feed(number, line)
        return self.sections

    def feed(self, number: int, line: str) -> None:
        value, commented = _strip_comment(line)
        if not value:
            if not commented and self.entry is not None:
                self.entry.lines.append("")
                self.entry.raw_lines.append("")
            return
        level = len(line) - len(line.lstrip())
        if (self.entry is not None or self.absorbing) and level > self.indent:
            if self.entry is not None:  # continuation line
                self.entry.lines.append(value)
                self.entry.raw_lines.append(line.strip())
                self.entry.cut |= commented
            return
        self.indent, self.entry, self.absorbing = level, None, False
        if value.startswith("["):
            self.header(number, value)
        elif self.section is None:
            self.absorbing = True
            self.report(number, None, None, f"{value!r} is outside any section; put it under [job], "
                        "[task:NAME] or [service:NAME]")
        else:
            self.option(number, line, value, commented)

    def header(self, number: int, value: str) -> None:
        self.section = _Section(value[1:-1].strip(), number)
        if not value.endswith("]") or len(value) < 3:
            self.report(number, None, None, f"bad section header {value!r}: write [job], [task:NAME] "
                        "or [service:NAME] alone on the line")
            self.section.header = "?"
        self.sections.append(self.section)

    def option(self, number: int, line: str, value: str, commented: bool) -> None:
        assert self.section is not None
        label = self.section.header
        match = _OPTION_RE.match(value)
        self.absorbing = True
        if not match or not match.group("key"):
            self.report(number, label, None, f"expected 'key = value', got {value!r}")
            return
        key = _normal_key(match.group("key"))
        first = self.section.entries.get(key)
        if first is not None:
            self.report(number, label, key, f"duplicate key {key!r} in [{label}]: already set on line "
                        f"{first.line}")
            return
        raw = _OPTION_RE.match(line.strip())
        raw_value = raw.group("value") if raw else match.group("value")
        self.entry = _Entry(key, number, [match.group("value")], [raw_value], commented)
        self.section.entries[key] = self.entry
        self.absorbing = False


# ----- keys and their converters --------------------------------------------------------
Field = Tuple[str, Callable[[str], Any]]  # (attribute name, converter)
_JOB_KEYS: Dict[str, Field] = {
    "name": ("name", partial(convert.name, what="job name")),
    "schedule": ("schedule", convert.cron_expression),
    "timezone": ("timezone", convert.time_zone),
    "overlap": ("overlap", convert.overlap_policy),
    "catchup": ("catchup", convert.catchup_policy),
    "catchup_limit": ("catchup_limit", partial(convert.integer, minimum=1, maximum=1000)),
    "jitter": ("jitter_s", convert.duration),
}
_COMMON_KEYS: Dict[str, Field] = {
    "run": ("run", convert.command),
    "requires": ("requires", convert.tags),
    "node": ("node", convert.node_name),
    "files": ("files", convert.path_list),
}
_TASK_KEYS: Dict[str, Field] = {
    **_COMMON_KEYS,
    "after": ("after", partial(convert.names, what="task name")),
    "affinity": ("affinity", partial(convert.name, what="task name")),
    "retries": ("retries", partial(convert.integer, minimum=0, maximum=1000)),
    "retry_backoff": ("retry_backoff_s", convert.duration),
    "timeout": ("timeout_s", convert.positive_duration),
    "priority": ("priority", partial(convert.integer, minimum=-1000, maximum=1000)),
    "delay": ("delay_s", convert.duration),
}
_SERVICE_KEYS: Dict[str, Field] = {
    **_COMMON_KEYS,
    "port": ("port", convert.port),
    "restart": ("restart", convert.restart_policy),
    "backoff": ("backoff_s", convert.duration),
    "backoff_max": ("backoff_max_s", convert.positive_duration),
    "stable": ("stable_s", convert.duration),
    "max_restarts": ("max_restarts", partial(convert.integer, minimum=0, maximum=10000)),
    "restart_window": ("restart_window_s", convert.positive_duration),
    "health": ("health", convert.health),
    "health_interval": ("health_interval_s", convert.positive_duration),
    "health_timeout": ("health_timeout_s", convert.positive_duration),
    "health_failures": ("health_failures", partial(convert.integer, minimum=1, maximum=100)),
    "health_grace": ("health_grace_s", convert.duration),
    "stop_signal": ("stop_signal", convert.signal_name),
    "stop_grace": ("stop_grace_s", convert.duration),
}
_KEYS: Dict[str, Dict[str, Field]] = {"job": _JOB_KEYS, "task": _TASK_KEYS, "service": _SERVICE_KEYS}
_KINDS = ("job", "task", "service")


def _quotes_unbalanced(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return True
    return False


# ----- building the spec ----------------------------------------------------------------
class _Builder:
    """Turns sections into specs, collecting a :class:`Problem` for every mistake."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: List[Problem] = []
        self.key_lines: Dict[Tuple[str, str], int] = {}
        self.job: Optional[Dict[str, Any]] = None
        self.job_line = 1
        self.tasks: Dict[str, TaskDef] = {}
        self.services: Dict[str, ServiceDef] = {}
        self.others = 0  # sections other than [job], valid or not

    def report(self, line: int, section: Optional[str], key: Optional[str], message: str) -> None:
        self.problems.append(Problem(self.filename, line, section, key, message))

    def build(self, text: str) -> JobSpec:
        seen: Dict[Tuple[str, str], int] = {}
        for section in _Reader(self.report).read(text):
            kind, name, label = self.classify(section)
            if kind is None:
                continue
            first = seen.setdefault((kind, name), section.line)
            if first != section.line:
                self.report(section.line, label, None, f"duplicate section [{label}]: first on line {first}")
                continue
            self.add(kind, name, label, section)
        self.check_whole()
        return self.spec()

    def classify(self, section: _Section) -> Tuple[Optional[str], str, str]:
        """``(kind, name, label)``; kind is None for a section that cannot be used."""
        header = section.header
        kind, colon, name = (part.strip() for part in header.partition(":"))
        kind = kind.lower()
        if kind != "job":
            self.others += 1
        if header == "?":
            return None, "", header
        if kind not in _KINDS:
            match = closest(kind, _KINDS)
            hint = f"; did you mean [{match}{colon}{name}]?" if match else ""
            self.report(section.line, header, None, f"unknown section [{header}]{hint} (sections are "
                        "[job], [task:NAME] and [service:NAME])")
            return None, "", header
        if kind == "job":
            if colon:
                self.report(section.line, header, None, "the [job] section takes no name: write [job] "
                            "and set name = NAME inside it")
            return kind, "", "job"
        return kind, name, self.check_unit_name(section, kind, name)

    def check_unit_name(self, section: _Section, kind: str, name: str) -> str:
        label = f"{kind}:{name}"
        if not name:
            self.report(section.line, label, None, f"[{kind}] needs a name: write [{kind}:NAME]")
            return label
        try:
            convert.name(name, what=f"{kind} name")
        except ConvertError as exc:
            self.report(section.line, label, None, exc.message)
        return label

    def add(self, kind: str, name: str, label: str, section: _Section) -> None:
        values, env = self.convert_keys(section, kind, label)
        if kind == "job":
            self.job, self.job_line = {**values, "env": env}, section.line
            if "name" not in section.entries:
                self.report(section.line, "job", "name", "missing required key 'name': the job's name")
            return
        if "run" not in section.entries:
            self.report(section.line, label, "run", "missing required key 'run': the command to run")
        values.setdefault("run", "")
        other = self.services if kind == "task" else self.tasks
        if name in other:
            self.report(section.line, label, None, f"{kind} {name!r} has the same name as the "
                        f"{'service' if kind == 'task' else 'task'} on line {other[name].line}; "
                        "names must be unique across tasks and services")
        if kind == "task":
            self.tasks[name] = TaskDef(name=name, env=env, line=section.line, **values)
        else:
            self.services[name] = ServiceDef(name=name, env=env, line=section.line, **values)

    def convert_keys(self, section: _Section, kind: str, label: str) -> Tuple[Dict[str, Any], Env]:
        table, values, env = _KEYS[kind], {}, []
        for key, entry in section.entries.items():
            self.key_lines[(label, key)] = entry.line
            try:
                if key.startswith("env."):
                    name = convert.env_name(key[4:])
                    if name in SET_BY_TITAN:
                        raise ConvertError(f"{name} is set by Titan ({SET_BY_TITAN[name]}) and cannot be "
                                           "set here; choose another name", value=name)
                    env.append((name, convert.env_value(entry.value)))
                elif key in table:
                    attribute, converter = table[key]
                    values[attribute] = converter(entry.value)
                else:
                    self.unknown_key(entry, kind, label)
            except ConvertError as exc:
                for message in exc.messages:
                    self.report(entry.line, label, key, message)
            if key == "run" and entry.cut and _quotes_unbalanced(entry.value) \
                    and not _quotes_unbalanced(entry.raw_value):
                self.report(entry.line, label, key, "a ';' or '#' after a space starts a comment, and here "
                            "it cuts the command inside quotes; write ';' with no space before it, or move "
                            "the command into a script")
        return values, tuple(env)

    def unknown_key(self, entry: _Entry, kind: str, label: str) -> None:
        key = entry.key
        message = f"unknown key {key!r} in [{label}]"
        owners = [k for k in _KINDS if k != kind and key in _KEYS[k]]
        if key == "env":
            message += "; write env.NAME = value"
        elif owners:
            message += f"; {key!r} belongs in [{owners[0]}{'' if owners[0] == 'job' else ':NAME'}]"
        else:
            message += suggest(key, _KEYS[kind]) or f"; [{label}] takes {_listing(sorted(_KEYS[kind]) + ['env.NAME'])}"
        self.report(entry.line, label, key, message)

    # ----- checks across sections ----------------------------------------------------
    def check_whole(self) -> None:
        if self.job is None:
            self.report(1, None, None, "no [job] section: add [job] with name = JOBNAME")
        elif not self.others:
            self.report(self.job_line, "job", None, "the job has nothing to run: add a [task:NAME] or "
                        "[service:NAME] section")
        edges = {name: [d for d in t.after if d in self.tasks and d != name] for name, t in self.tasks.items()}
        self.check_dependencies()
        self.check_cycles(edges)
        for task in self.tasks.values():
            self.check_affinity(task, edges)
        for service in self.services.values():
            self.check_service(service)

    def line_of(self, label: str, key: str, default: int) -> int:
        return self.key_lines.get((label, key), default)

    def missing_task(self, wanted: str, what: str) -> str:
        if wanted in self.services:
            return f"{wanted!r} in {what} is a service; only tasks can be named here"
        hint = suggest(wanted, self.tasks) or (f"; the job's tasks are {_listing(list(self.tasks))}" if self.tasks else "")
        return f"unknown task {wanted!r} in {what}{hint}"

    def check_dependencies(self) -> None:
        for task in self.tasks.values():
            label = f"task:{task.name}"
            line = self.line_of(label, "after", task.line)
            for dep in task.after:
                if dep == task.name:
                    self.report(line, label, "after", f"task {dep!r} cannot be after itself")
                elif dep not in self.tasks:
                    self.report(line, label, "after", self.missing_task(dep, "after"))

    def check_cycles(self, edges: Mapping[str, List[str]]) -> None:
        """Report each cycle once, with its path, at the ``after`` key of its first task."""
        sorted_names = set(_topological(list(self.tasks), edges))
        stuck = [name for name in self.tasks if name not in sorted_names]  # on or behind a cycle
        covered: set = set()
        for start in stuck:
            path = None if start in covered else _shortest_cycle(start, edges, set(stuck))
            if path:
                covered.update(path)
                label = f"task:{start}"
                self.report(self.line_of(label, "after", self.tasks[start].line), label, "after",
                            f"dependency cycle {' -> '.join(path)} (each task is after the next); "
                            "remove one of these dependencies")

    def check_affinity(self, task: TaskDef, edges: Mapping[str, List[str]]) -> None:
        label, target = f"task:{task.name}", task.affinity
        if target is None:
            return
        line = self.line_of(label, "affinity", task.line)
        if target == task.name:
            message = "a task cannot have affinity to itself"
        elif target not in self.tasks:
            message = self.missing_task(target, "affinity")
        elif target not in upstream(task.name, edges):
            message = (f"task {target!r} is not upstream of {task.name!r}, so it may not have run yet: "
                       f"add it to after (directly or through another task)")
        elif task.node is not None:
            message = "set either affinity or node, not both"
        else:
            return
        self.report(line, label, "affinity", message)

    def check_service(self, service: ServiceDef) -> None:
        label = f"service:{service.name}"
        if service.backoff_max_s < service.backoff_s:
            key = "backoff_max" if (label, "backoff_max") in self.key_lines else "backoff"
            self.report(self.line_of(label, key, service.line), label, key, f"backoff ({service.backoff_s:g}s) "
                        f"is longer than backoff_max ({service.backoff_max_s:g}s)")
        needs_port = service.health == "tcp" or "$PORT" in (service.health or "")
        if needs_port and service.port is None and "PORT" not in dict(service.env):
            self.report(self.line_of(label, "health", service.line), label, "health",
                        f"health check {service.health!r} needs a port: set port = NUMBER or port = auto")

    def spec(self) -> JobSpec:
        job = dict(self.job or {})
        job.setdefault("name", "")
        return JobSpec(**job, tasks=MappingProxyType(dict(self.tasks)),
                       services=MappingProxyType(dict(self.services)), filename=self.filename,
                       key_lines=MappingProxyType(dict(self.key_lines)))


# ----- graph helpers ----------------------------------------------------------------------
def _listing(names: List[str], most: int = 12) -> str:
    """``a, b, c``, or the first ``most`` and how many more."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _topological(names: List[str], deps: Mapping[str, Iterable[str]]) -> List[str]:
    """Kahn's algorithm; ties go to the earlier name.  Names on or behind a cycle are left out."""
    position = {name: i for i, name in enumerate(names)}
    waiting = {name: len(set(deps[name])) for name in names}
    dependants: Dict[str, List[str]] = {name: [] for name in names}
    for name in names:
        for dep in set(deps[name]):
            dependants[dep].append(name)
    ready = [(position[name], name) for name in names if waiting[name] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in dependants[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (position[child], child))
    return order


def _shortest_cycle(start: str, edges: Mapping[str, List[str]], within: set) -> Optional[List[str]]:
    """``[start, ..., start]``: the shortest way from ``start`` back to itself inside ``within``."""
    came_from: Dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in edges[node]:
            if child == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return chain[::-1] + [start]
            if child in within and child not in came_from:
                came_from[child] = node
                queue.append(child)
    return None


def upstream(name: str, edges: Mapping[str, List[str]]) -> set:
    """Every task ``name`` waits for, directly or transitively."""
    seen: set = set()
    todo = list(edges[name])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return seen


# ----- public entry points --------------------------------------------------------------
def parse(text: str, *, filename: str = "<job>", is_file: Optional[Callable[[str], bool]] = None) -> JobSpec:
    """The :class:`JobSpec` in ``text``; raise :class:`JobFileError` listing every problem.

    With ``is_file``, a ``files`` entry for which it is false is one more problem
    (see :func:`check_files`), reported with the others."""
    builder = _Builder(filename)
    spec = builder.build(text)
    problems = list(builder.problems)
    if is_file is not None:
        problems += check_files(spec, is_file)
    if problems:
        raise JobFileError(sorted(problems, key=lambda p: p.line))
    return spec


def check_files(spec: JobSpec, is_file: Callable[[str], bool]) -> List[Problem]:
    """A problem for each ``files`` entry for which ``is_file(path)`` is false.

    The caller decides what a path is relative to (the job file's directory)."""
    problems = []
    for kind, units in (("task", spec.tasks), ("service", spec.services)):
        for unit in units.values():
            label = f"{kind}:{unit.name}"
            for path in unit.files:
                if not is_file(path):
                    problems.append(Problem(spec.filename, spec.key_lines.get((label, "files"), unit.line),
                                            label, "files", f"no such file {path!r} (paths are relative "
                                            "to the job file's directory)"))
    return problems
