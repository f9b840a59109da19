"""The outbox: outbound messages written with the change that caused them, delivered later.

Business code calls `enqueue()` inside its own transaction, so an auto-response
exists exactly when the case that caused it does. `OutboxDelivery` then claims
due rows, hands each to the sender registered for its channel, and records the
result: sent, retried later with exponential backoff, or failed for good.

Claims are leases, not open transactions
----------------------------------------
A claim is one short write transaction: pick due rows (`FOR UPDATE SKIP LOCKED`
on PostgreSQL; SQLite's `BEGIN IMMEDIATE` serialises writers anyway), count the
attempt and push `next_attempt_at` to the end of a lease, commit. The network
send happens outside any transaction, so a slow relay never holds the SQLite
write lock (which the journal needs to acknowledge mail) nor a PostgreSQL
connection. Each result is then recorded in its own transaction, fenced on the
lease: the UPDATE only applies while the row is still `pending` with our
`next_attempt_at`, so a deliverer that lost its lease can never overwrite the
work of the one that took over.

Delivery is at least once, and this is the window
------------------------------------------------
A row recorded as sent is never claimed again. But no protocol lets "the relay
said 250" and "our commit" happen atomically, so a message can be sent twice
when the process dies, the store fails for longer than the lease, or the send
is cut off by `send_timeout`, at any point after the relay accepted the message
and before `sent` is committed (for SMTP: after the final dot, even before we
read the 250). The row is then still leased and is sent again once the lease
ends. To keep that rare and harmless: each send is recorded immediately (not
per batch); a result the store could not take is kept in memory and written
first on the next run, well inside the lease; a batch stops before its lease
could run out; and the email channel gives a row the same Message-ID on every
attempt, so a duplicate is recognisable (and dropped by many mail stores).
Two deliverers never send one row concurrently as long as their clocks agree
to within the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, cast

from sqlalchemy import CursorResult, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from ingest.clock import Clock
from ingest.config import OutboxConfig
from ingest.store import Store, StoreUnavailable
from ingest.store.models import Case, OutboxMessage, OutboxState
from ingest.store.types import JSONType, UTCDateTime

log = logging.getLogger(__name__)

ERROR_MAX = 2000


@dataclass(frozen=True)
class OutboundMessage:
    """One outbox row as a sender sees it: everything needed to send, nothing to change."""

    id: int
    kind: str
    channel: str
    recipient: str
    subject: str | None
    body_text: str | None
    body_html: str | None
    headers: Mapping[str, str]
    case_id: int | None
    case_number: str | None
    activity_id: int | None
    dedupe_key: str | None
    attempt: int  # 1 for the first attempt
    created_at: datetime


@dataclass(frozen=True)
class Sent:
    """What the channel's provider answered, and the message id it was sent under."""

    response: str
    message_id: str | None = None


class DeliveryError(Exception):
    """A send did not succeed; subclasses say whether trying again can help."""


class TemporaryFailure(DeliveryError):
    """Try again later: 4xx, connection refused, timeout, relay-level trouble."""


class PermanentFailure(DeliveryError):
    """Never going to work for this message: 5xx, invalid recipient or header."""


class Sender(Protocol):
    """A channel's outbound side. Raise TemporaryFailure or PermanentFailure; anything
    else is treated as temporary (and logged with its traceback)."""

    async def send(self, message: OutboundMessage) -> Sent: ...


def enqueue(
    session: Session,
    *,
    kind: str,
    channel: str,
    recipient: str,
    subject: str | None,
    body_text: str | None,
    body_html: str | None = None,
    headers: Mapping[str, str] | None = None,
    case_id: int | None = None,
    activity_id: int | None = None,
    dedupe_key: str | None = None,
    automatic: bool = False,
    now: datetime,
) -> int | None:
    """Add a row in the caller's transaction; return its id, or None if `dedupe_key` exists.

    Automatic mail (not written by a person) should come through `ingest/outmail.py`,
    which checks suppressions and rate limits first and marks it `automatic`.
    """
    if not recipient.strip():
        raise ValueError("an outbox row needs a recipient")
    values = {
        "kind": kind,
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body_text": body_text,
        "body_html": body_html,
        "headers": dict(headers or {}),
        "case_id": case_id,
        "activity_id": activity_id,
        "dedupe_key": dedupe_key,
        "automatic": automatic,
        "state": OutboxState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    # Built and compiled once: SQLAlchemy cannot cache an INSERT ... ON CONFLICT
    # construct, and compiling it per row cost twice the insert itself (an SLA
    # sweep writes many rows in one transaction).
    new_id: int | None = session.connection().execute(_INSERT, values).scalar_one_or_none()
    return new_id


_COLUMNS = (
    "kind, channel, recipient, subject, body_text, body_html, headers, case_id, activity_id, "
    "dedupe_key, automatic, state, attempts, next_attempt_at, created_at"
)
# Both stores speak this (SQLite since 3.35): the conflict target is the unique dedupe_key.
_INSERT = (
    text(
        f"INSERT INTO outbox ({_COLUMNS}) VALUES "  # noqa: S608 (constant column names)
        f"({', '.join(':' + c for c in _COLUMNS.split(', '))}) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
    )
    .bindparams(
        bindparam("headers", type_=JSONType),
        bindparam("next_attempt_at", type_=UTCDateTime()),
        bindparam("created_at", type_=UTCDateTime()),
    )
    .columns(id=OutboxMessage.id.type)
)


@dataclass(frozen=True)
class _Claim:
    message: OutboundMessage
    lease_until: datetime


@dataclass(frozen=True)
class _Result:
    """What happened to one claim; `state` None means "released unsent"."""

    state: Literal["sent", "retry", "failed"] | None
    error: str | None = None
    sent: Sent | None = None


# Looked at when a row is claimed: a reason not to send it after all (an address that
# hard-bounced since the row was queued), or None.
Screen = Callable[[Session, OutboxMessage, datetime], str | None]


class OutboxDelivery:
    """Claims due rows, sends each through its channel's sender, records the result."""

    def __init__(
        self,
        store: Store,
        config: OutboxConfig,
        clock: Clock,
        senders: Mapping[str, Sender],
        screen: Screen | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.senders = dict(senders)
        self.screen = screen
        # Results the store could not take yet, written first on the next run.
        self._unrecorded: list[tuple[_Claim, _Result]] = []
        self._lock = asyncio.Lock()

    async def run_once(self) -> int:
        """Deliver up to one batch of due rows; return how many rows were handled.

        Raises StoreUnavailable when the store cannot be reached; results not yet
        written are kept and written first on the next call.
        """
        async with self._lock:
            if self._unrecorded:
                await asyncio.to_thread(self._flush_unrecorded)
            if not self.senders:
                return 0
            claims, given_up = await asyncio.to_thread(self._claim)
            for report in given_up:
                _log_result(report)
            started = time.monotonic()
            handled = len(given_up)
            for index, claim in enumerate(claims):
                elapsed = time.monotonic() - started
                if elapsed + self.config.send_timeout >= self.config.lease_seconds:
                    # Not enough lease left for a whole send: give the rest back now.
                    await self._record_many([(c, _Result(None)) for c in claims[index:]])
                    break
                try:
                    result = await self._send(claim.message)
                except asyncio.CancelledError:
                    # Shutting down mid-send: that row's outcome is unknown and it stays
                    # leased (sent again after the lease); the unsent ones are released.
                    self._release_now(claims[index + 1 :])
                    raise
                await self._record_many([(claim, result)], rest=claims[index + 1 :])
                handled += 1
            return handled

    def backlog(self) -> dict[str, int]:
        """Rows by state (pending, failed); sent rows are not counted."""
        with self.store.read() as session:
            rows = session.execute(
                select(OutboxMessage.state, func.count())
                .where(OutboxMessage.state != OutboxState.SENT.value)
                .group_by(OutboxMessage.state)
            ).tuples()
            counts = {state: count for state, count in rows}
        return {
            OutboxState.PENDING.value: counts.get(OutboxState.PENDING.value, 0),
            OutboxState.FAILED.value: counts.get(OutboxState.FAILED.value, 0),
        }

    # -- claiming ---------------------------------------------------------------

    def _claim(self) -> tuple[list[_Claim], list[dict[str, Any]]]:
        settings = self.config
        claims: list[_Claim] = []
        given_up: list[dict[str, Any]] = []
        with self.store.write() as session:
            now = self.clock.now()
            lease_until = now + timedelta(seconds=settings.lease_seconds)
            rows = session.execute(
                select(OutboxMessage, Case.number)
                .outerjoin(Case, Case.id == OutboxMessage.case_id)
                .where(
                    OutboxMessage.state == OutboxState.PENDING.value,
                    OutboxMessage.next_attempt_at <= now,
                    OutboxMessage.channel.in_(sorted(self.senders)),
                )
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(settings.batch_size)
                .with_for_update(of=OutboxMessage, skip_locked=True)
            ).tuples()
            for row, case_number in rows:
                held = self.screen(session, row, now) if self.screen else None
                if held is not None:
                    row.state = OutboxState.SUPPRESSED.value
                    row.last_error = _clip(f"not sent: {held}")
                    given_up.append(
                        _fields(row.id, row.kind, row.channel, row.case_id, case_number)
                        | {"outcome": "suppressed", "reason": held}
                    )
                    continue
                if row.attempts >= settings.max_attempts:
                    # Every attempt was used and the last one never reported back
                    # (the process died during the send): stop, but say so.
                    row.state = OutboxState.FAILED.value
                    row.last_error = _clip(
                        f"gave up after {row.attempts} attempts; the outcome of the last "
                        f"one is unknown (interrupted). Earlier error: {row.last_error or '-'}"
                    )
                    given_up.append(
                        _fields(row.id, row.kind, row.channel, row.case_id, case_number)
                        | {"outcome": "failed", "attempts": row.attempts, "error": row.last_error}
                    )
                    continue
                row.attempts += 1
                row.next_attempt_at = lease_until
                claims.append(
                    _Claim(
                        OutboundMessage(
                            id=row.id,
                            kind=row.kind,
                            channel=row.channel,
                            recipient=row.recipient,
                            subject=row.subject,
                            body_text=row.body_text,
                            body_html=row.body_html,
                            headers=dict(row.headers or {}),
                            case_id=row.case_id,
                            case_number=case_number,
                            activity_id=row.activity_id,
                            dedupe_key=row.dedupe_key,
                            attempt=row.attempts,
                            created_at=row.created_at,
                        ),
                        lease_until,
                    )
                )
        return claims, given_up

    # -- sending ----------------------------------------------------------------

    async def _send(self, message: OutboundMessage) -> _Result:
        sender = self.senders[message.channel]
        try:
            sent = await asyncio.wait_for(sender.send(message), self.config.send_timeout)
        except PermanentFailure as exc:
            return self._failure(message, permanent=True, error=str(exc))
        except TemporaryFailure as exc:
            return self._failure(message, permanent=False, error=str(exc))
        except TimeoutError:
            error = f"send timed out after {self.config.send_timeout:g}s"
            return self._failure(message, permanent=False, error=error)
        except Exception as exc:
            log.warning(
                "outbox sender raised an unexpected error",
                extra=_fields(
                    message.id, message.kind, message.channel, message.case_id, message.case_number
                ),
                exc_info=True,
            )
            return self._failure(message, permanent=False, error=f"{type(exc).__name__}: {exc}")
        return _Result("sent", sent=sent)

    def _failure(self, message: OutboundMessage, *, permanent: bool, error: str) -> _Result:
        if permanent:
            return _Result("failed", _clip(error))
        if message.attempt >= self.config.max_attempts:
            return _Result("failed", _clip(f"gave up after {message.attempt} attempts: {error}"))
        return _Result("retry", _clip(error))

    def backoff(self, attempt: int) -> timedelta:
        """The delay after failed attempt number `attempt` (1-based)."""
        settings = self.config
        seconds = min(
            settings.backoff_base_seconds * 2 ** max(attempt - 1, 0), settings.backoff_max_seconds
        )
        return timedelta(seconds=seconds)

    # -- recording --------------------------------------------------------------

    async def _record_many(
        self, items: list[tuple[_Claim, _Result]], rest: list[_Claim] | None = None
    ) -> None:
        try:
            reports = await asyncio.to_thread(self._record, items)
        except StoreUnavailable:
            # Keep the results (and give back the rest of the batch) on the next run;
            # until then the rows stay leased, so nobody else sends them.
            self._unrecorded.extend(items)
            self._unrecorded.extend((c, _Result(None)) for c in rest or [])
            raise
        for report in reports:
            _log_result(report)

    def _flush_unrecorded(self) -> None:
        items = list(self._unrecorded)
        reports = self._record(items)
        self._unrecorded.clear()
        for report in reports:
            _log_result(report)

    def _release_now(self, claims: list[_Claim]) -> None:
        if not claims:
            return
        try:
            self._record([(c, _Result(None)) for c in claims])
        except StoreUnavailable:
            log.warning(
                "outbox: could not release claimed rows; they are retried after their lease",
                extra={"rows": len(claims)},
            )

    def _record(self, items: list[tuple[_Claim, _Result]]) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        with self.store.write() as session:
            now = self.clock.now()
            for claim, result in items:
                message = claim.message
                values: dict[str, Any]
                if result.state is None:
                    values = {"next_attempt_at": now, "attempts": OutboxMessage.attempts - 1}
                elif result.state == "sent":
                    values = {
                        "state": OutboxState.SENT.value,
                        "sent_at": now,
                        "last_error": None,
                        "next_attempt_at": now,
                    }
                    if result.sent and result.sent.message_id:
                        values["headers"] = _with_message_id(
                            message.headers, result.sent.message_id
                        )
                elif result.state == "retry":
                    values = {
                        "last_error": result.error,
                        "next_attempt_at": now + self.backoff(message.attempt),
                    }
                else:
                    values = {
                        "state": OutboxState.FAILED.value,
                        "last_error": result.error,
                        "next_attempt_at": now,
                    }
                outcome = cast(
                    "CursorResult[Any]",
                    session.execute(
                        update(OutboxMessage)
                        .where(
                            OutboxMessage.id == message.id,
                            OutboxMessage.state == OutboxState.PENDING.value,
                            OutboxMessage.next_attempt_at == claim.lease_until,
                        )
                        .values(**values)
                        .execution_options(synchronize_session=False),
                    ),
                )
                report = _fields(
                    message.id,
                    message.kind,
                    message.channel,
                    message.case_id,
                    message.case_number,
                ) | {"attempts": message.attempt}
                if outcome.rowcount != 1:
                    reports.append(report | {"outcome": "lease_lost", "result": result.state})
                    continue
                if result.state is None:
                    continue
                report["outcome"] = result.state
                if result.sent:
                    report["response"] = result.sent.response
                    report["message_id"] = result.sent.message_id
                if result.error:
                    report["error"] = result.error
                if result.state == "retry":
                    report["retry_at"] = values["next_attempt_at"].isoformat()
                reports.append(report)
        return reports


def _with_message_id(headers: Mapping[str, str], message_id: str) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if k.lower() != "message-id"}
    return {**kept, "Message-ID": message_id}


def _fields(
    outbox_id: int, kind: str, channel: str, case_id: int | None, case_number: str | None
) -> dict[str, Any]:
    return {
        "outbox_id": outbox_id,
        "kind": kind,
        "channel": channel,
        "case": case_number,
        "case_id": case_id,
    }


def _log_result(report: dict[str, Any]) -> None:
    outcome = report.get("outcome")
    if outcome == "sent":
        log.info("outbox message sent", extra=report)
    elif outcome == "retry":
        log.warning("outbox message deferred", extra=report)
    elif outcome == "failed":
        log.error("outbox message failed", extra=report)
    elif outcome == "suppressed":
        log.info("outbox message suppressed", extra=report)
    elif outcome == "lease_lost":
        log.warning(
            "outbox result not recorded: the row's lease passed to another deliverer",
            extra=report,
        )


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


__all__ = [
    "DeliveryError",
    "OutboundMessage",
    "OutboxConfig",
    "OutboxDelivery",
    "PermanentFailure",
    "Sender",
    "Sent",
    "TemporaryFailure",
    "enqueue",
]
