"""The SLA sweep in the running daemon: mail at a real relay, restarts, two daemons, moved time."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests import mail
from tests.support import REPO, Daemon, DaemonClock, Database, wait_until
from tests.test_outbox import SinkHandler, relay

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_9 = datetime(2026, 6, 1, 9, tzinfo=BERLIN).astimezone(UTC)
OWNER = "lead@example.com"
WATCHER = "watch@example.com"


def settings(relay_port: int, **sla: Any) -> dict[str, Any]:
    return {
        "templates_dir": str(REPO / "templates"),
        "queues": [{"name": "General Support", "owner_email": OWNER}],
        "calendars": {
            "office": {
                "timezone": "Europe/Berlin",
                "hours": dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00"),
            }
        },
        "sla": {
            "default_policy": "Gold",
            "sweep_interval": 0.2,
            "notify": [WATCHER],
            "case_url": "https://help.example/cases/{number}",
            "policies": {
                "Gold": {
                    "calendar": "office",
                    "items": [
                        {"name": "Respond", "kpi": "first_response", "warn_after": "10m",
                         "fail_after": "15m"},
                        {"name": "Resolve", "kpi": "resolution", "warn_after": "6h",
                         "fail_after": "8h"},
                    ],
                }
            },
            **sla,
        },
        "outbound_email": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": relay_port,
            "security": "none",
            "from_address": "support@example.com",
        },
        "outbox": {"poll_interval": 0.2, "backoff_base_seconds": 0.2},
    }  # fmt: skip


@pytest.fixture
def sink() -> Iterator[tuple[SinkHandler, int]]:
    handler = SinkHandler()
    with relay(handler) as port:
        yield handler, port


def notices(handler: SinkHandler) -> Counter[tuple[str, str, str, str]]:
    """(kind, KPI, case number, recipient) of every SLA mail the relay took, counted."""
    found: Counter[tuple[str, str, str, str]] = Counter()
    for received in handler.received:
        subject = str(
            received.message["Subject"]
        ).strip()  # "[CAS-...] SLA warning: Resolution due ..."
        number, _, rest = subject.lstrip("[").partition("] SLA ")
        kind, _, rest = rest.partition(": ")
        kpi = rest.split(" was due ")[0].split(" due ")[0]
        for rcpt in received.rcpt_tos:
            found[(kind, kpi, number, rcpt)] += 1
    return found


def expected(numbers: list[str], *events: tuple[str, str]) -> set[tuple[str, str, str, str]]:
    return {(k, kpi, n, r) for n in numbers for k, kpi in events for r in (OWNER, WATCHER)}


def open_cases(daemon: Daemon, count: int) -> list[str]:
    for i in range(count):
        mail.send(daemon.smtp_port, mail.message(subject=f"Problem {i}"))
    daemon.wait_settled()
    return sorted(c["number"] for c in daemon.cases_all())


def sla_list(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(daemon.cli("sla", "list", "--json", *args).stdout))


def test_warning_and_failure_mail_arrive_once(
    tmp_path: Path, database: Database, sink: tuple[SinkHandler, int]
) -> None:
    handler, port = sink
    clock = DaemonClock(tmp_path / "clock", MONDAY_9)
    daemon = Daemon(tmp_path, database, settings(port), env=clock.env).start()
    try:
        [number] = open_cases(daemon, 1)
        listed = sla_list(daemon)
        assert [(k["name"], k["status"], k["time_left"]) for k in listed] == [
            ("First response", "In Progress", "15 min"),
            ("Resolution", "In Progress", "8 h"),
        ]

        clock.advance(timedelta(minutes=11))
        wait_until(lambda: len(handler.received) == 2, timeout=20)
        warning = handler.received[0].message
        assert str(warning["Subject"]).strip() == (
            f"[{number}] SLA warning: First response due Mon 01 Jun 2026 09:15 CEST"
        )
        assert warning["Auto-Submitted"] == "auto-generated"
        text = warning.get_body(("plain",))
        html = warning.get_body(("html",))
        assert text is not None
        assert html is not None
        body = text.get_content()
        assert "Time left: 4 min of business time (calendar office, Europe/Berlin)" in body
        assert "Ann Customer <ann@customer.example>" in body
        assert f"Open the case: https://help.example/cases/{number}" in body
        assert f'href="https://help.example/cases/{number}"' in html.get_content()
        assert {r for m in handler.received for r in m.rcpt_tos} == {OWNER, WATCHER}
        [nearing] = sla_list(daemon, "--status", "nearing")
        assert (nearing["case"], nearing["name"]) == (number, "First response")

        clock.advance(timedelta(minutes=5))
        wait_until(lambda: len(handler.received) == 4, timeout=20)
        failure = handler.received[2].message
        assert str(failure["Subject"]).strip() == (
            f"[{number}] SLA failed: First response was due Mon 01 Jun 2026 09:15 CEST"
        )
        [failed] = sla_list(daemon, "--status", "noncompliant")
        assert failed["time_left"] == "overdue 1 min"
        detail = daemon.case(number)
        assert [(k["name"], k["status"]) for k in detail["sla"]] == [
            ("First response", "Noncompliant"),
            ("Resolution", "In Progress"),
        ]
        assert detail["sla_policy"] == "Gold"
        shown = daemon.cli("cases", "show", number).stdout
        assert "Noncompliant" in shown
        assert "2026-06-01 17:00 Europe/Berlin" in shown

        status, body_bytes = daemon.http_get("/metrics")
        metrics = body_bytes.decode()
        assert status == 200
        assert 'ingestd_sla_kpis{status="Noncompliant"} 1.0' in metrics
        assert 'ingestd_sla_kpis{status="In Progress"} 1.0' in metrics
        assert 'ingestd_sla_notifications_total{kind="warning"} 2.0' in metrics
        assert 'ingestd_sla_notifications_total{kind="failure"} 2.0' in metrics
        time.sleep(1.0)  # several more sweeps: nothing is sent twice
        assert set(notices(handler).values()) == {1}
        assert len(handler.received) == 4
        assert daemon.health()["sla"] == {"ok": True}
    finally:
        assert daemon.stop() == 0


def test_a_restart_mid_sweep_and_after_downtime_sends_each_mail_once(
    tmp_path: Path, sink: tuple[SinkHandler, int]
) -> None:
    handler, port = sink
    database = Database("sqlite", f"sqlite:///{tmp_path / 'ingestd.db'}")
    clock = DaemonClock(tmp_path / "clock", MONDAY_9)
    # Batches of two KPIs; the daemon dies before committing the second batch.
    config = settings(port, batch_size=2)
    config["outbox"]["poll_interval"] = 60  # nothing leaves before the crash
    crashing = Daemon(
        tmp_path,
        database,
        config,
        env={**clock.env, "INGESTD_FAILPOINTS": "sla.sweep.before_commit:2"},
    ).start()
    numbers = open_cases(crashing, 3)
    # Down for hours, it would seem: every first response has failed (and was
    # never warned), every resolution is past its warning time only.
    clock.set(datetime(2026, 6, 1, 16, tzinfo=BERLIN).astimezone(UTC))
    assert crashing.process is not None
    assert crashing.process.wait(30) == 137
    assert handler.received == []
    statuses = Counter(k["status"] for k in sla_list(crashing))
    # The first batch (two first responses) committed; the second died with its mail.
    assert statuses == {"Noncompliant": 2, "In Progress": 4}

    restarted = Daemon(tmp_path, database, config, env=clock.env).start()
    try:
        # The resolutions are warned; the first responses fail, never warned.
        want = expected(numbers, ("warning", "Resolution"), ("failed", "First response"))
        wait_until(lambda: set(notices(handler)) == want, timeout=30)
        time.sleep(1.0)  # more sweeps, and the outbox: nothing twice
        assert set(notices(handler).values()) == {1}
        assert len(handler.received) == len(want)
        assert Counter(k["status"] for k in sla_list(restarted)) == {
            "Noncompliant": 3,
            "Nearing Noncompliance": 3,
        }
    finally:
        assert restarted.stop() == 0


@pytest.mark.postgres
def test_two_daemons_on_one_postgresql_send_each_mail_once(
    tmp_path: Path, postgres_server: Any, sink: tuple[SinkHandler, int]
) -> None:
    handler, port = sink
    url = postgres_server.create_database()
    database = Database("postgresql", url, postgres_server)
    clock = DaemonClock(tmp_path / "clock", MONDAY_9)
    config = settings(port, batch_size=2, sweep_interval=0.1)
    daemons = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            daemons.append(Daemon(workdir, database, config, env=clock.env).start())
        for i in range(8):
            mail.send(daemons[i % 2].smtp_port, mail.message(subject=f"Problem {i}"))
        for daemon in daemons:
            daemon.wait_settled()
        numbers = sorted(c["number"] for c in daemons[0].cases_all())
        assert len(numbers) == 8
        clock.set(datetime(2026, 6, 1, 15, 30, tzinfo=BERLIN).astimezone(UTC))
        first = expected(numbers, ("warning", "Resolution"), ("failed", "First response"))
        wait_until(lambda: set(notices(handler)) == first, timeout=30)
        clock.set(datetime(2026, 6, 1, 17, tzinfo=BERLIN).astimezone(UTC))
        every = first | expected(numbers, ("failed", "Resolution"))
        wait_until(lambda: set(notices(handler)) == every, timeout=30)
        time.sleep(1.0)
        found = notices(handler)
        assert set(found.values()) == {1}, found
        assert len(handler.received) == len(every) == 48
        swept = [sum(e.get("event") == "sla warning queued" for e in d.events()) for d in daemons]
        assert sum(swept) == 8  # one warning event per resolution KPI, across both daemons
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0
        postgres_server.drop_database(url)
