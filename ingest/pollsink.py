"""The store as a polling worker thread sees it: journal a batch, look up keys, keep a cursor.

Pollers built on blocking libraries (imapclient) run in threads of their own.
In the daemon their messages still go through the loop's journal, so they
share its group commit with SMTP (`LoopSink`); `ingestd import`, which has no
loop, commits each batch itself (`DirectSink`). Both wait for the commit
before they return, which is what lets the caller acknowledge afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select

from ingest import cursors
from ingest.clock import Clock
from ingest.journal import Delivery, Journal, Receipt
from ingest.store import Store, StoreUnavailable
from ingest.store.models import JournalEntry

# A loop that cannot take a batch within this long is treated like a store
# outage: nothing is acknowledged and the poller tries again later.
LOOP_TIMEOUT = 300.0


class StoreSink:
    def __init__(self, store: Store, clock: Clock, channel: str) -> None:
        self.store = store
        self.clock = clock
        self.channel = channel

    def known(self, keys: Collection[str]) -> set[str]:
        """Which of these keys the journal already holds for the channel."""
        if not keys:
            return set()
        with self.store.read() as session:
            rows = session.execute(
                select(JournalEntry.external_id).where(
                    JournalEntry.channel == self.channel,
                    JournalEntry.external_id.in_(list(keys)),
                )
            ).scalars()
            return set(rows)

    def cursor(self, name: str) -> dict[str, Any] | None:
        with self.store.read() as session:
            return cursors.get(session, name)

    def set_cursor(self, name: str, value: dict[str, Any]) -> None:
        with self.store.write() as session:
            cursors.put(session, name, value, self.clock.now())


class DirectSink(StoreSink):
    """Commits each batch in the calling thread, in one transaction."""

    def __init__(self, store: Store, clock: Clock, channel: str) -> None:
        super().__init__(store, clock, channel)
        self._journal = Journal(store, clock, on_commit=lambda: None)

    def journal(self, deliveries: Sequence[Delivery]) -> list[Receipt | BaseException]:
        return self._journal.commit(list(deliveries))


class LoopSink(StoreSink):
    """Hands each batch to the daemon's journal in its event loop, and waits for the commit."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        channel: str,
        journal: Journal,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(store, clock, channel)
        self._journal = journal
        self._loop = loop

    def journal(self, deliveries: Sequence[Delivery]) -> list[Receipt | BaseException]:
        future = asyncio.run_coroutine_threadsafe(self._accept_all(deliveries), self._loop)
        try:
            return future.result(LOOP_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable(
                f"the journal did not commit within {LOOP_TIMEOUT:.0f}s"
            ) from None

    async def _accept_all(self, deliveries: Sequence[Delivery]) -> list[Receipt | BaseException]:
        # Accepted together, they land in one group commit.
        return await asyncio.gather(
            *(self._journal.accept(d) for d in deliveries), return_exceptions=True
        )
