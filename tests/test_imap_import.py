"""`ingestd import`: a mailbox or a Maildir back-filled, interrupted, resumed, never doubled."""

from __future__ import annotations

import json
import mailbox
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from ingest import failpoints
from ingest.config import DatabaseConfig
from ingest.store import Store
from ingest.store.models import Case, JournalEntry, OutboxMessage
from tests.dovecot import Dovecot
from tests.harness import email
from tests.support import REPO, Daemon, Database

SEEN = b"\\Seen"
BATCH = ["--batch-size", "10"]  # a few messages make several batches


def workdir(tmp_path: Path, database: Database, mailboxes: list[dict[str, Any]]) -> Daemon:
    """A configuration (never started) with the starter rules, which acknowledge every case."""
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shipped = yaml.safe_load((REPO / "config" / "ingestd.yaml").read_text())
    return Daemon(
        tmp_path,
        database,
        {"imap": {"mailboxes": mailboxes}, "queues": shipped["queues"]},
    )


def run_import(
    config: Daemon, *args: str, failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if failpoint:
        env["INGESTD_FAILPOINTS"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(config.config_path), "import", *args],
        cwd=config.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def counts(database: Database) -> dict[str, int]:
    store = Store(DatabaseConfig(url=database.url))
    try:
        with store.read() as session:
            rows = session.execute(
                select(JournalEntry.outcome, func.count()).group_by(JournalEntry.outcome)
            ).tuples()
            out = {outcome: n for outcome, n in rows}
            out["cases"] = session.execute(select(func.count()).select_from(Case)).scalar_one()
            out["outbox"] = session.execute(
                select(func.count()).select_from(OutboxMessage)
            ).scalar_one()
            out["journal"] = sum(v for k, v in out.items() if k not in ("cases", "outbox"))
            return out
    finally:
        store.dispose()


def test_mailbox_import_is_interrupted_resumed_and_never_doubles(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    with dovecot.client() as client:
        for i in range(24):
            client.append("INBOX", email(f"History {i}").as_bytes(), flags=[SEEN])
        client.append("INBOX", email("Never opened").as_bytes())
    before = dovecot.messages()
    config = workdir(tmp_path, database, [dovecot.mailbox()])

    killed = run_import(config, "support", *BATCH, failpoint="import.after_commit:2")
    assert killed.returncode == failpoints.EXIT_CODE, killed.stderr
    assert counts(database)["journal"] == 20  # two batches committed before the crash

    resumed = run_import(config, "support", "--json", *BATCH)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    # The position was saved after batch 1; batch 2 was committed but its position
    # was not: it is recognised by Message-ID and not downloaded again.
    assert (summary["candidates"], summary["new"], summary["duplicates"]) == (15, 5, 10)
    assert (summary["fetched"], summary["errors"]) == (5, 0)
    assert summary["processed"] == 25
    after = counts(database)
    assert (after["journal"], after["created"], after["cases"]) == (25, 25, 25)
    assert after["outbox"] == 0  # history gets no acknowledgements (the rules ask for them)
    assert dovecot.messages() == before  # an import leaves the mailbox as it was

    again = json.loads(run_import(config, "support", "--json").stdout)
    assert (again["candidates"], again["new"], again["processed"]) == (0, 0, 0)

    restarted = json.loads(run_import(config, "support", "--restart", "--json").stdout)
    assert (restarted["candidates"], restarted["new"], restarted["duplicates"]) == (25, 0, 25)
    assert restarted["fetched"] == 0  # known by Message-ID: not even downloaded
    assert counts(database)["journal"] == 25


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_maildir_import_resumes_by_key_and_quarantines_oversize_files(
    tmp_path: Path, database: Database
) -> None:
    folder = tmp_path / "Maildir"
    maildir = mailbox.Maildir(folder, create=True)
    for i in range(23):
        maildir.add(email(f"Archived {i}").as_bytes())
    scan = email("A scan", body="x" * 6000).as_bytes()
    maildir.add(scan)
    maildir.add(b"From: bob@customer.example\r\nSubject: no id\r\n\r\nhello\r\n")
    config = workdir(tmp_path, database, [])

    source = ["--maildir", str(folder), "--max-size", "4096", *BATCH]
    killed = run_import(config, *source, failpoint="import.after_commit:1")
    assert killed.returncode == failpoints.EXIT_CODE, killed.stderr
    assert counts(database)["journal"] == 10

    resumed = run_import(config, *source, "--no-process", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["candidates"] == 25
    assert summary["oversize"] == 1  # found again, recorded once
    assert summary["new"] + summary["duplicates"] == 24
    assert summary["duplicates"] >= 9  # the first run's batch is not written again
    assert "processed" not in summary
    after = counts(database)
    assert (after["journal"], after["pending"], after["dead"]) == (25, 24, 1)

    store = Store(DatabaseConfig(url=database.url))
    with store.read() as session:
        dead = session.execute(
            select(JournalEntry).where(JournalEntry.outcome == "dead")
        ).scalar_one()
    store.dispose()
    assert dead.last_error is not None
    assert f"{len(scan)} bytes, over the cap of 4096 bytes" in dead.last_error
    assert str(folder) in dead.last_error
    assert b"xxxx" not in dead.raw

    text = run_import(config, *source)
    assert text.returncode == 0, text.stderr
    assert "new 0, duplicates 24, oversize 1, errors 0" in text.stdout
    assert "processed 24 journal rows" in text.stdout
    assert counts(database)["cases"] == 24


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_import_explains_what_it_cannot_do(
    tmp_path: Path, database: Database, dovecot: Dovecot
) -> None:
    config = workdir(tmp_path, database, [dovecot.mailbox(password="wrong-secret-123")])
    neither = run_import(config)
    assert neither.returncode == 2
    assert "give a MAILBOX name or --maildir PATH" in neither.stderr
    unknown = run_import(config, "sales")
    assert unknown.returncode == 2
    assert "no mailbox named 'sales'" in unknown.stderr
    assert "configured: support" in unknown.stderr
    refused = run_import(config, "support")
    assert refused.returncode == 5
    assert "refused the login of 'support@example.test'" in refused.stdout
    assert "wrong-secret-123" not in refused.stdout + refused.stderr
