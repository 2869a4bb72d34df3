"""Jobs and runs: a job file on the wire, and how a run's state follows from its tasks.

    job file --jobfile.parse--> JobSpec --job_to_wire--> RUN {job: {...}} --> master
    master: one run = the job's tasks as ``JOB#N/TASK``, in dependency order

A run is SUCCEEDED when every task succeeded, FAILED once every task has
ended and one did not, CANCELLED when it was cancelled, RUNNING otherwise.
Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from titan.core import convert
from titan.core.jobfile import JobSpec, upstream
from titan.core.model import TERMINAL, SpecCache, TaskSpec, TaskState
from titan.core.service import ServiceSettings
from titan.errors import UsageError

__all__ = ["job_to_wire", "services_to_wire", "check_job", "run_state", "task_body", "summarize", "file_hashes"]


FileReader = Callable[[str], Tuple[bytes, bool]]


def job_to_wire(spec: JobSpec, read_file: Optional[FileReader] = None,
                blobs: Optional[Dict[str, bytes]] = None) -> Dict[str, Any]:
    """The RUN body's ``job``: the tasks in dependency order, environments merged.

    ``read_file(path) -> (content, executable)`` reads a task's ``files``;
    their contents land in ``blobs`` (sha256 -> bytes), each once.
    """
    tasks = []
    for name in spec.topological_order():
        t = spec.tasks[name]
        files = _ship(spec, f"task:{name}", t.files, read_file, blobs)
        tasks.append({
            "name": name, "command": t.run, "after": list(t.after), "requires": sorted(t.requires),
            "affinity": t.affinity, "node": t.node, "retries": t.retries,
            "retry_backoff_s": t.retry_backoff_s, "timeout_s": t.timeout_s, "priority": t.priority,
            "delay_s": t.delay_s, "env": spec.environment(name), "files": files or None,
        })
    return {"name": spec.name, "schedule": spec.schedule, "timezone": spec.timezone, "overlap": spec.overlap,
            "catchup": spec.catchup, "catchup_limit": spec.catchup_limit, "jitter_s": spec.jitter_s,
            "tasks": tasks, "services": services_to_wire(spec, read_file, blobs)}


# The [service:NAME] settings that travel as they are (ServiceDef and ServiceSpec share them).
MAX_SHARED_LISTED = 1000     # run directories a worker's HELLO lists (``shared``), and the master reads
_SERVICE_SETTINGS = tuple(f.name for f in dataclasses.fields(ServiceSettings) if f.name not in ("name", "requires", "env"))


def services_to_wire(spec: JobSpec, read_file: Optional[FileReader] = None,
                     blobs: Optional[Dict[str, bytes]] = None) -> List[Dict[str, Any]]:
    """The DEPLOY entries of a job file's ``[service:NAME]`` sections (job env merged in)."""
    out = []
    for name, svc in spec.services.items():
        body: Dict[str, Any] = {"name": name, "command": svc.run, "env": spec.environment(name),
                                "files": _ship(spec, f"service:{name}", svc.files, read_file, blobs),
                                "requires": sorted(svc.requires)}
        for key in _SERVICE_SETTINGS:
            body[key] = getattr(svc, key)
        out.append(body)
    return out


def _ship(spec: JobSpec, label: str, paths: Iterable[str], read_file: Optional[FileReader],
          blobs: Optional[Dict[str, bytes]]) -> Optional[Dict[str, List[Any]]]:
    """Read the files a task or service names; their contents go to ``blobs`` by sha256."""
    files: Dict[str, List[Any]] = {}
    for path in paths:
        if read_file is None or blobs is None:
            raise UsageError(f"{spec.filename}: [{label}] files: nothing to read them with")
        data, executable = read_file(path)
        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        files[path] = [sha, executable]
    return files or None


def check_job(job: Any, specs: SpecCache) -> List[TaskSpec]:
    """Validate a RUN body's ``job`` on the master; raise UsageError naming the problem.

    Everything is checked before anything is stored or started, so a bad job
    changes nothing.  Returns each task's spec, in order, built through
    ``specs`` (the master's cache).
    """
    if not isinstance(job, dict) or not isinstance(job.get("name"), str) or not job["name"]:
        raise UsageError("a job needs a name")
    name = job["name"]
    if convert.name(name, what="job name") != name:          # the rules of a job file's [job] name
        raise UsageError(f"bad job name {name!r}: {convert.NAME_RULE}")
    tasks = job.get("tasks") or []
    services = job.get("services") or []
    if not isinstance(tasks, list) or not isinstance(services, list) or not (tasks or services):
        raise UsageError(f"job {name!r} has no tasks and no services")
    _want_number(job, "jitter_s", f"job {name!r}")
    for key, allowed in (("overlap", convert.OVERLAP_POLICIES), ("catchup", convert.CATCHUP_POLICIES)):
        if job.get(key) is not None and job[key] not in allowed:
            raise UsageError(f"job {name!r}: {key} must be one of {', '.join(allowed)}, not {job[key]!r}")
    limit = job.get("catchup_limit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= 1000):
        raise UsageError(f"job {name!r}: catchup_limit must be a whole number from 1 to 1000, not {limit!r}")
    unit_names = {s.get("name") for s in services if isinstance(s, dict)}
    edges: Dict[str, List[str]] = {}         # task -> the tasks it is after
    built = []
    for t in tasks:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise UsageError(f"job {name!r}: every task needs a name")
        where = f"job {name!r}: task {t['name']!r}"
        if t["name"] in edges:
            raise UsageError(f"job {name!r}: two tasks are named {t['name']!r}; task names must be unique")
        if t["name"] in unit_names:
            raise UsageError(f"{where} has the name of a service of the job; names must be unique across "
                             "tasks and services")
        after, affinity = t.get("after") or [], t.get("affinity")
        if not isinstance(after, list) or not all(isinstance(d, str) for d in after):
            raise UsageError(f"{where}: after must be a list of task names, not {after!r}")
        if affinity is not None and not isinstance(affinity, str):
            raise UsageError(f"{where}: affinity must be a task name, not {affinity!r}")
        for dep in after + ([affinity] if affinity else []):
            if dep not in edges:
                raise UsageError(f"{where} depends on {dep!r}, which is not listed before it")
        edges[t["name"]] = after
        if affinity and affinity not in upstream(t["name"], edges):
            raise UsageError(f"{where}: affinity {affinity!r} must be upstream of it (in after, directly or "
                             "through other tasks)")
        if affinity and t.get("node") is not None:
            raise UsageError(f"{where}: affinity and node cannot both be set")
        _want_number(t, "delay_s", where)
        try:
            built.append(specs.get(task_body(t)))
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    return built


def _want_number(body: Mapping[str, Any], key: str, where: str) -> None:
    value = body.get(key)
    if value is not None and (type(value) not in (int, float) or not 0 <= value < float("inf")):
        raise UsageError(f"{where}: {key} must be a number of seconds, at least 0, not {value!r}")


def file_hashes(job: Mapping[str, Any]) -> List[str]:
    """Every file hash a job's tasks refer to."""
    units = list(job.get("tasks") or []) + list(job.get("services") or [])
    return sorted({entry[0] for t in units for entry in (t.get("files") or {}).values()})


def task_body(task: Mapping[str, Any]) -> Dict[str, Any]:
    """The SUBMIT-style body that builds one task's spec."""
    keys = ("command", "name", "requires", "node", "timeout_s", "priority", "retries", "retry_backoff_s", "env",
            "files")
    return {k: task[k] for k in keys if task.get(k) is not None}


def run_state(states: Iterable[TaskState]) -> str:
    """The state of a run whose tasks are in ``states``."""
    states = list(states)
    if not states or any(s not in TERMINAL for s in states):
        return "RUNNING"
    if all(s is TaskState.SUCCEEDED for s in states):
        return "SUCCEEDED"
    if any(s is TaskState.CANCELLED for s in states) and \
            not any(s in (TaskState.FAILED, TaskState.DEAD) for s in states):
        return "CANCELLED"
    return "FAILED"


def summarize(states: Iterable[TaskState]) -> Dict[str, int]:
    """How many tasks are in each state."""
    counts: Dict[str, int] = {}
    for s in states:
        counts[s.value] = counts.get(s.value, 0) + 1
    return counts

