"""IMAP intake end to end: the real daemon in a subprocess, a real Dovecot, both stores.

Mail goes into Dovecot by IMAP APPEND; the test then watches the journal, the
cases, the flags and folders on the server, /healthz and /metrics.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ingest import failpoints
from ingest.config import DatabaseConfig
from ingest.store import Store
from ingest.store.models import Case, JournalEntry
from tests.dovecot import Dovecot
from tests.harness import email
from tests.support import Daemon, Database, wait_until

SEEN = b"\\Seen"
# Where the store plays no part beyond holding rows, SQLite alone keeps the suite short;
# the crash, the lease and the import run on both.
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


class Watch:
    """The daemon's database, read directly from the test (faster than the CLI)."""

    def __init__(self, database: Database) -> None:
        self.store = Store(DatabaseConfig(url=database.url))

    def journal(self) -> list[JournalEntry]:
        with self.store.read() as session:
            return list(session.execute(select(JournalEntry).order_by(JournalEntry.id)).scalars())

    def cases(self) -> int:
        with self.store.read() as session:
            return int(session.execute(select(func.count()).select_from(Case)).scalar_one())

    def settled_cases(self, count: int) -> bool:
        rows = self.journal()
        return (
            len(rows) >= count
            and all(r.outcome != "pending" for r in rows)
            and (self.cases() == count)
        )

    def close(self) -> None:
        self.store.dispose()


@pytest.fixture
def watch(database: Database) -> Iterator[Watch]:
    w = Watch(database)
    yield w
    w.close()


def imap_daemon(
    tmp_path: Path,
    database: Database,
    mailboxes: list[dict[str, Any]],
    name: str = "daemon",
    **imap: Any,
) -> Daemon:
    workdir = tmp_path / name
    workdir.mkdir()
    settings = {"mailboxes": mailboxes, "lease_seconds": 3, "degraded_after": 1, **imap}
    return Daemon(workdir, database, {"imap": settings})


def until(daemon: Daemon, predicate: Callable[[], Any], timeout: float = 20) -> None:
    """wait_until, with the daemon's log in the failure."""
    try:
        wait_until(predicate, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; daemon log:\n{daemon.log()[-6000:]}") from None


def mid(msg: EmailMessage) -> str:
    return str(msg["Message-ID"])


def metric(daemon: Daemon, line_start: str) -> float:
    _, body = daemon.http_get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_killed_between_commit_and_acknowledgement_repeats_nothing_and_loses_nothing(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    with_id = email("Printer on fire")
    without_id = b"From: bob@customer.example\r\nSubject: no Message-ID here\r\n\r\nhelp\r\n"
    dovecot.append(with_id, without_id)
    daemon = imap_daemon(
        tmp_path, database, [dovecot.mailbox(processed_folder="Processed", idle=False)]
    )
    daemon.start(wait_healthy=False, env={"INGESTD_FAILPOINTS": "imap.after_commit"})
    try:
        assert daemon.process is not None
        assert daemon.process.wait(30) == failpoints.EXIT_CODE, daemon.log()
        # Journaled (committed), but neither flagged nor moved.
        assert len(watch.journal()) == 2
        inbox = dovecot.messages()
        assert len(inbox) == 2
        assert all(SEEN not in flags for flags in inbox.values())
        assert dovecot.messages("Processed") == {}

        daemon.start()
        until(daemon, lambda: len(dovecot.messages("Processed")) == 2, timeout=20)
        until(daemon, lambda: watch.settled_cases(2), timeout=20)
    finally:
        daemon.stop()
    assert dovecot.messages() == {}
    moved = dovecot.messages("Processed")
    assert all(SEEN in flags for flags in moved.values())
    rows = watch.journal()
    assert len(rows) == 2, [r.external_id for r in rows]
    assert {r.outcome for r in rows} == {"created"}
    assert watch.cases() == 2
    # The one with a Message-ID was recognised before download; the other by its bytes.
    by_key = {r.external_id: r for r in rows}
    assert by_key[mid(with_id).strip("<>")].duplicate_count == 0
    assert [r.duplicate_count for r in rows if r.external_id.startswith("sha256:")] == [1]


@SQLITE_ONLY
def test_changed_uidvalidity_rescans_without_duplicates(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    first, second = email("First"), email("Second")
    dovecot.append(first, second, folder="Support")
    daemon = imap_daemon(tmp_path, database, [dovecot.mailbox(folder="Support")])
    daemon.start()
    try:
        until(daemon, lambda: watch.settled_cases(2), timeout=20)
        before = dovecot.uidvalidity("Support")
        # The folder is deleted and re-created (a server migration, a restore):
        # same messages, flags partly lost, plus new mail, some already read.
        new_unread, new_read = email("Third"), email("Fourth, read on a phone")
        with dovecot.client() as client:
            client.delete_folder("Support")
            client.create_folder("Support")
        dovecot.append(first, folder="Support", flags=(SEEN,))
        dovecot.append(second, new_unread, folder="Support")
        dovecot.append(new_read, folder="Support", flags=(SEEN,))
        assert dovecot.uidvalidity("Support") != before
        until(daemon, lambda: watch.settled_cases(4), timeout=30)
        until(
            daemon, lambda: all(SEEN in f for f in dovecot.messages("Support").values()), timeout=20
        )
    finally:
        daemon.stop()
    rows = watch.journal()
    assert sorted(r.external_id for r in rows) == sorted(
        mid(m).strip("<>") for m in (first, second, new_unread, new_read)
    )
    assert watch.cases() == 4
    assert any(e.get("event", "").startswith("imap UIDVALIDITY changed") for e in daemon.events())


@SQLITE_ONLY
def test_an_outage_longer_than_a_day_misses_nothing(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    daemon = imap_daemon(tmp_path, database, [dovecot.mailbox()])
    daemon.start()
    dovecot.append(email("Before the outage"))
    until(daemon, lambda: watch.settled_cases(1), timeout=20)
    daemon.stop()

    now = datetime.now(UTC)
    late = []
    for days, flags in ((3, ()), (2, (SEEN,)), (0, ())):
        msg = email(f"Sent {days} days ago")
        msg["Date"] = format_datetime(now - timedelta(days=days))
        late.append(msg)
        dovecot.append(msg, flags=flags, when=now - timedelta(days=days))

    daemon.start()
    try:
        until(daemon, lambda: watch.settled_cases(4), timeout=20)
    finally:
        daemon.stop()
    keys = {r.external_id for r in watch.journal()}
    assert {mid(m).strip("<>") for m in late} <= keys
    assert len(keys) == 4


@SQLITE_ONLY
def test_idle_and_polling_mailboxes_side_by_side(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    # IDLE with a poll interval far longer than the test: only IDLE can deliver.
    idling = dovecot.mailbox("idling", poll_interval=3600)
    polling = dovecot.mailbox("polling", folder="Polled", idle=False, poll_interval=0.3)
    dovecot.append(email("make the folder"), folder="Polled")
    daemon = imap_daemon(tmp_path, database, [idling, polling])
    daemon.start()
    try:
        until(daemon, lambda: watch.settled_cases(1), timeout=20)
        until(
            daemon,
            lambda: daemon.health()["imap"]["mailboxes"]["idling"]["state"] == "idle",
            timeout=20,
        )
        dovecot.append(email("Arrives during IDLE"))
        dovecot.append(email("Arrives between polls"), folder="Polled")
        until(daemon, lambda: watch.settled_cases(3), timeout=20)
        report = daemon.health()
    finally:
        daemon.stop()
    mailboxes = report["imap"]["mailboxes"]
    assert mailboxes["idling"]["idle"] is True
    assert mailboxes["polling"]["state"] == "polling"
    assert mailboxes["idling"]["ok"]
    assert mailboxes["polling"]["ok"]
    assert mailboxes["idling"]["connected"] is True
    assert mailboxes["idling"]["last_poll"] is not None
    assert report["status"] == "ok"


@SQLITE_ONLY
def test_size_cap_leaves_big_mail_on_the_server_as_a_quarantine_record(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    big = email("Scanned contract", body="x" * 6000)
    small = email("Quick question")
    dovecot.append(big, small)
    daemon = imap_daemon(tmp_path, database, [dovecot.mailbox(max_message_size=2048)])
    daemon.start()
    try:
        until(daemon, lambda: watch.settled_cases(1) and len(watch.journal()) == 2, timeout=20)
        dovecot.append(email("Another one"))
        until(daemon, lambda: watch.settled_cases(2), timeout=20)
        # The case may be committed a moment before the acknowledgement is counted.
        until(
            daemon,
            lambda: metric(daemon, 'ingestd_imap_acknowledged_total{mailbox="support"}') == 2,
            timeout=20,
        )
        oversize = metric(daemon, 'ingestd_imap_oversize_total{mailbox="support"}')
        fetched = metric(daemon, 'ingestd_imap_fetched_total{mailbox="support"}')
        acknowledged = metric(daemon, 'ingestd_imap_acknowledged_total{mailbox="support"}')
        dead = daemon.cli("journal", "list", "--outcome", "dead", "--json").stdout
    finally:
        daemon.stop()
    assert (oversize, fetched, acknowledged) == (1, 2, 2)
    [record] = json.loads(dead)
    assert record["external_id"].startswith("oversize:support:")
    error = record["last_error"]
    assert "too large" in error
    assert "2048" in error
    assert "folder 'INBOX'" in error
    assert "UID 1" in error
    assert record["duplicates"] == 0  # not looked at again on later polls
    [row] = [r for r in watch.journal() if r.outcome == "dead"]
    assert row.raw.startswith(b"From:") or b"Subject: Scanned contract" in row.raw
    assert b"xxxx" not in row.raw  # the header only: the body was never downloaded
    # Still on the server, untouched; the others are read.
    flags = dovecot.messages()
    assert SEEN not in flags[mid(big)]
    assert SEEN in flags[mid(small)]


@SQLITE_ONLY
def test_reconnects_after_the_server_restarts(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    daemon = imap_daemon(tmp_path, database, [dovecot.mailbox()])
    daemon.start()
    try:
        dovecot.append(email("Before the restart"))
        until(daemon, lambda: watch.settled_cases(1), timeout=20)
        dovecot.stop()  # killed: the IDLE connection just drops
        until(
            daemon,
            lambda: not daemon.health()["imap"]["mailboxes"]["support"]["connected"],
            timeout=20,
        )
        dovecot.start()
        dovecot.append(email("After the restart"))
        until(daemon, lambda: watch.settled_cases(2), timeout=30)
    finally:
        daemon.stop()
    events = [e for e in daemon.events() if e.get("mailbox") == "support"]
    assert sum(e["event"] == "imap connected" for e in events) >= 2
    assert any(e["event"] == "imap mailbox error" for e in events)
    assert any(e["event"] == "imap mailbox recovered" for e in events)


@SQLITE_ONLY
def test_a_store_outage_leaves_mail_unacknowledged_until_it_is_journaled(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    daemon = imap_daemon(tmp_path, database, [dovecot.mailbox(idle=False, poll_interval=0.2)])
    daemon.start()
    msg = email("Sent while the database is down")
    store_errors = 'ingestd_imap_errors_total{kind="store",mailbox="support"}'
    try:
        with database.outage():
            dovecot.append(msg)
            until(daemon, lambda: metric(daemon, store_errors) >= 1)
            assert SEEN not in dovecot.messages()[mid(msg)]
        until(daemon, lambda: watch.settled_cases(1), timeout=30)
        until(daemon, lambda: SEEN in dovecot.messages()[mid(msg)])
    finally:
        daemon.stop()
    assert [r.external_id for r in watch.journal()] == [mid(msg).strip("<>")]


@SQLITE_ONLY
def test_a_hung_or_refusing_mailbox_does_not_block_a_healthy_one(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    # A server that accepts the connection and then never says a word.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        mailboxes = [
            dovecot.mailbox("hung", port=hung.getsockname()[1], timeout=1),
            dovecot.mailbox("wrong-password", password="not-the-password"),
            dovecot.mailbox("healthy"),
        ]
        daemon = imap_daemon(tmp_path, database, mailboxes)
        daemon.start()
        try:
            dovecot.append(email("For the healthy mailbox"))
            until(daemon, lambda: watch.settled_cases(1), timeout=20)
            until(daemon, lambda: daemon.health()["http_status"] == 503, timeout=20)
            report = daemon.health()
            auth_errors = metric(
                daemon, 'ingestd_imap_errors_total{kind="auth",mailbox="wrong-password"}'
            )
        finally:
            daemon.stop()
    finally:
        hung.close()
    assert report["status"] == "degraded"
    boxes = report["imap"]["mailboxes"]
    assert boxes["healthy"]["ok"] is True
    assert boxes["hung"]["ok"] is False
    assert "timed out" in boxes["hung"]["last_error"]
    assert boxes["wrong-password"]["ok"] is False
    assert "refused the login of 'support@example.test'" in boxes["wrong-password"]["last_error"]
    assert "not-the-password" not in daemon.log()
    assert auth_errors == 1  # a refused login is not retried for minutes


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_two_daemons_on_one_database_read_each_message_once(
    tmp_path: Path, database: Database, dovecot: Dovecot, watch: Watch
) -> None:
    box = dovecot.mailbox(poll_interval=0.2, idle=False)
    one = imap_daemon(tmp_path, database, [box], name="one").start()
    two = imap_daemon(tmp_path, database, [box], name="two").start()
    try:
        for i in range(10):
            dovecot.append(email(f"Message {i}"))
        until(one, lambda: watch.settled_cases(10), timeout=30)

        def readers() -> list[Daemon]:
            return [
                d for d in (one, two) if any(e.get("event") == "imap connected" for e in d.events())
            ]

        [holder] = readers()
        standby = two if holder is one else one
        assert standby.health()["imap"]["mailboxes"]["support"]["state"] == "standby"
        # The holder dies without releasing its lease: the other takes over once it expires.
        holder.stop(signal.SIGKILL)
        for i in range(3):
            dovecot.append(email(f"After the takeover {i}"))
        until(standby, lambda: watch.settled_cases(13), timeout=30)
    finally:
        for d in (one, two):
            if d.process and d.process.poll() is None:
                d.stop()
    rows = watch.journal()
    assert len(rows) == 13
    assert all(r.duplicate_count == 0 for r in rows)
    assert all(SEEN in f for f in dovecot.messages().values())
