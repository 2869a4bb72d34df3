"""Converters from the text of a config value to a typed value, one per value type.

Each converter takes the text exactly as the job file (or a flag) gave it and
returns the typed value, or raises :class:`ConvertError` whose message names
the bad value with ``repr`` and the expected form.  Converters know nothing of
files or lines: the caller (``titan.core.jobfile``) adds file, line, section
and key.  They are pure; :func:`time_zone` reads the system time-zone database
through :mod:`zoneinfo` and :func:`cron_expression` delegates to
``titan.core.cron`` when that module is present.

    duration("1h30m") -> 5400.0        size("64MiB") -> 67108864
    tags("gpu, highmem") -> frozenset  port("auto") -> PORT_AUTO (0)
    signal_name("15") -> "SIGTERM"     relative_path("./lib//x.py") -> "lib/x.py"
"""
from __future__ import annotations

import difflib
import importlib
import math
import re
import zoneinfo
from typing import FrozenSet, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from titan.errors import UsageError

__all__ = [
    "ConvertError", "closest", "suggest", "PORT_AUTO", "RESTART_POLICIES", "OVERLAP_POLICIES", "CATCHUP_POLICIES",
    "CRON_NICKNAMES", "name", "names", "tags", "node_name", "duration", "positive_duration", "size",
    "command", "boolean", "integer", "port", "choice", "restart_policy", "overlap_policy", "catchup_policy",
    "signal_name", "env_name", "env_value", "relative_path", "path_list", "health", "time_zone",
    "cron_expression",
]

PORT_AUTO = 0  # ``port = auto``: the worker picks a free port and exports it as $PORT
RESTART_POLICIES: Tuple[str, ...] = ("always", "on-failure", "never")
OVERLAP_POLICIES: Tuple[str, ...] = ("skip", "queue", "allow")
CATCHUP_POLICIES: Tuple[str, ...] = ("none", "latest", "all")
CRON_NICKNAMES: Tuple[str, ...] = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                                   "@hourly")
NAME_RULE = "use letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LIST_SPLIT_RE = re.compile(r"[,\s]+")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_FORM = "a number of seconds, or numbers with units ms, s, m, h, d, e.g. '90s', '10m', '1h30m', '2d'"
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2, "mib": 1024 ** 2,
               "mb": 1000 ** 2, "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3, "t": 1024 ** 4,
               "tib": 1024 ** 4, "tb": 1000 ** 4}
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Signals a service may be stopped with; the number is given only where POSIX fixes it.
_SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ABRT": 6, "KILL": 9, "USR1": None, "USR2": None,
            "ALRM": 14, "TERM": 15, "WINCH": None}
_CRON_FIELD_RE = re.compile(r"[A-Za-z0-9*,/-]+")
_GLOB_CHARS = "*?["


class ConvertError(UsageError):
    """Raised by a converter when a value's text does not have the expected form.

    ``value`` is the offending text; the message names it with ``repr`` and
    says what was expected, without a location (the caller adds that).
    ``messages`` has one message per problem: a list can have several.
    """

    def __init__(self, message: str, *, value: str, more: Sequence[str] = ()) -> None:
        super().__init__("\n".join([message, *more]))
        self.message = message
        self.messages = [message, *more]
        self.value = value


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most like ``word`` (compared case-insensitively), if any is close."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def _bad(what: str, text: str, expected: str) -> ConvertError:
    return ConvertError(f"bad {what} {text!r}: expected {expected}", value=text)


# ----- names and lists ----------------------------------------------------------
def name(text: str, *, what: str = "name") -> str:
    """A job, task, service or tag name: letters, digits, ``_ . -``, at most 64."""
    value = text.strip()
    if not _NAME_RE.fullmatch(value):
        raise ConvertError(f"bad {what} {text!r}: {NAME_RULE}", value=text)
    return value


def names(text: str, *, what: str = "name") -> Tuple[str, ...]:
    """Comma- or space-separated names, in order, each once; empty text gives ``()``."""
    found = []
    for word in _LIST_SPLIT_RE.split(text.strip()):
        if word and name(word, what=what) not in found:
            found.append(word)
    return tuple(found)


def tags(text: str) -> FrozenSet[str]:
    """Capability tags, comma- or space-separated: ``gpu, highmem``."""
    return frozenset(names(text, what="tag"))


def node_name(text: str) -> str:
    """A worker name as given to ``titan worker --name``: no spaces, at most 255."""
    value = text.strip()
    if not value or len(value) > 255 or any(c.isspace() or c == "\0" for c in value):
        raise _bad("node name", text, "a worker name without spaces (at most 255 characters)")
    return value


# ----- numbers ---------------------------------------------------------------------
def duration(text: str) -> float:
    """Seconds from ``90s``, ``10m``, ``1h30m``, ``2d``, ``500ms`` or a bare number of seconds."""
    value = text.strip().lower()
    if _NUMBER_RE.fullmatch(value):
        seconds = float(value)
    elif _DURATION_RE.fullmatch(value):
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(value))
    else:
        raise _bad("duration", text, _DURATION_FORM)
    if not math.isfinite(seconds):
        raise _bad("duration", text, "a finite duration")
    return seconds


def positive_duration(text: str) -> float:
    """Like :func:`duration`, but zero is refused."""
    seconds = duration(text)
    if seconds <= 0:
        raise _bad("duration", text, "more than zero, e.g. '5s'")
    return seconds


def size(text: str) -> int:
    """Bytes from ``512``, ``512k``, ``64MiB``, ``10MB``...

    ``k m g t`` and ``KiB MiB GiB TiB`` are powers of 1024; ``kB MB GB TB``
    powers of 1000.  Units are case-insensitive.
    """
    match = _SIZE_RE.fullmatch(text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise _bad("size", text, "a number of bytes with an optional unit (k, MiB, MB, G...), e.g. '64MiB'")
    amount = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not math.isfinite(amount):
        raise _bad("size", text, "a finite size")
    return int(round(amount))


def integer(text: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """A whole number, optionally within ``minimum..maximum``."""
    value = text.strip()
    low = "" if minimum is None else f"{minimum}"
    high = "" if maximum is None else f"{maximum}"
    form = (f"a whole number from {low} to {high}" if low and high
            else f"a whole number of at least {low}" if low
            else f"a whole number of at most {high}" if high else "a whole number")
    if not re.fullmatch(r"[+-]?\d{1,18}", value):
        raise _bad("number", text, form)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _bad("number", text, form)
    return number


def port(text: str) -> int:
    """A TCP port 1..65535, or ``auto`` (:data:`PORT_AUTO`): a free port chosen at start."""
    value = text.strip().lower()
    if value == "auto":
        return PORT_AUTO
    if value == "0":
        raise ConvertError(f"bad port {text!r}: write 'auto' to have a free port picked", value=text)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise _bad("port", text, "a port number from 1 to 65535, or 'auto'")
    return int(value)


# ----- words -----------------------------------------------------------------------
def command(text: str) -> str:
    """A shell command, kept literally (``%`` and ``$VAR`` are not special here)."""
    if not text.strip():
        raise ConvertError("empty command: give the shell command to run", value=text)
    if "\0" in text:
        raise ConvertError(f"command {text!r} contains a NUL byte, which no program can receive", value=text)
    return text


def boolean(text: str) -> bool:
    """``yes no true false on off 1 0``, in any case."""
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise _bad("boolean", text, "yes or no (also true/false, on/off, 1/0)")


def choice(text: str, choices: Tuple[str, ...], *, what: str) -> str:
    """One of ``choices`` (case-insensitive), with a suggestion when it is not."""
    value = text.strip().lower()
    if value in choices:
        return value
    listed = " | ".join(choices)
    raise ConvertError(f"bad {what} {text!r}: expected {listed}{suggest(value, choices)}", value=text)


def restart_policy(text: str) -> str:
    """``always``, ``on-failure`` or ``never``."""
    return choice(text, RESTART_POLICIES, what="restart policy")


def overlap_policy(text: str) -> str:
    """``skip``, ``queue`` or ``allow``: what a cron slot does while the previous run is active."""
    return choice(text, OVERLAP_POLICIES, what="overlap policy")


def catchup_policy(text: str) -> str:
    """``none``, ``latest`` or ``all``: which slots missed while down are run."""
    return choice(text, CATCHUP_POLICIES, what="catchup policy")


def signal_name(text: str) -> str:
    """``TERM``, ``SIGTERM``, ``sigterm`` or ``15`` -> ``"SIGTERM"``.

    Numbers are accepted only where POSIX fixes them (1 2 3 6 9 14 15); the
    others differ between systems, so they must be named.
    """
    value = text.strip().upper()
    if value.isdigit():
        by_number = {number: sig for sig, number in _SIGNALS.items() if number is not None}
        if int(value) in by_number:
            return "SIG" + by_number[int(value)]
        raise ConvertError(f"bad signal {text!r}: use a name such as 'TERM' (only 1, 2, 3, 6, 9, 14 "
                           "and 15 mean the same signal on every system)", value=text)
    bare = value[3:] if value.startswith("SIG") else value
    if bare in _SIGNALS:
        return "SIG" + bare
    raise ConvertError(f"bad signal {text!r}: expected one of {', '.join(_SIGNALS)}"
                       f"{suggest(bare, _SIGNALS)}", value=text)


def env_name(text: str) -> str:
    """An environment variable name: a letter or ``_``, then letters, digits, ``_``."""
    if not _ENV_NAME_RE.fullmatch(text):
        raise _bad("environment variable name", text, "a letter or '_' followed by letters, digits or '_'")
    return text


def env_value(text: str) -> str:
    """An environment value, kept literally; only NUL is refused."""
    if "\0" in text:
        raise ConvertError(f"environment value {text!r} contains a NUL byte", value=text)
    return text


# ----- paths, URLs, zones, schedules -------------------------------------------------
def relative_path(text: str) -> str:
    """A path inside the workspace, normalised: ``./lib//x.py`` -> ``lib/x.py``.

    Refuses absolute paths, ``~``, ``..`` components, globs, backslashes,
    directories (a trailing ``/``) and NUL, so it can never escape.
    """
    value = text.strip()
    problem = _path_problem(value)
    if problem:
        raise ConvertError(f"bad file path {text!r}: {problem}", value=text)
    return "/".join(p for p in value.split("/") if p not in ("", "."))


def _path_problem(value: str) -> str:
    parts = [p for p in value.split("/") if p not in ("", ".")]
    checks = (
        ("\0" in value, "it contains a NUL byte"),
        (value.startswith("/"), "absolute paths are refused; give a path relative to the job file"),
        (value.startswith("~"), "'~' is not expanded; give a path relative to the job file"),
        ("\\" in value, "use '/' between directories"),
        (any(c in value for c in _GLOB_CHARS), "globs are not expanded; list each file"),
        (".." in parts, "'..' would leave the workspace"),
        (value.endswith("/"), "that is a directory; list the files in it"),
        (not parts, "it names no file"),
    )
    return next((message for failed, message in checks if failed), "")


def path_list(text: str) -> Tuple[str, ...]:
    """Relative file paths separated by commas or spaces, in order, each once.

    Every bad path is named (one message each), not just the first."""
    found: List[str] = []
    bad: List[ConvertError] = []
    for word in _LIST_SPLIT_RE.split(text.strip()):
        if not word:
            continue
        try:
            path = relative_path(word)
        except ConvertError as exc:
            bad.append(exc)
            continue
        if path not in found:
            found.append(path)
    if bad:
        raise ConvertError(bad[0].message, value=bad[0].value, more=[exc.message for exc in bad[1:]])
    return tuple(found)


def health(text: str) -> str:
    """``tcp`` (the port accepts connections) or an ``http://``/``https://`` URL that must answer 2xx/3xx."""
    value = text.strip()
    if value.lower() == "tcp":
        return "tcp"
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if host and parts.scheme.lower() in ("http", "https") and not any(c.isspace() for c in value):
        return value
    raise _bad("health check", text, "'tcp' or an http:// or https:// URL, e.g. 'http://127.0.0.1:$PORT/'")


def time_zone(text: str) -> str:
    """An IANA time-zone name known to :mod:`zoneinfo`, e.g. ``Europe/Berlin``."""
    value = text.strip()
    if value == "UTC":
        return value  # valid even where the system has no time-zone database
    try:
        zoneinfo.ZoneInfo(value)
        return value
    except (ValueError, KeyError, OSError):
        pass
    hint = suggest(value, zoneinfo.available_timezones() | {"UTC"})
    raise ConvertError(f"unknown time zone {text!r}: expected an IANA name such as 'Europe/Berlin' or "
                       f"'UTC'{hint}", value=text)


def cron_expression(text: str) -> str:
    """A 5-field cron expression or ``@daily``-style nickname, whitespace-normalised.

    Validated by ``titan.core.cron.parse`` when that module exists; otherwise
    only its shape is checked here.
    """
    value = " ".join(text.split())
    if value.startswith("@"):
        value = value.lower()
    try:
        cron = importlib.import_module("titan.core.cron")
    except ModuleNotFoundError as exc:
        if exc.name != "titan.core.cron":
            raise
        return _cron_shape(text, value)
    try:
        cron.parse(value)
    except UsageError as exc:
        raise ConvertError(f"bad schedule {text!r}: {exc}", value=text) from None
    return value


def _cron_shape(text: str, value: str) -> str:
    fields = value.split(" ") if value else []
    if value.startswith("@"):
        if value in CRON_NICKNAMES:
            return value
        raise ConvertError(f"bad schedule {text!r}: expected one of {', '.join(CRON_NICKNAMES)}"
                           f"{suggest(value, CRON_NICKNAMES)}", value=text)
    if len(fields) != 5 or not all(_CRON_FIELD_RE.fullmatch(f) for f in fields):
        raise _bad("schedule", text, "5 fields (minute hour day-of-month month day-of-week), e.g. "
                   "'0 2 * * *', or a nickname such as '@daily'")
    return value
