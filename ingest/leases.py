"""Named, expiring leases in the store: one daemon at a time polls a given source.

Several daemons may share one database. A poller (an IMAP mailbox, a Telegram
bot, an X account) runs only while its daemon holds the source's lease; the
holder renews it well before it expires, and when the holder dies the lease
runs out and another daemon takes over within `ttl` seconds. Rows in a table
work the same on SQLite and PostgreSQL, unlike advisory locks, and survive a
connection pool recycling a connection.

Lease time is wall-clock time (the system clock), not the daemon's business
clock: tests that move business time by days must not expire leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.dialects import postgresql, sqlite

from ingest.clock import Clock, SystemClock
from ingest.store import Store, StoreUnavailable
from ingest.store.models import Lease

log = logging.getLogger(__name__)


def holder_id() -> str:
    """Who holds a lease: readable in the table, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(store: Store, name: str, holder: str, ttl: float, now: datetime) -> bool:
    """Take or renew the lease; True when `holder` has it until now + ttl."""
    expires = now + timedelta(seconds=ttl)
    with store.write() as session:
        dialect = postgresql if store.dialect == "postgresql" else sqlite
        inserted = session.execute(
            dialect.insert(Lease)
            .values(name=name, holder=holder, acquired_at=now, expires_at=expires)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Lease.name)
        ).scalar_one_or_none()
        if inserted is not None:
            return True
        result = cast(
            "CursorResult[Any]",
            session.execute(
                update(Lease)
                .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at <= now))
                .values(holder=holder, expires_at=expires)
                .execution_options(synchronize_session=False)
            ),
        )
        return result.rowcount == 1


def release(store: Store, name: str, holder: str, now: datetime) -> None:
    """Give the lease up at once, so another daemon need not wait for it to expire."""
    with store.write() as session:
        session.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=now)
            .execution_options(synchronize_session=False)
        )


class LeasedWork:
    """Runs `work` only while this daemon holds the lease `name`.

    `work` is started when the lease is won and cancelled when it is lost (a
    renewal failed or another holder has it), then tried again later. It is
    not cancelled merely because one renewal could not reach the store: the
    lease is still ours until it expires, and only then is the work stopped.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        work: Callable[[], Awaitable[None]],
        *,
        ttl: float = 15.0,
        clock: Clock | None = None,
        holder: str | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.store = store
        self.name = name
        self.work = work
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self.holder = holder or holder_id()
        self.held = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set: win the lease, run the work, renew, repeat."""
        renew_every = self.ttl / 3
        task: asyncio.Task[None] | None = None
        valid_until: datetime | None = None
        try:
            while not stopping.is_set():
                now = self.clock.now()
                try:
                    won: bool | None = await asyncio.to_thread(
                        acquire, self.store, self.name, self.holder, self.ttl, now
                    )
                except StoreUnavailable as exc:
                    won = None  # unknown: what we had stays ours until it expires
                    log.warning(
                        "lease not renewed: store unavailable",
                        extra={"lease": self.name, "error": str(exc)},
                    )
                if won:
                    valid_until = now + timedelta(seconds=self.ttl)
                elif won is False or (valid_until is not None and self.clock.now() >= valid_until):
                    valid_until = None
                if valid_until is not None and not self.held:
                    self.held = True
                    log.info("lease acquired", extra={"lease": self.name, "holder": self.holder})
                elif valid_until is None and self.held:
                    self.held = False
                    log.warning("lease lost, work stopped", extra={"lease": self.name})
                    if task is not None:
                        await _cancel(task)
                        task = None
                # A work that ended (or crashed) starts again one renewal later.
                if self.held and (task is None or task.done()):
                    task = asyncio.create_task(self._guarded(), name=f"leased:{self.name}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=renew_every)
        finally:
            if task is not None:
                await _cancel(task)
            if self.held:
                self.held = False
                with contextlib.suppress(StoreUnavailable):
                    await asyncio.to_thread(
                        release, self.store, self.name, self.holder, self.clock.now()
                    )

    async def _guarded(self) -> None:
        try:
            await self.work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leased work failed", extra={"lease": self.name})


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
