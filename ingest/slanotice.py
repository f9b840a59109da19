"""SLA warning and failure mail: who gets it, and what it says.

Rendered from `templates/sla_warning.txt` / `sla_failure.txt` (and their
`.html` parts), which support leads edit like the other templates. A template
that is missing or fails to render never costs the notice: a plain built-in
text goes out instead, and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ingest.caseviews import customer_of
from ingest.sla import KPI_NAMES, SlaBook, describe_minutes
from ingest.store.models import Case, SlaKpiInstance
from ingest.templating import Rendered, RenderError, Templates

log = logging.getLogger(__name__)

TEMPLATES = {"warning": "sla_warning", "failure": "sla_failure"}
# The names SLA templates may use.
NOTICE_NAMES = ("case", "customer", "kpi", "now")


def recipients(book: SlaBook, case: Case, kpi: SlaKpiInstance) -> list[str]:
    """The queue's owner, then the policy's and the global `notify` lists, each once."""
    found: list[str] = []
    policy = book.policies.get(kpi.policy)
    candidates: Iterable[str | None] = (
        case.queue.owner_email if case.queue is not None else None,
        *(policy.notify if policy is not None else ()),
        *book.notify,
    )
    seen = set()
    for address in candidates:
        if address and address.strip().lower() not in seen:
            seen.add(address.strip().lower())
            found.append(address.strip())
    return found


def local_text(book: SlaBook, calendar: str | None, instant: datetime) -> str:
    """An instant as the team reads it: "Mon 19 Jun 2023 12:00 EDT"."""
    return book.local(calendar, instant).strftime("%a %d %b %Y %H:%M %Z")


def context(
    book: SlaBook, kpi: SlaKpiInstance, case: Case, event: str, now: datetime
) -> dict[str, Any]:
    left = book.between(kpi.calendar, now, kpi.fail_at)
    customer = customer_of(case) or {}
    return {
        "case": {
            "number": case.number,
            "title": case.title,
            "priority": case.priority,
            "queue": case.queue.name if case.queue is not None else None,
            "state": case.state,
            "status_reason": case.status_reason,
            "channel": case.origin,
            "url": book.case_url.format(number=case.number),
            "created_at": local_text(book, kpi.calendar, case.created_at),
        },
        "customer": {
            "name": customer.get("name") or customer.get("email") or "unknown customer",
            "email": customer.get("email"),
            "account": customer.get("account"),
        },
        "kpi": {
            "event": event,
            "kind": kpi.kpi,
            "name": KPI_NAMES.get(kpi.kpi, kpi.kpi),
            "policy": kpi.policy,
            "item": kpi.item,
            "status": kpi.status,
            "calendar": kpi.calendar,
            "timezone": book.zone_name(kpi.calendar),
            "deadline": local_text(book, kpi.calendar, kpi.fail_at),
            "deadline_utc": kpi.fail_at.isoformat(),
            "warn_at": local_text(book, kpi.calendar, kpi.warn_at) if kpi.warn_at else None,
            "time_left": describe_minutes(left) if left > 0 else "none",
            "overdue": describe_minutes(-left) if left < 0 else "0 min",
            "minutes_left": round(left, 1),
        },
        "now": now,
    }


def render(templates: Templates, event: str, ctx: dict[str, Any], case: Case) -> Rendered:
    name = TEMPLATES[event]
    if name in templates:
        try:
            return templates.get(name).render(ctx)
        except RenderError as exc:
            log.error(
                "sla template failed; the built-in text is sent",
                extra={"case": case.number, "template": name, "error": str(exc)},
            )
    else:
        log.warning(
            "sla template missing; the built-in text is sent",
            extra={"case": case.number, "template": name},
        )
    return _plain(event, ctx)


def _plain(event: str, ctx: dict[str, Any]) -> Rendered:
    c, k, who = ctx["case"], ctx["kpi"], ctx["customer"]
    if event == "warning":
        subject = f"[{c['number']}] SLA warning: {k['name']} due {k['deadline']}"
        head = f"{k['name']} is due by {k['deadline']}; {k['time_left']} of business time left."
    else:
        subject = f"[{c['number']}] SLA failed: {k['name']} was due {k['deadline']}"
        head = f"{k['name']} was due by {k['deadline']}; overdue by {k['overdue']}."
    text = "\n".join(
        [
            head,
            "",
            f"Case:     {c['number']}: {c['title']}",
            f"Customer: {who['name']}",
            f"Priority: {c['priority']}",
            f"Queue:    {c['queue'] or '-'}",
            f"SLA:      {k['policy']} / {k['item']}",
            "",
            f"Open the case: {c['url']}",
            "",
        ]
    )
    return Rendered(subject=subject, text=text, html=None)
