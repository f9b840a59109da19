"""The pipeline: journal rows become cases and activities, each in one transaction.

A row is marked processed in the same transaction that applies it, so a crash
either leaves it pending (processed again at start) or fully applied.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from channels.base import Parser
from ingest import channelconfig, failpoints, intake, outmail, signing
from ingest.calendars import load_calendars
from ingest.clock import Clock
from ingest.config import Config
from ingest.entitlements import TermsExhausted
from ingest.message import InboundMessage
from ingest.metrics import Metrics
from ingest.ruleset import RuleBook
from ingest.sla import SlaBook
from ingest.store import Store
from ingest.store.models import Activity, Case, Direction, JournalEntry, Outcome

log = logging.getLogger(__name__)

RETRYABLE = (Outcome.PENDING.value, Outcome.FAILED.value)
# Lost a lock race with another worker (deadlock, serialization failure): not
# the message's fault, so it is neither counted as an attempt nor delayed.
_CONTENDED = "contended"
_CONTENTION_SQLSTATES = {"40P01", "40001", "55P03"}


def is_contention(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _CONTENTION_SQLSTATES


def environment(config: Config, signer: signing.Signer | None = None) -> intake.Environment:
    chat = (config.telegram, config.sms, config.twitter)
    return intake.Environment(
        zone=ZoneInfo(config.rules_timezone),
        calendars=load_calendars(dict(config.calendars), _config_dir(config)),
        default_queue=config.default_queue,
        reply_channels=frozenset({"email", *channelconfig.reply_channels(*chat)}),
        conversation_windows=channelconfig.conversation_windows(*chat),
        command_templates=channelconfig.command_templates(config.telegram),
        mail=outmail.MailSettings(config.outbound_email, config.automatic_mail),
        signer=signer,
    )


def sla_book(config: Config) -> SlaBook:
    return SlaBook.from_config(config, load_calendars(dict(config.calendars), _config_dir(config)))


def load_signer(config: Config, session: Session, now: datetime) -> signing.Signer:
    secret = config.signing.secret
    return signing.signer_from(
        secret.get_secret_value() if secret else None,
        [p.get_secret_value() for p in config.signing.previous_secrets],
        session,
        now,
    )


class UnparsableMessage(Exception):
    """The channel's parser failed on these bytes. The same bytes and the same code fail
    the same way, so the row becomes a dead letter at once instead of being retried."""


def _config_dir(config: Config) -> Path:
    source = Path(config.source)
    return source.parent if source.name.endswith((".yaml", ".yml")) else Path.cwd()


def _short_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()[:4000]


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    case_number: str | None
    decided_by: str | None = None
    reason: str | None = None
    rules_version: str | None = None


@dataclass(frozen=True)
class _Done:
    channel: str
    outcome: str
    latency: float | None
    case_number: str | None
    journal_id: int
    error: str | None = None
    decided_by: str | None = None
    reason: str | None = None


class RuleSource(Protocol):
    current: RuleBook


class Pipeline:
    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock,
        parsers: dict[str, Parser],
        metrics: Metrics | None = None,
        rules: RuleSource | None = None,
        claim_channels: Collection[str] | None = None,
        sla: SlaBook | None = None,
    ) -> None:
        self.store = store
        # A one-off tool (`ingestd import`) that parses only email claims only
        # email rows: another channel's row must wait for a daemon that has its parser.
        self.claim_channels = claim_channels
        self.config = config
        self.clock = clock
        self.parsers = parsers
        self.metrics = metrics
        if rules is None:
            from ingest.rulewatch import RuleWatcher

            rules = RuleWatcher(config)
        self.rules = rules
        self.env = environment(config)
        self.sla = sla if sla is not None else sla_book(config)

    def run_batch(self) -> int:
        """Process up to one batch of due rows; return how many were handled."""
        if self.env.signer is None:
            # In its own transaction: a secret generated here must be committed
            # before any token signed with it leaves in an outbox row.
            with self.store.write() as session:
                signer = load_signer(self.config, session, self.clock.now())
            self.env = dataclasses.replace(self.env, signer=signer)
        done: list[_Done] = []
        with self.store.write() as session:
            now = self.clock.now()
            rows = (
                session.execute(
                    select(JournalEntry)
                    .where(
                        JournalEntry.outcome.in_(RETRYABLE),
                        JournalEntry.next_attempt_at <= now,
                        *(
                            [JournalEntry.channel.in_(self.claim_channels)]
                            if self.claim_channels
                            else []
                        ),
                    )
                    .order_by(JournalEntry.id)
                    .limit(self.config.pipeline.batch_size)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for row in rows:
                item = self._process_row(session, row)
                done.append(item)
                if item.outcome == _CONTENDED:
                    # Commit what is done and free our locks so the other
                    # transaction can finish; the row is retried right away.
                    break
        for item in done:
            self._report(item)
        return len(done)

    def backlog(self) -> tuple[int, int]:
        """(rows waiting, dead letters)."""
        with self.store.read() as session:
            # A Result has keys(), so dict(result) would treat it as a mapping.
            rows = session.execute(
                select(JournalEntry.outcome, func.count())
                .where(JournalEntry.outcome.in_([*RETRYABLE, Outcome.DEAD.value]))
                .group_by(JournalEntry.outcome)
            ).tuples()
            counts = {outcome: count for outcome, count in rows}
        waiting = sum(counts.get(o, 0) for o in RETRYABLE)
        return waiting, counts.get(Outcome.DEAD.value, 0)

    def _process_row(self, session: Session, row: JournalEntry) -> _Done:
        now = self.clock.now()
        try:
            with session.begin_nested():
                result = self.apply(session, row, now)
        except DBAPIError as exc:
            if not is_contention(exc):
                return self._failed(row, exc, now)
            return _Done(row.channel, _CONTENDED, None, None, row.id, _short_error(exc))
        except TermsExhausted as exc:
            # Another case took the entitlement's last term since the decision:
            # decided again at once, the message now sees no terms left.
            return _Done(row.channel, _CONTENDED, None, None, row.id, _short_error(exc))
        except UnparsableMessage as exc:
            return self._failed(row, exc, now, permanent=True)
        except Exception as exc:
            return self._failed(row, exc, now)
        row.outcome = result.outcome.value
        row.case_number = result.case_number
        row.decided_by = result.decided_by[:300] if result.decided_by else None
        row.reason = result.reason
        row.rules_version = result.rules_version
        row.processed_at = now
        row.last_error = None
        row.attempts += 1
        latency = (now - row.received_at).total_seconds()
        return _Done(
            row.channel,
            row.outcome,
            max(latency, 0.0),
            result.case_number,
            row.id,
            decided_by=row.decided_by,
            reason=result.reason,
        )

    def apply(self, session: Session, row: JournalEntry, now: datetime) -> Result:
        parser = self.parsers.get(row.channel)
        if parser is None:
            raise LookupError(f"no parser for channel {row.channel!r}")
        try:
            failpoints.fault("pipeline.parse")
            msg = parser(row.raw, {**row.meta, "external_id": row.external_id})
        except MemoryError:
            raise  # may pass: retried like any other failure
        except Exception as exc:
            raise UnparsableMessage(f"cannot parse: {_short_error(exc)}") from exc
        if msg.defects:
            # What the parser repaired (a wrong charset, a guessed boundary): the
            # message is processed, and whoever wonders about its text can see why.
            log.info(
                "message repaired while parsing",
                extra={"channel": row.channel, "journal_id": row.id, "defects": msg.defects[:20]},
            )

        earlier = self._earlier_copy(session, msg)
        if earlier is not None:
            return Result(Outcome.DUPLICATE, earlier)

        book = self.rules.current  # one book for the whole message, even mid-reload
        decision = intake.decide(session, book, msg, now, self.env)
        if row.meta.get("backfill") and decision.auto_response_blocked is None:
            # History brought in by `ingestd import`: nobody wants an acknowledgement now.
            decision.auto_response_blocked = "imported history: no automatic mail"
        case = intake.apply(session, decision, msg, row.id, now, book, self.sla, self.env)
        return Result(
            decision.outcome,
            case.number if case is not None else None,
            decision.decided_by,
            decision.reason,
            book.version,
        )

    def _earlier_copy(self, session: Session, msg: InboundMessage) -> str | None:
        """The case number of an earlier copy of this very message, if one was applied."""
        external_id = msg.message_id or msg.external_id
        hit = session.execute(
            select(Activity.id, Case.number)
            .outerjoin(Case, Case.id == Activity.case_id)
            .where(
                Activity.channel == msg.channel,
                Activity.external_id == external_id,
                Activity.direction == Direction.INCOMING.value,
            )
            .limit(1)
        ).first()
        if hit is None:
            return None
        return hit.number or ""

    def _failed(
        self, row: JournalEntry, exc: Exception, now: datetime, permanent: bool = False
    ) -> _Done:
        settings = self.config.pipeline
        row.attempts += 1
        row.last_error = _short_error(exc)
        if permanent or row.attempts >= settings.max_attempts:
            row.outcome = Outcome.DEAD.value
        else:
            row.outcome = Outcome.FAILED.value
            delay = min(
                settings.retry_base_seconds * 2 ** (row.attempts - 1), settings.retry_max_seconds
            )
            row.next_attempt_at = now + timedelta(seconds=delay)
        return _Done(row.channel, row.outcome, None, None, row.id, row.last_error)

    def _report(self, item: _Done) -> None:
        fields = {
            "channel": item.channel,
            "journal_id": item.journal_id,
            "outcome": item.outcome,
            "case": item.case_number,
        }
        if item.outcome == _CONTENDED:
            log.info("message deferred: lock contention", extra=fields)
            return
        if item.error:
            level = logging.ERROR if item.outcome == Outcome.DEAD.value else logging.WARNING
            log.log(level, "message not processed", extra={**fields, "error": item.error})
        else:
            log.info(
                "message skipped" if item.reason else "message processed",
                extra={**fields, "decided_by": item.decided_by, "reason": item.reason},
            )
        if self.metrics:
            self.metrics.processed.labels(item.channel, item.outcome).inc()
            if item.latency is not None:
                self.metrics.latency.labels(item.channel).observe(item.latency)
