"""The cron engine against hand-checked tables: parsing, cronie's day rule, steps,
Feb 29, daylight saving in Europe/Berlin, America/New_York and America/Santiago,
catch-up windows, slot ids and the `titan cron next` verb.

Expected fire times below were worked out by hand from the calendar
(2026-01-01 is a Thursday) and the 2026 transition dates: Berlin 03-29 / 10-25
(at 01:00 UTC), New York 03-08 / 11-01, Santiago 04-05 / 09-06 (at midnight).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import List, Optional, Union
from zoneinfo import ZoneInfo

import pytest

from titan.cli import main
from titan.core.cron import CronError, CronSchedule, load_zone, parse, parse_datetime, slot_id
from titan.errors import UsageError

UTC = timezone.utc


def at(text: str) -> datetime:
    return parse_datetime(text)


def fires(expr: str, start: str, tz: str = "UTC", count: int = 5) -> List[str]:
    schedule = parse(expr)
    return [f.isoformat() for _, f in zip(range(count), schedule.iter_after(at(start), tz))]


# ----- parsing: one field at a time -------------------------------------------
FIELD_CASES = [
    # (expression, attribute, expected set)
    ("5 * * * *", "minutes", {5}),
    ("0,15,45 * * * *", "minutes", {0, 15, 45}),
    ("10-13 * * * *", "minutes", {10, 11, 12, 13}),
    ("*/20 * * * *", "minutes", {0, 20, 40}),
    ("10-50/20 * * * *", "minutes", {10, 30, 50}),
    ("50/5 * * * *", "minutes", {50, 55}),  # a/n: from a to the field's maximum
    ("*/7 * * * *", "minutes", {0, 7, 14, 21, 28, 35, 42, 49, 56}),
    ("*/45 * * * *", "minutes", {0, 45}),
    ("1-3,7,*/30 * * * *", "minutes", {0, 1, 2, 3, 7, 30}),
    ("0 9-17/4 * * *", "hours", {9, 13, 17}),
    ("0 23 * * *", "hours", {23}),
    ("0 0 1,15 * *", "days", {1, 15}),
    ("0 0 */10 * *", "days", {1, 11, 21, 31}),
    ("0 0 31 * *", "days", {31}),
    ("0 0 * */3 *", "months", {1, 4, 7, 10}),
    ("0 0 * jan,JUL,Dec *", "months", {1, 7, 12}),
    ("0 0 * Mar-May *", "months", {3, 4, 5}),
    ("0 0 * feb-12/5 *", "months", {2, 7, 12}),
    ("0 0 * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
    ("0 0 * * SUN,sat", "weekdays", {0, 6}),
    ("0 0 * * 5-7", "weekdays", {5, 6, 0}),
    ("0 0 * * */2", "weekdays", {0, 2, 4, 6}),
    ("0 0 * * 1/3", "weekdays", {1, 4, 0}),  # 1, 4, 7 and 7 is Sunday
    ("0 0 * * *", "weekdays", {0, 1, 2, 3, 4, 5, 6}),
]


@pytest.mark.parametrize("expr, attribute, expected", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_given_a_field_when_parsed_then_it_expands_to_the_expected_set(expr: str, attribute: str,
                                                                        expected: set) -> None:
    assert getattr(parse(expr), attribute) == frozenset(expected)


def test_given_sunday_as_0_7_or_a_name_then_the_schedules_are_equal() -> None:
    sunday = parse("0 0 * * 0")
    assert parse("0 0 * * 7") == sunday
    assert parse("0 0 * * Sun") == sunday
    assert parse("0 0 * * sUN") == sunday
    assert sunday.weekdays == frozenset({0})
    assert fires("0 0 * * 7", "2026-01-01T00:00:00Z", count=2) == [
        "2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]


STAR_CASES = [
    # (expression, minute_star, hour_star, day_star, weekday_star)
    ("* * * * *", True, True, True, True),
    ("*/5 0-23 1-31 * 0-7", True, False, False, False),
    ("0 */2 */10 * 1", False, True, True, False),
    ("1,*/30 * * * *", False, True, True, True),  # starts with '1', not '*'
    ("*/30,1 * * * *", True, True, True, True),
]


@pytest.mark.parametrize("expr, minute, hour, day, weekday", STAR_CASES, ids=[c[0] for c in STAR_CASES])
def test_star_flags_follow_the_first_character_of_each_field(expr: str, minute: bool, hour: bool, day: bool,
                                                            weekday: bool) -> None:
    s = parse(expr)
    assert (s.minute_star, s.hour_star, s.day_star, s.weekday_star) == (minute, hour, day, weekday)
    assert s.fixed_time == (not minute and not hour)


NICKNAME_CASES = [
    # (nickname, normal form, fixed_time)
    ("@yearly", "0 0 1 1 *", True),
    ("@annually", "0 0 1 1 *", True),
    ("@monthly", "0 0 1 * *", True),
    ("@weekly", "0 0 * * 0", True),
    ("@daily", "0 0 * * *", True),
    ("@midnight", "0 0 * * *", True),
    ("@hourly", "0 * * * *", False),
    ("@DAILY", "0 0 * * *", True),
    ("  @Weekly ", "0 0 * * 0", True),
]


@pytest.mark.parametrize("nickname, normal, fixed", NICKNAME_CASES, ids=[c[0] for c in NICKNAME_CASES])
def test_given_a_nickname_then_it_means_its_five_fields(nickname: str, normal: str, fixed: bool) -> None:
    schedule = parse(nickname)
    assert str(schedule) == normal
    assert schedule == parse(normal)
    assert schedule.fixed_time is fixed


def test_weekly_fires_on_sundays_at_midnight() -> None:
    assert fires("@weekly", "2026-01-01T00:00:00Z", count=3) == [
        "2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00", "2026-01-18T00:00:00+00:00"]


NORMAL_CASES = [
    ("0  2\t* * *", "0 2 * * *"),
    ("*/15 * * * *", "*/15 * * * *"),
    ("0,1,2,3,10 * * * *", "0-3,10 * * * *"),
    ("0 0 */10,5 * *", "0 0 */10,5 * *"),
    ("0 0 */10,11 * *", "0 0 */10 * *"),
    ("0 0 * JAN-MAR mon-FRI", "0 0 * 1-3 1-5"),
    ("0 0 * * 5-7", "0 0 * * 0,5,6"),
    ("0 0 * * */7", "0 0 * * */7"),
    ("30 4 1,15 * 5", "30 4 1,15 * 5"),
    ("1,*/30 * * * *", "0,1,30 * * * *"),  # starts with '1': no star, and the normal form keeps it so
    ("0-59 * * * *", "0-59 * * * *"),  # not '*': the job stays fixed-time for daylight saving
]


@pytest.mark.parametrize("expr, normal", NORMAL_CASES, ids=[c[0] for c in NORMAL_CASES])
def test_str_gives_the_normal_form_which_parses_back_to_the_same_schedule(expr: str, normal: str) -> None:
    schedule = parse(expr)
    assert str(schedule) == normal
    again = parse(str(schedule))
    assert again == schedule
    assert (again.minute_star, again.hour_star, again.day_star, again.weekday_star) == (
        schedule.minute_star, schedule.hour_star, schedule.day_star, schedule.weekday_star)


# ----- parsing: every error ---------------------------------------------------
ERROR_CASES = [
    # (expression, message, field, value)
    ("61 * * * *", "minute 61 is out of range 0-59", "minute", "61"),
    ("0 24 * * *", "hour 24 is out of range 0-23", "hour", "24"),
    ("0 0 0 * *", "day-of-month 0 is out of range 1-31", "day-of-month", "0"),
    ("0 0 32 * *", "day-of-month 32 is out of range 1-31", "day-of-month", "32"),
    ("0 0 * 13 *", "month 13 is out of range 1-12", "month", "13"),
    ("0 0 * * 8", "day-of-week 8 is out of range 0-7", "day-of-week", "8"),
    ("0 0 5-1 * *", "day-of-month range '5-1' is reversed (5 > 1); write '1-5', or '5-31,1' to wrap around",
     "day-of-month", "5-1"),
    ("50-10 * * * *", "minute range '50-10' is reversed (50 > 10); write '10-50', or '50-59,0-10' to wrap "
     "around", "minute", "50-10"),
    ("0 0 * * SAT-MON", "day-of-week range 'SAT-MON' is reversed (6 > 1); write '1-6', or '6-7,0-1' to wrap "
     "around", "day-of-week", "SAT-MON"),
    ("*/0 * * * *", "minute step 0 in '*/0' must be at least 1", "minute", "*/0"),
    ("0 1-5/0 * * *", "hour step 0 in '1-5/0' must be at least 1", "hour", "1-5/0"),
    ("*/x * * * *", "minute step 'x' in '*/x' is not a number", "minute", "*/x"),
    ("0 0 * mon *", "month 'mon' is a day-of-week name; month takes 1-12 or JAN-DEC", "month", "mon"),
    ("0 0 * * jan", "day-of-week 'jan' is a month name; day-of-week takes 0-7 or SUN-SAT", "day-of-week", "jan"),
    ("0 0 jan * *", "day-of-month 'jan' is a name; day-of-month takes 1-31", "day-of-month", "jan"),
    ("0 0 * january *", "month 'january' is not a number or a month name (1-12 or JAN-DEC)", "month",
     "january"),
    ("0 0 * * foo", "day-of-week 'foo' is not a number or a day-of-week name (0-7 or SUN-SAT)", "day-of-week",
     "foo"),
    ("x * * * *", "minute 'x' is not a number (0-59)", "minute", "x"),
    ("1,,2 * * * *", "minute list '1,,2' has an empty item", "minute", "1,,2"),
    ("0 1, * * *", "hour list '1,' has an empty item", "hour", "1,"),
    ("1-2-3 * * * *", "minute '1-2-3' is not a value, range or step; expected e.g. 5, 1-5, */15 or 10-50/20 "
     "(0-59)", "minute", "1-2-3"),
    ("*5 * * * *", "minute '*5' is not a value, range or step; expected e.g. 5, 1-5, */15 or 10-50/20 (0-59)",
     "minute", "*5"),
    ("0 0 30 2 *", "day-of-month 30 never occurs in month 2 (FEB), so the expression can never fire",
     "day-of-month", "30"),
    ("0 0 31 4,6,9,11 *", "day-of-month 31 never occurs in months 4,6,9,11 (APR,JUN,SEP,NOV), so the "
     "expression can never fire", "day-of-month", "31"),
    ("0 0 30,31 feb */2", "day-of-month 30,31 never occurs in month 2 (FEB), so the expression can never fire",
     "day-of-month", "30,31"),
    ("0 0 * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a nickname such as @daily, "
     "got 4", "", "0 0 * *"),
    ("0 0 * * * echo", "expected 5 fields (minute hour day-of-month month day-of-week) or a nickname such as "
     "@daily, got 6", "", "0 0 * * * echo"),
    ("", "expected 5 fields (minute hour day-of-month month day-of-week) or a nickname such as @daily, got 0",
     "", ""),
    ("@reboot", "unknown nickname '@reboot'; use one of @yearly, @annually, @monthly, @weekly, @daily, "
     "@midnight, @hourly", "nickname", "@reboot"),
]


@pytest.mark.parametrize("expr, message, field, value", ERROR_CASES, ids=[c[0] or "empty" for c in ERROR_CASES])
def test_given_a_bad_expression_then_the_error_names_field_and_value(expr: str, message: str, field: str,
                                                                     value: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expr)
    assert str(caught.value) == message
    assert (caught.value.field, caught.value.value) == (field, value)
    assert isinstance(caught.value, UsageError)


POSSIBLE_CASES = [
    "0 0 29 2 *",        # leap years
    "0 0 30 2 1",        # OR: every Monday in February
    "0 0 */30 2 *",      # starts with '*': the 1st
    "0 0 31 2,3 *",      # March 31
]


@pytest.mark.parametrize("expr", POSSIBLE_CASES)
def test_given_a_rare_but_possible_day_then_it_is_accepted(expr: str) -> None:
    assert parse(expr).next_after(at("2026-01-01T00:00:00Z")).year <= 2028


# ----- fire times without daylight saving ---------------------------------------
def test_dom_and_dow_both_restricted_fire_on_either() -> None:
    # Given the 1st, the 15th and Fridays; May 2026 starts on a Friday.
    assert fires("0 0 1,15 * 5", "2026-04-30T00:00:00Z", count=10) == [
        "2026-05-01T00:00:00+00:00",  # Friday and the 1st: once
        "2026-05-08T00:00:00+00:00",
        "2026-05-15T00:00:00+00:00",  # Friday and the 15th
        "2026-05-22T00:00:00+00:00",
        "2026-05-29T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",  # a Monday, the 1st
        "2026-06-05T00:00:00+00:00",
        "2026-06-12T00:00:00+00:00",
        "2026-06-15T00:00:00+00:00",  # a Monday, the 15th
        "2026-06-19T00:00:00+00:00",
    ]


def test_starred_dow_leaves_only_the_days_of_month() -> None:
    assert fires("0 0 1,15 * *", "2026-04-30T00:00:00Z", count=3) == [
        "2026-05-01T00:00:00+00:00", "2026-05-15T00:00:00+00:00", "2026-06-01T00:00:00+00:00"]


def test_starred_dom_means_and_mondays_on_the_1st_11th_21st_31st() -> None:
    # */10 starts with '*', so the fields combine with AND: all such Mondays of 2026.
    assert fires("0 0 */10 * 1", "2026-01-01T00:00:00Z", count=6) == [
        "2026-05-11T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
        "2026-09-21T00:00:00+00:00",
        "2026-12-21T00:00:00+00:00",
        "2027-01-11T00:00:00+00:00",
    ]


def test_feb_29_fires_only_in_leap_years() -> None:
    assert fires("0 0 29 2 *", "2026-01-01T00:00:00Z", count=3) == [
        "2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00"]


def test_feb_29_on_a_sunday_is_found_decades_ahead() -> None:
    # AND (day-of-week starts with '*'): 2032-02-29 is a Sunday, the next is 2060-02-29.
    assert fires("0 0 29 2 */7", "2032-03-01T00:00:00Z", count=2) == [
        "2060-02-29T00:00:00+00:00", "2088-02-29T00:00:00+00:00"]


def test_feb_29_is_found_fast() -> None:
    schedule = parse("0 0 29 2 *")
    started = time.perf_counter()
    for _ in range(20):
        assert schedule.next_after(at("2026-01-01T00:00:00Z"), "Europe/Berlin").year == 2028
    assert time.perf_counter() - started < 0.5


def test_minute_steps_restart_at_zero_each_hour() -> None:
    assert fires("*/7 * * * *", "2026-01-01T10:50:00Z", count=4) == [
        "2026-01-01T10:56:00+00:00", "2026-01-01T11:00:00+00:00", "2026-01-01T11:07:00+00:00",
        "2026-01-01T11:14:00+00:00"]


def test_range_with_step() -> None:
    assert fires("10-50/20 * * * *", "2026-01-01T10:00:00Z", count=4) == [
        "2026-01-01T10:10:00+00:00", "2026-01-01T10:30:00+00:00", "2026-01-01T10:50:00+00:00",
        "2026-01-01T11:10:00+00:00"]


def test_names_and_ranges_of_months_and_weekdays() -> None:
    # Weekdays of the first quarter at 09:30; 2026-03-31 is a Tuesday, April is skipped whole.
    assert fires("30 9 * jan-MAR Mon-Fri", "2026-03-30T12:00:00Z", count=2) == [
        "2026-03-31T09:30:00+00:00", "2027-01-01T09:30:00+00:00"]


def test_next_after_is_strictly_after_the_start() -> None:
    schedule = parse("0 12 * * *")
    assert schedule.next_after(at("2026-01-01T12:00:00Z")).isoformat() == "2026-01-02T12:00:00+00:00"
    assert schedule.next_after(at("2026-01-01T11:59:59.999Z")).isoformat() == "2026-01-01T12:00:00+00:00"


def test_next_after_returns_the_zone_asked_for_whatever_the_start_zone() -> None:
    fire = parse("30 4 * * *").next_after(at("2026-11-28T04:00:00+09:00"), ZoneInfo("Europe/Berlin"))
    assert fire.isoformat() == "2026-11-28T04:30:00+01:00"
    assert fire.tzinfo == ZoneInfo("Europe/Berlin")


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("* * * * *").next_after(datetime(2026, 1, 1))


def _brute_force(schedule: CronSchedule, start: datetime, end: datetime, tz: Union[str, tzinfo]) -> List[str]:
    """Every UTC minute in (start, end] whose local wall time matches: wall-clock semantics."""
    zone, out = load_zone(tz), []
    t = start.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= end:
        local = t.astimezone(zone)
        if (local.minute in schedule.minutes and local.hour in schedule.hours
                and schedule.matches_day(local.date())):
            out.append(local.isoformat())
        t += timedelta(minutes=1)
    return out


BRUTE_CASES = [
    # (expression, zone, start): two days each, daylight-saving days included
    ("*/7 */5 * * *", "UTC", "2026-01-31T00:00:00Z"),
    ("* 23,0 * * *", "UTC", "2026-12-31T12:00:00Z"),
    ("*/10 * 1,31 * 6", "UTC", "2026-01-30T00:00:00Z"),
    ("*/15 * * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
    ("*/15 * * * *", "Europe/Berlin", "2026-10-24T12:00:00Z"),
    ("5 * * * *", "Europe/Berlin", "2026-10-24T12:00:00Z"),
    ("*/20 1-3 * * *", "America/New_York", "2026-03-07T12:00:00Z"),
    ("*/20 0-2 * * *", "America/New_York", "2026-10-31T12:00:00Z"),
    ("*/30 * * * *", "America/Santiago", "2026-04-04T00:00:00Z"),
    ("*/30 * * * *", "America/Santiago", "2026-09-05T00:00:00Z"),
]


@pytest.mark.parametrize("expr, tz, start", BRUTE_CASES, ids=[f"{c[0]}@{c[1]}" for c in BRUTE_CASES])
def test_wall_clock_jobs_agree_with_minute_by_minute_search(expr: str, tz: str, start: str) -> None:
    schedule, begin = parse(expr), at(start)
    end = begin + timedelta(days=2)
    expected = _brute_force(schedule, begin, end, tz)
    assert expected, "the case should fire at least once"
    got = []
    for fire in schedule.iter_after(begin, tz):
        if fire > end:
            break
        got.append(fire.isoformat())
    assert got == expected
    assert [f.isoformat() for f in schedule.between(begin, end, tz, limit=10_000)] == expected


class MidnightRepeat(tzinfo):
    """+01:00, then at 2026-06-01T23:30Z (00:30 on June 2) the clock goes back to
    23:30 on June 1, +00:00: the repeated half hour straddles midnight.  No zone
    does this today; it shows that fires still come out in true time order."""

    SWITCH = datetime(2026, 6, 1, 23, 30)  # UTC, and also the wall time where the repeat starts
    REPEAT_END = datetime(2026, 6, 2, 0, 30)

    def utcoffset(self, dt: Optional[datetime]) -> timedelta:
        assert dt is not None
        wall = dt.replace(tzinfo=None, fold=0)
        if wall < self.SWITCH or (wall < self.REPEAT_END and not dt.fold):
            return timedelta(hours=1)
        return timedelta(0)

    def dst(self, dt: Optional[datetime]) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: Optional[datetime]) -> str:
        return "MR"

    def fromutc(self, dt: datetime) -> datetime:
        utc = dt.replace(tzinfo=None)
        if utc < self.SWITCH:
            return (utc + timedelta(hours=1)).replace(tzinfo=self)
        return utc.replace(tzinfo=self, fold=int(utc < self.REPEAT_END))


def test_a_repeat_across_midnight_keeps_true_time_order_both_ways() -> None:
    # Given a wall-clock job and a start in the first pass of 00:xx on June 2,
    # Then June 1's second pass of 23:xx, which comes later, is not skipped.
    zone, schedule = MidnightRepeat(), parse("*/15 * * * *")
    start = at("2026-06-01T23:10:00Z")
    expected = ["2026-06-02T00:15:00+01:00", "2026-06-01T23:30:00+00:00", "2026-06-01T23:45:00+00:00",
                "2026-06-02T00:00:00+00:00", "2026-06-02T00:15:00+00:00", "2026-06-02T00:30:00+00:00"]
    got = [f.isoformat() for _, f in zip(range(6), schedule.iter_after(start, zone))]
    assert got == expected
    end = at("2026-06-02T00:30:00Z")
    assert _brute_force(schedule, start, end, zone) == expected
    assert [f.isoformat() for f in schedule.between(start, end, zone)] == expected
    assert [f.isoformat() for f in schedule.between(at("2026-06-01T22:00:00Z"), end, zone, limit=6)] == expected


# ----- daylight saving ------------------------------------------------------
DST_CASES = [
    # (expression, zone, start, expected fires): hand-written
    # Europe/Berlin, spring 2026-03-29: 02:00+01:00 -> 03:00+02:00.
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z",
     ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("0,30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("30 2,3 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
     ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00+01:00",
     ["2026-03-29T00:30:00+01:00", "2026-03-29T01:00:00+01:00", "2026-03-29T01:30:00+01:00",
      "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]),
    ("15 * * * *", "Europe/Berlin", "2026-03-29T00:30:00+01:00",
     ["2026-03-29T01:15:00+01:00", "2026-03-29T03:15:00+02:00", "2026-03-29T04:15:00+02:00"]),
    ("* 2 * * *", "Europe/Berlin", "2026-03-29T01:58:00+01:00",
     ["2026-03-30T02:00:00+02:00", "2026-03-30T02:01:00+02:00"]),
    # Europe/Berlin, autumn 2026-10-25: 03:00+02:00 -> 02:00+01:00; 02:xx happens twice.
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("0 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
     ["2026-10-25T02:00:00+02:00", "2026-10-26T02:00:00+01:00"]),
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T01:50:00+02:00",
     ["2026-10-25T02:00:00+02:00", "2026-10-25T02:15:00+02:00", "2026-10-25T02:30:00+02:00",
      "2026-10-25T02:45:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00",
      "2026-10-25T02:30:00+01:00", "2026-10-25T02:45:00+01:00", "2026-10-25T03:00:00+01:00"]),
    ("@hourly", "Europe/Berlin", "2026-10-25T00:30:00+02:00",
     ["2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
      "2026-10-25T03:00:00+01:00"]),
    # America/New_York, spring 2026-03-08: 02:00-05:00 -> 03:00-04:00.
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("0,30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("*/20 1-3 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-08T01:00:00-05:00", "2026-03-08T01:20:00-05:00", "2026-03-08T01:40:00-05:00",
      "2026-03-08T03:00:00-04:00", "2026-03-08T03:20:00-04:00", "2026-03-08T03:40:00-04:00",
      "2026-03-09T01:00:00-04:00"]),
    # America/New_York, autumn 2026-11-01: 02:00-04:00 -> 01:00-05:00; 01:xx happens twice.
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 * * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
     ["2026-11-01T00:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00",
      "2026-11-01T02:30:00-05:00"]),
    ("*/30 1 * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00",
      "2026-11-01T01:30:00-05:00", "2026-11-02T01:00:00-05:00"]),
    # America/Santiago, transitions at midnight: 2026-09-06 has no 00:xx, 2026-04-04 has 23:xx twice.
    ("@daily", "America/Santiago", "2026-09-05T12:00:00-04:00",
     ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]),
    ("30 0 * * *", "America/Santiago", "2026-09-05T12:00:00-04:00",
     ["2026-09-06T01:00:00-03:00", "2026-09-07T00:30:00-03:00"]),
    ("*/30 * * * *", "America/Santiago", "2026-09-05T23:00:00-04:00",
     ["2026-09-05T23:30:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-06T01:30:00-03:00"]),
    ("*/30 23 * * *", "America/Santiago", "2026-04-04T22:00:00-03:00",
     ["2026-04-04T23:00:00-03:00", "2026-04-04T23:30:00-03:00", "2026-04-04T23:00:00-04:00",
      "2026-04-04T23:30:00-04:00", "2026-04-05T23:00:00-04:00"]),
    ("30 23 * * *", "America/Santiago", "2026-04-04T22:00:00-03:00",
     ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]),
]


@pytest.mark.parametrize("expr, tz, start, expected", DST_CASES,
                         ids=[f"{c[0]}@{c[1]}@{c[2][:10]}" for c in DST_CASES])
def test_daylight_saving_gap_and_repeat(expr: str, tz: str, start: str, expected: List[str]) -> None:
    assert fires(expr, start, tz, count=len(expected)) == expected


def test_fires_in_a_repeat_are_in_true_time_order() -> None:
    got = parse("*/15 * * * *").between(at("2026-10-24T23:50:00Z"), at("2026-10-25T02:10:00Z"), "Europe/Berlin")
    instants = [f.astimezone(UTC) for f in got]
    assert instants == sorted(instants) and len(set(instants)) == len(instants) == 9


# ----- catch-up windows -------------------------------------------------------
REPEAT = ["2026-10-25T02:00:00+02:00", "2026-10-25T02:15:00+02:00", "2026-10-25T02:30:00+02:00",
          "2026-10-25T02:45:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00",
          "2026-10-25T02:30:00+01:00"]


def test_between_excludes_start_and_includes_end() -> None:
    schedule = parse("*/15 * * * *")
    got = schedule.between(at("2026-10-25T01:45:00+02:00"), at("2026-10-25T02:30:00+01:00"), "Europe/Berlin")
    assert [f.isoformat() for f in got] == REPEAT


def test_between_with_a_limit_keeps_the_newest_fires() -> None:
    schedule = parse("*/15 * * * *")
    start, end = at("2026-10-25T01:45:00+02:00"), at("2026-10-25T02:30:00+01:00")
    assert [f.isoformat() for f in schedule.between(start, end, "Europe/Berlin", limit=3)] == REPEAT[-3:]
    assert [f.isoformat() for f in schedule.between(start, end, "Europe/Berlin", limit=1)] == REPEAT[-1:]


def test_between_an_empty_or_reversed_window_is_empty() -> None:
    schedule = parse("0 0 * * *")
    assert schedule.between(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")) == []
    assert schedule.between(at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z")) == []
    assert schedule.between(at("2026-01-01T00:00:00Z"), at("2026-01-01T23:59:00Z")) == []


def test_between_after_years_of_downtime_is_bounded_and_quick() -> None:
    started = time.perf_counter()
    got = parse("* * * * *").between(at("2020-01-01T00:00:00Z"), at("2026-06-01T12:00:00Z"), limit=2)
    assert [f.isoformat() for f in got] == ["2026-06-01T11:59:00+00:00", "2026-06-01T12:00:00+00:00"]
    assert time.perf_counter() - started < 0.5


# ----- slot ids and zones -------------------------------------------------------
def test_slot_id_is_the_fire_time_in_utc_to_the_minute() -> None:
    assert slot_id(at("2026-11-28T03:00:00+01:00")) == "2026-11-28T02:00Z"
    assert slot_id(at("2026-10-25T02:30:00+02:00")) != slot_id(at("2026-10-25T02:30:00+01:00"))
    with pytest.raises(ValueError):
        slot_id(datetime(2026, 11, 28, 2, 0))


def test_unknown_time_zone_is_a_usage_error() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        parse("* * * * *").next_after(at("2026-01-01T00:00:00Z"), "Mars/Olympus")
    assert datetime(2026, 7, 1, tzinfo=load_zone("UTC")).utcoffset() == timedelta(0)


# ----- the CLI verb ---------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_next_fires_one_per_line(capsys: pytest.CaptureFixture) -> None:
    # Given the 1st, the 15th and Fridays at 04:30 Berlin time (Nov 28 is a Saturday).
    code, out, err = run_cli(capsys, "cron", "next", "30 4 1,15 * 5", "--from", "2026-11-28T00:00:00Z",
                             "--count", "5", "--tz", "Europe/Berlin")
    assert (code, err) == (0, "")
    assert out == ("2026-12-01T04:30:00+01:00\n"
                   "2026-12-04T04:30:00+01:00\n"
                   "2026-12-11T04:30:00+01:00\n"
                   "2026-12-15T04:30:00+01:00\n"
                   "2026-12-18T04:30:00+01:00\n")


def test_cli_json_prints_a_list(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "cron", "next", "@daily", "--from", "2026-01-01T12:00:00Z", "--count", "2",
                           "--json")
    assert code == 0
    assert json.loads(out) == ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]


def test_cli_from_without_offset_is_wall_time_in_the_zone(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "cron", "next", "0 * * * *", "--from", "2026-03-29T01:30", "--count", "2",
                           "--tz", "Europe/Berlin")
    assert code == 0
    assert out.split() == ["2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


def test_cli_defaults_to_five_fires_from_now(capsys: pytest.CaptureFixture) -> None:
    before = datetime.now(UTC)
    code, out, _ = run_cli(capsys, "cron", "next", "*", "*", "*", "*", "*")
    lines = out.split()
    assert code == 0 and len(lines) == 5
    first = datetime.fromisoformat(lines[0])
    assert before < first <= before + timedelta(minutes=2)


def test_cli_near_the_last_year_prints_what_there_is_and_says_why_there_is_no_more(
        capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, "cron", "next", "0 0 1 1 *", "--from", "9997-06-01T00:00:00Z", "--count", "3")
    assert (code, out) == (0, "9998-01-01T00:00:00+00:00\n")
    assert err == ("titan: 1 fire time after 9997-06-01T00:00:00+00:00 within the years Titan schedules in "
                   "(up to 9998)\n")
    code, out, err = run_cli(capsys, "cron", "next", "0 0 1 1 *", "--from", "9998-06-01T00:00:00Z")
    assert (code, out) == (0, "") and err.startswith("titan: no fire times after 9998-06-01"), err


def test_slots_between_near_the_first_year_do_not_overflow() -> None:
    early = parse("0 0 1 1 *")
    start = datetime(3, 6, 1, tzinfo=UTC)
    assert early.between(start, datetime(6, 6, 1, tzinfo=UTC)) == [datetime(y, 1, 1, tzinfo=UTC) for y in (4, 5, 6)]
    assert early.next_after(start) == datetime(4, 1, 1, tzinfo=UTC)


BAD_CLI_CASES = [
    (("0 0 30 2 *",), "titan: bad cron expression '0 0 30 2 *': day-of-month 30 never occurs in month 2 (FEB), "
                      "so the expression can never fire\n"),
    (("61 * * * *",), "titan: bad cron expression '61 * * * *': minute 61 is out of range 0-59\n"),
    (("* * * * *", "--tz", "Mars/Olympus"), "titan: unknown time zone 'Mars/Olympus'; use an IANA name such as "
                                            "'Europe/Berlin' or 'UTC'\n"),
    (("* * * * *", "--from", "yesterday"), "titan: bad time 'yesterday'; use ISO-8601 such as "
                                           "2026-11-28T00:00:00Z or 2026-11-28T01:00:00+01:00\n"),
    (("* * * * *", "--count", "0"), "titan: --count must be at least 1, not 0\n"),
]


@pytest.mark.parametrize("argv, message", BAD_CLI_CASES, ids=[c[0][-1] for c in BAD_CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture, argv: tuple, message: str) -> None:
    code, out, err = run_cli(capsys, "cron", "next", *argv)
    assert (code, out, err) == (2, "", message)


def test_cli_cron_without_action_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "cron")
    assert code == 2
    assert err == "titan: use: titan cron next EXPR [--from ISO] [--count N] [--tz ZONE]\n"
