"""Business-hour calendars: validation, iCalendar holidays, and business-time arithmetic."""

from __future__ import annotations

import time as timer
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest import yamlsource
from ingest.calendars import (
    SEARCH_DAYS,
    Calendar,
    CalendarConfig,
    CalendarError,
    load_calendars,
)
from ingest.section import Section
from ingest.yamlsource import SourceError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def make(
    hours: dict[str, Any] | None = None, timezone: str = "Europe/Berlin", **extra: Any
) -> Calendar:
    base_dir = extra.pop("base_dir", ".")
    config = CalendarConfig.model_validate(
        {"timezone": timezone, "hours": OFFICE if hours is None else hours, **extra}
    )
    return Calendar(config, name="test", base_dir=base_dir)


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """A wall-clock time in `zone`, as the UTC instant the store would keep."""
    wall = datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)
    return wall.astimezone(UTC)


def on(zone: ZoneInfo, day: date, hour: int = 0, minute: int = 0) -> datetime:
    return local(zone, day.year, day.month, day.day, hour, minute)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- validation ---------------------------------------------------------------------


class _Doc(Section):
    """How the main config holds calendars, so errors carry file, line and field."""

    calendars: dict[str, CalendarConfig]


def problems(text: str) -> list[str]:
    doc = yamlsource.parse(text, "cal.yaml")
    try:
        _Doc.model_validate(doc.data)
    except ValidationError as exc:
        return [str(p) for p in doc.problems_from(exc)]
    return []


def test_a_valid_calendar_is_normalized() -> None:
    config = CalendarConfig.model_validate(
        {
            "timezone": "Europe/Berlin",
            "hours": {"mon": ["13:00-17:00", "8:00-12:00"], "tue": "09:00 - 17:00", "sun": None},
            "holidays": ["2026-12-25", date(2026, 12, 26)],
        }
    )
    assert config.hours.mon == ["08:00-12:00", "13:00-17:00"]
    assert config.hours.tue == ["09:00-17:00"]
    assert config.hours.sun == []
    assert config.holidays == [date(2026, 12, 25), date(2026, 12, 26)]
    assert CalendarConfig.model_validate({"always_open": True}).timezone is None


def test_errors_name_file_line_and_field() -> None:
    text = """\
calendars:
  support:
    timezone: Europe/Berlim
    hours:
      mon: [08:00-12:00, 11:00-13:00]
      tue: [09:00-17:00, 17:00-08:00]
      monday: [09:00-17:00]
    holidays: ["2026-02-30"]
"""
    # The date is quoted: PyYAML itself chokes on an unquoted impossible date.
    found = problems(text)
    assert (
        "cal.yaml:3: calendars.support.timezone: unknown time zone 'Europe/Berlim': "
        "did you mean 'Europe/Berlin'?"
    ) in found
    assert (
        "cal.yaml:5: calendars.support.hours.mon: periods 08:00-12:00 and 11:00-13:00 overlap"
        in found
    )
    assert any(
        p.startswith("cal.yaml:6: calendars.support.hours.tue[1]: '17:00-08:00': the start")
        and "cannot cross midnight" in p
        for p in found
    )
    assert "cal.yaml:7: calendars.support.hours.monday: unknown field (check the spelling)" in found
    assert any(p.startswith("cal.yaml:8: calendars.support.holidays[0]: ") for p in found)
    assert len(found) == 5


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"timezone": "Europe/Berlim"}, "unknown time zone 'Europe/Berlim': did you mean"),
        ({"timezone": "europe/berlin"}, "did you mean 'Europe/Berlin'?"),
        ({"timezone": "Mars/Olympus_Mons"}, "use an IANA name such as Europe/Berlin"),
        ({"timezone": "../etc/passwd"}, "unknown time zone '../etc/passwd'"),
        ({"timezone": "localtime"}, "depends on the machine"),
        ({"hours": {"mon": ["9-17"]}}, "'9-17' is not a period: write HH:MM-HH:MM"),
        ({"hours": {"mon": ["17:00-09:00"]}}, "a period cannot cross midnight"),
        ({"hours": {"mon": ["09:00-09:00"]}}, "the start must be before the end"),
        ({"hours": {"mon": ["24:00-24:00"]}}, "a period cannot start at 24:00"),
        ({"hours": {"mon": ["08:00-24:30"]}}, "24:30 is not a time of day (24:00 is)"),
        ({"hours": {"mon": ["08:60-09:00"]}}, "08:60 is not a time of day"),
        ({"hours": {"mon": ["08:00-12:00", "08:00-12:00"]}}, "overlap"),
        ({"hours": {"mon": [9]}}, "valid string"),
        ({"hours": {}}, "no working hours: give hours for at least one weekday"),
        ({"holiday": ["2026-12-25"]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_say_why(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CalendarConfig.model_validate({"timezone": "Europe/Berlin", "hours": OFFICE, **data})
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"hours": OFFICE}, "timezone is required"),
        ({"always_open": True, "hours": OFFICE}, "always_open means 24x7: leave out hours"),
        ({"always_open": True, "holidays": ["2026-12-25"]}, "give hours 00:00-24:00"),
        ({"always_open": True, "holidays_ics": "h.ics"}, "without holidays"),
    ],
)
def test_inconsistent_configs_say_why(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        CalendarConfig.model_validate(data)


def test_config_is_frozen() -> None:
    config = CalendarConfig.model_validate({"timezone": "UTC", "hours": OFFICE})
    with pytest.raises(ValidationError):
        config.timezone = "Europe/Berlin"  # type: ignore[misc]


# --- plain days ---------------------------------------------------------------------


def test_period_bounds_are_closed_open() -> None:
    cal = make()
    assert cal.is_open(local(BERLIN, 2026, 6, 1, 9, 0))
    assert cal.is_open(local(BERLIN, 2026, 6, 1, 16, 59))
    assert not cal.is_open(local(BERLIN, 2026, 6, 1, 17, 0))
    assert not cal.is_open(local(BERLIN, 2026, 6, 1, 8, 59))
    assert not cal.is_open(local(BERLIN, 2026, 6, 6, 12, 0))  # Saturday


def test_a_span_that_fills_a_period_ends_at_its_close() -> None:
    cal = make()
    monday_nine = local(BERLIN, 2026, 6, 1, 9)
    assert cal.add_business_minutes(monday_nine, 480) == local(BERLIN, 2026, 6, 1, 17)
    assert cal.add_business_minutes(monday_nine, 481) == local(BERLIN, 2026, 6, 2, 9, 1)


def test_a_start_outside_hours_counts_from_the_next_opening() -> None:
    cal = make()
    early = local(BERLIN, 2026, 6, 1, 7, 12)
    assert cal.add_business_minutes(early, 30) == local(BERLIN, 2026, 6, 1, 9, 30)
    saturday = local(BERLIN, 2026, 6, 6, 11)
    assert cal.add_business_minutes(saturday, 90) == local(BERLIN, 2026, 6, 8, 10, 30)
    assert cal.add_business_minutes(saturday, 0) == local(BERLIN, 2026, 6, 8, 9)
    inside = local(BERLIN, 2026, 6, 1, 10, 15)
    assert cal.add_business_minutes(inside, 0) == inside
    friday_close = local(BERLIN, 2026, 6, 5, 17)
    assert cal.add_business_minutes(friday_close, 1) == local(BERLIN, 2026, 6, 8, 9, 1)


def test_next_open() -> None:
    cal = make()
    inside = local(BERLIN, 2026, 6, 2, 11, 11)
    assert cal.next_open(inside) == inside
    assert cal.next_open(local(BERLIN, 2026, 6, 2, 17)) == local(BERLIN, 2026, 6, 3, 9)
    assert cal.next_open(local(BERLIN, 2026, 6, 5, 18)) == local(BERLIN, 2026, 6, 8, 9)


def test_minutes_between() -> None:
    cal = make()
    monday = local(BERLIN, 2026, 6, 1, 8)
    assert cal.business_minutes_between(monday, local(BERLIN, 2026, 6, 1, 18)) == 480
    assert cal.business_minutes_between(monday, local(BERLIN, 2026, 6, 8, 8)) == 5 * 480
    assert cal.business_minutes_between(local(BERLIN, 2026, 6, 1, 16, 59, 30), monday) == 0
    assert cal.business_minutes_between(monday, monday) == 0
    seconds = cal.business_minutes_between(
        local(BERLIN, 2026, 6, 1, 16, 59, 30), local(BERLIN, 2026, 6, 1, 18)
    )
    assert seconds == 0.5


def test_split_days() -> None:
    cal = make({"mon": ["08:00-12:00", "13:00-17:00"]})
    lunch = local(BERLIN, 2026, 6, 1, 12, 30)
    assert not cal.is_open(lunch)
    assert cal.is_open(local(BERLIN, 2026, 6, 1, 13))
    assert cal.next_open(lunch) == local(BERLIN, 2026, 6, 1, 13)
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 1, 11, 30), 60) == local(
        BERLIN, 2026, 6, 1, 13, 30
    )
    assert (
        cal.business_minutes_between(local(BERLIN, 2026, 6, 1, 11), local(BERLIN, 2026, 6, 1, 14))
        == 120
    )
    # Eight hours a week: from Monday 16:00, 120 minutes end the next Monday at 09:00.
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 1, 16), 120) == local(
        BERLIN, 2026, 6, 8, 9
    )


def test_nine_hour_day_from_wednesday_afternoon() -> None:
    # The Dynamics documentation's shape: 08:00-17:00 on weekdays, a case on Wednesday at 15:00.
    nine = {day: ["08:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
    cal = make(nine, "America/New_York")
    created = local(NEW_YORK, 2026, 6, 3, 15)
    assert cal.add_business_minutes(created, 9 * 60) == local(NEW_YORK, 2026, 6, 4, 15)
    assert cal.add_business_minutes(created, 18 * 60) == local(NEW_YORK, 2026, 6, 5, 15)
    assert cal.add_business_minutes(created, 27 * 60) == local(NEW_YORK, 2026, 6, 8, 15)
    assert cal.add_business_minutes(created, 2 * 60) == local(NEW_YORK, 2026, 6, 3, 17)
    assert cal.add_business_minutes(created, 2 * 60 + 1) == local(NEW_YORK, 2026, 6, 4, 8, 1)


def test_instants_in_other_zones_are_accepted_and_answers_are_utc() -> None:
    cal = make()
    start = datetime(2026, 6, 1, 9, tzinfo=BERLIN)
    result = cal.add_business_minutes(start, 60)
    assert result.tzinfo is UTC
    assert result == utc(2026, 6, 1, 8)
    assert cal.next_open(datetime(2026, 6, 6, tzinfo=BERLIN)).tzinfo is UTC


def test_bad_arguments() -> None:
    cal = make()
    with pytest.raises(ValueError, match="aware datetime"):
        cal.is_open(datetime(2026, 6, 1, 9))
    with pytest.raises(ValueError, match="aware datetime"):
        cal.business_minutes_between(utc(2026, 6, 1), datetime(2026, 6, 2))
    with pytest.raises(ValueError, match=">= 0"):
        cal.add_business_minutes(utc(2026, 6, 1), -1)
    with pytest.raises(ValueError, match="finite"):
        cal.add_business_minutes(utc(2026, 6, 1), float("nan"))


# --- midnight, 24:00 and year ends ---------------------------------------------------


def test_periods_through_midnight() -> None:
    cal = make({"mon": ["22:00-24:00"], "tue": ["00:00-02:00"]})
    assert cal.is_open(local(BERLIN, 2026, 6, 1, 23, 59))
    assert cal.is_open(local(BERLIN, 2026, 6, 2, 0, 0))
    assert not cal.is_open(local(BERLIN, 2026, 6, 2, 2, 0))
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 1, 23), 120) == local(
        BERLIN, 2026, 6, 2, 1
    )
    assert (
        cal.business_minutes_between(
            local(BERLIN, 2026, 6, 1, 23, 30), local(BERLIN, 2026, 6, 2, 0, 30)
        )
        == 60
    )
    # 24:00 ends a period at the next midnight, not at 23:59.
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 1, 22), 120) == local(
        BERLIN, 2026, 6, 2, 0
    )


def test_year_end_with_holidays() -> None:
    cal = make(holidays=["2026-12-25", "2026-12-26", "2027-01-01"])
    christmas_eve = local(BERLIN, 2026, 12, 24, 16)
    assert cal.add_business_minutes(christmas_eve, 60 + 480) == local(BERLIN, 2026, 12, 28, 17)
    week = cal.add_business_minutes(local(BERLIN, 2026, 12, 28, 9), 5 * 480)
    assert week == local(BERLIN, 2027, 1, 4, 17)
    assert (
        cal.business_minutes_between(local(BERLIN, 2026, 12, 24, 9), local(BERLIN, 2027, 1, 5, 9))
        == 6 * 480
    )
    assert cal.next_open(local(BERLIN, 2026, 12, 31, 17)) == local(BERLIN, 2027, 1, 4, 9)


def test_a_period_ending_at_24_00_on_new_years_eve() -> None:
    nights = {day: ["00:00-04:00", "20:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
    nights |= {"sat": ["00:00-04:00", "20:00-24:00"], "sun": ["00:00-04:00", "20:00-24:00"]}
    cal = make(nights)
    eve = local(BERLIN, 2026, 12, 31, 23)
    assert cal.add_business_minutes(eve, 120) == local(BERLIN, 2027, 1, 1, 1)
    assert cal.is_open(local(BERLIN, 2027, 1, 1, 0, 0))
    assert (
        cal.business_minutes_between(local(BERLIN, 2026, 12, 31, 22), local(BERLIN, 2027, 1, 1, 2))
        == 240
    )
    closed = make(nights, holidays=["2027-01-01"])
    assert not closed.is_open(local(BERLIN, 2027, 1, 1, 0, 0))
    assert closed.add_business_minutes(eve, 120) == local(BERLIN, 2027, 1, 2, 1)


def test_holidays_follow_the_local_date_not_the_utc_date() -> None:
    around_the_clock = {
        day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    cal = make(around_the_clock, "America/New_York", holidays=["2027-01-01"])
    assert cal.is_open(utc(2027, 1, 1, 2))  # 21:00 on 31 December in New York
    assert not cal.is_open(utc(2027, 1, 1, 6))  # 01:00 on 1 January
    assert cal.next_open(utc(2027, 1, 1, 6)) == local(NEW_YORK, 2027, 1, 2, 0)
    assert cal.business_minutes_between(utc(2026, 12, 31, 5), utc(2027, 1, 2, 5)) == 24 * 60


# --- holidays -----------------------------------------------------------------------


def test_a_holiday_in_the_middle_of_a_span() -> None:
    cal = make(holidays=["2026-06-03"])  # a Wednesday
    assert not cal.is_open(local(BERLIN, 2026, 6, 3, 12))
    monday, friday = local(BERLIN, 2026, 6, 1, 9), local(BERLIN, 2026, 6, 5, 17)
    assert cal.business_minutes_between(monday, friday) == 4 * 480
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 2, 16), 120) == local(
        BERLIN, 2026, 6, 4, 10
    )
    assert cal.next_open(local(BERLIN, 2026, 6, 2, 17)) == local(BERLIN, 2026, 6, 4, 9)


# --- daylight saving time -------------------------------------------------------------


def test_berlin_spring_forward_over_a_weekend() -> None:
    cal = make()
    friday = local(BERLIN, 2026, 3, 27, 16)  # CET, UTC+1
    assert friday == utc(2026, 3, 27, 15)
    result = cal.add_business_minutes(friday, 120)
    assert result == local(BERLIN, 2026, 3, 30, 10)  # CEST, UTC+2
    assert result == utc(2026, 3, 30, 8)
    assert cal.business_minutes_between(friday, result) == 120


def test_berlin_fall_back_over_a_weekend() -> None:
    cal = make()
    friday = local(BERLIN, 2026, 10, 23, 16)  # CEST
    result = cal.add_business_minutes(friday, 120)
    assert result == local(BERLIN, 2026, 10, 26, 10)  # CET
    assert result == utc(2026, 10, 26, 9)


def test_new_york_spring_forward_and_fall_back_over_weekends() -> None:
    cal = make(timezone="America/New_York")
    spring = cal.add_business_minutes(local(NEW_YORK, 2026, 3, 6, 16), 120)
    assert spring == local(NEW_YORK, 2026, 3, 9, 10) == utc(2026, 3, 9, 14)
    fall = cal.add_business_minutes(local(NEW_YORK, 2026, 10, 30, 16), 120)
    assert fall == local(NEW_YORK, 2026, 11, 2, 10) == utc(2026, 11, 2, 15)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Europe/Berlin", date(2026, 3, 28), 24),
    ],
)
def test_a_whole_day_on_a_transition_has_its_real_length(zone: str, day: date, hours: int) -> None:
    every_day = {key: ["00:00-24:00"] for key in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    cal = make({"sun": ["00:00-24:00"], "sat": ["00:00-24:00"]}, zone)
    tz = ZoneInfo(zone)
    start, end = on(tz, day), on(tz, day + timedelta(days=1))
    assert cal.business_minutes_between(start, end) == hours * 60
    assert cal.add_business_minutes(start, hours * 60) == end
    assert make(every_day, zone).business_minutes_between(start, end) == hours * 60


def test_berlin_spring_forward_gap_opens_at_the_jump() -> None:
    cal = make({"sun": ["02:30-04:00"]})
    # 02:30 does not exist on 29 March 2026: the clock jumps from 02:00 CET to 03:00 CEST
    # at 01:00 UTC, and that is when the period opens.
    assert not cal.is_open(utc(2026, 3, 29, 0, 59))
    assert cal.is_open(utc(2026, 3, 29, 1, 0))
    assert cal.next_open(utc(2026, 3, 29, 0)) == utc(2026, 3, 29, 1)
    assert cal.business_minutes_between(utc(2026, 3, 29), utc(2026, 3, 30)) == 60
    assert cal.add_business_minutes(utc(2026, 3, 29), 60) == local(BERLIN, 2026, 3, 29, 4)
    assert cal.add_business_minutes(utc(2026, 3, 29), 61) == local(BERLIN, 2026, 4, 5, 2, 31)


def test_a_period_wholly_inside_the_gap_has_no_time() -> None:
    cal = make({"sun": ["02:00-03:00"]})
    assert cal.business_minutes_between(utc(2026, 3, 28), utc(2026, 3, 30)) == 0
    assert cal.next_open(local(BERLIN, 2026, 3, 28, 12)) == local(BERLIN, 2026, 4, 5, 2)
    assert cal.add_business_minutes(local(BERLIN, 2026, 3, 28), 30) == local(
        BERLIN, 2026, 4, 5, 2, 30
    )


def test_berlin_fall_back_fold() -> None:
    # 25 October 2026: 03:00 CEST becomes 02:00 CET at 01:00 UTC, so 02:00-03:00 happens twice.
    early = make({"sun": ["01:00-02:30"]})
    assert early.business_minutes_between(utc(2026, 10, 24), utc(2026, 10, 26)) == 90
    assert early.add_business_minutes(utc(2026, 10, 24), 90) == local(BERLIN, 2026, 10, 25, 2, 30)
    assert early.add_business_minutes(utc(2026, 10, 24), 90) == utc(2026, 10, 25, 0, 30)
    across = make({"sun": ["02:30-04:00"]})
    # From the first 02:30 (CEST) to 04:00 (CET): two and a half hours of real time.
    assert across.business_minutes_between(utc(2026, 10, 24), utc(2026, 10, 26)) == 150
    assert across.is_open(local(BERLIN, 2026, 10, 25, 2, 15, fold=1))
    assert not across.is_open(local(BERLIN, 2026, 10, 25, 2, 15, fold=0))
    assert across.add_business_minutes(utc(2026, 10, 24), 150) == local(BERLIN, 2026, 10, 25, 4)


def test_new_york_fall_back_fold() -> None:
    # 1 November 2026: 02:00 EDT becomes 01:00 EST at 06:00 UTC.
    cal = make({"sun": ["00:00-03:00"]}, "America/New_York")
    assert cal.business_minutes_between(utc(2026, 10, 31), utc(2026, 11, 2)) == 240
    assert cal.add_business_minutes(utc(2026, 10, 31), 240) == utc(2026, 11, 1, 8)
    assert cal.is_open(local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1))


def test_a_zone_whose_clocks_change_at_midnight() -> None:
    santiago = ZoneInfo("America/Santiago")
    cal = make({"sat": ["23:00-24:00"], "sun": ["00:00-01:00"]}, "America/Santiago")
    # 5 April 2026: midnight (-03) becomes Saturday 23:00 (-04) again, so the Saturday
    # period runs until the clock first reads Sunday 00:00: both passes, two hours; then
    # Sunday's hour.
    assert cal.business_minutes_between(utc(2026, 4, 4, 12), utc(2026, 4, 5, 4)) == 120
    assert cal.business_minutes_between(utc(2026, 4, 4, 12), utc(2026, 4, 5, 12)) == 180
    assert cal.add_business_minutes(utc(2026, 4, 4, 12), 120) == local(santiago, 2026, 4, 5, 0)
    assert cal.add_business_minutes(utc(2026, 4, 4, 12), 121) == local(santiago, 2026, 4, 5, 0, 1)
    # 6 September 2026: Sunday 00:00 (-04) becomes 01:00 (-03); Sunday 00:00-01:00 never happens.
    assert cal.business_minutes_between(utc(2026, 9, 5, 12), utc(2026, 9, 6, 12)) == 60
    assert cal.next_open(utc(2026, 9, 6, 4)) == local(santiago, 2026, 9, 12, 23)


def test_night_shift_across_spring_forward() -> None:
    cal = make({"sat": ["22:00-24:00"], "sun": ["00:00-06:00"]})
    saturday = local(BERLIN, 2026, 3, 28, 22)
    assert cal.business_minutes_between(saturday, local(BERLIN, 2026, 3, 29, 12)) == 7 * 60
    assert cal.add_business_minutes(saturday, 150) == local(BERLIN, 2026, 3, 29, 0, 30)
    # Five hours of work end at 04:00 CEST: the clock skipped an hour on the way.
    assert cal.add_business_minutes(saturday, 300) == local(BERLIN, 2026, 3, 29, 4)


WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _open_by_wall_clock(zone: ZoneInfo, hours: dict[str, list[str]], instant: datetime) -> bool:
    """Whether the local wall clock lies in a period: an oracle independent of the module.

    It agrees with the module's rule wherever no period bound falls strictly inside a
    fall-back fold, which the cases below respect.
    """
    wall = instant.astimezone(zone)
    minute = wall.hour * 60 + wall.minute
    return any(
        int(p[:2]) * 60 + int(p[3:5]) <= minute < int(p[6:8]) * 60 + int(p[9:11])
        for p in hours.get(WEEK[wall.weekday()], [])
    )


@pytest.mark.parametrize(
    ("zone", "friday", "hours"),
    [
        (
            "Europe/Berlin",
            date(2026, 3, 27),
            {
                "fri": ["08:00-12:00", "13:00-17:00"],
                "sat": ["20:00-24:00"],
                "sun": ["00:00-01:30", "02:30-04:00", "22:00-24:00"],
                "mon": ["00:00-02:00", "08:00-17:00"],
            },
        ),
        (
            "Europe/Berlin",
            date(2026, 10, 23),
            {"sat": ["00:00-24:00"], "sun": ["00:00-02:00", "03:00-24:00"], "mon": ["08:00-17:00"]},
        ),
        (
            "America/New_York",
            date(2026, 3, 6),
            {"sun": ["00:00-02:30", "02:30-24:00"], "mon": ["09:00-17:00"]},
        ),
        (
            "America/New_York",
            date(2026, 10, 30),
            {"sat": ["18:00-24:00"], "sun": ["00:00-01:00", "02:00-24:00"], "mon": ["09:00-17:00"]},
        ),
    ],
)
def test_transition_weekends_match_a_minute_by_minute_oracle(
    zone: str, friday: date, hours: dict[str, list[str]]
) -> None:
    tz = ZoneInfo(zone)
    cal = make(hours, zone)
    start = local(tz, friday.year, friday.month, friday.day)
    minutes = [start + timedelta(minutes=k) for k in range(4 * 24 * 60)]
    expected = [_open_by_wall_clock(tz, hours, m) for m in minutes]
    assert [cal.is_open(m) for m in minutes] == expected
    end = minutes[-1] + timedelta(minutes=1)
    assert cal.business_minutes_between(start, end) == sum(expected)
    open_minutes = [m for m, is_open in zip(minutes, expected, strict=True) if is_open]
    for n, minute in enumerate(open_minutes, start=1):
        assert cal.add_business_minutes(start, n) == minute + timedelta(minutes=1)


# --- 24x7 ---------------------------------------------------------------------------


def test_always_open_is_plain_elapsed_time() -> None:
    cal = Calendar(CalendarConfig(always_open=True), name="24x7")
    saturday = local(BERLIN, 2026, 10, 24, 12)
    assert cal.is_open(saturday)
    assert cal.next_open(saturday) == saturday
    assert cal.add_business_minutes(saturday, 10_000) == saturday + timedelta(minutes=10_000)
    assert cal.business_minutes_between(saturday, saturday + timedelta(days=2)) == 2 * 1440
    zoned = Calendar(CalendarConfig(timezone="Europe/Berlin", always_open=True))
    day = (local(BERLIN, 2026, 10, 25), local(BERLIN, 2026, 10, 26))
    assert zoned.business_minutes_between(*day) == 25 * 60


# --- efficiency and the search bound --------------------------------------------------


def test_large_spans_are_computed_by_the_day_not_by_the_minute() -> None:
    cal = make()
    monday = local(BERLIN, 2026, 1, 5, 9)
    # 10,000 minutes: 20 full days (four weeks) and 400 minutes of the 21st.
    assert cal.add_business_minutes(monday, 10_000) == local(BERLIN, 2026, 2, 2, 15, 40)
    began = timer.perf_counter()
    far = cal.add_business_minutes(monday, 1_000_000)
    assert cal.business_minutes_between(monday, far) == 1_000_000
    assert timer.perf_counter() - began < 2.0


def test_no_working_time_at_all_raises_instead_of_looping() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=k) for k in range(60 * 5)]
    cal = make({"mon": ["09:00-17:00"]}, holidays=[d.isoformat() for d in mondays])
    began = timer.perf_counter()
    with pytest.raises(CalendarError, match=r"calendar 'test' has no working time in \d+ days"):
        cal.add_business_minutes(utc(2026, 1, 1), 1)
    with pytest.raises(CalendarError):
        cal.next_open(utc(2026, 1, 1))
    assert cal.business_minutes_between(utc(2026, 1, 1), utc(2027, 1, 1)) == 0
    assert timer.perf_counter() - began < 2.0
    # After the listed Mondays, work resumes, SEARCH_DAYS permitting.
    assert (mondays[-1] - mondays[0]).days > SEARCH_DAYS
    assert cal.next_open(on(BERLIN, mondays[-1], 18)) == on(
        BERLIN, mondays[-1] + timedelta(weeks=1), 9
    )


# --- iCalendar holidays ----------------------------------------------------------------

HOLIDAYS_ICS = [
    "BEGIN:VCALENDAR",
    "VERSION:2.0",
    "PRODID:-//ingestd tests//EN",
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Berlin",
    "BEGIN:STANDARD",
    # A yearly rule inside a time zone definition is not a holiday.
    "DTSTART:19701025T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "END:STANDARD",
    "END:VTIMEZONE",
    "BEGIN:VEVENT",
    "UID:christmas",
    "DTSTART;VALUE=DATE:20001225",
    "DTEND;VALUE=DATE:20001227",
    "RRULE:FREQ=YEARLY",
    "SUMMARY:Christmas",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:thanksgiving",
    "DTSTART;VALUE=DATE:20201126",
    # Folded lines: a leading space or tab continues the previous line.
    "RRULE:FREQ=YEARLY;BYMONTH=11;",
    " BYDAY=4TH",
    "SUMMARY:Thanks",
    "\tgiving",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:memorial",
    "DTSTART;VALUE=DATE:20200525",
    "RRULE:FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO;UNTIL=20261231",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:company-day",
    'DTSTART;VALUE=DATE;X-NOTE="a:quoted;param":20260603',
    "TRANSP:TRANSPARENT",
    "BEGIN:VALARM",
    "ACTION:DISPLAY",
    "TRIGGER:-PT15M",
    "END:VALARM",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:founders",
    "DTSTART;VALUE=DATE:20240715",
    "RRULE:FREQ=YEARLY;COUNT=3",
    "EXDATE;VALUE=DATE:20250715",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:summit",
    "DTSTART;VALUE=DATE:20260909",
    "RRULE:FREQ=YEARLY",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:summit",
    "RECURRENCE-ID;VALUE=DATE:20270909",
    "DTSTART;VALUE=DATE:20270910",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:party",
    "DTSTART;VALUE=DATE:20260610",
    "STATUS:CANCELLED",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:outlook-style",
    "DTSTART;TZID=Europe/Berlin:20260612T000000",
    "DTEND;TZID=Europe/Berlin:20260613T000000",
    "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:turn-of-the-year",
    "DTSTART;VALUE=DATE:20261231",
    "DURATION:P3D",
    "RRULE:FREQ=YEARLY",
    "END:VEVENT",
    "END:VCALENDAR",
]


def write_ics(directory: Path, lines: list[str], name: str = "holidays.ics") -> Path:
    path = directory / name
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


@pytest.mark.parametrize(
    ("day", "closed"),
    [
        (date(2026, 12, 25), True),
        (date(2026, 12, 26), True),
        (date(2026, 12, 27), False),
        (date(2041, 12, 26), True),
        (date(1999, 12, 25), False),
        (date(2026, 11, 26), True),
        (date(2027, 11, 25), True),
        (date(2027, 11, 18), False),
        (date(2026, 5, 25), True),
        (date(2027, 5, 31), False),
        (date(2026, 6, 3), True),
        (date(2024, 7, 15), True),
        (date(2025, 7, 15), False),
        (date(2026, 7, 15), True),
        (date(2027, 7, 15), False),
        (date(2026, 9, 9), True),
        (date(2027, 9, 9), False),
        (date(2027, 9, 10), True),
        (date(2028, 9, 9), True),
        (date(2026, 6, 10), False),
        (date(2026, 6, 12), True),
        (date(2026, 6, 13), False),
        (date(2025, 12, 31), False),
        (date(2026, 12, 31), True),
        (date(2027, 1, 1), True),
        (date(2027, 1, 2), True),
        (date(2027, 1, 3), False),
        (date(2026, 10, 25), False),
    ],
)
def test_ics_holidays(tmp_path: Path, day: date, closed: bool) -> None:
    write_ics(tmp_path, HOLIDAYS_ICS)
    cal = make(holidays_ics="holidays.ics", base_dir=tmp_path)
    assert cal.is_holiday(day) is closed


def test_ics_with_a_byte_order_mark_and_bare_newlines(tmp_path: Path) -> None:
    lines = _ics_with_event("DTSTART;VALUE=DATE:20261224", "SUMMARY:Eve\fwith a form feed")
    (tmp_path / "h.ics").write_bytes(("\ufeff" + "\n".join(lines)).encode())
    cal = make(holidays_ics=tmp_path / "h.ics")
    assert cal.is_holiday(date(2026, 12, 24))
    assert not cal.is_holiday(date(2027, 12, 24))


@pytest.mark.parametrize(
    ("event", "closed", "open_"),
    [
        (
            ["DTSTART;VALUE=DATE:20200501", "RRULE:FREQ=YEARLY;BYMONTH=5;BYMONTHDAY=1"],
            [date(2020, 5, 1), date(2031, 5, 1)],
            [date(2031, 6, 1), date(2019, 5, 1)],
        ),
        (
            # The last day of every month, from October 2026.
            ["DTSTART;VALUE=DATE:20261031", "RRULE:FREQ=YEARLY;BYMONTHDAY=-1"],
            [date(2026, 10, 31), date(2026, 11, 30), date(2028, 2, 29)],
            [date(2026, 9, 30), date(2028, 2, 28)],
        ),
        (
            ["DTSTART;VALUE=DATE:20260213", "RRULE:FREQ=YEARLY;BYMONTHDAY=13;BYDAY=FR"],
            [date(2026, 2, 13), date(2026, 3, 13), date(2026, 11, 13)],
            [date(2026, 4, 13)],
        ),
        (
            # DTSTART always counts, even when the rule does not produce it.
            ["DTSTART;VALUE=DATE:20260102", "RRULE:FREQ=YEARLY;BYMONTH=1;BYDAY=1MO"],
            [date(2026, 1, 2), date(2026, 1, 5), date(2027, 1, 4)],
            [date(2027, 1, 2)],
        ),
        (
            ["DTSTART;VALUE=DATE:20240229", "RRULE:FREQ=YEARLY"],
            [date(2024, 2, 29), date(2028, 2, 29)],
            [date(2025, 2, 28), date(2025, 3, 1)],
        ),
        (
            ["DTSTART;VALUE=DATE:20260704", "RRULE:FREQ=YEARLY;INTERVAL=2"],
            [date(2026, 7, 4), date(2028, 7, 4)],
            [date(2027, 7, 4)],
        ),
        (
            ["DTSTART;VALUE=DATE:20260101", "RDATE;VALUE=DATE:20260406,20270329"],
            [date(2026, 1, 1), date(2026, 4, 6), date(2027, 3, 29)],
            [date(2027, 1, 1)],
        ),
        (
            # Without BYMONTH, the ordinal counts that weekday through the whole year.
            ["DTSTART;VALUE=DATE:20260105", "RRULE:FREQ=YEARLY;BYDAY=2MO"],
            [date(2026, 1, 12), date(2027, 1, 11)],
            [date(2026, 1, 19), date(2026, 2, 9)],
        ),
    ],
)
def test_yearly_rules(
    tmp_path: Path, event: list[str], closed: list[date], open_: list[date]
) -> None:
    write_ics(tmp_path, _ics_with_event(*event))
    cal = make(holidays_ics="holidays.ics", base_dir=tmp_path)
    assert [d for d in closed if not cal.is_holiday(d)] == []
    assert [d for d in open_ if cal.is_holiday(d)] == []


def test_an_ics_holiday_in_the_middle_of_a_span(tmp_path: Path) -> None:
    write_ics(tmp_path, HOLIDAYS_ICS)
    cal = make(holidays_ics="holidays.ics", base_dir=tmp_path)
    monday, friday = local(BERLIN, 2026, 6, 1, 9), local(BERLIN, 2026, 6, 5, 17)
    # Wednesday 3 June is the company day, Friday 5 June is not a holiday.
    assert cal.business_minutes_between(monday, friday) == 4 * 480
    assert cal.add_business_minutes(local(BERLIN, 2026, 6, 2, 16), 120) == local(
        BERLIN, 2026, 6, 4, 10
    )


def _ics_with_event(*event_lines: str) -> list[str]:
    return [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "BEGIN:VEVENT",
        *event_lines,
        "END:VEVENT",
        "END:VCALENDAR",
    ]


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=WEEKLY;BYDAY=MO"),
            5,
            "FREQ=WEEKLY is not supported",
        ),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;BYSETPOS=-1"),
            5,
            "BYSETPOS is not supported",
        ),
        (
            _ics_with_event("DTSTART:20261224T120000", "DTEND:20261224T180000"),
            4,
            "only all-day events are supported",
        ),
        (_ics_with_event("DTSTART;VALUE=DATE:20261332"), 4, "'20261332' is not a valid date"),
        (_ics_with_event("DTSTART;VALUE=DATE:christmas"), 4, "is not a date (YYYYMMDD)"),
        (_ics_with_event("SUMMARY:no start"), 3, "VEVENT without DTSTART"),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "DURATION:PT4H"),
            5,
            "not a whole number of days",
        ),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;BYDAY=5XX"),
            5,
            "'5XX' is not a weekday",
        ),
        (["BEGIN:VCALENDAR", "BEGIN:VEVENT", "DTSTART;VALUE=DATE:20260101"], 2, "never closed"),
        (["BEGIN:VCALENDAR", "END:VEVENT"], 2, "END:VEVENT where END:VCALENDAR was expected"),
        (["BEGIN:VCALENDAR", "garbage without a colon", "END:VCALENDAR"], 2, "not an iCalendar"),
        (["Subject: not a calendar"], None, "not an iCalendar file"),
        (
            _ics_with_event("DTSTART:20261224T000000", "DTEND:20261224T000000"),
            3,
            "closes no whole day",
        ),
        (_ics_with_event("DTSTART:20261224T000000"), 3, "without DTEND or DURATION"),
        (
            _ics_with_event(
                "DTSTART;VALUE=DATE:20260101", "DTEND;VALUE=DATE:20260102", "DURATION:P1D"
            ),
            3,
            "both DTEND and DURATION",
        ),
        (
            _ics_with_event(
                "DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;COUNT=2;UNTIL=20300101"
            ),
            5,
            "COUNT and UNTIL cannot both be given",
        ),
        (
            _ics_with_event(
                "DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;BYMONTHDAY=1;BYDAY=1MO"
            ),
            5,
            "BYDAY with an ordinal and BYMONTHDAY is not supported",
        ),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;BYMONTH=13"),
            5,
            "BYMONTH: 13 is out of range",
        ),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;INTERVAL=-2"),
            5,
            "INTERVAL: -2 is out of range",
        ),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY;COUNT=two"),
            5,
            "COUNT: 'two' is not a number",
        ),
        (
            _ics_with_event(
                "DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=YEARLY", "RRULE:FREQ=YEARLY"
            ),
            6,
            "only one RRULE",
        ),
        (
            _ics_with_event("UID:a", "RECURRENCE-ID;RANGE=THISANDFUTURE;VALUE=DATE:20270101"),
            5,
            "THISANDFUTURE is not supported",
        ),
        (["BEGIN:VEVENT", "END:VEVENT"], 1, "BEGIN:VEVENT outside BEGIN:VCALENDAR"),
        (
            _ics_with_event("DTSTART;VALUE=DATE:20261224", "DTEND;VALUE=DATE:20261223"),
            3,
            "ends before it starts",
        ),
    ],
)
def test_bad_ics_files_name_file_and_line(
    tmp_path: Path, lines: list[str], line: int | None, fragment: str
) -> None:
    path = write_ics(tmp_path, lines)
    config = CalendarConfig.model_validate(
        {"timezone": "Europe/Berlin", "hours": OFFICE, "holidays_ics": path}
    )
    with pytest.raises(SourceError) as caught:
        Calendar(config, name="support")
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert problem.line == line
    assert problem.field == "calendars.support.holidays_ics"
    assert fragment in problem.message


def test_an_ics_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "h.ics").write_bytes(b"BEGIN:VCALENDAR\r\nSUMMARY:F\xe9riado\r\n")
    with pytest.raises(SourceError, match="not UTF-8 text"):
        make(holidays_ics="h.ics", base_dir=tmp_path)


def test_load_calendars_resolves_ics_against_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "calendars").mkdir()
    write_ics(tmp_path / "calendars", HOLIDAYS_ICS, "de.ics")
    configs = {
        "berlin": CalendarConfig.model_validate(
            {"timezone": "Europe/Berlin", "hours": OFFICE, "holidays_ics": "calendars/de.ics"}
        ),
        "always": CalendarConfig(always_open=True),
    }
    calendars = load_calendars(configs, tmp_path)
    assert set(calendars) == {"berlin", "always"}
    assert calendars["berlin"].name == "berlin"
    assert calendars["berlin"].is_holiday(date(2026, 12, 25))
    assert calendars["always"].is_open(utc(2026, 12, 25, 12))


def test_load_calendars_reports_every_broken_calendar(tmp_path: Path) -> None:
    write_ics(
        tmp_path, _ics_with_event("DTSTART;VALUE=DATE:20260101", "RRULE:FREQ=DAILY"), "bad.ics"
    )
    configs = {
        name: CalendarConfig.model_validate(
            {"timezone": "Europe/Berlin", "hours": OFFICE, "holidays_ics": ics}
        )
        for name, ics in (("ok", None), ("bad", "bad.ics"), ("missing", "missing.ics"))
    }
    with pytest.raises(SourceError) as caught:
        load_calendars(configs, tmp_path)
    text = str(caught.value)
    assert f"{tmp_path / 'bad.ics'}:5: calendars.bad.holidays_ics: RRULE: FREQ=DAILY" in text
    assert f"{tmp_path / 'missing.ics'}: calendars.missing.holidays_ics: cannot read" in text


def test_a_yearly_rule_can_close_a_weekday_for_good(tmp_path: Path) -> None:
    write_ics(
        tmp_path, _ics_with_event("DTSTART;VALUE=DATE:20260105", "RRULE:FREQ=YEARLY;BYDAY=MO")
    )
    cal = make({"mon": ["09:00-17:00"]}, holidays_ics="holidays.ics", base_dir=tmp_path)
    assert cal.is_holiday(date(2030, 6, 3))
    with pytest.raises(CalendarError, match="check its hours and holidays"):
        cal.add_business_minutes(utc(2026, 1, 1), 60)


# --- properties -----------------------------------------------------------------------

PROPERTY_CALENDARS = [
    make({"mon": ["08:00-12:00", "13:00-17:00"], "fri": ["09:00-15:00"]}, holidays=["2026-06-05"]),
    # Bounds in Berlin's gap and fold, and a night shift over midnight.
    make({"sat": ["22:00-24:00"], "sun": ["00:00-01:00", "02:30-04:00"], "wed": ["09:00-17:00"]}),
    make({"sun": ["01:30-02:30"], "tue": ["00:00-24:00"]}, "America/New_York"),
    # Lord Howe Island moves its clocks by half an hour.
    make({"sun": ["01:00-03:00"], "thu": ["23:00-24:00"]}, "Australia/Lord_Howe"),
    # Santiago changes its clocks at midnight.
    make(
        {"sat": ["23:00-24:00"], "sun": ["00:00-01:00"], "mon": ["00:00-24:00"]}, "America/Santiago"
    ),
]

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    cal=st.sampled_from(PROPERTY_CALENDARS),
    start=instants,
    minutes=st.floats(min_value=0, max_value=20_000, allow_nan=False),
)
def test_adding_then_measuring_round_trips(cal: Calendar, start: datetime, minutes: float) -> None:
    end = cal.add_business_minutes(start, minutes)
    assert end >= start
    assert end.tzinfo is UTC
    assert cal.business_minutes_between(start, end) == pytest.approx(minutes, abs=1e-6)
    if timedelta(minutes=minutes) > timedelta(0):
        # The earliest such instant: working time runs right up to it.
        assert cal.is_open(end - timedelta(microseconds=1))
    else:
        assert end == cal.next_open(start)


@settings(max_examples=150, deadline=None, database=None)
@given(cal=st.sampled_from(PROPERTY_CALENDARS), a=instants, b=instants, c=instants)
def test_measuring_is_additive(cal: Calendar, a: datetime, b: datetime, c: datetime) -> None:
    low, middle, high = sorted((a, b, c))
    whole = cal.business_minutes_between(low, high)
    parts = cal.business_minutes_between(low, middle) + cal.business_minutes_between(middle, high)
    assert whole == pytest.approx(parts, abs=1e-6)
    opened = cal.next_open(middle)
    assert cal.is_open(opened)
    assert cal.business_minutes_between(middle, opened) == 0
