"""The durable inbox. A listener acknowledges only after `Journal.accept` returns.

Accepts that arrive while a commit is in flight are written together in the
next transaction (group commit): each sender still waits for the commit that
holds its own message, but a busy SQLite pays one fsync per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingest.clock import Clock
from ingest.store import Store, StoreUnavailable
from ingest.store.models import JournalEntry, Outcome

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass(frozen=True)
class Delivery:
    channel: str
    external_id: str
    raw: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    # Set for a message kept only as a record (e.g. too large to fetch): the
    # row is written as a dead letter carrying this error, never processed.
    quarantine: str | None = None


@dataclass(frozen=True)
class Receipt:
    journal_id: int
    duplicate: bool
    outcome: str
    case_number: str | None = None


class Journal:
    def __init__(self, store: Store, clock: Clock, on_commit: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.on_commit = on_commit
        self._queue: asyncio.Queue[tuple[Delivery, asyncio.Future[Receipt]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # The last write error, cleared by the next successful commit: /healthz shows it.
        self.failing: str | None = None
        self._statement: Any = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="journal-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        await self._queue.join()
        if self._writer:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def accept(self, delivery: Delivery) -> Receipt:
        """Journal a message; raises StoreUnavailable when it could not be committed."""
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        await self._queue.put((delivery, future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                receipts = await asyncio.to_thread(self.commit, [d for d, _ in batch])
            except Exception as exc:
                self.failing = str(exc) or type(exc).__name__
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self.failing = None
                for (_, future), receipt in zip(batch, receipts, strict=True):
                    if future.done():
                        continue
                    if isinstance(receipt, BaseException):
                        future.set_exception(receipt)
                    else:
                        future.set_result(receipt)
                self.on_commit()
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _insert_statement(self) -> Any:
        if self._statement is None:
            dialect = postgresql if self.store.dialect == "postgresql" else sqlite
            self._statement = (
                dialect.insert(JournalEntry)
                .on_conflict_do_nothing(index_elements=["channel", "external_id"])
                .returning(JournalEntry.id)
            )
        return self._statement

    def commit(self, deliveries: list[Delivery]) -> list[Receipt | BaseException]:
        """Journal deliveries in one transaction (synchronously; the writer task calls this)."""
        try:
            with self.store.write() as session:
                return [self._insert(session, d) for d in deliveries]
        except StoreUnavailable:
            raise
        except Exception:
            if len(deliveries) == 1:
                raise
        # One bad delivery must not fail its neighbours: write each alone.
        receipts: list[Receipt | BaseException] = []
        for delivery in deliveries:
            try:
                with self.store.write() as session:
                    receipts.append(self._insert(session, delivery))
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.exception("journal write failed", extra={"channel": delivery.channel})
                receipts.append(exc)
        return receipts

    def _insert(self, session: Session, delivery: Delivery) -> Receipt:
        now = self.clock.now()
        # Executed on the Core connection with bound values: the statement is
        # compiled once, not per message (the ORM bulk path compiled it each time).
        new_id = (
            session.connection()
            .execute(
                self._insert_statement(),
                {
                    "channel": delivery.channel,
                    "external_id": delivery.external_id,
                    "raw": delivery.raw,
                    "meta": delivery.meta,
                    "received_at": now,
                    "next_attempt_at": now,
                    "outcome": Outcome.DEAD.value if delivery.quarantine else Outcome.PENDING.value,
                    "last_error": delivery.quarantine,
                    "attempts": 0,
                    "duplicate_count": 0,
                },
            )
            .scalar_one_or_none()
        )
        if new_id is not None:
            return Receipt(journal_id=new_id, duplicate=False, outcome=Outcome.PENDING.value)
        key = (JournalEntry.channel == delivery.channel) & (
            JournalEntry.external_id == delivery.external_id
        )
        session.execute(
            update(JournalEntry)
            .where(key)
            .values(
                duplicate_count=JournalEntry.duplicate_count + 1,
                last_duplicate_at=now,
            )
        )
        first = session.execute(
            select(JournalEntry.id, JournalEntry.outcome, JournalEntry.case_number).where(key)
        ).one()
        return Receipt(
            journal_id=first.id,
            duplicate=True,
            outcome=first.outcome,
            case_number=first.case_number,
        )
