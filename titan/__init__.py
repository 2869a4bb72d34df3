"""Titan: a self-healing distributed runtime for scripts, DAGs and services.

This package's top level is the SDK a program imports::

    import titan
    with titan.connect("127.0.0.1:9090") as c:
        print(c.submit("echo hi").result(timeout=30).output)
"""
from __future__ import annotations

__version__ = "0.1.0"

from titan.errors import (  # noqa: E402
    AuthError, ConnectionLost, RemoteError, TitanError, UnknownJob, UnknownTask, UsageError,
)
from titan.sdk.client import Client, Run, RunResult, Task, TaskResult, connect  # noqa: E402

__all__ = [
    "__version__", "connect", "Client", "Task", "TaskResult", "Run", "RunResult",
    "TitanError", "AuthError", "ConnectionLost", "RemoteError", "UnknownTask", "UnknownJob", "UsageError",
]
