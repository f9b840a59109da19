"""Periodic sweeps on the daemon's event loop, run by APScheduler's AsyncIOScheduler.

A sweep is an interval job that looks at the store for what is due; the truth
about what is due lives in indexed columns (`sla_kpi_instances.due_at`), never
in scheduler jobs, so nothing is lost when a daemon stops and several daemons
can sweep one database. Each job runs at most once at a time; a run that
overruns its interval is not queued up again (coalesced), and one that fails is
simply run again at the next interval. On shutdown, a sweep in progress is
allowed to finish its transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

# APScheduler logs every run at INFO ("Running job ..."): noise every few seconds.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    def every(self, name: str, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` now and then every `seconds`, one run at a time."""

        async def job() -> None:
            if self._stopping:
                return
            # Shielded: stopping the scheduler cancels the job, not the work it
            # started, which `stop` waits for instead.
            task = asyncio.ensure_future(work())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            await asyncio.shield(task)

        self._scheduler.add_job(
            job, "interval", seconds=seconds, id=name, name=name, next_run_time=datetime.now(UTC)
        )

    def start(self) -> None:
        self._scheduler.start()

    async def stop(self) -> None:
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)  # takes effect on the loop's next turn
        await asyncio.sleep(0)
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
