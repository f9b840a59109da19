"""The store, journal and pipeline in-process, for tests that drive them step by step."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import func, select

from channels import mime
from channels.base import Parser
from ingest import cases
from ingest.clock import ManualClock
from ingest.config import Config, DatabaseConfig
from ingest.journal import Delivery, Journal, Receipt
from ingest.pipeline import Pipeline
from ingest.store import Store
from ingest.store.models import Case, JournalEntry

START = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)


class Harness:
    def __init__(self, url: str, parsers: dict[str, Parser] | None = None, **config: Any) -> None:
        # No rule files unless a test brings its own: the unmatched default applies.
        config.setdefault("rules_dir", tempfile.mkdtemp(prefix="ingestd-rules-"))
        self.config = Config.model_validate({"database": {"url": url}, **config})
        self.store = Store(DatabaseConfig(url=url))
        self.store.migrate()
        self.clock = ManualClock(START)
        with self.store.write() as session:
            cases.sync_queues(session, self.config.queues, self.clock.now())
        self.journal = Journal(self.store, self.clock, lambda: None)
        self.pipeline = Pipeline(
            self.store, self.config, self.clock, {"email": mime.parse, **(parsers or {})}
        )

    def close(self) -> None:
        self.store.dispose()

    def deliver(self, msg: EmailMessage | bytes, key: str | None = None) -> Receipt:
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        delivery = Delivery("email", key or mime.message_key(raw), raw, {"rcpt_tos": [mail_to()]})
        [receipt] = self.journal.commit([delivery])
        assert isinstance(receipt, Receipt), receipt
        return receipt

    def process(self) -> int:
        total = 0
        while handled := self.pipeline.run_batch():
            total += handled
        return total

    def advance(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))

    def row(self, journal_id: int) -> JournalEntry:
        with self.store.read() as session:
            row = session.get(JournalEntry, journal_id)
            assert row is not None
            return row

    def case(self, number: str) -> Case:
        with self.store.read() as session:
            case = session.execute(select(Case).where(Case.number == number)).scalar_one()
            _ = case.activities, case.queue, case.contact
            return case

    def count(self, model: type[Any]) -> int:
        with self.store.read() as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def mail_to() -> str:
    return "support@example.com"


def email(
    subject: str = "Cannot log in",
    body: str = "My password stopped working.",
    sender: str = "Bob <bob@customer.example>",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail_to()
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("message_id", f"<{uuid.uuid4().hex}@customer.example>")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg
