"""SLA KPIs in-process: deadlines, pause and resume, recomputation, the sweep, on both stores."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ingest import config as config_module
from ingest import lifecycle, slanotice, slaviews
from ingest.calendars import CalendarConfig, load_calendars
from ingest.clock import FileClock, SystemClock, from_environment
from ingest.conditions import ConditionParser
from ingest.lifecycle import TransitionError
from ingest.scheduler import Scheduler
from ingest.sla import SlaBook, describe_minutes
from ingest.slaconfig import PAUSABLE, parse_duration
from ingest.slasweep import SlaSweep, SweepResult
from ingest.store.models import (
    STATUS_REASONS_BY_STATE,
    Case,
    CaseState,
    OutboxMessage,
    SlaKpiInstance,
)
from ingest.templating import Templates
from ingest.yamlsource import SourceError
from tests.harness import Harness, email
from tests.support import REPO, Database

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
NINE_HOURS = {d: "08:00-17:00" for d in WEEKDAYS}
OWNER = "lead@example.com"
BOSS = "boss@example.com"


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def calendar(hours: dict[str, Any], zone: str = "America/New_York", **more: Any) -> dict[str, Any]:
    return {"timezone": zone, "hours": hours, **more}


def book_for(calendars: dict[str, dict[str, Any]]) -> SlaBook:
    built = load_calendars({n: CalendarConfig.model_validate(c) for n, c in calendars.items()}, ".")
    return SlaBook({}, built)


# -- Dynamics 365's worked examples (docs: "SLA time calculation scenarios") ---------
#
# Warning after 1 day (24 h) and failure after 2 days (48 h) of business time on
# an 08:00-17:00 Monday-to-Friday calendar, case created Wednesday 14 June 2023 at 15:00.

CREATED = at(NEW_YORK, 2023, 6, 14, 15)


@pytest.mark.parametrize(
    ("hours", "holidays", "warn", "fail"),
    [
        pytest.param(NINE_HOURS, [], (6, 19, 12), (6, 22, 9), id="calendar"),
        pytest.param(
            {d: ["08:00-13:00", "14:00-17:00"] for d in WEEKDAYS},
            [],
            (6, 19, 15),
            (6, 22, 15),
            id="calendar-with-break",
        ),
        pytest.param(
            NINE_HOURS,
            ["2023-06-16", "2023-06-19"],
            (6, 21, 12),
            (6, 26, 9),
            id="calendar-with-holidays",
        ),
    ],
)
def test_dynamics_examples_land_where_dynamics_says(
    hours: dict[str, Any], holidays: list[str], warn: tuple[int, ...], fail: tuple[int, ...]
) -> None:
    book = book_for({"office": calendar(hours, holidays=holidays)})
    assert book.add("office", CREATED, 24 * 60) == at(NEW_YORK, 2023, *warn)
    assert book.add("office", CREATED, 48 * 60) == at(NEW_YORK, 2023, *fail)
    # Without a calendar, business time is elapsed time.
    assert book.add(None, CREATED, 24 * 60) == at(NEW_YORK, 2023, 6, 15, 15)


def test_deadlines_across_dst_in_europe_and_america() -> None:
    book = book_for(
        {
            "berlin-days": calendar(NINE_HOURS, "Europe/Berlin"),
            "berlin-24h": calendar(
                {d: "00:00-24:00" for d in (*WEEKDAYS, "sat", "sun")}, "Europe/Berlin"
            ),
            "ny-24h": calendar({d: "00:00-24:00" for d in (*WEEKDAYS, "sat", "sun")}),
            "ny-days": calendar(NINE_HOURS),
        }
    )
    # Spring forward in Berlin (29 March 2026): the Sunday has 23 hours, so a
    # day of business time from Saturday noon ends at 13:00 on the wall clock.
    assert book.add("berlin-24h", at(BERLIN, 2026, 3, 28, 12), 24 * 60) == at(
        BERLIN, 2026, 3, 29, 13
    )
    # Office hours are wall-clock hours on either side of the change.
    friday = at(BERLIN, 2026, 3, 27, 16)
    assert book.add("berlin-days", friday, 120) == at(BERLIN, 2026, 3, 30, 9)
    assert book.between("berlin-days", friday, at(BERLIN, 2026, 3, 30, 9)) == 120
    # Fall back in New York (1 November 2026): the Sunday has 25 hours.
    assert book.add("ny-24h", at(NEW_YORK, 2026, 10, 31, 12), 24 * 60) == at(
        NEW_YORK, 2026, 11, 1, 11
    )
    assert book.add("ny-days", at(NEW_YORK, 2026, 10, 30, 16), 120) == at(NEW_YORK, 2026, 11, 2, 9)
    # Spring forward in New York (8 March 2026), over a weekend.
    assert book.add("ny-days", at(NEW_YORK, 2026, 3, 6, 16), 120) == at(NEW_YORK, 2026, 3, 9, 9)


# -- configuration ---------------------------------------------------------------------


def write_config(tmp_path: Path, sla: dict[str, Any], **more: Any) -> Path:
    path = tmp_path / "ingestd.yaml"
    data = {"calendars": {"office": calendar(NINE_HOURS)}, "sla": sla, **more}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems(tmp_path: Path, sla: dict[str, Any]) -> list[str]:
    with pytest.raises(SourceError) as caught:
        config_module.load(write_config(tmp_path, sla), env={})
    return [str(p) for p in caught.value.problems]


def policy(*items: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"policies": {"Gold": {"calendar": "office", "items": list(items), **more}}}


RESPOND = {"name": "Respond", "kpi": "first_response", "warn_after": "10m", "fail_after": "15m"}


def test_durations() -> None:
    assert parse_duration(90) == 90
    assert parse_duration("15m") == 15
    assert parse_duration("8h") == 480
    assert parse_duration("1h 30m") == 90
    assert parse_duration("1.5 hours") == 90
    for bad, words in [
        ("2d", "write business time in hours"),
        ("soon", "is not a duration"),
        ("5 fortnights", "unknown unit"),
        (0, "longer than zero"),
        (True, "a duration is"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_duration(bad)


def test_sla_config_errors_name_the_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        policy(
            {**RESPOND, "calendar": "ofice"},
            {
                "name": "Fix",
                "kpi": "resolution",
                "fail_after": "8h",
                "when": {"message.subject": "x"},
            },
            {
                "name": "Tier",
                "kpi": "resolution",
                "fail_after": "8h",
                "when": {"case.priorty": "High"},
            },
        ),
    )
    assert len(found) == 3, found
    assert "ingestd.yaml:" in found[0]
    assert "sla.policies.Gold.items[0].calendar: unknown calendar 'ofice'" in found[0]
    assert "SLA items read the case and its customer" in found[1]
    assert "did you mean case.priority" in found[2]

    invalid = problems(tmp_path, policy({**RESPOND, "warn_after": "20m"}, pause_on=["Resolved"]))
    assert any("warn_after must be shorter than fail_after" in p for p in invalid), invalid
    assert any("'Resolved' is not a status reason of an active case" in p for p in invalid)
    assert problems(tmp_path, {**policy(RESPOND), "default_policy": "Silver"})[0].endswith(
        "default_policy 'Silver' is not a policy (Gold)"
    )
    assert "must contain {number}" in problems(tmp_path, {"case_url": "https://x.example/"})[0]


def test_sla_conditions_read_the_case_and_its_customer(tmp_path: Path) -> None:
    item = {**RESPOND, "when": {"case.queue": "Gold Support", "customer.tier": "gold"}}
    loaded = config_module.load(write_config(tmp_path, policy(item)), env={})
    assert loaded.sla.policies["Gold"].items[0].when == item["when"]
    # Routing decides the queue, so routing rules cannot read it.
    found: list[str] = []
    ConditionParser("routing", [], lambda loc, msg: found.append(msg)).parse(
        {"case.queue": "Gold Support"}, ("when",)
    )
    assert found == ["case.queue is only known to sla rules"]
    assert tuple(r.value for r in STATUS_REASONS_BY_STATE[CaseState.ACTIVE]) == PAUSABLE
    assert describe_minutes(0) == "0 min"
    assert describe_minutes(59.2) == "1 h"
    assert describe_minutes(125) == "2 h 5 min"


# -- in the store: the harness with an SLA --------------------------------------------

STANDARD = {
    "calendar": "office",
    "notify": [BOSS],
    "items": [
        {"name": "Respond", "kpi": "first_response", "warn_after": "1h", "fail_after": "2h"},
        {"name": "Resolve", "kpi": "resolution", "warn_after": "24h", "fail_after": "48h"},
    ],
}


def harness(database: Database, policies: dict[str, Any], **more: Any) -> Harness:
    settings: dict[str, Any] = {
        "calendars": {"office": calendar(NINE_HOURS, holidays=more.pop("holidays", []))},
        "queues": [
            {"name": "General Support", "owner_email": OWNER},
            {"name": "Gold Support", "owner_email": "gold@example.com"},
        ],
        "sla": {"default_policy": next(iter(policies)), "policies": policies},
        **more,
    }
    return Harness(database.url, **settings)


@pytest.fixture
def h(database: Database) -> Iterator[Harness]:
    running = harness(database, {"Standard": STANDARD})
    yield running
    running.close()


def move_to(h: Harness, instant: datetime) -> None:
    h.clock.advance(instant - h.clock.now())


def open_case(h: Harness, subject: str = "Printer jammed") -> str:
    receipt = h.deliver(email(subject=subject))
    h.process()
    number = h.row(receipt.journal_id).case_number
    assert number is not None
    return number


def sweep(h: Harness, batch_size: int = 200) -> SweepResult:
    templates = Templates.load(REPO / "templates")
    return SlaSweep(h.store, h.pipeline.sla, h.clock, lambda: templates, batch_size).run()


def kpis(h: Harness, number: str) -> dict[str, SlaKpiInstance]:
    """The newest instance of each KPI of the case."""
    with h.store.read() as session:
        rows = session.execute(
            select(SlaKpiInstance)
            .join(Case, Case.id == SlaKpiInstance.case_id)
            .where(Case.number == number)
            .order_by(SlaKpiInstance.id)
        ).scalars()
        return {k.kpi: k for k in rows}


def all_kpis(h: Harness, number: str) -> list[tuple[str, str, str]]:
    with h.store.read() as session:
        return [
            (k.kpi, k.item, k.status)
            for k in session.execute(
                select(SlaKpiInstance)
                .join(Case, Case.id == SlaKpiInstance.case_id)
                .where(Case.number == number)
                .order_by(SlaKpiInstance.id)
            ).scalars()
        ]


def change(h: Harness, number: str, operation: Callable[[Session, Case], None]) -> None:
    with h.store.write() as session:
        case = session.execute(select(Case).where(Case.number == number)).scalar_one()
        operation(session, case)


def mails(h: Harness) -> list[tuple[str, str]]:
    with h.store.read() as session:
        return [
            (m.kind, m.recipient)
            for m in session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()
            if m.kind.startswith("sla_")
        ]


def test_dynamics_example_through_the_sweep(h: Harness) -> None:
    move_to(h, CREATED)
    number = open_case(h)
    first, resolve = kpis(h, number)["first_response"], kpis(h, number)["resolution"]
    assert (resolve.warn_at, resolve.fail_at) == (
        at(NEW_YORK, 2023, 6, 19, 12),
        at(NEW_YORK, 2023, 6, 22, 9),
    )
    assert (first.warn_at, first.fail_at) == (
        CREATED + timedelta(hours=1),
        CREATED + timedelta(hours=2),
    )
    assert (first.status, first.due_at) == ("In Progress", first.warn_at)
    assert first.warn_at is not None

    move_to(h, first.warn_at - timedelta(seconds=1))
    assert sweep(h).moved == 0
    move_to(h, first.warn_at)
    assert sweep(h).mail == {"warning": 2, "failure": 0}  # the queue's owner and `notify`
    assert kpis(h, number)["first_response"].status == "Nearing Noncompliance"
    assert mails(h) == [("sla_warning", OWNER), ("sla_warning", BOSS)]
    move_to(h, first.fail_at)
    assert sweep(h).mail == {"warning": 0, "failure": 2}
    assert sweep(h).moved == 0  # each mail once
    assert kpis(h, number)["first_response"].status == "Noncompliant"

    # The resolution KPI warns Monday at noon, not a minute earlier, and fails Thursday at 9.
    move_to(h, at(NEW_YORK, 2023, 6, 19, 11, 59))
    with h.store.read() as session:
        [view] = [
            v
            for v in slaviews.list_kpis(session, h.pipeline.sla, h.clock.now())
            if v["kpi"] == "resolution"
        ]
    assert view["time_left"] == "24 h 1 min"  # business time: Mon 11:59 to Thu 09:00
    assert view["fail_at_local"] == "2023-06-22T09:00:00-04:00"
    assert sweep(h).moved == 0
    move_to(h, at(NEW_YORK, 2023, 6, 19, 12))
    assert sweep(h).mail["warning"] == 2
    move_to(h, at(NEW_YORK, 2023, 6, 22, 9))
    assert sweep(h).mail["failure"] == 2
    assert [kind for kind, _ in mails(h)].count("sla_failure") == 4

    with h.store.read() as session:
        message = (
            session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.kind == "sla_failure")
                .order_by(OutboxMessage.id.desc())
            )
            .scalars()
            .first()
        )
    assert message is not None
    assert message.subject == f"[{number}] SLA failed: Resolution was due Thu 22 Jun 2023 09:00 EDT"
    assert "Bob <bob@customer.example>" in (message.body_text or "")
    assert f"http://127.0.0.1:8080/api/cases/{number}" in (message.body_text or "")
    assert message.headers["Auto-Submitted"] == "auto-generated"
    assert f'href="http://127.0.0.1:8080/api/cases/{number}"' in (message.body_html or "")


def test_pause_and_resume_before_and_after_the_warning(database: Database) -> None:
    # Dynamics' "pause and hold" scenario: holidays on 16 and 19 June, the case
    # on hold all of Wednesday 14th (before the warning) and all of Friday 23rd
    # (after it): warning Wednesday 21st 10:00, failure Monday 26th 16:00.
    resolve_only = {**STANDARD, "items": [STANDARD["items"][1]]}
    h = harness(database, {"Standard": resolve_only}, holidays=["2023-06-16", "2023-06-19"])
    try:
        move_to(h, at(NEW_YORK, 2023, 6, 13, 13))
        number = open_case(h)
        book = h.pipeline.sla

        def reason(value: str) -> Callable[[Session, Case], None]:
            return lambda s, c: lifecycle.set_status_reason(s, c, value, h.clock.now(), book)

        move_to(h, at(NEW_YORK, 2023, 6, 14, 8))
        change(h, number, reason("On Hold"))
        paused = kpis(h, number)["resolution"]
        assert (paused.status, paused.due_at) == ("Paused", None)
        move_to(h, at(NEW_YORK, 2023, 6, 14, 12))
        change(h, number, reason("Researching"))  # Researching does not pause: resumed
        kpi = kpis(h, number)["resolution"]
        assert kpi.paused_minutes == 4 * 60  # four business hours on hold
        change(h, number, reason("Waiting for Details"))  # paused again
        move_to(h, at(NEW_YORK, 2023, 6, 14, 17))
        with h.store.read() as session:
            [view] = slaviews.list_kpis(session, book, h.clock.now())
        assert view["status"] == "Paused"
        assert view["time_left"] == "44 h"  # frozen while paused: 48 h less 4 h worked
        change(h, number, reason("In Progress"))
        kpi = kpis(h, number)["resolution"]
        assert kpi.paused_minutes == 9 * 60
        assert (kpi.warn_at, kpi.fail_at) == (
            at(NEW_YORK, 2023, 6, 21, 10),
            at(NEW_YORK, 2023, 6, 23, 16),
        )
        # Where the warning would have been without the pause: nothing yet.
        move_to(h, at(NEW_YORK, 2023, 6, 20, 10))
        assert sweep(h).moved == 0
        move_to(h, at(NEW_YORK, 2023, 6, 21, 10))
        assert sweep(h).mail == {"warning": 2, "failure": 0}

        # On hold after the warning, over the old failure time: no failure.
        move_to(h, at(NEW_YORK, 2023, 6, 23, 8))
        change(h, number, reason("On Hold"))
        move_to(h, at(NEW_YORK, 2023, 6, 23, 16, 30))
        assert sweep(h).moved == 0
        move_to(h, at(NEW_YORK, 2023, 6, 23, 17))
        change(h, number, reason("In Progress"))
        kpi = kpis(h, number)["resolution"]
        assert kpi.fail_at == at(NEW_YORK, 2023, 6, 26, 16)
        # The warning time moved too, but has passed: still Nearing, and no second warning.
        assert kpi.status == "Nearing Noncompliance"
        move_to(h, at(NEW_YORK, 2023, 6, 26, 15, 59))
        assert sweep(h).moved == 0
        move_to(h, at(NEW_YORK, 2023, 6, 26, 16))
        assert sweep(h).mail == {"warning": 0, "failure": 2}
        assert [kind for kind, _ in mails(h)] == ["sla_warning"] * 2 + ["sla_failure"] * 2
    finally:
        h.close()


PRIORITY_SLA = {
    "calendar": "office",
    "items": [
        {
            "name": "High: resolve in 2 h",
            "kpi": "resolution",
            "when": {"case.priority": "High"},
            "warn_after": "1h",
            "fail_after": "2h",
        },
        {
            "name": "Gold queue: resolve in 4 h",
            "kpi": "resolution",
            "when": {"case.queue": "Gold Support"},
            "fail_after": "4h",
        },
        {"name": "Resolve in 8 h", "kpi": "resolution", "warn_after": "6h", "fail_after": "8h"},
    ],
}


def test_priority_and_queue_changes_recompute_deadlines(database: Database) -> None:
    h = harness(database, {"Standard": PRIORITY_SLA})
    try:
        monday = at(NEW_YORK, 2026, 6, 1, 9)
        move_to(h, monday)
        number = open_case(h)
        book = h.pipeline.sla
        assert kpis(h, number)["resolution"].fail_at == monday + timedelta(hours=8)

        move_to(h, monday + timedelta(hours=1, minutes=30))
        change(h, number, lambda s, c: lifecycle.set_priority(s, c, "high", h.clock.now(), book))
        high = kpis(h, number)["resolution"]
        # The 2-hour item now applies, counted from the case's creation.
        assert (high.item, high.warn_at, high.fail_at) == (
            "High: resolve in 2 h",
            monday + timedelta(hours=1),
            monday + timedelta(hours=2),
        )
        assert all_kpis(h, number) == [
            ("resolution", "Resolve in 8 h", "Canceled"),
            ("resolution", "High: resolve in 2 h", "In Progress"),
        ]
        # Its warning time has passed: the next sweep warns for the new promise.
        assert sweep(h).mail["warning"] == 1
        with pytest.raises(TransitionError, match="'Urgent' is not a priority"):
            change(
                h, number, lambda s, c: lifecycle.set_priority(s, c, "Urgent", h.clock.now(), book)
            )

        change(h, number, lambda s, c: lifecycle.set_priority(s, c, "Normal", h.clock.now(), book))
        change(h, number, lambda s, c: lifecycle.route(s, c, "Gold Support", h.clock.now(), book))
        assert [item for _, item, _ in all_kpis(h, number)] == [
            "Resolve in 8 h",
            "High: resolve in 2 h",
            "Resolve in 8 h",
            "Gold queue: resolve in 4 h",
        ]
        gold = kpis(h, number)["resolution"]
        assert (gold.status, gold.warn_at, gold.fail_at) == (
            "In Progress",
            None,
            monday + timedelta(hours=4),
        )
        # A failed KPI is history: a later change does not start the promise again.
        move_to(h, monday + timedelta(hours=4))
        assert sweep(h).mail == {"warning": 0, "failure": 1}  # the Gold queue's owner
        change(h, number, lambda s, c: lifecycle.set_priority(s, c, "High", h.clock.now(), book))
        assert all_kpis(h, number)[-1] == (
            "resolution",
            "Gold queue: resolve in 4 h",
            "Noncompliant",
        )
    finally:
        h.close()


def test_success_closing_and_reopening(h: Harness) -> None:
    monday = at(NEW_YORK, 2026, 6, 1, 9)
    move_to(h, monday)
    number = open_case(h)
    book = h.pipeline.sla
    now = h.clock.now

    move_to(h, monday + timedelta(minutes=50))
    change(h, number, lambda s, c: lifecycle.record_agent_reply(s, c, now()))
    assert kpis(h, number)["first_response"].status == "Succeeded"
    move_to(h, monday + timedelta(hours=3))
    assert sweep(h).mail == {"warning": 0, "failure": 0}  # a met KPI never warns

    change(h, number, lambda s, c: lifecycle.resolve(s, c, now(), book))
    assert h.case(number).state == "Resolved"
    assert kpis(h, number)["resolution"].status == "Succeeded"
    with pytest.raises(TransitionError, match="only active cases resolve"):
        change(h, number, lambda s, c: lifecycle.resolve(s, c, now(), book))
    with pytest.raises(TransitionError, match="reopen it before changing its status reason"):
        change(h, number, lambda s, c: lifecycle.set_status_reason(s, c, "On Hold", now(), book))
    with pytest.raises(TransitionError, match="reopen it to reply"):
        change(h, number, lambda s, c: lifecycle.record_agent_reply(s, c, now()))

    # Reopened: the resolution promise stands with its deadlines, and fails on time.
    change(h, number, lambda s, c: lifecycle.reopen(s, c, now(), book))
    resolve = kpis(h, number)["resolution"]
    assert (resolve.status, resolve.fail_at) == ("In Progress", at(NEW_YORK, 2026, 6, 8, 12))
    move_to(h, at(NEW_YORK, 2026, 6, 8, 12))
    assert sweep(h).mail == {"warning": 0, "failure": 2}  # past both: the failure only
    statuses = [status for _, _, status in all_kpis(h, number)]
    assert statuses == ["Succeeded", "Noncompliant"]

    second = open_case(h, "Second problem")
    change(h, second, lambda s, c: lifecycle.cancel(s, c, now(), book))
    assert [status for _, _, status in all_kpis(h, second)] == ["Canceled", "Canceled"]
    with pytest.raises(TransitionError, match="is not a status reason of cancelled cases"):
        change(h, second, lambda s, c: lifecycle.cancel(s, c, now(), book, reason="Problem Solved"))


def test_a_late_sweep_fails_without_warning_first(h: Harness) -> None:
    monday = at(NEW_YORK, 2026, 6, 1, 9)
    move_to(h, monday)
    number = open_case(h)
    # The daemon was down for hours: the first response is past its failure
    # time, the resolution only past its warning time.
    move_to(h, at(NEW_YORK, 2026, 6, 4, 10))
    result = sweep(h)
    assert result.mail == {"warning": 2, "failure": 2}
    first, resolve = kpis(h, number)["first_response"], kpis(h, number)["resolution"]
    assert (first.status, first.warned_at) == ("Noncompliant", None)
    assert (resolve.status, resolve.warned_at) == ("Nearing Noncompliance", h.clock.now())
    assert sorted(mails(h)) == sorted(
        [
            ("sla_failure", OWNER),
            ("sla_failure", BOSS),
            ("sla_warning", OWNER),
            ("sla_warning", BOSS),
        ]
    )
    with h.store.read() as session:
        subjects = {m.kind: m.subject for m in session.execute(select(OutboxMessage)).scalars()}
    assert "SLA warning: Resolution due" in str(subjects["sla_warning"])
    assert "SLA failed: First response was due" in str(subjects["sla_failure"])


def test_concurrent_sweeps_move_each_kpi_once(database: Database) -> None:
    h = harness(database, {"Standard": {**STANDARD, "notify": []}})
    try:
        move_to(h, at(NEW_YORK, 2026, 6, 1, 9))
        numbers = [open_case(h, f"Case {i}") for i in range(12)]
        move_to(h, at(NEW_YORK, 2026, 6, 1, 10))  # every first response is due a warning
        results: list[SweepResult] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(sweep(h, batch_size=2))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert sum(r.moved for r in results) == len(numbers)
        assert sum(r.mail["warning"] for r in results) == len(numbers)
        assert len(mails(h)) == len(numbers)
    finally:
        h.close()


def test_the_claim_reads_the_due_index(tmp_path: Path) -> None:
    # SQLite's plan; bench/sla.py measures both stores at 10k and 1M open cases.
    h = harness(Database("sqlite", f"sqlite:///{tmp_path / 'plan.db'}"), {"Standard": STANDARD})
    try:
        with h.store.read() as session:
            plan = session.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT * FROM sla_kpi_instances WHERE due_at <= :now "
                    "ORDER BY due_at, id LIMIT 200"
                ),
                {"now": datetime(2026, 1, 1)},
            ).all()
        assert any("ix_sla_kpi_instances_due_at" in str(row) for row in plan), plan
    finally:
        h.close()


def test_a_case_without_a_policy_gets_no_kpis(database: Database) -> None:
    h = Harness(database.url)
    try:
        number = open_case(h)
        assert kpis(h, number) == {}
        assert h.case(number).sla_policy is None
        assert sweep(h).moved == 0
    finally:
        h.close()


def test_the_shipped_config_and_templates_hold_an_sla() -> None:
    loaded = config_module.load(REPO / "config" / "ingestd.yaml", env={})
    assert loaded.sla.default_policy in loaded.sla.policies
    templates = Templates.load(REPO / "templates")
    for name in ("sla_warning", "sla_failure"):
        assert templates.check_names(name, slanotice.NOTICE_NAMES) is None
        assert templates.get(name).html is not None


# -- the daemon's clock, the scheduler, the mail's fallback ----------------------------


def test_a_file_clock_reads_an_instant_or_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    path.write_text("2026-06-01T09:00:00+02:00")
    clock = from_environment({"INGESTD_TEST_CLOCK_FILE": str(path)})
    assert isinstance(clock, FileClock)
    assert clock.now() == datetime(2026, 6, 1, 7, tzinfo=UTC)
    temporary = tmp_path / "next"
    temporary.write_text("+86400")
    os.replace(temporary, path)
    assert abs(clock.now() - (datetime.now(UTC) + timedelta(days=1))) < timedelta(seconds=5)
    temporary.write_text("not a time")
    os.replace(temporary, path)
    assert abs(clock.now() - (datetime.now(UTC) + timedelta(days=1))) < timedelta(seconds=5)
    temporary.write_text("2026-06-01T09:00:00")  # no offset: refused, the last reading stays
    os.replace(temporary, path)
    assert clock.now() > datetime(2026, 7, 1, tzinfo=UTC)
    assert isinstance(from_environment({}), SystemClock)


def test_the_scheduler_runs_one_sweep_at_a_time_and_stop_waits_for_it() -> None:
    runs: list[str] = []

    async def work() -> None:
        runs.append("start")
        await asyncio.sleep(0.15)  # longer than the interval: runs must not overlap
        runs.append("end")

    async def main() -> None:
        scheduler = Scheduler()
        scheduler.every("test", 0.05, work)
        scheduler.start()
        await asyncio.sleep(0.4)
        await scheduler.stop()

    asyncio.run(main())
    assert len(runs) >= 4
    assert runs == ["start", "end"] * (len(runs) // 2)  # never two at once, none cut short


def test_a_broken_sla_template_still_sends_the_notice(tmp_path: Path) -> None:
    (tmp_path / "sla_warning.txt").write_text("Subject: {{ kpi.nme }}\n\nbody\n")
    templates = Templates.load(tmp_path)
    case = Case(number="CAS-01000-ABCDEF", title="Printer", priority="High", origin="email")
    case.created_at = CREATED
    kpi = SlaKpiInstance(
        kpi="first_response", policy="Gold", item="Respond", status="Nearing Noncompliance"
    )
    kpi.calendar, kpi.fail_at, kpi.warn_at = None, CREATED + timedelta(minutes=15), CREATED
    book = SlaBook({}, {})
    ctx = slanotice.context(book, kpi, case, "warning", CREATED + timedelta(minutes=10))
    for source in (templates, Templates.load(tmp_path / "none")):  # broken, then missing
        rendered = slanotice.render(source, "warning", ctx, case)
        assert rendered.subject == (
            "[CAS-01000-ABCDEF] SLA warning: First response due Wed 14 Jun 2023 19:15 UTC"
        )
        assert "5 min of business time left" in rendered.text
