"""What `/healthz` reports: the store, the backlog, and what each part last saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ingest.journal import Journal
from ingest.metrics import Metrics
from ingest.pipeline import Pipeline
from ingest.store import Store, StoreUnavailable

CHECK_TIMEOUT = 5.0
# Parts whose failure needs a person but not a restart: a refused rules edit
# leaves the previous rules running, and a restart would only lose them.
# The same for a chat provider that is down or refuses us: waiting is all we can do.
ADVISORY = frozenset({"rules", "telegram", "twitter"})


class Health:
    def __init__(
        self, store: Store, pipeline: Pipeline, journal: Journal, metrics: Metrics
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.journal = journal
        self.metrics = metrics
        self.components: dict[str, dict[str, Any]] = {}
        self.ready = False  # the schema is migrated and the listeners may start
        # Components whose state is read at each check (e.g. how long a mailbox has failed).
        self.probes: dict[str, Callable[[], dict[str, Any]]] = {}
        # Gauges only a scrape needs, each costing a query: refreshed by /metrics.
        self.scrape_hooks: list[Callable[[], None]] = []

    def set(self, component: str, ok: bool, **details: Any) -> None:
        self.components[component] = {"ok": ok, **details}

    async def check(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "ok"}
        if not self.ready:
            report["status"] = "starting"
            report.update(self.components)
            return report
        try:
            waiting, dead = await asyncio.wait_for(
                asyncio.to_thread(self._probe), timeout=CHECK_TIMEOUT
            )
        except (StoreUnavailable, TimeoutError) as exc:
            self.metrics.store_up.set(0)
            report["status"] = "degraded"
            report["store"] = {"ok": False, "error": str(exc) or "timed out"}
        else:
            self.metrics.store_up.set(1)
            self.metrics.journal_backlog.set(waiting)
            self.metrics.dead_letters.set(dead)
            report["store"] = {"ok": True, "dialect": self.store.dialect}
            report["journal"] = {"backlog": waiting, "dead_letters": dead}
        for name, probe in self.probes.items():
            self.components[name] = probe()
        if self.journal.failing:
            report["status"] = "degraded"
            report.setdefault("journal", {}).update(ok=False, error=self.journal.failing)
        for name, state in self.components.items():
            report[name] = state
            if not state.get("ok", True):
                if name in ADVISORY:
                    report.setdefault("warnings", []).append(name)
                else:
                    report["status"] = "degraded"
        return report

    async def refresh_for_scrape(self) -> None:
        for hook in self.scrape_hooks:
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(hook), timeout=CHECK_TIMEOUT)

    def _probe(self) -> tuple[int, int]:
        self.store.ping()
        return self.pipeline.backlog()
