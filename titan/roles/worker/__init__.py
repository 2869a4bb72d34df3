"""The worker role: runs attempts and services for one master (see :mod:`.server`)."""
from titan.roles.worker.server import Worker, WorkerConfig

__all__ = ["Worker", "WorkerConfig"]
