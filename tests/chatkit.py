"""The chat channels' pieces in one event loop: store, journal, pipeline, outbox, HTTP.

Tests drive the real listeners (python-telegram-bot, tweepy, Starlette routes)
against the fakes in tests/providers.py, then process and deliver in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from channels import chat
from channels.acceptor import Acceptor
from ingest import cursors, outbox
from ingest.config import HttpConfig, OutboxConfig
from ingest.http import HttpServer
from ingest.journal import Journal
from ingest.metrics import Metrics
from ingest.outbox import OutboxDelivery, Sender
from ingest.store.models import (
    Activity,
    Attachment,
    Case,
    ContactIdentity,
    JournalEntry,
    OutboxMessage,
)
from tests.harness import Harness

FAST_OUTBOX = OutboxConfig(
    batch_size=20, max_attempts=3, backoff_base_seconds=60, lease_seconds=60, send_timeout=20
)


class ChatKit(Harness):
    def __init__(self, url: str, **config: Any) -> None:
        super().__init__(url, parsers=dict(chat.PARSERS), **config)
        self.metrics = Metrics()
        self.live_journal = Journal(self.store, self.clock, lambda: None)
        self.acceptor = Acceptor(self.live_journal, self.metrics, lambda: True)

    async def __aenter__(self) -> ChatKit:
        self.live_journal.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.live_journal.stop()
        self.close()

    # -- reading the store --------------------------------------------------------

    def journal_rows(self, channel: str) -> list[JournalEntry]:
        with self.store.read() as session:
            rows = session.execute(
                select(JournalEntry)
                .where(JournalEntry.channel == channel)
                .order_by(JournalEntry.id)
            ).scalars()
            return list(rows)

    def cursor(self, name: str) -> dict[str, Any] | None:
        with self.store.read() as session:
            return cursors.get(session, name)

    def cases(self) -> list[Case]:
        with self.store.read() as session:
            found = list(session.execute(select(Case).order_by(Case.id)).scalars())
            for case in found:
                _ = case.activities, case.contact
                for activity in case.activities:
                    _ = activity.attachments
            return found

    def attachments(self) -> list[Attachment]:
        with self.store.read() as session:
            return list(session.execute(select(Attachment).order_by(Attachment.id)).scalars())

    def identity(self, kind: str, address: str) -> ContactIdentity | None:
        with self.store.read() as session:
            return session.execute(
                select(ContactIdentity).where(
                    ContactIdentity.kind == kind, ContactIdentity.address == address
                )
            ).scalar_one_or_none()

    def outbox_rows(self) -> list[OutboxMessage]:
        with self.store.read() as session:
            return list(session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())

    def activities(self) -> list[Activity]:
        with self.store.read() as session:
            return list(session.execute(select(Activity).order_by(Activity.id)).scalars())

    # -- outbound -----------------------------------------------------------------

    def enqueue(self, channel: str, recipient: str, text: str, **headers: str) -> int:
        with self.store.write() as session:
            row = outbox.enqueue(
                session,
                kind="reply",
                channel=channel,
                recipient=recipient,
                subject=None,
                body_text=text,
                headers=headers,
                now=self.clock.now(),
            )
        assert row is not None
        return row

    async def send_outbox(self, senders: dict[str, Sender]) -> int:
        return await OutboxDelivery(self.store, FAST_OUTBOX, self.clock, senders).run_once()


@contextlib.asynccontextmanager
async def http_server(routes: Sequence[BaseRoute]) -> AsyncIterator[int]:
    """Our webhook routes on a real uvicorn, as the daemon serves them; yields the port."""
    server = HttpServer(HttpConfig(host="127.0.0.1", port=0), Starlette(routes=list(routes)))
    await server.start()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.stop()


def raw_json(row: JournalEntry) -> dict[str, Any]:
    doc = json.loads(row.raw)
    assert isinstance(doc, dict)
    return doc


async def until(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    """Wait (in the event loop) until `predicate` returns something true, and return it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)
