"""Redis-style glob patterns on bytes, for KEYS, SCAN MATCH and PSUBSCRIBE.

What this module owns: the pattern language of Redis's ``stringmatchlen``::

    *        any run of bytes, also empty
    ?        exactly one byte
    [abc]    one of a, b, c          [^abc]  any byte but those
    [a-z]    a range (reversed ranges such as [z-a] are swapped)
    \\x       the byte x itself, also inside [...]

An unclosed ``[`` runs to the end of the pattern; a trailing lone ``\\``
matches a backslash.  Matching is case-sensitive.

A pattern compiles to its star-free segments, each one fixed-width regular
expression.  The first segment must match at the start, the last at the end,
and the middle ones are found leftmost-first in between.  That is exact for
globs (each ``*`` may swallow anything) and stays linear-ish: a hostile
pattern such as ``*a*a*a*a*b`` cannot make the regex engine backtrack
exponentially.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import List, Optional, Pattern, Tuple

__all__ = ["GlobPattern", "compile_glob", "glob_match"]

_STAR = object()


def _byte(value: int) -> str:
    return "\\x%02x" % value


def _class_body(pattern: bytes, pos: int) -> Tuple[str, int]:
    """The regex for the ``[...]`` whose first byte after ``[`` is at ``pos``.

    Returns (regex, position after the closing ``]``).
    """
    end = len(pattern)
    negate = pos < end and pattern[pos] == 94  # ^
    if negate:
        pos += 1
    parts: List[str] = []
    while pos < end and pattern[pos] != 93:  # ]
        char = pattern[pos]
        if char == 92 and pos + 1 < end:  # backslash escape
            pos += 1
            parts.append(_byte(pattern[pos]))
        elif pos + 2 < end and pattern[pos + 1] == 45:  # a-z
            low, high = sorted((char, pattern[pos + 2]))
            parts.append(_byte(low) + "-" + _byte(high))
            pos += 2
        else:
            parts.append(_byte(char))
        pos += 1
    if not parts:
        regex = "[\\x00-\\xff]" if negate else "(?!)"
    else:
        regex = "[" + ("^" if negate else "") + "".join(parts) + "]"
    return regex, pos + 1


def _tokens(pattern: bytes) -> List[object]:
    """The pattern as a list of _STAR and one-byte regex strings."""
    tokens: List[object] = []
    pos, end = 0, len(pattern)
    while pos < end:
        char = pattern[pos]
        if char == 42:  # *
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
            pos += 1
        elif char == 63:  # ?
            tokens.append("[\\x00-\\xff]")
            pos += 1
        elif char == 91:  # [
            regex, pos = _class_body(pattern, pos + 1)
            tokens.append(regex)
        else:
            if char == 92 and pos + 1 < end:
                pos += 1
            tokens.append(_byte(pattern[pos]))
            pos += 1
    return tokens


def _segments(tokens: List[object]) -> List[List[str]]:
    """Split tokens at the stars: n stars give n + 1 (possibly empty) segments."""
    segments: List[List[str]] = [[]]
    for token in tokens:
        if token is _STAR:
            segments.append([])
        else:
            segments[-1].append(token)  # type: ignore[arg-type]
    return segments


class GlobPattern:
    """A compiled glob pattern; :meth:`match` tells whether a subject matches it."""

    __slots__ = ("pattern", "_literal", "_whole", "_head", "_middle", "_tail", "_fixed")

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self._literal: Optional[bytes] = None
        self._whole: Optional[Pattern[bytes]] = None
        if not any(c in pattern for c in b"*?[\\"):
            self._literal = pattern
            return
        segments = _segments(_tokens(pattern))
        if len(segments) == 1:
            self._whole = re.compile("".join(segments[0]).encode("ascii"))
            return
        head, *middle, tail = segments
        self._head = (re.compile("".join(head).encode("ascii")), len(head))
        self._middle = [re.compile("".join(s).encode("ascii")) for s in middle if s]
        self._tail = (re.compile("".join(tail).encode("ascii")), len(tail))
        self._fixed = len(head) + len(tail)

    def match(self, subject: bytes) -> bool:
        """True when the whole of ``subject`` matches the pattern."""
        if self._literal is not None:
            return subject == self._literal
        if self._whole is not None:
            return self._whole.fullmatch(subject) is not None
        if len(subject) < self._fixed:
            return False
        head, head_len = self._head
        tail, tail_len = self._tail
        tail_start = len(subject) - tail_len
        if head_len and head.match(subject) is None:
            return False
        if tail_len and tail.match(subject, tail_start) is None:
            return False
        pos = head_len
        for segment in self._middle:
            found = segment.search(subject, pos, tail_start)
            if found is None:
                return False
            pos = found.end()
        return True

    def matches_everything(self) -> bool:
        """True for ``*`` (and ``**``...), so callers can skip matching."""
        return self._literal is None and self._whole is None and self._fixed == 0 and not self._middle

    def __repr__(self) -> str:
        return f"GlobPattern({self.pattern!r})"


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> GlobPattern:
    """A compiled pattern, cached: clients repeat their patterns."""
    return GlobPattern(pattern)


def glob_match(pattern: bytes, subject: bytes) -> bool:
    """True when ``subject`` matches the Redis glob ``pattern``."""
    return compile_glob(pattern).match(subject)
