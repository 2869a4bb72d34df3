"""The fast path of RESP parsing: many whole commands per ``bytes.split``.

What this module owns: turning a run of canonical RESP arrays into commands
at close to C speed, for pipelined requests and for loading AOF files.  It
never decides that input is malformed; it only parses what it can vouch for
and leaves the rest to the exact parser in :mod:`titan.store.resp`::

    buffer --fast_commands(buf, pos, window)--> commands, new pos
                                  \\--(stops at anything unusual)--> exact parser

A window of the buffer is split on CRLF.  For canonical input without CRLF
inside payloads the tokens then read ``*N, $len1, arg1, $len2, arg2, ...``.
Commands are grouped by walking the ``*N`` headers (a run of same-shaped
commands is cut into columns with slices), and the window is accepted only
if every ``$len`` token is exactly the length of the token after it.  A
payload holding CRLF breaks that check, and the exact parser takes over at
the first command the check cannot vouch for, so both accept exactly the
same input.
"""
from __future__ import annotations

from itertools import chain
from typing import Dict, List, Tuple

__all__ = ["CRLF", "FastPathPolicy", "fast_commands"]

CRLF = b"\r\n"
_MIN_WINDOW = 512
_MAX_WINDOW = 128 * 1024

_HEADS = {b"*%d" % n: n for n in range(1, 1025)}  # canonical array headers
_BULK_HEADS: Dict[bytes, int] = {}  # canonical "$n" -> n for small n, built on first use
_BULK_HEADS_MAX = 16 * 1024


def _bulk_heads() -> Dict[bytes, int]:
    if not _BULK_HEADS:
        _BULK_HEADS.update((b"$%d" % n, n) for n in range(_BULK_HEADS_MAX + 1))
    return _BULK_HEADS


def fast_commands(
    buf: bytes,
    pos: int,
    window: int,
    max_array_len: int,
    out: List[List[bytes]],
    max_commands: int = -1,
) -> int:
    """Parse the whole canonical commands at the start of ``buf[pos:pos+window]``.

    Appends them (at most ``max_commands`` if that is not negative) to ``out``
    and returns the position after the last one (``pos`` if none).  Stops,
    without error, at the first command it cannot vouch for; the exact parser
    decides about that one.
    """
    chunk = buf[pos : pos + window]
    tokens = chunk.split(CRLF)
    start = len(out)
    budget = max_commands if max_commands >= 0 else len(tokens)
    index, headers, payloads = _group(tokens, max_array_len, budget, out)
    if index == 0:
        return pos
    known = _bulk_heads().get
    if list(map(known, chain.from_iterable(headers))) != list(map(len, chain.from_iterable(payloads))):
        good, index = _verified_prefix(tokens, len(out) - start)
        del out[start + good :]
        if index == 0:
            return pos
    rest = tokens[index:]
    return pos + len(chunk) - sum(map(len, rest)) - 2 * (len(rest) - 1)


def _group(
    tokens: List[bytes], max_array_len: int, budget: int, out: List[List[bytes]]
) -> Tuple[int, List[List[bytes]], List[List[bytes]]]:
    """Group ``tokens`` into commands by their *N headers, appending them to ``out``.

    Returns (token index after the last command, the $len tokens, the
    payload tokens), the last two as lists of lists in matching order.
    """
    usable = len(tokens) - 1  # the last token has no CRLF after it
    heads = _HEADS.get
    headers: List[List[bytes]] = []
    payloads: List[List[bytes]] = []
    index, previous, probe = 0, b"", 16
    while index < usable and budget > 0:
        head = tokens[index]
        count = heads(head)
        if count is None or count > max_array_len:
            break
        step = 1 + 2 * count
        if head == previous:
            run = _run_length(tokens, index, step, min(probe, budget), usable)
            if run > 1:  # cut a run of same-shaped commands into columns
                stop = index + step * run
                columns = [tokens[index + 2 + 2 * a : stop : step] for a in range(count)]
                out.extend(map(list, zip(*columns)))
                payloads.extend(columns)
                headers.extend(tokens[index + 1 + 2 * a : stop : step] for a in range(count))
                probe = probe * 2 if run == probe else max(probe // 2, 16)
                index, budget = stop, budget - run
                continue
        stop = index + step
        if stop > usable:
            break
        args = tokens[index + 2 : stop : 2]
        out.append(args)
        payloads.append(args)
        headers.append(tokens[index + 1 : stop : 2])
        previous, index, budget = head, stop, budget - 1
    return index, headers, payloads


def _run_length(tokens: List[bytes], index: int, step: int, most: int, usable: int) -> int:
    """How many whole commands from ``index`` on (at most ``most``) share its header."""
    head = tokens[index]
    last_start = usable - step  # a command starting later would not be whole
    run = 0
    for other in tokens[index : min(last_start + 1, index + step * most) : step]:
        if other != head:
            break
        run += 1
    return run


def _verified_prefix(tokens: List[bytes], commands: int) -> Tuple[int, int]:
    """Re-walk ``commands`` grouped commands checking each exactly.

    Returns (how many are sound, token index after them).
    """
    index = 0
    for done in range(commands):
        stop = index + 1 + 2 * _HEADS[tokens[index]]
        args = tokens[index + 2 : stop : 2]
        if tokens[index + 1 : stop : 2] != [b"$%d" % len(arg) for arg in args]:
            return done, index
        index = stop
    return commands, index


class FastPathPolicy:
    """When to try the fast path, and on how big a window.

    The window doubles while the fast path pays off and halves when it finds
    nothing to vouch for; after a miss the next few commands go straight to
    the exact parser (1, 2, 4 ... up to 64 in a row of misses), so input full
    of CRLF-bearing payloads costs little more than exact parsing alone.
    """

    __slots__ = ("window", "_skip", "_backoff")

    def __init__(self) -> None:
        self.window = 64 * 1024
        self._skip = 0
        self._backoff = 1

    def should_try(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def record(self, progressed: bool) -> None:
        if progressed:
            self.window = min(self.window * 2, _MAX_WINDOW)
            self._backoff = 1
        else:
            self.window = max(self.window // 2, _MIN_WINDOW)
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, 64)
