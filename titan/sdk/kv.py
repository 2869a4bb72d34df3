"""``c.kv``: the cluster's key-value store and pub/sub, from the SDK.

    c.kv.set("model", b"...", ttl_s=3600)   c.kv.get("model") -> b"..." | None
    c.kv.incr("done")                       c.kv.sadd("seen", "a", "b")
    with c.kv.subscribe("events") as sub:   c.kv.publish("events", "hello")
        channel, data = sub.get(timeout=5)

Keys and channels are str; values are bytes (str is sent as UTF-8).  Keys
live apart from the master's own records, and a write returns only once it
is on the master's disk.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from titan.wire.frames import Op

if TYPE_CHECKING:
    from titan.sdk.client import Client

__all__ = ["KV", "Subscription"]

Value = Union[bytes, str]


class KV:
    """Key-value access through one :class:`~titan.sdk.client.Client`."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def _op(self, op: str, **fields: Any) -> Dict[str, Any]:
        fields["op"] = op
        return self.client._call(Op.KV, fields)

    def get(self, key: str) -> Optional[bytes]:
        return self._op("get", key=key).get("value")

    def set(self, key: str, value: Value, *, ttl_s: Optional[float] = None) -> None:
        self._op("set", key=key, value=value, ttl_s=ttl_s)

    def delete(self, *keys: str) -> int:
        return int(self._op("delete", keys=list(keys))["deleted"])

    def incr(self, key: str, by: int = 1) -> int:
        return int(self._op("incr", key=key, by=by)["value"])

    def sadd(self, key: str, *members: Value) -> int:
        return int(self._op("sadd", key=key, members=list(members))["added"])

    def srem(self, key: str, *members: Value) -> int:
        return int(self._op("srem", key=key, members=list(members))["removed"])

    def smembers(self, key: str) -> "set[bytes]":
        return set(self._op("smembers", key=key)["members"])

    def expire(self, key: str, ttl_s: float) -> bool:
        return bool(self._op("expire", key=key, ttl_s=ttl_s)["set"])

    def ttl(self, key: str) -> Optional[float]:
        return self._op("ttl", key=key)["ttl_s"]

    def keys(self, pattern: str = "*") -> List[str]:
        return list(self._op("keys", pattern=pattern)["keys"])

    def publish(self, channel: str, message: Value) -> int:
        """Send ``message`` to every current subscriber; return how many got it."""
        return int(self._op("publish", channel=channel, message=message)["receivers"])

    def subscribe(self, *channels: str, patterns: Tuple[str, ...] = ()) -> "Subscription":
        """Start receiving messages on ``channels`` (and glob ``patterns``)."""
        req_id = self.client._send(Op.SUBSCRIBE, {"channels": list(channels), "patterns": list(patterns)})
        self.client._wait_for(req_id, time.monotonic() + 30.0)
        return Subscription(self.client, req_id)


class Subscription:
    """Messages for one subscribe call, in the order they were published."""

    def __init__(self, client: "Client", req_id: int) -> None:
        self.client = client
        self.req_id = req_id

    def __del__(self) -> None:
        self.client._abandon(self.req_id)     # what still arrives for it is dropped, not kept

    def get(self, timeout: Optional[float] = None) -> Optional[Tuple[str, bytes]]:
        """The next ``(channel, data)``, or None if ``timeout`` passes first."""
        pending = self.client._pending[self.req_id]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not pending.events:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            self.client._poll(wait if wait is not None else 3600.0)
        event = pending.events.pop(0)
        return str(event.get("channel")), event.get("data") or b""

    def close(self) -> None:
        """Stop receiving (the master forgets it when this connection closes)."""
        self.client._forget(self.req_id)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
