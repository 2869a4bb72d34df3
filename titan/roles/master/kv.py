"""The data bus for tasks: user keys and pub/sub in the master's store.

    SDK c.kv.set("k", b"v") ──KV {op: "set", key, value}──▶ KvService ──▶ engine: SET kv:k v
    c.kv.subscribe("ch")    ──SUBSCRIBE {channels}──▶ a stream of EVENT {kind: "message"}

Every user key lives under ``kv:`` so it can never touch the master's own
``titan:`` records.  Writes are acknowledged only once the pass's fsync is
done (``Master.hold``); reads answer at once.  Values are bytes; the SDK
sends str as UTF-8.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from titan.core.state import USER_PREFIX
from titan.errors import UsageError
from titan.io.loop import Connection
from titan.store.pubsub import PubSub
from titan.store.reply import ErrorReply
from titan.wire.frames import FLAG_MORE, Op

if TYPE_CHECKING:
    from titan.roles.master.server import Master

__all__ = ["KvService"]

MAX_KEY_BYTES = 1024


def _key(body: Dict[str, Any], field: str = "key") -> bytes:
    key = body.get(field)
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise UsageError(f"{field} must be a non-empty string of at most {MAX_KEY_BYTES} bytes, not {key!r}")
    return USER_PREFIX + key.encode()


def _value(body: Dict[str, Any], field: str = "value") -> bytes:
    value = body.get(field)
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise UsageError(f"{field} must be bytes or str, not {type(value).__name__}")
    return value


def _ms(body: Dict[str, Any], field: str) -> bytes:
    seconds = body.get(field)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        raise UsageError(f"{field} must be a positive number of seconds, not {seconds!r}")
    return str(max(1, int(seconds * 1000))).encode()


def _set(body: Dict[str, Any]) -> List[bytes]:
    command = [b"SET", _key(body), _value(body)]
    if body.get("ttl_s") is not None:
        command += [b"PX", _ms(body, "ttl_s")]
    return command


def _int(body: Dict[str, Any], field: str, default: int) -> bytes:
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{field} must be an integer, not {value!r}")
    return str(value).encode()


def _list(body: Dict[str, Any], field: str, convert: Callable[[Dict[str, Any], str], bytes]) -> List[bytes]:
    items = body.get(field)
    if not isinstance(items, list) or not items:
        raise UsageError(f"{field} must be a non-empty list")
    return [convert({field: item}, field) for item in items]


# op -> (is a write, command builder, reply shaper)
OPS: Dict[str, Tuple[bool, Callable[[Dict[str, Any]], List[bytes]], Callable[[Any], Dict[str, Any]]]] = {
    "get": (False, lambda b: [b"GET", _key(b)], lambda r: {"value": r}),
    "set": (True, _set, lambda r: {}),
    "delete": (True, lambda b: [b"DEL"] + _list(b, "keys", _key), lambda r: {"deleted": r}),
    "incr": (True, lambda b: [b"INCRBY", _key(b), _int(b, "by", 1)], lambda r: {"value": r}),
    "sadd": (True, lambda b: [b"SADD", _key(b)] + _list(b, "members", _value), lambda r: {"added": r}),
    "srem": (True, lambda b: [b"SREM", _key(b)] + _list(b, "members", _value), lambda r: {"removed": r}),
    "smembers": (False, lambda b: [b"SMEMBERS", _key(b)], lambda r: {"members": sorted(r)}),
    "expire": (True, lambda b: [b"PEXPIRE", _key(b), _ms(b, "ttl_s")], lambda r: {"set": bool(r)}),
    "ttl": (False, lambda b: [b"PTTL", _key(b)], lambda r: {"ttl_s": r / 1000.0 if r >= 0 else None}),
    "keys": (False, lambda b: [b"KEYS", USER_PREFIX + str(b.get("pattern") or "*").encode()],
             lambda r: {"keys": sorted(k[len(USER_PREFIX):].decode("utf-8", "replace") for k in r)}),
}


class KvService:
    """Runs KV and SUBSCRIBE requests for the master."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.pubsub = PubSub()
        self.streams: Dict[int, Tuple[Connection, int]] = {}   # subscriber id -> (conn, request id)
        self._last_sid = 0

    def request(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        op = body.get("op")
        if op == "publish":
            self._publish(conn, req_id, body)
            return
        entry = OPS.get(op) if isinstance(op, str) else None
        if entry is None:
            raise UsageError(f"unknown kv op {op!r}; expected one of {', '.join(sorted(OPS))}, publish")
        write, build, shape = entry
        if write and self.master.durable.broken is not None:
            err = self.master.durable.broken
            conn.send_error(req_id, "store_unavailable",
                            f"not written: the master cannot write to disk ({err.strerror or err})")
            return
        reply = self.master.durable.execute(build(body), self.master.clock())
        if isinstance(reply, ErrorReply):
            conn.send_error(req_id, "kv_error", reply.message)
        elif write:
            self.master.hold(conn, req_id, Op.OK, shape(reply))
        else:
            conn.send(Op.OK, req_id, shape(reply))

    def _publish(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        channel = _key(body, "channel")
        count, deliveries = self.pubsub.publish(channel, _value(body, "message"))
        for sid, push in deliveries:
            target = self.streams.get(sid)
            if target is not None:
                kind = push[0].decode()
                message = {"kind": kind, "channel": push[-2][len(USER_PREFIX):].decode("utf-8", "replace"),
                           "data": push[-1]}
                target[0].send(Op.EVENT, target[1], message, FLAG_MORE)
        conn.send(Op.OK, req_id, {"receivers": count})

    def subscribe(self, conn: Connection, req_id: int, body: Dict[str, Any]) -> None:
        channels = [_key({"channel": c}, "channel") for c in _names(body, "channels")]
        patterns = [_key({"channel": p}, "channel") for p in _names(body, "patterns")]
        if not channels and not patterns:
            raise UsageError("subscribe needs channels or patterns")
        self._last_sid += 1
        sid = self._last_sid
        self.streams[sid] = (conn, req_id)
        conn.state.subscriptions.append(sid)
        self.pubsub.subscribe(sid, channels)
        if patterns:
            self.pubsub.psubscribe(sid, patterns)
        conn.send(Op.OK, req_id, {"subscribed": len(channels) + len(patterns)}, FLAG_MORE)

    def dropped(self, sids: List[int]) -> None:
        """A connection closed: forget its subscriptions."""
        for sid in sids:
            self.pubsub.drop(sid)
            self.streams.pop(sid, None)


def _names(body: Dict[str, Any], field: str) -> List[Any]:
    """``body[field]``: a list of channel names or patterns (none if absent)."""
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise UsageError(f"{field} must be a list of names, not {type(value).__name__}")
    return value
