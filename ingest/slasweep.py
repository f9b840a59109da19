"""The SLA sweep: KPIs whose warning or failure time has passed move on, and say so.

The scheduler runs `SlaSweep.run` every `sla.sweep_interval` seconds. Each
batch is one transaction that claims due KPIs (`due_at <= now`, in the order
they fell due), moves each to Nearing Noncompliance or Noncompliant, and writes
the warning or failure mail into the outbox, so a KPI moves exactly when its
mail exists. A crash before the commit leaves both undone for the next sweep;
after it, both are done. Several daemons may sweep one PostgreSQL database:
claims use `FOR UPDATE SKIP LOCKED`, so each KPI is moved by one of them (on
SQLite, `BEGIN IMMEDIATE` serialises the writers). Each mail also has a
dedupe key, so it exists once whatever happens.

The cost of a sweep follows the number of KPIs due, not of open cases: the
claim is one range scan of the `due_at` index (see bench/sla.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ingest import failpoints, kpis, outbox, slanotice
from ingest.clock import Clock
from ingest.sla import SlaBook
from ingest.store import Store
from ingest.store.models import Case, SlaKpiInstance
from ingest.templating import Templates

log = logging.getLogger(__name__)

HEADERS = {"Auto-Submitted": "auto-generated", "X-Loop": "ingestd"}


@dataclass
class SweepResult:
    moved: int = 0  # KPIs that changed status
    mail: dict[str, int] = field(default_factory=lambda: {"warning": 0, "failure": 0})

    def add(self, other: SweepResult) -> None:
        self.moved += other.moved
        for kind, count in other.mail.items():
            self.mail[kind] += count


class SlaSweep:
    def __init__(
        self,
        store: Store,
        book: SlaBook,
        clock: Clock,
        templates: Callable[[], Templates],
        batch_size: int = 200,
    ) -> None:
        self.store = store
        self.book = book
        self.clock = clock
        self.templates = templates
        self.batch_size = batch_size

    def run(self, stop: Callable[[], bool] | None = None) -> SweepResult:
        """Sweep until nothing is due (or `stop()` says so between batches).

        Raises StoreUnavailable when the store is away.
        """
        total = SweepResult()
        while True:
            claimed, result = self.run_batch()
            total.add(result)
            if claimed < self.batch_size or (stop is not None and stop()):
                return total

    def run_batch(self) -> tuple[int, SweepResult]:
        """One transaction: (KPIs claimed, what became of them)."""
        result = SweepResult()
        with self.store.write() as session:
            now = self.clock.now()
            due = (
                session.execute(
                    select(SlaKpiInstance)
                    .where(SlaKpiInstance.due_at <= now)
                    .order_by(SlaKpiInstance.due_at, SlaKpiInstance.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            if not due:
                return 0, result
            cases = {
                case.id: case
                for case in session.execute(
                    select(Case)
                    .where(Case.id.in_({k.case_id for k in due}))
                    .options(
                        selectinload(Case.queue),
                        selectinload(Case.contact),
                        selectinload(Case.account),
                    )
                ).scalars()
            }
            templates = self.templates()
            notes: list[tuple[str, dict[str, object]]] = []
            for kpi in due:
                before = kpi.status
                event = kpis.advance(kpi, now, self.book)
                if kpi.status != before:
                    result.moved += 1
                if event is not None:
                    written, note = self._notify(
                        session, kpi, cases[kpi.case_id], event, now, templates
                    )
                    result.mail[event] += written
                    notes.append(note)
            failpoints.hit("sla.sweep.before_commit")
        failpoints.hit("sla.sweep.after_commit")
        for message, fields in notes:  # only what committed is logged
            log.log(
                logging.INFO if fields.get("recipients") else logging.WARNING, message, extra=fields
            )
        return len(due), result

    def _notify(
        self,
        session: Session,
        kpi: SlaKpiInstance,
        case: Case,
        event: str,
        now: datetime,
        templates: Templates,
    ) -> tuple[int, tuple[str, dict[str, object]]]:
        fields: dict[str, object] = {
            "case": case.number,
            "channel": case.origin,
            "kpi": kpi.kpi,
            "sla": kpi.policy,
            "item": kpi.item,
            "deadline": kpi.fail_at.isoformat(),
        }
        to = slanotice.recipients(self.book, case, kpi)
        if not to:
            return 0, (f"sla {event}: nobody to tell (no queue owner, no notify list)", fields)
        ctx = slanotice.context(self.book, kpi, case, event, now)
        rendered = slanotice.render(templates, event, ctx, case)
        written = 0
        for recipient in to:
            new = outbox.enqueue(
                session,
                kind=f"sla_{event}",
                channel="email",
                recipient=recipient,
                subject=rendered.subject,
                body_text=rendered.text,
                body_html=rendered.html,
                headers=HEADERS,
                case_id=case.id,
                dedupe_key=_dedupe_key(event, kpi.id, recipient),
                now=now,
            )
            written += new is not None
        return written, (f"sla {event} queued", {**fields, "recipients": to})


def _dedupe_key(event: str, kpi_id: int, recipient: str) -> str:
    # One mail per KPI, event and recipient, ever.
    digest = hashlib.sha256(recipient.strip().lower().encode()).hexdigest()[:24]
    return f"sla_{event}:{kpi_id}:{digest}"
