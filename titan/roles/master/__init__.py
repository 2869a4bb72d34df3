"""The master role: the control plane.

    server.py    the event loop, connections, requests and the scheduler's actions
    durable.py   the embedded store: records persisted each pass, replayed at start
"""
from __future__ import annotations

from titan.roles.master.server import Master, MasterConfig, check_exposure

__all__ = ["Master", "MasterConfig", "check_exposure"]
