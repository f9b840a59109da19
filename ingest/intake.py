"""What an inbound message becomes, decided by the rules, then applied.

`decide` only reads the store, so `ingestd rules test` shows exactly what the
pipeline would do; `apply` writes the decision in the pipeline's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest import (
    bounces,
    cases,
    commands,
    conversation,
    entitlements,
    guard,
    identify,
    lifecycle,
    outbox,
    outmail,
)
from ingest.conditions import CalendarLike, Facts
from ingest.message import DeliveryReport, InboundMessage
from ingest.ruleset import PRIORITIES, Item, RecordActions, RuleBook
from ingest.signing import Signer
from ingest.sla import SlaBook, empty_book
from ingest.store.models import (
    Activity,
    Case,
    CaseState,
    Contact,
    Direction,
    Entitlement,
    Outcome,
    Priority,
    Queue,
)
from ingest.templating import RenderError

log = logging.getLogger(__name__)

UNMATCHED_CREATE = "default: no record-creation rule matched"
DEFAULT_ROUTE = "default queue"
# What an unmatched message gets when config says to create cases for it.
_UNMATCHED_ACTIONS = RecordActions(create_contact=True)


@dataclass
class NewCase:
    title: str
    priority: str
    product: str | None
    category: str | None
    custom: dict[str, str]
    queue: str
    routed_by: str
    problems: list[str] = field(default_factory=list)  # expressions that failed to render


@dataclass
class Decision:
    outcome: Outcome
    decided_by: str
    facts: Facts
    rule: Item | None = None
    reason: str | None = None  # why a message is skipped
    case: Case | None = None  # the case an append lands on
    reopen: bool = False
    previous: Case | None = None  # the closed case a new one follows on from
    contact: Contact | None = None
    create_contact: bool = False
    entitlement: Entitlement | None = None
    new_case: NewCase | None = None
    auto_response: str | None = None
    auto_response_blocked: str | None = None
    route: Item | None = None
    command: str | None = None  # a customer command (/start, /end) decided this
    bounce: DeliveryReport | None = None  # a bounce of our mail, recorded on `case`


@dataclass(frozen=True)
class Environment:
    """What decisions need besides the rules: the clock's zone and the calendars."""

    zone: ZoneInfo
    calendars: Mapping[str, CalendarLike]
    default_queue: str
    # Channels that can send an auto-response; the others' rows would wait forever.
    reply_channels: frozenset[str] = frozenset({"email"})
    # Chat channels: how long after its last message a contact's case on that
    # channel is still "the conversation" a new message continues.
    conversation_windows: Mapping[str, timedelta] = field(default_factory=dict)
    # (channel, command) -> the template that answers it, e.g. ("telegram", "start").
    command_templates: Mapping[tuple[str, str], str] = field(default_factory=dict)
    mail: outmail.MailSettings = field(default_factory=outmail.MailSettings)
    # Signs and checks reply tokens and Message-IDs; None where no store secret is at hand.
    signer: Signer | None = None


def decide(
    session: Session, book: RuleBook, msg: InboundMessage, now: datetime, env: Environment
) -> Decision:
    contact = identify.find_contact(session, msg.identity_kind, msg.sender)
    thread = conversation.find_thread(
        session, msg, contact, env.signer, now, windows=env.conversation_windows
    )
    entitled = _cached(lambda: entitlements.find_valid(session, contact, msg.channel, now.date()))
    facts = Facts(
        msg,
        now=now,
        zone=env.zone,
        contact=contact,
        entitled=lambda: entitled() is not None,
        is_reply=thread.case is not None or thread.previous is not None,
        calendars=dict(env.calendars),
    )
    if msg.command is not None:
        return _command(msg, facts, contact, thread.case, env)
    looped = _our_own_mail(session, msg, env, now)
    if looped is not None:
        return Decision(Outcome.SKIPPED, "guard: mail loop", facts, contact=contact, reason=looped)
    if msg.report is not None:
        bounced = bounces.find_case(session, msg.report, env.signer, now)
        if bounced is not None:
            bounced = conversation.follow_merges(session, bounced)
            decision = Decision(Outcome.APPENDED, "bounce", facts, contact=contact)
            decision.case, decision.bounce = bounced, msg.report
            decision.decided_by = f"bounce: {bounces.describe(msg.report)}"
            return decision
    rule = book.match(facts)
    label = rule.label if rule else UNMATCHED_CREATE
    decision = Decision(Outcome.SKIPPED, label, facts, rule=rule, contact=contact)
    if rule is None and book.settings.unmatched == "skip":
        decision.decided_by = "default: no record-creation rule matched (rules_unmatched: skip)"
        if thread.case is None:
            decision.reason = "no record-creation rule matched"
            return decision
    actions = rule.actions if rule else _UNMATCHED_ACTIONS

    if actions.ignore:
        decision.reason = f"ignored by rule {rule.name!r}" if rule else "ignored"
        return decision
    if thread.case is not None:
        decision.outcome, decision.case = Outcome.APPENDED, thread.case
        decision.decided_by = f"thread:{thread.matched_by}"
        return decision
    previous = thread.previous
    window = actions.resolved_case_window
    if previous is not None and window is not None and _within(previous, window.hours, now):
        decision.outcome, decision.case = Outcome.APPENDED, previous
        decision.reopen = window.reopen
        decision.decided_by = f"thread:{thread.matched_by}; resolved-case window of {label}"
        return decision
    if actions.existing_case_only:
        decision.reason = "the rule adds to existing cases only, and none was found"
        return decision
    decision.create_contact = contact is None
    if contact is None and not actions.create_contact:
        decision.reason = "unknown sender, and the rule does not create contacts"
        return decision
    decision.entitlement = entitled()
    if actions.require_entitlement and decision.entitlement is None:
        decision.reason = f"no valid entitlement for this customer on {msg.channel}"
        return decision

    decision.outcome, decision.previous = Outcome.CREATED, previous
    decision.new_case = _new_case(book, rule, actions, facts, env)
    decision.route = _routed(book, actions, decision.new_case, facts)
    if decision.route is not None:
        decision.decided_by += f"; routing: {decision.route.label}"
    if actions.auto_response is not None:
        decision.auto_response = actions.auto_response
        decision.auto_response_blocked = guard.never_answer(msg)
        if msg.channel not in env.reply_channels:
            decision.auto_response_blocked = f"no auto-responses on {msg.channel} yet"
    return decision


def _command(
    msg: InboundMessage,
    facts: Facts,
    contact: Contact | None,
    open_case: Case | None,
    env: Environment,
) -> Decision:
    """A chat command is the customer's request, not a message for the rules."""
    assert msg.command is not None
    decision = Decision(
        Outcome.SKIPPED, f"command:/{msg.command}", facts, contact=contact, command=msg.command
    )
    if msg.command == commands.END and open_case is not None:
        decision.outcome, decision.case = Outcome.APPENDED, open_case
    else:
        decision.reason = commands.skip_reason(msg.command)
    decision.auto_response = env.command_templates.get((msg.channel, msg.command))
    if msg.channel not in env.reply_channels:
        decision.auto_response_blocked = f"no replies on {msg.channel}"
    return decision


def apply(
    session: Session,
    decision: Decision,
    msg: InboundMessage,
    journal_id: int | None,
    now: datetime,
    book: RuleBook,
    sla: SlaBook | None = None,
    env: Environment | None = None,
) -> Case | None:
    """Write the decision; return the case the message landed on, if any."""
    env = env or _NO_ENVIRONMENT
    if msg.sender_handle and decision.contact is not None:
        identify.remember_names(
            session, msg.identity_kind, msg.sender, msg.sender_name, msg.sender_handle
        )
    if decision.command is not None:
        return _apply_command(session, decision, msg, journal_id, now, book, sla, env)
    if decision.outcome is Outcome.SKIPPED:
        return None
    slas = sla if sla is not None else empty_book()
    if decision.outcome is Outcome.APPENDED:
        case = decision.case
        assert case is not None
        if decision.reopen and case.state != CaseState.ACTIVE.value:
            lifecycle.reopen(session, case, now, slas)
        cases.record_inbound(session, case, msg, journal_id, now)
        if decision.bounce is not None:
            bounces.record(session, decision.bounce, case, journal_id, now, env.mail.limits)
        return case
    spec = decision.new_case
    assert spec is not None
    contact = decision.contact
    if contact is None:
        contact = identify.resolve_contact(
            session, msg.identity_kind, msg.sender, msg.sender_name, now, msg.sender_handle
        )
    case = cases.open_case(
        session,
        msg,
        contact,
        now,
        title=spec.title,
        priority=spec.priority,
        previous=decision.previous,
        decided_by=decision.decided_by[:300],
    )
    case.product, case.category, case.custom = spec.product, spec.category, dict(spec.custom)
    case.rules_version = book.version
    cases.record_inbound(session, case, msg, journal_id, now)
    cases.enqueue(session, case, _queue(session, spec.queue), now)
    # After the queue: SLA items may depend on it.
    lifecycle.opened(session, case, decision.entitlement, now, slas)
    for problem in spec.problems:
        log.warning(
            "rule expression failed, default used",
            extra={"case": case.number, "channel": msg.channel, "error": problem},
        )
    if decision.auto_response is not None:
        _auto_respond(session, decision, msg, case, book, now, env)
    return case


def _apply_command(
    session: Session,
    decision: Decision,
    msg: InboundMessage,
    journal_id: int | None,
    now: datetime,
    book: RuleBook,
    sla: SlaBook | None,
    env: Environment,
) -> Case | None:
    case = decision.case if decision.outcome is Outcome.APPENDED else None
    if case is not None:
        cases.record_inbound(session, case, msg, journal_id, now)
        if decision.command == commands.END:
            commands.close_conversation(
                session, case, msg, now, sla if sla is not None else empty_book()
            )
    if decision.auto_response is not None:
        _auto_respond(
            session,
            decision,
            msg,
            case,
            book,
            now,
            env,
            kind="command_reply",
            dedupe_key=f"command:{msg.channel}:{msg.external_id}",
        )
    return case


def template_context(
    msg: InboundMessage, contact: Contact | None, now: datetime, known: bool
) -> dict[str, Any]:
    account = contact.account if contact is not None else None
    return {
        "message": {
            "channel": msg.channel,
            "subject": msg.subject,
            "text": msg.text,
            "sender": msg.sender,
            "sender_name": msg.sender_name or "",
            "to": list(msg.recipients),
            "headers": dict(msg.headers),
            "attachments": [a.filename or "" for a in msg.attachments],
            "language": msg.language or "",
            "fields": dict(msg.fields),
        },
        "customer": {
            "known": known,
            "name": (contact.full_name if contact else None) or msg.sender_name or msg.sender,
            "email": contact.email if contact else None,
            "tier": (contact.tier if contact else None) or (account.tier if account else None),
            "account": account.name if account else None,
        },
        "now": now,
    }


def case_context(case: Case) -> dict[str, Any]:
    return {
        "number": case.number,
        "title": case.title,
        "priority": case.priority,
        "queue": case.queue.name if case.queue else None,
    }


def _auto_respond(
    session: Session,
    decision: Decision,
    msg: InboundMessage,
    case: Case | None,
    book: RuleBook,
    now: datetime,
    env: Environment,
    *,
    kind: str = "auto_response",
    dedupe_key: str | None = None,
) -> None:
    number = case.number if case is not None else None
    fields = {"case": number, "channel": msg.channel, "template": decision.auto_response}
    if decision.auto_response_blocked:
        log.info(
            "auto-response withheld", extra={**fields, "reason": decision.auto_response_blocked}
        )
        return
    name = decision.auto_response
    assert name is not None
    if name not in book.templates:
        log.error("auto-response template missing", extra={**fields, "error": f"no {name}.txt"})
        return
    context = template_context(msg, decision.contact, now, decision.contact is not None)
    context["case"] = case_context(case) if case is not None else None
    try:
        rendered = book.templates.get(name).render(context)
    except RenderError as exc:
        # The case stands; only the courtesy mail is lost, and the log says why.
        log.error("auto-response template failed", extra={**fields, "error": str(exc)})
        return
    route = msg.reply_route
    if route is not None:  # a chat channel: its own addressing, no mail headers
        outbox.enqueue(
            session,
            kind=kind,
            channel=msg.channel,
            recipient=route.recipient,
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=None,
            headers=dict(route.headers),
            case_id=case.id if case is not None else None,
            dedupe_key=dedupe_key or f"auto_response:{number}",
            now=now,
        )
        return
    if case is None:  # mail always lands on a case; only chat commands answer without one
        log.error("auto-response without a case", extra=fields)
        return
    queued = outmail.queue_automatic(
        session,
        kind=kind,
        case=case,
        recipient=msg.sender,
        rendered=rendered,
        now=now,
        settings=env.mail,
        signer=env.signer,
        answering=msg,
        dedupe_key=dedupe_key or f"auto_response:{case.number}",
        auto_submitted="auto-replied",
    )
    if isinstance(queued, outmail.Withheld):
        log.info("auto-response withheld", extra={**fields, "reason": queued.reason})


def _our_own_mail(
    session: Session, msg: InboundMessage, env: Environment, now: datetime
) -> str | None:
    """Why this is our own mail come back (a loop), or None."""
    if msg.identity_kind != "email":
        return None
    loop = msg.headers.get("x-loop", "")
    if outmail.X_LOOP in [v.strip().lower() for v in loop.split(",")]:
        return f"it carries our X-Loop header ({outmail.X_LOOP})"
    if not msg.message_id:
        return None
    ours = session.execute(
        select(Activity.id).where(
            Activity.channel == msg.channel,
            Activity.external_id == msg.message_id,
            Activity.direction == Direction.OUTGOING.value,
        )
    ).first()
    if ours is not None or outmail.case_id_from_message_id(msg.message_id, env.signer, now):
        return f"its Message-ID <{msg.message_id}> is one of ours"
    return None


_NO_ENVIRONMENT = Environment(zone=ZoneInfo("UTC"), calendars={}, default_queue="")


def _new_case(
    book: RuleBook, rule: Item | None, actions: RecordActions, facts: Facts, env: Environment
) -> NewCase:
    msg = facts.msg
    spec = actions.create_case
    new = NewCase(
        title=cases.title_for(msg),
        priority=Priority.NORMAL.value,
        product=None,
        category=None,
        custom={},
        queue=env.default_queue,
        routed_by=DEFAULT_ROUTE,
    )
    if rule is None or spec is None:
        return new
    context = template_context(msg, facts.contact, facts.now, facts.known)
    for name, expression in rule.expressions.items():
        try:
            value = expression.render(context)
        except RenderError as exc:
            new.problems.append(f"{rule.label} {name}: {exc}")
            continue
        if name == "title":
            new.title = value[: cases.TITLE_MAX] or new.title
        elif name == "priority":
            match = next((p for p in PRIORITIES if p.lower() == value.lower()), None)
            if match is None:
                new.problems.append(f"{rule.label} priority: {value!r} is not a priority")
            else:
                new.priority = match
        elif name == "product":
            new.product = value[:200] or None
        elif name == "category":
            new.category = value[:200] or None
        else:
            new.custom[name.removeprefix("custom.")] = value
    return new


def _routed(book: RuleBook, actions: RecordActions, new: NewCase, facts: Facts) -> Item | None:
    if actions.queue is not None:
        new.queue, new.routed_by = actions.queue, "record-creation rule"
        return None
    facts.case = {
        "title": new.title,
        "priority": new.priority,
        "product": new.product,
        "category": new.category,
        "custom": new.custom,
        "channel": facts.msg.channel,
    }
    route = book.route(facts)
    if route is not None and route.queue is not None:
        new.queue, new.routed_by = route.queue, route.label
    return route


def _within(case: Case, hours: float, now: datetime) -> bool:
    return (
        case.state == CaseState.RESOLVED.value
        and case.resolved_at is not None
        and now - case.resolved_at < timedelta(hours=hours)
    )


def _queue(session: Session, name: str) -> Queue:
    queue = session.execute(select(Queue).where(Queue.name == name)).scalar_one_or_none()
    if queue is None:
        raise LookupError(f"queue {name!r} is not in the store")
    return queue


def _cached(compute: Callable[[], Entitlement | None]) -> Callable[[], Entitlement | None]:
    done: list[Entitlement | None] = []

    def get() -> Entitlement | None:
        if not done:
            done.append(compute())
        return done[0]

    return get
