"""Business-hour calendars: when a team works, and business-time arithmetic for SLAs.

A calendar has a time zone, working periods per weekday in local wall-clock
time, and holidays (dates, and all-day events of an iCalendar file). Instants
in and out are aware UTC datetimes, because the store keeps UTC.

A period's wall-clock bounds become instants by one rule: a bound is the first
instant at which the local clock reads that time or later. So a bound that
falls into a spring-forward gap is the moment the clock jumps (opening "02:30"
on that night opens at 03:00), and a bound inside a fall-back fold is its first
occurrence, with the repeated hour counted as worked when it lies inside a
period (a 00:00-24:00 day then has 25 hours, a spring-forward day 23).
"""

from __future__ import annotations

import calendar as _stdcalendar
import difflib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from ingest.section import Section
from ingest.yamlsource import Problem, SourceError

__all__ = [
    "Calendar",
    "CalendarConfig",
    "CalendarError",
    "WeekHours",
    "load_calendars",
]

DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Longest run of days without any working time before arithmetic gives up:
# longer than any real closure, short enough to fail in milliseconds.
SEARCH_DAYS = 3 * 366

_ONE_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)
_DAY_CACHE_SIZE = 4096


class CalendarError(ValueError):
    """A calendar cannot answer: it has no working time within the search bound."""


# --- configuration -----------------------------------------------------------------

_PERIOD = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _parse_period(text: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" as (start, end) minutes after local midnight; end may be 24:00."""
    match = _PERIOD.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a period: write HH:MM-HH:MM, e.g. 08:00-12:00")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or start_m > 59:
        hint = " (a period cannot start at 24:00)" if start_h == 24 and start_m == 0 else ""
        raise ValueError(f"{text!r}: {start_h:02d}:{start_m:02d} is not a time of day{hint}")
    if end_h > 24 or end_m > 59 or (end_h == 24 and end_m):
        raise ValueError(f"{text!r}: {end_h:02d}:{end_m:02d} is not a time of day (24:00 is)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start >= end:
        raise ValueError(
            f"{text!r}: the start must be before the end; a period cannot cross midnight, "
            "so split it (e.g. 22:00-24:00 on one day and 00:00-06:00 on the next)"
        )
    return start, end


def _normalize_period(text: str) -> str:
    start, end = _parse_period(text)
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def _one_or_many(value: Any) -> Any:
    # `mon: 09:00-17:00` and an empty `sun:` are natural to write in YAML.
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


def _no_overlap(periods: list[str]) -> list[str]:
    ordered = sorted(periods, key=_parse_period)
    for earlier, later in pairwise(ordered):
        if _parse_period(later)[0] < _parse_period(earlier)[1]:
            raise ValueError(f"periods {earlier} and {later} overlap")
    return ordered


Period = Annotated[str, AfterValidator(_normalize_period)]
DayHours = Annotated[list[Period], BeforeValidator(_one_or_many), AfterValidator(_no_overlap)]


class WeekHours(Section):
    """Working periods per weekday, local wall-clock time; a day left out is closed."""

    mon: DayHours = Field(default_factory=list)
    tue: DayHours = Field(default_factory=list)
    wed: DayHours = Field(default_factory=list)
    thu: DayHours = Field(default_factory=list)
    fri: DayHours = Field(default_factory=list)
    sat: DayHours = Field(default_factory=list)
    sun: DayHours = Field(default_factory=list)

    def periods(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per weekday (Monday first), the periods as minutes after local midnight."""
        return tuple(tuple(_parse_period(p) for p in getattr(self, key)) for key in DAY_KEYS)


class CalendarConfig(Section):
    """One named business calendar, as written under `calendars:` in the config."""

    timezone: str | None = Field(None, description="IANA name, e.g. Europe/Berlin")
    hours: WeekHours = Field(default_factory=WeekHours)
    holidays: list[date] = Field(default_factory=list)
    holidays_ics: Path | None = None
    always_open: bool = False

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip().lower() in ("localtime", "posixrules"):
            # These follow whatever the machine is set to; SLA deadlines must not.
            raise ValueError(f"{value!r} depends on the machine: name the zone, e.g. Europe/Berlin")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}{_zone_hint(value)}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CalendarConfig:
        has_hours = any(getattr(self.hours, key) for key in DAY_KEYS)
        if self.always_open:
            if has_hours:
                raise ValueError("always_open means 24x7: leave out hours, or drop always_open")
            if self.holidays or self.holidays_ics:
                raise ValueError(
                    "always_open means 24x7, without holidays: to close on holidays, drop "
                    "always_open and give hours 00:00-24:00 for every day"
                )
            return self
        if not has_hours:
            raise ValueError(
                "no working hours: give hours for at least one weekday, or always_open: true"
            )
        if self.timezone is None:
            raise ValueError("timezone is required (an IANA name such as Europe/Berlin)")
        return self


def _zone_hint(name: str) -> str:
    known = available_timezones() - {"localtime"}
    by_lower = {zone.lower(): zone for zone in known}
    if name.lower() in by_lower:
        return f": did you mean {by_lower[name.lower()]!r}?"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    if close:
        return f": did you mean {close[0]!r}?"
    return ": use an IANA name such as Europe/Berlin or America/New_York"


# --- holidays from iCalendar -------------------------------------------------------


class IcsError(ValueError):
    """A problem in an .ics file, at a line."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        super().__init__(message)


_WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_BYDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DATETIME = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z?$")
_DURATION = re.compile(r"^\+?P(?:(\d+)W|(\d+)D(?:T(?:0+H)?(?:0+M)?(?:0+S)?)?)$")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_RRULE_PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYMONTH", "BYMONTHDAY", "BYDAY", "WKST"}


@dataclass(frozen=True)
class _YearlyRule:
    interval: int
    count: int | None
    until: date | None
    by_month: tuple[int, ...]
    by_month_day: tuple[int, ...]
    by_day: tuple[tuple[int | None, int], ...]  # (ordinal or None, weekday with Monday 0)

    def dates_in(self, year: int, first: date) -> list[date]:
        """Candidate dates of `year` before DTSTART, UNTIL and COUNT apply (RFC 5545)."""
        out: list[date] = []
        if not self.by_month_day and not self.by_day:
            for month in self.by_month or (first.month,):
                if first.day <= _stdcalendar.monthrange(year, month)[1]:
                    out.append(date(year, month, first.day))
        elif self.by_month_day:
            weekdays = {weekday for _, weekday in self.by_day}
            for month in self.by_month or range(1, 13):
                length = _stdcalendar.monthrange(year, month)[1]
                for day in self.by_month_day:
                    number = day if day > 0 else length + 1 + day
                    if 1 <= number <= length:
                        found = date(year, month, number)
                        if not weekdays or found.weekday() in weekdays:
                            out.append(found)
        else:
            spans = (
                [
                    (date(year, m, 1), date(year, m, _stdcalendar.monthrange(year, m)[1]))
                    for m in self.by_month
                ]
                if self.by_month
                else [(date(year, 1, 1), date(year, 12, 31))]
            )
            for low, high in spans:
                for ordinal, weekday in self.by_day:
                    first_match = low + timedelta(days=(weekday - low.weekday()) % 7)
                    matches = [
                        first_match + timedelta(weeks=k)
                        for k in range((high - first_match).days // 7 + 1)
                    ]
                    if ordinal is None:
                        out.extend(matches)
                    elif 1 <= abs(ordinal) <= len(matches):
                        out.append(matches[ordinal - 1 if ordinal > 0 else ordinal])
        return sorted(set(out))


@dataclass
class _Event:
    line: int
    uid: str | None = None
    start: date | None = None
    days: int = 1
    end: date | None = None
    duration_days: int | None = None
    rule: _YearlyRule | None = None
    exdates: set[date] = field(default_factory=set)
    rdates: set[date] = field(default_factory=set)
    recurrence_id: date | None = None
    timed: bool = False
    cancelled: bool = False
    counted: tuple[date, ...] | None = None  # every start of a COUNT rule, computed once

    def starts_in(self, year: int) -> list[date]:
        """Start dates of this event's occurrences that fall in `year`."""
        assert self.start is not None
        first, rule = self.start, self.rule
        if rule is None:
            found = [first] if first.year == year else []
        elif self.counted is not None:
            found = [d for d in self.counted if d.year == year]
        elif year < first.year or (year - first.year) % rule.interval:
            found = []
        else:
            found = [
                d
                for d in rule.dates_in(year, first)
                if d >= first and (rule.until is None or d <= rule.until)
            ]
            # RFC 5545: DTSTART is always the first occurrence, matching the rule or not.
            if year == first.year and first not in found:
                found.insert(0, first)
        found.extend(d for d in self.rdates if d.year == year)
        return [d for d in found if d not in self.exdates]

    def days_in(self, year: int) -> set[date]:
        """Every date of `year` that some occurrence of this event covers."""
        reach = (self.days - 1) // 365 + 1  # a late-December start can spill into `year`
        out: set[date] = set()
        for start_year in range(max(date.min.year, year - reach), year + 1):
            for start in self.starts_in(start_year):
                for offset in range(self.days):
                    day = start + timedelta(days=offset)
                    if day.year == year:
                        out.add(day)
        return out


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """Unfolded content lines (RFC 5545 3.1) with the line number each starts on."""
    current: str | None = None
    start = 0
    # Not str.splitlines: it also breaks at form feeds and Unicode separators in text values.
    for number, raw in enumerate(_NEWLINE.split(text), start=1):
        if raw[:1] in (" ", "\t") and current is not None:
            current += raw[1:]
            continue
        if current is not None and current.strip():
            yield start, current
        current, start = raw, number
    if current is not None and current.strip():
        yield start, current


def _split_line(line: int, text: str) -> tuple[str, dict[str, str], str]:
    """NAME;PARAM=VALUE...:VALUE, honouring quoted parameter values."""
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            head, value = text[:index], text[index + 1 :]
            break
    else:
        raise IcsError(line, f"not an iCalendar content line: {text[:60]!r}")
    parts = re.findall(r'(?:[^;"]|"[^"]*")+', head)
    if not parts:
        raise IcsError(line, f"not an iCalendar content line: {text[:60]!r}")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, _, param_value = part.partition("=")
        params[key.strip().upper()] = param_value.strip().strip('"')
    return parts[0].strip().upper(), params, value.strip()


def _ics_date(line: int, what: str, value: str) -> tuple[date, time | None]:
    """A DATE, or a DATE-TIME with its time of day (its zone does not matter for days)."""
    match = _DATE.match(value)
    timed = None
    if not match:
        match = _DATETIME.match(value)
        if match:
            hour, minute, second = (int(g) for g in match.groups()[3:])
            if hour > 23 or minute > 59 or second > 60:
                raise IcsError(line, f"{what}: {value!r} is not a valid date-time")
            timed = time(hour, minute, min(second, 59))
    if not match:
        raise IcsError(line, f"{what}: {value!r} is not a date (YYYYMMDD) or date-time")
    try:
        return date(*(int(g) for g in match.groups()[:3])), timed
    except ValueError:
        raise IcsError(line, f"{what}: {value!r} is not a valid date") from None


def _int_list(
    line: int, key: str, value: str, high: int, *, signed: bool = False
) -> tuple[int, ...]:
    out = []
    for item in value.split(","):
        try:
            number = int(item)
        except ValueError:
            raise IcsError(line, f"RRULE {key}: {item!r} is not a number") from None
        if not 1 <= (abs(number) if signed else number) <= high:
            raise IcsError(line, f"RRULE {key}: {number} is out of range")
        out.append(number)
    return tuple(out)


def _parse_rrule(line: int, value: str) -> _YearlyRule:
    parts: dict[str, str] = {}
    for item in value.split(";"):
        key, eq, part = item.partition("=")
        key = key.strip().upper()
        if not eq or not key:
            raise IcsError(line, f"RRULE: {item!r} is not KEY=VALUE")
        if key not in _RRULE_PARTS:
            raise IcsError(
                line,
                f"RRULE: {key} is not supported (only FREQ=YEARLY with INTERVAL, COUNT, UNTIL, "
                "BYMONTH, BYMONTHDAY and BYDAY): list such holidays as separate events",
            )
        parts[key] = part.strip()
    if parts.get("FREQ", "").upper() != "YEARLY":
        raise IcsError(
            line,
            f"RRULE: FREQ={parts.get('FREQ', '')} is not supported: holidays may repeat "
            "yearly (FREQ=YEARLY); list others as separate events",
        )
    if "COUNT" in parts and "UNTIL" in parts:
        raise IcsError(line, "RRULE: COUNT and UNTIL cannot both be given")
    interval = _int_list(line, "INTERVAL", parts.get("INTERVAL", "1"), 1000)[0]
    count = _int_list(line, "COUNT", parts["COUNT"], 100_000)[0] if "COUNT" in parts else None
    until = _ics_date(line, "RRULE UNTIL", parts["UNTIL"].upper())[0] if "UNTIL" in parts else None
    by_month = _int_list(line, "BYMONTH", parts["BYMONTH"], 12) if "BYMONTH" in parts else ()
    by_month_day = (
        _int_list(line, "BYMONTHDAY", parts["BYMONTHDAY"], 31, signed=True)
        if "BYMONTHDAY" in parts
        else ()
    )
    by_day: list[tuple[int | None, int]] = []
    for item in parts["BYDAY"].split(",") if "BYDAY" in parts else ():
        match = _BYDAY.match(item.strip().upper())
        if not match:
            raise IcsError(line, f"RRULE BYDAY: {item!r} is not a weekday such as MO or -1MO")
        ordinal = int(match.group(1)) if match.group(1) else None
        if ordinal is not None and not 1 <= abs(ordinal) <= 53:
            raise IcsError(line, f"RRULE BYDAY: {item!r}: the ordinal is out of range")
        if ordinal is not None and by_month_day:
            raise IcsError(line, "RRULE: BYDAY with an ordinal and BYMONTHDAY is not supported")
        by_day.append((ordinal, _WEEKDAYS[match.group(2)]))
    return _YearlyRule(interval, count, until, by_month, by_month_day, tuple(by_day))


def _set_event_property(
    event: _Event, line: int, name: str, params: dict[str, str], value: str
) -> None:
    if name == "UID":
        event.uid = value
    elif name == "STATUS":
        event.cancelled = value.upper() == "CANCELLED"
    elif name == "RRULE":
        if event.rule is not None:
            raise IcsError(line, "an event may have only one RRULE")
        event.rule = _parse_rrule(line, value)
    elif name in ("DTSTART", "DTEND", "RECURRENCE-ID"):
        if params.get("RANGE", "").upper() == "THISANDFUTURE":
            raise IcsError(line, "RECURRENCE-ID;RANGE=THISANDFUTURE is not supported")
        day, timed = _ics_date(line, name, value)
        if name == "RECURRENCE-ID":
            event.recurrence_id = day
        elif timed is not None and timed != time(0):
            raise IcsError(
                line,
                f"{name}: only all-day events are supported as holidays "
                "(DTSTART;VALUE=DATE:20261225): a timed event does not close whole days",
            )
        elif name == "DTSTART":
            event.start, event.timed = day, timed is not None
        else:
            event.end = day
    elif name == "DURATION":
        match = _DURATION.match(value.upper())
        if not match:
            raise IcsError(line, f"DURATION: {value!r} is not a whole number of days (P1D, P1W)")
        weeks, days = match.groups()
        event.duration_days = int(weeks) * 7 if weeks else int(days)
    elif name in ("EXDATE", "RDATE"):
        if params.get("VALUE", "").upper() == "PERIOD":
            raise IcsError(line, f"{name};VALUE=PERIOD is not supported")
        dates = {
            _ics_date(line, name, item.strip())[0] for item in value.split(",") if item.strip()
        }
        (event.exdates if name == "EXDATE" else event.rdates).update(dates)


def _finish_event(event: _Event) -> None:
    if event.start is None:
        raise IcsError(event.line, "VEVENT without DTSTART")
    if event.timed and event.end is None and event.duration_days is None:
        raise IcsError(event.line, "a timed VEVENT without DTEND or DURATION closes no whole day")
    if event.end is not None and event.duration_days is not None:
        raise IcsError(event.line, "VEVENT with both DTEND and DURATION")
    if event.end is not None:
        if event.end < event.start or (event.timed and event.end == event.start):
            raise IcsError(event.line, "VEVENT ends before it starts or closes no whole day")
        # Some producers write DTEND equal to DTSTART for a one-day event.
        event.days = max(1, (event.end - event.start).days)
    elif event.duration_days is not None:
        event.days = max(1, event.duration_days)
    rule = event.rule
    if rule is not None and rule.count is not None:
        counted: list[date] = [event.start]
        year = event.start.year
        while len(counted) < rule.count and year <= date.max.year:
            counted.extend(d for d in rule.dates_in(year, event.start) if d > event.start)
            year += rule.interval
        event.counted = tuple(counted[: rule.count])


def _parse_ics(text: str) -> list[_Event]:
    """The VEVENTs of an iCalendar text, with recurrence overrides applied."""
    events: list[_Event] = []
    stack: list[tuple[str, int]] = []
    event: _Event | None = None
    seen_calendar = False
    for line, content in _content_lines(text.lstrip("\ufeff")):
        name, params, value = _split_line(line, content)
        if name == "BEGIN":
            component = value.upper()
            seen_calendar = seen_calendar or component == "VCALENDAR"
            if not stack and component != "VCALENDAR":
                raise IcsError(line, f"BEGIN:{component} outside BEGIN:VCALENDAR")
            if component == "VEVENT" and stack[-1][0] == "VCALENDAR":
                event = _Event(line)
            stack.append((component, line))
        elif name == "END":
            component = value.upper()
            if not stack or stack[-1][0] != component:
                expected = f"END:{stack[-1][0]}" if stack else "nothing"
                raise IcsError(line, f"END:{component} where {expected} was expected")
            stack.pop()
            if component == "VEVENT" and event is not None and len(stack) == 1:
                _finish_event(event)
                events.append(event)
                event = None
        elif event is not None and stack and stack[-1][0] == "VEVENT":
            _set_event_property(event, line, name, params, value)
    if not seen_calendar:
        raise IcsError(None, "not an iCalendar file (no BEGIN:VCALENDAR)")
    if stack:
        component, line = stack[-1]
        raise IcsError(line, f"BEGIN:{component} is never closed")
    return _apply_overrides(events)


def _apply_overrides(events: list[_Event]) -> list[_Event]:
    """An event with RECURRENCE-ID replaces one occurrence of the series with its UID."""
    masters = {e.uid: e for e in events if e.recurrence_id is None and e.uid is not None}
    kept = []
    for event in events:
        if event.recurrence_id is not None:
            master = masters.get(event.uid) if event.uid is not None else None
            if master is not None:
                master.exdates.add(event.recurrence_id)
        if not event.cancelled:
            event.recurrence_id = None
            kept.append(event)
    return kept


# --- the calendar ------------------------------------------------------------------

Interval = tuple[datetime, datetime]


class Calendar:
    """Business-time arithmetic over one calendar; instants are aware datetimes, UTC out."""

    def __init__(
        self,
        config: CalendarConfig,
        *,
        name: str = "calendar",
        base_dir: str | os.PathLike[str] = ".",
    ) -> None:
        self.name = name
        self.config = config
        self.zone = ZoneInfo(config.timezone or "UTC")
        self.always_open = config.always_open
        self._week = config.hours.periods()
        self._holidays = frozenset(config.holidays)
        self._events: list[_Event] = []
        if config.holidays_ics is not None:
            self._events = _load_ics(Path(base_dir) / config.holidays_ics, name)
        self._ics_years: dict[int, frozenset[date]] = {}
        self._days: dict[date, tuple[Interval, ...]] = {}

    def __repr__(self) -> str:
        return f"<Calendar {self.name!r} {self.zone.key}>"

    # -- queries

    def is_holiday(self, day: date) -> bool:
        """Whether the local date `day` is closed as a holiday."""
        if day in self._holidays:
            return True
        if not self._events:
            return False
        closed = self._ics_years.get(day.year)
        if closed is None:
            days: set[date] = set()
            for event in self._events:
                days |= event.days_in(day.year)
            closed = self._ics_years[day.year] = frozenset(days)
        return day in closed

    def is_open(self, instant: datetime) -> bool:
        """Whether `instant` lies in working time (periods are closed-open)."""
        at = _utc(instant, "instant")
        if self.always_open:
            return True
        local = self._local_date(at)
        return any(
            start <= at < end
            for day in (local - _ONE_DAY, local, local + _ONE_DAY)
            for start, end in self.intervals(day)
        )

    def next_open(self, instant: datetime) -> datetime:
        """The first instant at or after `instant` in working time."""
        at = _utc(instant, "instant")
        if self.always_open:
            return at
        return next(self._intervals_from(at))[0]

    def add_business_minutes(self, start: datetime, minutes: float) -> datetime:
        """The instant when `minutes` of working time after `start` have passed.

        Counting begins at `next_open(start)`; the result is the earliest such
        instant, so a span that uses a period up to its end ends there, not at
        the next opening.
        """
        at = _utc(start, "start")
        if not math.isfinite(minutes) or minutes < 0:
            raise ValueError(f"minutes must be a finite number >= 0, not {minutes!r}")
        remaining = timedelta(minutes=minutes)
        if self.always_open:
            return at + remaining
        for begin, end in self._intervals_from(at):
            if end - begin >= remaining:
                return begin + remaining
            remaining -= end - begin
        raise AssertionError("unreachable: _intervals_from never ends")  # pragma: no cover

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        """Working minutes in [a, b); 0 when b <= a."""
        low, high = _utc(a, "a"), _utc(b, "b")
        if high <= low:
            return 0.0
        if self.always_open:
            return (high - low) / _MINUTE
        total = timedelta()
        day, last = self._local_date(low) - _ONE_DAY, self._local_date(high) + _ONE_DAY
        while day <= last:
            for begin, end in self.intervals(day):
                if begin < high and end > low:
                    total += min(end, high) - max(begin, low)
            day += _ONE_DAY
        return total / _MINUTE

    def intervals(self, day: date) -> tuple[Interval, ...]:
        """The working intervals of local date `day`, as UTC instants, in order."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        out: list[Interval] = []
        periods = ((0, 1440),) if self.always_open else self._week[day.weekday()]
        if not self.is_holiday(day):
            midnight = datetime.combine(day, time())
            for start, end in periods:
                begin = self._wall_to_utc(midnight + timedelta(minutes=start))
                finish = self._wall_to_utc(midnight + timedelta(minutes=end))
                if begin < finish:  # a period inside a spring-forward gap has no time
                    out.append((begin, finish))
        if len(self._days) >= _DAY_CACHE_SIZE:
            self._days.clear()
        result = self._days[day] = tuple(out)
        return result

    # -- internals

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def _wall_to_utc(self, wall: datetime) -> datetime:
        """The first instant at which the local clock reads `wall` or later."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return first  # exists; in a fold, fold=0 is the first occurrence
        # In a gap: fold=1 lands before the jump, fold=0 after it; find the jump.
        low = math.floor(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        high = math.ceil(first.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None) >= wall:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high, UTC)

    def _intervals_from(self, instant: datetime) -> Iterator[Interval]:
        """Working intervals after `instant` (the first clipped to start there), forever.

        Raises CalendarError after SEARCH_DAYS days in a row without working time.
        """
        day = self._local_date(instant) - _ONE_DAY
        idle = 0
        while True:
            found = self.intervals(day)
            idle = 0 if found else idle + 1
            if idle > SEARCH_DAYS:
                raise CalendarError(
                    f"calendar {self.name!r} has no working time in {SEARCH_DAYS} days in a row "
                    f"(searched up to {day.isoformat()}): check its hours and holidays"
                )
            for begin, end in found:
                if end > instant:
                    yield max(begin, instant), end
            if day == date.max:
                raise CalendarError(f"calendar {self.name!r}: no working time before year 10000")
            day += _ONE_DAY


def _utc(instant: datetime, what: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (UTC), not naive {instant!r}")
    return instant.astimezone(UTC)


def _load_ics(path: Path, name: str) -> list[_Event]:
    where = f"calendars.{name}.holidays_ics"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        problem = Problem(str(path), None, where, f"cannot read the holidays file: {exc.strerror}")
        raise SourceError([problem]) from exc
    except UnicodeDecodeError as exc:
        raise SourceError([Problem(str(path), None, where, f"not UTF-8 text: {exc}")]) from exc
    try:
        return _parse_ics(text)
    except IcsError as exc:
        raise SourceError([Problem(str(path), exc.line, where, str(exc))]) from exc


def load_calendars(
    configs: dict[str, CalendarConfig], base_dir: str | os.PathLike[str]
) -> dict[str, Calendar]:
    """Build every configured calendar; relative .ics paths resolve against `base_dir`.

    Raises SourceError listing the problems of every calendar that cannot be built.
    """
    calendars: dict[str, Calendar] = {}
    problems: list[Problem] = []
    for name, config in configs.items():
        try:
            calendars[name] = Calendar(config, name=name, base_dir=base_dir)
        except SourceError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SourceError(problems)
    return calendars
