"""Cron expressions with the semantics of cronie / Debian cron, and their fire times.

Owns the 5-field grammar (lists, ranges, steps, month and day names, Sunday as
0 or 7, @nicknames), cronie's day rule (day-of-month and day-of-week combine
with OR only when neither field starts with ``*``, else with AND), and the
mapping of wall-clock fire times to instants in a time zone, daylight saving
included.  Pure: nothing here reads the clock; callers pass every datetime.

    parse("30 4 1,15 * 5")                -> CronSchedule (frozen: expanded sets + star flags)
    schedule.next_after(start, "Europe/Berlin")   -> the first fire strictly after start
    schedule.between(last_seen, now, tz, limit=N) -> missed fires, for catch-up
    slot_id(fire)                         -> "2026-11-28T02:00Z", the run-id suffix of a cron slot

How fire times are found: walk the local calendar one day at a time (months
not in the set are skipped whole); for each matching day take the wall times
hours x minutes and map each to UTC instants (one normally; in a fall-back
repeat one or two; in a spring-forward gap none, or the end of the gap for a
fixed-time job).  The days' sorted streams are merged lazily, and an instant is
released only once no day still to be visited can produce an earlier one, so
fires come out in true UTC order even when a repeat straddles midnight.  Work
is per day (plus the fires actually taken), never per minute.
"""
from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from titan.errors import UsageError

__all__ = ["CronError", "CronSchedule", "parse", "load_zone", "parse_datetime", "slot_id",
           "NICKNAMES", "SEARCH_LIMIT_YEARS"]

# What each nickname stands for; the star flags come out as cronie sets them.
NICKNAMES: Dict[str, str] = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# Feb 29 on a given weekday can be 40 years apart (2088 -> 2128), so give up only after 50.
SEARCH_LIMIT_YEARS = 50
_SEARCH_LIMIT = timedelta(days=366 * SEARCH_LIMIT_YEARS)
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists in leap years
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_DAY = timedelta(days=1)
_FIELD_LIST = "minute hour day-of-month month day-of-week"
_FIRST_YEAR, _LAST_YEAR = 2, 9998  # fire times are looked for in these years only


class CronError(UsageError):
    """Raised for a cron expression that cannot be parsed or can never fire, an
    unknown time zone, or an unreadable start time.

    The message names the field and the bad value; ``expression``, ``field``
    and ``value`` carry them for callers that add their own context (file,
    line, key).
    """

    def __init__(self, message: str, *, expression: str = "", field: str = "", value: str = "") -> None:
        super().__init__(message)
        self.expression = expression
        self.field = field
        self.value = value


# ----- parsing --------------------------------------------------------------
@dataclass(frozen=True)
class _Field:
    """One of the five fields: its name, the values it accepts and its names."""

    name: str
    low: int
    high: int
    names: Tuple[str, ...] = ()
    name_base: int = 0
    other_names: Tuple[str, ...] = ()
    other_kind: str = ""

    @property
    def accepts(self) -> str:
        words = f"{self.names[0]}-{self.names[-1]}".upper() if self.names else ""
        return f"{self.low}-{self.high}" + (f" or {words}" if words else "")


_FIELDS = (
    _Field("minute", 0, 59, other_names=_MONTH_NAMES + _DAY_NAMES, other_kind="a name"),
    _Field("hour", 0, 23, other_names=_MONTH_NAMES + _DAY_NAMES, other_kind="a name"),
    _Field("day-of-month", 1, 31, other_names=_MONTH_NAMES + _DAY_NAMES, other_kind="a name"),
    _Field("month", 1, 12, _MONTH_NAMES, 1, _DAY_NAMES, "a day-of-week name"),
    _Field("day-of-week", 0, 7, _DAY_NAMES, 0, _MONTH_NAMES, "a month name"),
)


class _Parse:
    """Parses the text of one field of one expression; errors name both."""

    def __init__(self, expression: str, spec: _Field) -> None:
        self.expression = expression
        self.spec = spec

    def fail(self, value: str, problem: str) -> CronError:
        return CronError(f"{self.spec.name} {problem}", expression=self.expression,
                         field=self.spec.name, value=value)

    def field(self, text: str) -> Tuple[Set[int], Optional[Set[int]], int]:
        """(values, values of the leading star item or None, its step)."""
        values: Set[int] = set()
        star_values: Optional[Set[int]] = None
        star_step = 0
        for index, item in enumerate(text.split(",")):
            if not item:
                raise self.fail(text, f"list {text!r} has an empty item")
            item_values, step = self.item(item)
            if index == 0 and item.startswith("*"):
                star_values, star_step = item_values, step
            values |= item_values
        return values, star_values, star_step

    def item(self, item: str) -> Tuple[Set[int], int]:
        body, slash, step_text = item.partition("/")
        step = self.step(item, step_text) if slash else 1
        if body == "*":
            low, high = self.spec.low, self.spec.high
        else:
            first, dash, last = body.partition("-")
            low = self.number(first, item)
            high = self.number(last, item) if dash else (self.spec.high if slash else low)
            if low > high:
                wrapped = f"{_span(low, self.spec.high)},{_span(self.spec.low, high)}"
                raise self.fail(item, f"range {item!r} is reversed ({low} > {high}); write "
                                      f"'{high}-{low}', or '{wrapped}' to wrap around")
        return set(range(low, high + 1, step)), step

    def step(self, item: str, text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise self.fail(item, f"step {text!r} in {item!r} is not a number")
        if int(text) < 1:
            raise self.fail(item, f"step {text} in {item!r} must be at least 1")
        return int(text)

    def number(self, text: str, item: str) -> int:
        spec = self.spec
        if text.isascii() and text.isdigit():
            value = int(text)
            if not spec.low <= value <= spec.high:
                raise self.fail(text, f"{value} is out of range {spec.low}-{spec.high}")
            return value
        word = text.lower()
        if word in spec.names:
            return spec.names.index(word) + spec.name_base
        if not text or "*" in text or "-" in text:
            raise self.fail(item, f"{item!r} is not a value, range or step; expected e.g. 5, 1-5, */15 "
                                  f"or 10-50/20 ({spec.accepts})")
        if word in spec.other_names:
            raise self.fail(text, f"{text!r} is {spec.other_kind}; {spec.name} takes {spec.accepts}")
        kind = f"a number or a {spec.name} name" if spec.names else "a number"
        raise self.fail(text, f"{text!r} is not {kind} ({spec.accepts})")


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def _compress(values: Set[int]) -> str:
    """{1, 2, 3, 5} -> '1-3,5': runs of three or more become ranges."""
    ordered = sorted(values)
    parts: List[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}-{ordered[j]}")
            i = j + 1
        else:
            parts.append(str(ordered[i]))
            i += 1
    return ",".join(parts)


def _normal_field(values: Set[int], star_values: Optional[Set[int]], star_step: int) -> str:
    """The field's normal text; a field that started with ``*`` still does."""
    if star_values is None:
        return _compress(values)
    if star_step == 1:
        return "*"
    extra = values - star_values
    return f"*/{star_step}" + (f",{_compress(extra)}" if extra else "")


def _fold_sunday(values: Set[int]) -> Set[int]:
    return {0 if v == 7 else v for v in values}


def parse(expr: str) -> CronSchedule:
    """Parse a 5-field expression or a nickname; raise :class:`CronError` naming the bad field."""
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise CronError(f"unknown nickname {text!r}; use one of {', '.join(NICKNAMES)}",
                            expression=text, field="nickname", value=text)
        return parse(NICKNAMES[text.lower()])
    words = text.split(" ") if text else []
    if len(words) != 5:
        raise CronError(f"expected 5 fields ({_FIELD_LIST}) or a nickname such as @daily, "
                        f"got {len(words)}", expression=text, value=text)
    sets: List[FrozenSet[int]] = []
    normal: List[str] = []
    for spec, word in zip(_FIELDS, words):
        values, star_values, star_step = _Parse(text, spec).field(word)
        if spec.name == "day-of-week":
            values = _fold_sunday(values)
            star_values = None if star_values is None else _fold_sunday(star_values)
        sets.append(frozenset(values))
        normal.append(_normal_field(values, star_values, star_step))
    stars = [w.startswith("*") for w in words]
    schedule = CronSchedule(*sets, minute_star=stars[0], hour_star=stars[1], day_star=stars[2],
                            weekday_star=stars[4], text=" ".join(normal))
    _check_possible(schedule, text)
    return schedule


def _check_possible(schedule: CronSchedule, text: str) -> None:
    """Reject a day-of-month that exists in none of the months (only AND can make that fatal)."""
    if schedule.day_star or not schedule.weekday_star:
        return  # a starred day-of-month holds the 1st; with OR the weekdays always occur
    if any(day <= _MONTH_DAYS[month - 1] for day in schedule.days for month in schedule.months):
        return
    days, months = _compress(set(schedule.days)), _compress(set(schedule.months))
    names = ",".join(_MONTH_NAMES[m - 1].upper() for m in sorted(schedule.months))
    plural = "s" if len(schedule.months) > 1 else ""
    raise CronError(f"day-of-month {days} never occurs in month{plural} {months} ({names}), so the "
                    f"expression can never fire", expression=text, field="day-of-month", value=days)


# ----- time zones and instants ---------------------------------------------
def load_zone(tz: Union[str, tzinfo]) -> tzinfo:
    """A tzinfo for an IANA name (``Europe/Berlin``); tzinfo objects pass through."""
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        if tz == "UTC":
            return _UTC  # no time-zone database on this system; UTC needs none
        raise CronError(f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'",
                        field="timezone", value=str(tz)) from None


def parse_datetime(text: str, tz: Union[str, tzinfo] = "UTC") -> datetime:
    """An ISO-8601 date-time (``2026-11-28T00:00:00Z``); without an offset it is wall time in ``tz``."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CronError(f"bad time {text!r}; use ISO-8601 such as 2026-11-28T00:00:00Z or "
                        f"2026-11-28T01:00:00+01:00", field="time", value=text) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=load_zone(tz))


def slot_id(dt: datetime) -> str:
    """The slot's name in run ids, in UTC: ``2026-11-28T02:00Z`` (seconds only when not zero)."""
    moment = _to_utc(dt, "dt")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ" if moment.second else "%Y-%m-%dT%H:%MZ")


def _to_utc(dt: datetime, name: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {dt.isoformat()!r}")
    return dt.astimezone(_UTC)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=_UTC)


def _offsets(wall: datetime, zone: tzinfo) -> Tuple[timedelta, timedelta]:
    """UTC offsets of a wall time read as the first (fold=0) and the second (fold=1) pass."""
    first = wall.replace(tzinfo=zone).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    if first is None or second is None:
        raise ValueError(f"time zone {zone!r} gives no UTC offset for {wall.isoformat()}")
    return first, second


def _transition(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first instant in (before, after] whose UTC offset differs from ``before``'s."""
    base = before.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (before + timedelta(seconds=middle)).astimezone(zone).utcoffset() == base:
            low = middle
        else:
            high = middle
    return before + timedelta(seconds=high)


def _key(fire: datetime, direction: int) -> timedelta:
    """Heap key: the nearest fire first, forward (direction 1) or backward (-1)."""
    return (fire - _EPOCH) * direction


def _push(heads: List[Tuple[timedelta, int, datetime, Iterator[datetime]]], fires: Iterator[datetime],
          direction: int, order: int) -> None:
    """Put a sorted stream of fires on the merge heap, keyed by its next fire."""
    fire = next(fires, None)
    if fire is not None:
        heapq.heappush(heads, (_key(fire, direction), order, fire, fires))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _day_edge(day: date, zone: tzinfo, forward: bool) -> datetime:
    """Forward: no wall time on ``day`` or later is earlier than this instant.
    Backward: no wall time on ``day`` or earlier is later than this instant."""
    wall = _midnight(day) if forward else _midnight(day) + _DAY
    first, second = _offsets(wall, zone)
    a, b = _instant(wall, first), _instant(wall, second)
    return min(a, b) if forward else max(a, b)


# ----- the schedule ---------------------------------------------------------
@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: the expanded sets and cronie's star flags.

    ``weekdays`` uses 0 for Sunday (7 is folded into 0).  A ``*_star`` flag is
    true when that field's text starts with ``*``; ``str()`` gives the normal
    5-field form, which parses back to an equal schedule.
    """

    minutes: FrozenSet[int]
    hours: FrozenSet[int]
    days: FrozenSet[int]
    months: FrozenSet[int]
    weekdays: FrozenSet[int]
    minute_star: bool = False
    hour_star: bool = False
    day_star: bool = False
    weekday_star: bool = False
    text: str = field(default="", compare=False)
    _clock: Tuple[timedelta, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        clock = tuple(timedelta(hours=h, minutes=m) for h in sorted(self.hours) for m in sorted(self.minutes))
        object.__setattr__(self, "_clock", clock)

    def __str__(self) -> str:
        return self.text

    @property
    def fixed_time(self) -> bool:
        """True when neither minute nor hour starts with ``*``: such a job fires once
        at the end of a spring-forward gap and once (the first pass) in a repeat."""
        return not (self.minute_star or self.hour_star)

    def matches_day(self, day: date) -> bool:
        """Whether the job fires on this calendar date (cronie's OR/AND day rule)."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def next_after(self, start: datetime, tz: Union[str, tzinfo] = "UTC") -> datetime:
        """The first fire strictly after ``start`` (aware), as an aware datetime in ``tz``."""
        for fire in self.iter_after(start, tz):
            return fire
        raise CronError(f"{self.text!r} has no fire time after {start.isoformat()} "
                        f"before year {_LAST_YEAR + 1}", expression=self.text)

    def iter_after(self, start: datetime, tz: Union[str, tzinfo] = "UTC") -> Iterator[datetime]:
        """Every fire strictly after ``start``, in order, as aware datetimes in ``tz``."""
        origin, zone = _to_utc(start, "start"), load_zone(tz)
        return (fire.astimezone(zone) for fire in self._scan(origin, zone, forward=True))

    def between(self, start: datetime, end: datetime, tz: Union[str, tzinfo] = "UTC", *,
                limit: int = 1000) -> List[datetime]:
        """Fires in ``(start, end]`` in order, for catch-up: at most ``limit``, the newest ones.

        ``limit=1`` gives the latest missed slot.  Work is bounded by ``limit``
        and by the span, not by how long the job was down.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        low, high, zone = _to_utc(start, "start"), _to_utc(end, "end"), load_zone(tz)
        fires: List[datetime] = []
        if high <= low:
            return fires
        for fire in self._scan(high, zone, forward=False):
            if fire <= low:
                break
            fires.append(fire)
            if len(fires) == limit:
                break
        return [fire.astimezone(zone) for fire in reversed(fires)]

    # -- evaluation ----------------------------------------------------------
    def _scan(self, origin: datetime, zone: tzinfo, forward: bool) -> Iterator[datetime]:
        """UTC fires after ``origin`` (forward) or at or before it (backward), nearest first.

        Each matching day gives a sorted stream; the streams are merged lazily,
        and a fire is released only once the next day to visit cannot beat it.
        """
        direction = 1 if forward else -1
        if not _FIRST_YEAR < origin.year < _LAST_YEAR:
            return  # stay clear of datetime's limits
        # Start a day early: that day's repeat or gap can reach past local midnight.
        day: Optional[date] = origin.astimezone(zone).date() - direction * _DAY
        heads: List[Tuple[timedelta, int, datetime, Iterator[datetime]]] = []
        last: Optional[datetime] = None
        give_up = _beyond(origin, direction * _SEARCH_LIMIT)
        while day is not None:
            if self.matches_day(day):
                _push(heads, self._day_fires(day, zone, origin, direction), direction, day.toordinal())
            day = self._step(day, direction)
            edge = _day_edge(day, zone, forward) if day is not None else None
            while heads and (edge is None or (heads[0][2] < edge if forward else heads[0][2] > edge)):
                _, order, fire, rest = heapq.heappop(heads)
                _push(heads, rest, direction, order)
                if fire != last:  # a gap's end can coincide with a regular fire
                    last = fire
                    give_up = _beyond(fire, direction * _SEARCH_LIMIT)
                    yield fire
            if edge is not None and (edge > give_up if forward else edge < give_up):
                raise CronError(f"{self.text!r} does not fire within {SEARCH_LIMIT_YEARS} years of "
                                f"{(last or origin).isoformat()}", expression=self.text)

    def _step(self, day: date, direction: int) -> Optional[date]:
        """The next (or previous) date whose month is in the set; None outside years 2-9998."""
        day += direction * _DAY
        year, month = day.year, day.month
        while month not in self.months:
            month += direction
            if month in (0, 13):
                year, month = year + direction, 1 if month == 13 else 12
        if (year, month) != (day.year, day.month):
            last = 1 if direction > 0 else _days_in(year, month)
            day = date(year, month, last)
        return day if _FIRST_YEAR <= day.year <= _LAST_YEAR else None

    def _day_fires(self, day: date, zone: tzinfo, origin: datetime, direction: int) -> Iterator[datetime]:
        """One matching date's fires beyond ``origin``, nearest first, made on demand."""
        midnight = _midnight(day)
        offsets = {*_offsets(midnight, zone), *_offsets(midnight + _DAY, zone)}
        if len(offsets) == 1:  # no transition today: each wall time is one instant, in order
            offset = offsets.pop()
            cut = bisect.bisect_right(self._clock, origin.replace(tzinfo=None) + offset - midnight)
            clock = self._clock[cut:] if direction > 0 else self._clock[:cut][::-1]
            return (_instant(midnight + t, offset) for t in clock)
        fires = [f for t in self._clock for f in self._wall_fires(midnight + t, zone)
                 if (f > origin if direction > 0 else f <= origin)]
        return iter(sorted(fires, reverse=direction < 0))

    def _wall_fires(self, wall: datetime, zone: tzinfo) -> List[datetime]:
        first, second = _offsets(wall, zone)
        if first == second:
            return [_instant(wall, first)]
        if first > second:  # fall-back repeat: the wall time passes twice
            passes = [_instant(wall, first), _instant(wall, second)]
            return passes[:1] if self.fixed_time else passes
        if not self.fixed_time:  # spring-forward gap: the wall time never happens
            return []
        return [_transition(_instant(wall, second), _instant(wall, first), zone)]


def _days_in(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return _MONTH_DAYS[month - 1]


def _beyond(t: datetime, delta: timedelta) -> datetime:
    """``t + delta``, or the end of datetime's range if that lies past it (near the year 9999)."""
    try:
        return t + delta
    except OverflowError:
        return (datetime.max if delta > timedelta(0) else datetime.min).replace(tzinfo=timezone.utc)
