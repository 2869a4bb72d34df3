"""Building DEPLOY requests: one service from arguments, or every ``[service:NAME]`` of a job file.

    c.deploy("python3 -m http.server $PORT", name="web", port="auto", health="tcp")
    c.deploy_file("api.ini")          # -> the services' rows, as `titan ps` shows them

The master answers once each service is RUNNING, FATAL, EXITED or PENDING
(no eligible worker yet); ``titan.core.service`` documents every setting.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from titan.errors import UsageError

__all__ = ["service_body", "file_request", "load_job_file", "tag_list"]


def tag_list(requires: Union[None, str, Iterable[str]]) -> List[str]:
    """Tags as given to ``requires``: a set or list of names, or one string ("gpu" or "gpu,cuda")."""
    if requires is None:
        return []
    if isinstance(requires, str):
        requires = requires.split(",")
    names = list(requires)
    if not all(isinstance(t, str) for t in names):
        raise UsageError(f"requires takes tag names (strings), not {names!r}")
    return sorted({t.strip() for t in names if t.strip()})


def service_body(command: Union[str, Sequence[str]], *, name: str, port: Union[None, int, str] = None,
                 requires: Union[None, str, Iterable[str]] = None, node: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, **settings: Any) -> Dict[str, Any]:
    """One DEPLOY entry; ``settings`` are the other keys (``restart``, ``health``, ``backoff_s``...)."""
    body: Dict[str, Any] = {"name": name, "command": command if isinstance(command, str) else list(command),
                            "port": port, "requires": tag_list(requires), "node": node, "env": dict(env or {})}
    body.update({k: v for k, v in settings.items() if v is not None})
    return body


def load_job_file(path: str) -> Tuple[Any, Callable[[str], Tuple[bytes, bool]]]:
    """Read, parse and check a job file; return its ``JobSpec`` and a reader of the files it names.

    Raises :class:`titan.core.jobfile.JobFileError` listing every problem: a
    file that cannot be read or is not UTF-8 is one too.
    """
    from titan.core.jobfile import JobFileError, Problem, parse    # only file requests need them
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except OSError as exc:
        raise JobFileError([Problem(name, 0, None, None, f"cannot read the job file: {exc.strerror or exc}")])
    except UnicodeDecodeError as exc:
        raise JobFileError([Problem(name, data.count(b"\n", 0, exc.start) + 1, None, None,
                                    f"not UTF-8 text (byte offset {exc.start}); save the file as UTF-8")])
    base = os.path.dirname(os.path.abspath(path))
    spec = parse(text, filename=name, is_file=lambda p: os.path.isfile(os.path.join(base, p)))

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
