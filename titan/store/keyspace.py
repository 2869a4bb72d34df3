"""The keyspace: values, TTLs with lazy and active expiry, SCAN positions, and
the AOF commands a command propagates.

What this module owns: the one place command handlers read and change data.
Values are plain Python objects, chosen by type::

    bytes           a string
    set of bytes    a set
    dict            a hash (field -> value, both bytes)

TTLs live apart, in ``expires`` (key -> absolute ms), with a heap of
``(when, key)`` for active expiry; heap entries go stale when a TTL changes
and are skipped.  A key is expired when ``now_ms > when``, as in Redis.

Expiry is suspended while ``loading`` (AOF replay), as Redis does: a
replayed ``APPEND`` must find the key its ``SET ... PXAT`` made even if that
time has passed, or the two would diverge; active expiry cleans up after.

Every change a handler makes that is not implied by its own AOF command
(lazily expiring a key on access) is propagated here; the handler adds its
own command to ``prop``.
"""
from __future__ import annotations

import heapq
import weakref
from itertools import compress
from typing import Dict, Iterator, List, MutableSequence, Optional, Set, Tuple, Union

from titan.store.reply import WRONGTYPE, CommandError

__all__ = ["Value", "Keyspace", "ScanIndex", "Snapshot", "type_name"]

Value = Union[bytes, Set[bytes], Dict[bytes, bytes]]

_DEL = b"DEL"


def type_name(value: Value) -> bytes:
    """The TYPE reply for a value: string, set or hash."""
    kind = type(value)
    if kind is bytes:
        return b"string"
    if kind is set:
        return b"set"
    return b"hash"


class Snapshot:
    """Marks the containers a running dump still needs; see Keyspace.snapshot()."""

    __slots__ = ("shared", "__weakref__")

    def __init__(self, shared: Set[int]) -> None:
        self.shared = shared


class Keyspace:
    """The data of one database, and the context of the command being run.

    ``now_ms`` and ``prop`` are set by the engine before each command;
    handlers append the AOF commands they propagate to ``prop``.
    """

    def __init__(self) -> None:
        self.data: Dict[bytes, Value] = {}
        self.expires: Dict[bytes, int] = {}
        self._heap: List[Tuple[int, bytes]] = []
        self.index = ScanIndex()
        self.now_ms = 0
        self.loading = False
        self.prop: MutableSequence[List[bytes]] = []  # replay makes it a sink
        self.expired_count = 0
        self._snapshots: "weakref.WeakSet[Snapshot]" = weakref.WeakSet()

    # -- reading -----------------------------------------------------------------

    def lookup(self, key: bytes) -> Optional[Value]:
        """The value at ``key``, or None; an expired key is deleted (and a DEL propagated)."""
        value = self.data.get(key)
        if value is not None and self.expires:
            when = self.expires.get(key)
            if when is not None and self.now_ms > when and not self.loading:
                self._expire(key)
                return None
        return value

    def is_expired(self, key: bytes) -> bool:
        """True when ``key`` has a TTL in the past (it is still stored); no side effects."""
        when = self.expires.get(key)
        return when is not None and self.now_ms > when and not self.loading

    def get_string(self, key: bytes) -> Optional[bytes]:
        """The string at ``key``, or None; raises WRONGTYPE for another type."""
        value = self.lookup(key)
        if value is None or type(value) is bytes:
            return value  # type: ignore[return-value]
        raise CommandError(WRONGTYPE)

    def get_set(self, key: bytes) -> Optional[Set[bytes]]:
        """The set at ``key`` to read (do not change it), or None; WRONGTYPE otherwise."""
        value = self.lookup(key)
        if value is None or type(value) is set:
            return value  # type: ignore[return-value]
        raise CommandError(WRONGTYPE)

    def get_hash(self, key: bytes) -> Optional[Dict[bytes, bytes]]:
        """The hash at ``key`` to read (do not change it), or None; WRONGTYPE otherwise."""
        value = self.lookup(key)
        if value is None or type(value) is dict:
            return value  # type: ignore[return-value]
        raise CommandError(WRONGTYPE)

    def writable_set(self, key: bytes, *, create: bool) -> Optional[Set[bytes]]:
        """The set at ``key`` to change in place (created empty if ``create``)."""
        value = self.get_set(key)
        if value is None:
            if create:
                value = set()
                self._insert(key, value)
            return value
        return self._unshared(key, value)  # type: ignore[return-value]

    def writable_hash(self, key: bytes, *, create: bool) -> Optional[Dict[bytes, bytes]]:
        """The hash at ``key`` to change in place (created empty if ``create``)."""
        value = self.get_hash(key)
        if value is None:
            if create:
                value = {}
                self._insert(key, value)
            return value
        return self._unshared(key, value)  # type: ignore[return-value]

    def expire_of(self, key: bytes) -> Optional[int]:
        """The absolute expiry of ``key`` in ms, or None when it has no TTL."""
        return self.expires.get(key)

    def live_keys(self) -> Iterator[bytes]:
        """Every key that is not expired, in insertion order (do not write while iterating)."""
        if not self.expires or self.loading:
            return iter(self.data)
        now, expires = self.now_ms, self.expires
        return (k for k in self.data if not (k in expires and now > expires[k]))

    # -- writing -----------------------------------------------------------------

    def set_string(self, key: bytes, value: bytes, *, keep_ttl: bool = False) -> None:
        """Store a string at ``key``; its TTL is cleared unless ``keep_ttl``."""
        data = self.data
        if key in data:
            data[key] = value
            if not keep_ttl:
                expires = self.expires
                if expires and key in expires:
                    del expires[key]
        else:  # a new key has no TTL to clear: TTLs leave with their keys
            data[key] = value
            self.index.added(key, data)

    def delete(self, key: bytes) -> bool:
        """Remove ``key`` and its TTL; False if it was not there."""
        if self.data.pop(key, None) is None:
            return False
        if self.expires:
            self.expires.pop(key, None)
        return True

    def rename(self, src: bytes, dst: bytes) -> None:
        """Move the value and TTL of ``src`` (which must exist) to ``dst``."""
        value = self.data.pop(src)
        when = self.expires.pop(src, None)
        if dst in self.data:
            self.data[dst] = value
            self.expires.pop(dst, None)
        else:
            self._insert(dst, value)
        if when is not None:
            self.set_expire(dst, when)

    def clear(self) -> None:
        """Remove every key (FLUSHALL)."""
        self.data.clear()
        self.expires.clear()
        self._heap = []
        self.index.reset()

    def propagate(self, command: List[bytes]) -> None:
        """Log ``command`` to the AOF as this command's effect."""
        self.prop.append(command)

    def _insert(self, key: bytes, value: Value) -> None:
        self.data[key] = value
        self.index.added(key, self.data)

    def _expire(self, key: bytes) -> None:
        self.delete(key)
        self.expired_count += 1
        self.prop.append([_DEL, key])

    # -- TTLs --------------------------------------------------------------------

    def set_expire(self, key: bytes, when_ms: int) -> None:
        """Give ``key`` (which must exist) the absolute expiry ``when_ms``."""
        self.expires[key] = when_ms
        heap = self._heap
        heapq.heappush(heap, (when_ms, key))
        if len(heap) > 2 * len(self.expires) + 1024:
            self._heap = [(w, k) for k, w in self.expires.items()]
            heapq.heapify(self._heap)

    def persist(self, key: bytes) -> bool:
        """Remove the TTL of ``key``; False if it had none."""
        return self.expires.pop(key, None) is not None

    def pop_expired(self, now_ms: int, max_keys: int) -> List[bytes]:
        """Delete up to ``max_keys`` keys expired at ``now_ms``, earliest first; return them."""
        heap, expires = self._heap, self.expires
        gone: List[bytes] = []
        while heap and len(gone) < max_keys:
            when, key = heap[0]
            if when >= now_ms:
                break
            heapq.heappop(heap)
            if expires.get(key) == when:
                self.delete(key)
                self.expired_count += 1
                gone.append(key)
        return gone

    def next_expiry_ms(self) -> Optional[int]:
        """The first ``now_ms`` at which pop_expired() would delete a key, or None."""
        heap, expires = self._heap, self.expires
        while heap and expires.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] + 1 if heap else None

    # -- snapshots for AOF rewrites -------------------------------------------------

    def snapshot(self) -> Tuple[List[bytes], List[Value], Dict[bytes, int], Snapshot]:
        """The keyspace as it is now: keys, values, expiries, and a copy-on-write mark.

        Strings are immutable; sets and hashes are shared with the live
        keyspace until a command changes one, which then gets a private copy
        first (see _unshared), so the snapshot stays as it was while it is
        read bit by bit.  The mark lasts as long as the Snapshot object lives.
        """
        keys = list(self.data)
        values = list(self.data.values())
        mark = Snapshot({id(v) for v in values if type(v) is not bytes})
        self._snapshots.add(mark)
        return keys, values, dict(self.expires), mark

    def _unshared(self, key: bytes, value: Union[Set[bytes], Dict[bytes, bytes]]) -> Union[Set[bytes], Dict[bytes, bytes]]:
        if self._snapshots:
            ident = id(value)
            if any(ident in mark.shared for mark in self._snapshots):
                value = value.copy()
                self.data[key] = value
        return value


class ScanIndex:
    """Positions for SCAN cursors, stable while keys come and go.

    A key gets the next position when it is created; a deleted key leaves its
    entry behind, so positions never move and a cursor walking them forward
    passes every key that was there all along (re-created keys may show up
    twice, which SCAN allows).  When stale entries outnumber the live keys
    the list is compacted; cursors carry a generation tag in their low 8
    bits, and each compaction keeps, per block of 1024 old positions, how
    many surviving entries came before it, so an old cursor maps to a new
    position at or before where it was.  A cursor older than the last eight
    compactions restarts from 0: duplicates, never misses.
    """

    _BLOCK = 1024
    _TAG_BITS = 8
    _TAG_MASK = (1 << _TAG_BITS) - 1
    _HISTORY = 8

    def __init__(self) -> None:
        self._keys: List[bytes] = []
        self._generation = 0
        self._history: Dict[int, List[int]] = {}
        self._check_at = 4096  # entries at which to consider compacting again

    def added(self, key: bytes, live: Dict[bytes, Value]) -> None:
        """Record that ``key`` was just created (and is already in ``live``)."""
        keys = self._keys
        keys.append(key)
        if len(keys) > self._check_at:
            if len(keys) > 2 * len(live) + 4096:
                self._compact(live)
            self._check_at = 2 * len(live) + 4096

    def reset(self) -> None:
        """Forget every position (FLUSHALL); existing cursors restart."""
        self._keys = []
        self._history.clear()
        self._generation += 1
        self._check_at = 4096

    def scan(self, cursor: int, count: int, live: Dict[bytes, Value]) -> Tuple[int, List[bytes]]:
        """About ``count`` keys of ``live`` from ``cursor`` on, and the next cursor (0 = done)."""
        index = self._resolve(cursor)
        keys = self._keys
        end = len(keys)
        found: List[bytes] = []
        budget = 10 * count
        while index < end and len(found) < count and budget > 0:
            batch = keys[index : index + count]
            index += len(batch)
            budget -= len(batch)
            found.extend(k for k in batch if k in live)
        if index >= end:
            return 0, list(dict.fromkeys(found))
        return (index << self._TAG_BITS) | (self._generation & self._TAG_MASK), list(dict.fromkeys(found))

    def _resolve(self, cursor: int) -> int:
        """The position in the current generation a client's cursor stands for."""
        if cursor == 0:
            return 0
        index, tag = cursor >> self._TAG_BITS, cursor & self._TAG_MASK
        generation = self._generation
        if tag == generation & self._TAG_MASK:
            return index
        start = next((g for g in self._history if g & self._TAG_MASK == tag), None)
        if start is None:
            return 0
        for old in range(start, generation):
            checkpoints = self._history[old]
            index = checkpoints[min(index // self._BLOCK, len(checkpoints) - 1)]
        return index

    def _compact(self, live: Dict[bytes, Value]) -> None:
        old = self._keys
        keep = bytearray(len(old))
        seen: Set[bytes] = set()
        for position in range(len(old) - 1, -1, -1):  # the last entry of a live key survives
            key = old[position]
            if key in live and key not in seen:
                seen.add(key)
                keep[position] = 1
        checkpoints, before = [], 0
        for block in range(0, len(old), self._BLOCK):
            checkpoints.append(before)
            before += keep.count(1, block, block + self._BLOCK)
        checkpoints.append(before)
        self._keys = list(compress(old, keep))
        self._history[self._generation] = checkpoints
        self._history.pop(self._generation - self._HISTORY, None)
        self._generation += 1
