"""SLA policies compiled from config: which KPI items apply to a case, and business time.

`SlaBook` is built once from the configuration (its conditions compiled like
rules, its calendars loaded) and handed to everything that starts, moves or
reports KPI instances: the pipeline, the case lifecycle, the sweep, the CLI.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ingest.calendars import Calendar
from ingest.conditions import Always, ConditionParser, Facts, Node
from ingest.message import InboundMessage
from ingest.slaconfig import DEFAULT_PAUSE, KPIS, SlaConfig
from ingest.store.models import Case, Entitlement
from ingest.yamlsource import Loc, Problem, SourceError, YamlDocument, dotted

if TYPE_CHECKING:
    from ingest.config import Config

log = logging.getLogger(__name__)

_UTC_ZONE = ZoneInfo("UTC")
KPI_NAMES = {"first_response": "First response", "resolution": "Resolution"}


@dataclass(frozen=True)
class SlaItem:
    """One compiled KPI item of a policy."""

    policy: str
    name: str
    kpi: str
    when: Node
    calendar: str | None  # None: 24x7, elapsed time
    warn_minutes: float | None
    fail_minutes: float
    success_on: str


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    items: tuple[SlaItem, ...]
    pause_on: frozenset[str]
    notify: tuple[str, ...]


class _SlaConditions(ConditionParser):
    """The rules' condition language, limited to what a case knows at any time."""

    def _field(self, name: str, value: Any, loc: tuple[str | int, ...]) -> Node:
        if not name.startswith(("case.", "customer.")):
            self.report(
                loc,
                f"SLA items read the case and its customer (case.*, customer.*), not {name}: "
                "a case's SLA is recomputed when it changes, long after its first message",
            )
            return Always()
        return super()._field(name, value, loc)


class SlaBook:
    """Every configured SLA policy, compiled, with the calendars they count time in."""

    def __init__(
        self,
        policies: Mapping[str, SlaPolicy],
        calendars: Mapping[str, Calendar],
        *,
        default: str | None = None,
        notify: Sequence[str] = (),
        case_url: str = "http://127.0.0.1:8080/api/cases/{number}",
    ) -> None:
        self.policies = dict(policies)
        self.calendars = dict(calendars)
        self.default = default
        self.notify = tuple(notify)
        self.case_url = case_url
        self._warned: set[str] = set()

    @classmethod
    def from_config(
        cls,
        config: Config,
        calendars: Mapping[str, Calendar],
        doc: YamlDocument | None = None,
    ) -> SlaBook:
        """Compile the `sla:` section; SourceError lists every problem with its line."""
        settings: SlaConfig = config.sla
        problems: list[Problem] = []
        source = doc.path if doc is not None else config.source

        def report(loc: Loc, message: str) -> None:
            line = doc.line_of(loc) if doc is not None else None
            problems.append(Problem(source, line, dotted(loc), message))

        def check_calendar(name: str | None, loc: Loc) -> None:
            if name is not None and name not in calendars:
                known = ", ".join(sorted(calendars)) or "none are configured"
                report(loc, f"unknown calendar {name!r} (calendars: {known})")

        policies: dict[str, SlaPolicy] = {}
        for name, policy in settings.policies.items():
            check_calendar(policy.calendar, ("sla", "policies", name, "calendar"))
            items = []
            for index, item in enumerate(policy.items):
                loc: Loc = ("sla", "policies", name, "items", index)
                check_calendar(item.calendar, (*loc, "calendar"))
                calendar = item.calendar or policy.calendar
                parser = _SlaConditions("sla", sorted(calendars), report)
                when = parser.parse(item.when, (*loc, "when"))
                items.append(
                    SlaItem(
                        policy=name,
                        name=item.name,
                        kpi=item.kpi,
                        when=when,
                        calendar=calendar,
                        warn_minutes=item.warn_after,
                        fail_minutes=item.fail_after,
                        success_on=item.success_on,
                    )
                )
            policies[name] = SlaPolicy(
                name, tuple(items), frozenset(policy.pause_on), tuple(policy.notify)
            )
        if problems:
            raise SourceError(problems)
        case_url = settings.case_url or (
            f"http://{config.http.host}:{config.http.port}/api/cases/{{number}}"
        )
        return cls(
            policies,
            calendars,
            default=settings.default_policy,
            notify=settings.notify,
            case_url=case_url,
        )

    # -- which policy and which items

    def policy(self, name: str | None) -> SlaPolicy | None:
        if name is None:
            return None
        found = self.policies.get(name)
        if found is None and name not in self._warned:
            self._warned.add(name)
            log.warning(
                "sla policy not configured: its cases keep their deadlines", extra={"sla": name}
            )
        return found

    def policy_name_for(self, entitlement: Entitlement | None) -> str | None:
        """The entitlement's SLA, else the default policy (as in Dynamics 365)."""
        if entitlement is not None and entitlement.sla:
            if entitlement.sla in self.policies:
                return entitlement.sla
            log.warning(
                "entitlement names an SLA that is not configured; the default applies",
                extra={"entitlement": entitlement.name, "sla": entitlement.sla},
            )
        return self.default

    def pause_on(self, policy_name: str | None) -> frozenset[str]:
        policy = self.policies.get(policy_name) if policy_name else None
        return policy.pause_on if policy is not None else frozenset(DEFAULT_PAUSE)

    def applicable(self, policy: SlaPolicy, case: Case, now: datetime) -> dict[str, SlaItem]:
        """Per KPI, the first item (in order) whose condition holds for the case."""
        facts = case_facts(case, now)
        found: dict[str, SlaItem] = {}
        for item in policy.items:
            if item.kpi not in found and item.when.test(facts):
                found[item.kpi] = item
                if len(found) == len(KPIS):
                    break
        return found

    # -- business time

    def calendar(self, name: str | None) -> Calendar | None:
        if name is None:
            return None
        found = self.calendars.get(name)
        if found is None and f"calendar:{name}" not in self._warned:
            self._warned.add(f"calendar:{name}")
            log.warning("sla calendar not configured: counting elapsed time", extra={"sla": name})
        return found

    def add(self, calendar: str | None, start: datetime, minutes: float) -> datetime:
        """`start` plus `minutes` of business time; 24x7 without a calendar."""
        cal = self.calendar(calendar)
        if cal is None:
            return start.astimezone(UTC) + timedelta(minutes=minutes)
        return cal.add_business_minutes(start, minutes)

    def between(self, calendar: str | None, a: datetime, b: datetime) -> float:
        """Business minutes in [a, b); negative when b is before a."""
        if b < a:
            return -self.between(calendar, b, a)
        cal = self.calendar(calendar)
        if cal is None:
            return (b - a) / timedelta(minutes=1)
        return cal.business_minutes_between(a, b)

    def zone_name(self, calendar: str | None) -> str:
        cal = self.calendar(calendar)
        return cal.zone.key if cal is not None else "UTC"

    def local(self, calendar: str | None, instant: datetime) -> datetime:
        cal = self.calendar(calendar)
        return instant.astimezone(cal.zone) if cal is not None else instant.astimezone(UTC)


def empty_book() -> SlaBook:
    """No policies: cases get no KPIs (the default until `sla:` is configured)."""
    return SlaBook({}, {})


def case_facts(case: Case, now: datetime) -> Facts:
    """What SLA conditions read: the case as it is now, and its customer."""
    # Conditions on the message are refused when the policy is loaded, so this
    # stand-in is never read; Facts needs one.
    stand_in = InboundMessage(channel=case.origin, external_id="", identity_kind="", sender="")
    return Facts(
        stand_in,
        now=now,
        zone=_UTC_ZONE,
        contact=case.contact,
        entitled=lambda: case.entitlement_id is not None,
        case={
            "title": case.title,
            "priority": case.priority,
            "product": case.product,
            "category": case.category,
            "custom": case.custom or {},
            "channel": case.origin,
            "queue": case.queue.name if case.queue is not None else None,
        },
    )


def describe_minutes(minutes: float) -> str:
    """Business minutes as people read them: "45 min", "2 h", "26 h 5 min"."""
    whole = max(0, math.ceil(minutes - 1e-9))
    hours, rest = divmod(whole, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    if hours:
        return f"{hours} h"
    return f"{rest} min"
