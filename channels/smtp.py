"""SMTP listener (aiosmtpd) in the daemon's loop: journal first, then `250`.

Policy lives here only as far as SMTP needs it: which recipients we accept and
what to answer. What a message becomes is the pipeline's business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from channels import mime
from ingest.config import SmtpConfig
from ingest.journal import Delivery, Journal
from ingest.metrics import Metrics
from ingest.store import StoreUnavailable

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure storing the message, please try again later"


class SupportMailHandler:
    """aiosmtpd hooks: accept mail for the support addresses, journal it, answer."""

    def __init__(self, config: SmtpConfig, journal: Journal, metrics: Metrics) -> None:
        self.addresses = frozenset(config.addresses)
        self.plus_addresses = config.plus_addresses
        self.max_recipients = config.max_recipients
        self.journal = journal
        self.metrics = metrics
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._ours(mime.normalise_address(address)):
            self.metrics.rejected.labels("email", "unknown_recipient").inc()
            log.info("recipient refused", extra={"channel": "email", "peer": _peer(session)})
            return f"550 5.1.1 <{address}>: Recipient address rejected: not a support address here"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    def _ours(self, address: str) -> bool:
        if address in self.addresses:
            return True
        # support+<reply token>@example.com is support@example.com (RFC 5233 subaddress).
        local, at, domain = address.rpartition("@")
        base, plus, _tag = local.partition("+")
        return self.plus_addresses and bool(plus and at) and f"{base}@{domain}" in self.addresses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.in_flight += 1
        self.idle.clear()
        try:
            return await self._journal(session, envelope, raw)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _journal(self, session: Session, envelope: Envelope, raw: bytes) -> str:
        try:
            key = mime.message_key(raw)
        except Exception:  # a header block the parser rejects still deserves a key
            log.warning("unparsable header block", extra={"channel": "email"}, exc_info=True)
            key = mime.raw_key(raw)
        meta: dict[str, Any] = {
            "listener": "smtp",
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": _peer(session),
            "helo": session.host_name,
        }
        try:
            receipt = await self.journal.accept(Delivery(mime.CHANNEL, key, raw, meta))
        except StoreUnavailable as exc:
            self.metrics.rejected.labels("email", "store_unavailable").inc()
            log.warning(
                "store unavailable, answered 451", extra={"channel": "email", "error": str(exc)}
            )
            return TEMPFAIL
        except Exception:
            self.metrics.rejected.labels("email", "journal_error").inc()
            log.exception("journal write failed, answered 451", extra={"channel": "email"})
            return TEMPFAIL
        result = "duplicate" if receipt.duplicate else "new"
        self.metrics.accepted.labels("email", result).inc()
        log.info(
            "message accepted",
            extra={
                "channel": "email",
                "journal_id": receipt.journal_id,
                "duplicate": receipt.duplicate,
                "case": receipt.case_number,
                "size": len(raw),
            },
        )
        return f"250 2.0.0 Ok: queued as {receipt.journal_id}"

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer a permanent 500 and the sender would bounce the mail.
        log.error("smtp session error", extra={"channel": "email", "error": repr(error)})
        return "451 4.3.0 Temporary server error, please try again later"


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class SmtpChannel:
    """The listening socket and its sessions."""

    name = "smtp"

    def __init__(self, config: SmtpConfig, journal: Journal, metrics: Metrics) -> None:
        self.config = config
        self.handler = SupportMailHandler(config, journal, metrics)
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()
        self.port: int | None = None

    def _protocol(self) -> SMTP:
        protocol = _TrackedSMTP(
            self.handler,
            self._sessions,
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.config.hostname,
            ident="ingestd ESMTP",
            timeout=self.config.timeout,
            loop=asyncio.get_running_loop(),
        )
        return protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=self.config.host, port=self.config.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "smtp listening",
            extra={"channel": "email", "host": self.config.host, "port": self.port},
        )

    async def stop(self, grace: float = 10.0) -> None:
        if self._server is None:
            return
        self._server.close()
        try:
            await asyncio.wait_for(self.handler.idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning("smtp stop: messages still in flight", extra={"channel": "email"})
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        self._server = None


class _TrackedSMTP(SMTP):
    """An SMTP session the channel can close at shutdown."""

    def __init__(self, handler: Any, registry: set[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(error)
