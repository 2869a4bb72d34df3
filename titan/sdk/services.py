"""Building DEPLOY requests: one service from arguments, or every ``[service:NAME]`` of a job file.

    c.deploy("python3 -m http.server $PORT", name="web", port="auto", health="tcp")
    c.deploy_file("api.ini")          # -> the services' rows, as `titan ps` shows them

The master answers once each service is RUNNING, FATAL, EXITED or PENDING
(no eligible worker yet); ``titan.core.service`` documents every setting.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["service_body", "file_request", "load_job_file"]


def service_body(command: Union[str, Sequence[str]], *, name: str, port: Union[None, int, str] = None,
                 requires: Optional[Iterable[str]] = None, node: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, **settings: Any) -> Dict[str, Any]:
    """One DEPLOY entry; ``settings`` are the other keys (``restart``, ``health``, ``backoff_s``...)."""
    body: Dict[str, Any] = {"name": name, "command": command if isinstance(command, str) else list(command),
                            "port": port, "requires": sorted(requires or ()), "node": node, "env": dict(env or {})}
    body.update({k: v for k, v in settings.items() if v is not None})
    return body


def load_job_file(path: str) -> Tuple[Any, Callable[[str], Tuple[bytes, bool]]]:
    """Parse and check a job file; return its ``JobSpec`` and a reader of the files it names.

    Raises :class:`titan.core.jobfile.JobFileError` listing every problem.
    """
    from titan.core.jobfile import JobFileError, check_files, parse    # only file requests need them
    with open(path, encoding="utf-8") as f:
        spec = parse(f.read(), filename=str(path))
    base = os.path.dirname(os.path.abspath(path))
    problems = check_files(spec, lambda p: os.path.isfile(os.path.join(base, p)))
    if problems:
        raise JobFileError(problems)

    def read(rel: str) -> Tuple[bytes, bool]:
        full = os.path.join(base, rel)
        with open(full, "rb") as f:
            return f.read(), os.access(full, os.X_OK)
    return spec, read


def file_request(path: str) -> Tuple[Dict[str, Any], int]:
    """The DEPLOY body for a job file's services, and how many tasks the file also has."""
    from titan.core.runs import services_to_wire
    spec, read = load_job_file(path)
    blobs: Dict[str, bytes] = {}
    services: List[Dict[str, Any]] = services_to_wire(spec, read, blobs)
    return {"services": services, "blobs": blobs, "job": spec.name}, len(spec.tasks)
