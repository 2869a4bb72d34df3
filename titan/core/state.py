"""How the master's state is laid out in its store: keys, and records as values.

Every key the master owns starts with ``titan:``; users' keys (``titan kv``,
``c.kv``) start with ``kv:``, so the two never meet::

    titan:task:<id>      one task record (codec blob: spec, state, attempts)
    titan:worker:<name>  one worker as last seen (tags, slots, info)
    titan:job:<name>     a job as last submitted (its tasks, schedule); deleted when it is removed
    titan:cron           hash: scheduled job -> its last claimed slot (epoch seconds); its field goes with it
    titan:counters       hash: task or job name -> last number used (ids never repeat)

Values are TITAN_PROTO body encodings (``titan.wire.codec``), so a record
reads back exactly, and every write is a plain ``SET``/``HSET`` a stock
Redis understands.  Pure: this module builds commands and parses values;
the master executes them.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Optional, Tuple

from titan.core.model import Attempt, SpecCache, TaskRecord, TaskSpec, TaskState
from titan.core.model import spec_to_wire
from titan.wire.codec import TAG_BYTES, TAG_FALSE, TAG_FLOAT, TAG_INT, TAG_LIST, TAG_NONE, TAG_STR, TAG_TRUE, decode, encode

__all__ = ["TASK_PREFIX", "WORKER_PREFIX", "JOB_PREFIX", "SERVICE_PREFIX", "CRON_KEY", "COUNTERS_KEY", "USER_PREFIX", "task_key", "worker_key",
           "record_to_blob", "record_from_blob", "record_row", "task_write", "save_worker", "worker_from_blob",
           "save_counters", "needs_saving", "Command"]

Command = List[bytes]

TASK_PREFIX = b"titan:task:"
WORKER_PREFIX = b"titan:worker:"
JOB_PREFIX = b"titan:job:"
SERVICE_PREFIX = b"titan:svc:"
CRON_KEY = b"titan:cron"
COUNTERS_KEY = b"titan:counters"
USER_PREFIX = b"kv:"
FORMAT = 2


def task_key(task_id: str) -> bytes:
    return TASK_PREFIX + task_id.encode()


def worker_key(name: str) -> bytes:
    return WORKER_PREFIX + name.encode()


def _attempt_row(a: Attempt) -> List[Any]:
    return [a.number, a.worker, a.started_at, a.finished_at, a.exit_code, a.reason, a.state.value, a.log_bytes]


_SPEC_BYTES: Dict[int, Tuple[TaskSpec, bytes, bytes]] = {}


_SPEC_FIELDS = ("command", "name", "requires", "node", "timeout_s", "kill_grace_s", "priority", "retries",
                "retry_backoff_s", "env", "files")


def _spec_bytes(spec: TaskSpec) -> Tuple[TaskSpec, bytes, bytes]:
    """The encoded spec (a positional list: no key names), computed once per spec object.

    Returns ``(spec, its bytes, those bytes as a value in a record)``: the
    last with its tag and length in front, as record_to_blob lays it out.
    """
    entry = _SPEC_BYTES.get(id(spec))
    if entry is None or entry[0] is not spec:
        if len(_SPEC_BYTES) >= 4096:
            _SPEC_BYTES.clear()
        wire = spec_to_wire(spec)
        data = encode([wire[k] for k in _SPEC_FIELDS])
        entry = _SPEC_BYTES[id(spec)] = (spec, data, _SIZED.pack(TAG_BYTES, len(data)) + data)
    return entry


def _opt(value: Any) -> Any:
    """Empty values travel as None (one byte)."""
    return value if value else None


def record_row(record: TaskRecord) -> List[Any]:
    """The record as the positional list its blob encodes."""
    return [
        FORMAT, record.id, _spec_bytes(record.spec)[1], record.state.value, record.seq, record.submitted_at,
        record.finished_at, record.ready_at, record.cancel_requested, record.retry_base,
        [_attempt_row(a) for a in record.attempts] or None, _opt(list(record.after)), record.affinity,
        record.run, record.pin, _opt(record.note), _opt(record.delay_s),
    ]


# The bytes of encode(record_row(record)), laid out here directly: the master
# writes two records per task, and the generic encoder spends most of its time
# asking each of the ~25 values what type it is.  Runs of fixed-size values are
# one struct each.  Anything unusual (an int where a time is a float, an int
# beyond 64 bits) goes to encode(), which gives the same bytes, or its error.
_ROW_HEAD = struct.pack(">BIBq", TAG_LIST, 17, TAG_INT, FORMAT)
_SIZED = struct.Struct(">BI")                         # str, bytes or list: tag, length or count
_RUNNING = struct.Struct(">BqBdBBdBBq")               # seq, submitted, None, ready, cancel, retry_base
_ENDED = struct.Struct(">BqBdBdBdBBq")                # seq, submitted, finished, ready, cancel, retry_base
_ATTEMPT_HEAD = struct.Struct(">BIBq")                # an 8-item list; the attempt's number
_FLOAT = struct.Struct(">Bd")
_INT = struct.Struct(">Bq")
_NONE = bytes([TAG_NONE])


class _Unusual(Exception):
    """A value the direct layout does not cover: encode() takes the record."""


def _str_part(value: str) -> bytes:
    data = value.encode()
    return _SIZED.pack(TAG_STR, len(data)) + data


_STATE_PART = {state: _str_part(state.value) for state in TaskState}     # the state names, encoded once
_EMPTY_STR = _str_part("")                                               # most attempts' reason


def _attempt_part(a: Attempt) -> bytes:
    if type(a.started_at) is not float or not (a.finished_at is None or type(a.finished_at) is float):
        raise _Unusual
    return b"".join((
        _ATTEMPT_HEAD.pack(TAG_LIST, 8, TAG_INT, a.number), _str_part(a.worker),
        _FLOAT.pack(TAG_FLOAT, a.started_at),
        _NONE if a.finished_at is None else _FLOAT.pack(TAG_FLOAT, a.finished_at),
        _NONE if a.exit_code is None else _INT.pack(TAG_INT, a.exit_code),
        _str_part(a.reason) if a.reason else _EMPTY_STR, _STATE_PART[a.state], _INT.pack(TAG_INT, a.log_bytes)))


def record_to_blob(record: TaskRecord) -> bytes:
    """The whole record as a positional list (compact: a queued task's blob is ~150 bytes)."""
    finished, delay = record.finished_at, record.delay_s
    try:
        if (type(record.submitted_at) is not float or type(record.ready_at) is not float
                or not (finished is None or type(finished) is float) or type(delay) is not float):
            raise _Unusual
        spec = _spec_bytes(record.spec)[2]
        flag = TAG_TRUE if record.cancel_requested else TAG_FALSE
        if finished is None:
            run = _RUNNING.pack(TAG_INT, record.seq, TAG_FLOAT, record.submitted_at, TAG_NONE,
                                TAG_FLOAT, record.ready_at, flag, TAG_INT, record.retry_base)
        else:
            run = _ENDED.pack(TAG_INT, record.seq, TAG_FLOAT, record.submitted_at, TAG_FLOAT, finished,
                              TAG_FLOAT, record.ready_at, flag, TAG_INT, record.retry_base)
        attempts = record.attempts
        return b"".join((
            _ROW_HEAD, _str_part(record.id), spec, _STATE_PART[record.state],
            run,
            _SIZED.pack(TAG_LIST, len(attempts)) + b"".join(map(_attempt_part, attempts)) if attempts else _NONE,
            _SIZED.pack(TAG_LIST, len(record.after)) + b"".join(map(_str_part, record.after))
            if record.after else _NONE,
            _NONE if record.affinity is None else _str_part(record.affinity),
            _NONE if record.run is None else _str_part(record.run),
            _NONE if record.pin is None else _str_part(record.pin),
            _str_part(record.note) if record.note else _NONE, _FLOAT.pack(TAG_FLOAT, delay) if delay else _NONE))
    except (_Unusual, struct.error, UnicodeEncodeError, AttributeError, KeyError):
        return encode(record_row(record))


def record_from_blob(blob: bytes, specs: SpecCache) -> TaskRecord:
    """Rebuild a record from :func:`record_to_blob`'s bytes (ValueError if unreadable)."""
    row = decode(blob)
    if not isinstance(row, list) or len(row) < 17 or row[0] != FORMAT:
        raise ValueError("not a task record of this format")
    (_, task_id, spec, state, seq, submitted, finished, ready, cancel, retry_base, attempts, after,
     affinity, run, pin, note, delay) = row[:17]
    spec_wire = dict(zip(_SPEC_FIELDS, decode(spec)))
    record = TaskRecord(task_id, specs.get({k: v for k, v in spec_wire.items() if v is not None}),
                        int(seq), float(submitted))
    record.state = TaskState(state)
    record.finished_at = finished
    record.ready_at = float(ready or submitted)
    record.cancel_requested = bool(cancel)
    record.retry_base = int(retry_base or 0)
    record.after = tuple(after or ())
    record.affinity, record.run, record.pin = affinity, run, pin
    record.note, record.delay_s = str(note or ""), float(delay or 0.0)
    for a in attempts or []:
        number, worker, started, ended, code, reason, a_state = a[:7]
        att = Attempt(int(number), str(worker), float(started))
        att.finished_at, att.exit_code, att.reason, att.state = ended, code, reason, TaskState(a_state)
        att.log_bytes = int(a[7]) if len(a) > 7 else 0
        record.add_attempt(att)
    record.saved = (record.state, len(record.attempts))
    return record


_BEFORE_DISPATCH = frozenset({TaskState.WAITING, TaskState.QUEUED})


def needs_saving(record: TaskRecord) -> bool:
    """False for the changes a restart can work out again: WAITING -> QUEUED -> RUNNING.

    A WAITING task whose dependencies all succeeded is queued again by
    Scheduler.restore, and a task the store holds as QUEUED (or WAITING)
    with one attempt fewer is adopted from its worker's report (see
    Scheduler.hold_dispatch), so neither becoming ready nor being dispatched
    costs a write.
    """
    saved = record.saved
    if saved is None:
        return True
    state = record.state
    if state is TaskState.RUNNING:
        return not (saved[1] == len(record.attempts) - 1 and saved[0] in _BEFORE_DISPATCH)
    if state is TaskState.QUEUED:
        return saved != (TaskState.WAITING, len(record.attempts))
    return True


def task_write(record: TaskRecord, *, terminal: bool, retention_s: float) -> Tuple[bytes, bytes, Optional[int]]:
    """``SET <key> <blob> [PXAT <expiry ms>]`` of the record, as its three values (see Engine.put_string).

    A record expires ``retention_s`` after a terminal state; until then it has no expiry (None).
    """
    record.saved = (record.state, len(record.attempts))
    expire_at_ms = None
    if terminal and record.finished_at is not None:
        expire_at_ms = int((record.finished_at + retention_s) * 1000)
    return task_key(record.id), record_to_blob(record), expire_at_ms


def save_worker(name: str, tags: Iterable[str], slots: int, dedicated: bool, last_seen: float,
                info: Dict[str, Any], *, draining: bool = False) -> Command:
    blob = encode({"v": FORMAT, "name": name, "tags": sorted(tags), "slots": slots,
                   "dedicated": dedicated, "last_seen": last_seen, "draining": draining,
                   "info": {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}})
    return [b"SET", worker_key(name), blob]


def worker_from_blob(blob: bytes) -> Optional[Dict[str, Any]]:
    body = decode(blob)
    if not isinstance(body, dict) or body.get("v") != FORMAT:
        return None
    return body


def save_counters(counters: Dict[str, int]) -> Command:
    """``HSET titan:counters name n ...`` for the names given."""
    command = [b"HSET", COUNTERS_KEY]
    for name, n in sorted(counters.items()):
        command += [name.encode(), str(n).encode()]
    return command
