"""Handing a provider's message to the journal, and what to answer the provider.

Pollers advance their cursor, and webhooks answer 2xx, only after `accept`
returned a receipt; a webhook answers 503 when the store could not commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.responses import PlainTextResponse, Response

from ingest.journal import Delivery, Journal, Receipt
from ingest.metrics import Metrics
from ingest.store import StoreUnavailable

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # a webhook body; Telegram updates and SMS forms are far smaller
RETRY_AFTER = "30"


class Acceptor:
    """Shared by the Telegram, SMS and X listeners: journaling, refusals, metrics."""

    def __init__(self, journal: Journal, metrics: Metrics, ready: Callable[[], bool]) -> None:
        self.journal = journal
        self.metrics = metrics
        self.ready = ready

    def unavailable(self, channel: str, why: str) -> Response:
        """503 with Retry-After: the provider tries again, nothing is lost."""
        self.metrics.rejected.labels(channel, "store_unavailable").inc()
        log.warning("webhook answered 503", extra={"channel": channel, "reason": why})
        return PlainTextResponse(
            f"temporarily unavailable: {why}\n", 503, headers={"Retry-After": RETRY_AFTER}
        )

    def refuse(self, channel: str, status: int, reason: str, label: str, **fields: Any) -> Response:
        """A request we will not store: bad or missing signature, unknown target, bad body.

        `label` is the metric's reason: bad_signature, stale, unknown_target, bad_request."""
        self.metrics.rejected.labels(channel, label).inc()
        log.warning(
            "webhook refused",
            extra={"channel": channel, "status": status, "reason": reason, **fields},
        )
        return PlainTextResponse(f"{reason}\n", status)

    async def accept(self, delivery: Delivery) -> Receipt | None:
        """Journal the delivery; None when the store could not commit it."""
        try:
            receipt = await self.journal.accept(delivery)
        except StoreUnavailable as exc:
            log.warning("store unavailable", extra={"channel": delivery.channel, "error": str(exc)})
            return None
        except Exception:
            log.exception("journal write failed", extra={"channel": delivery.channel})
            return None
        self.metrics.accepted.labels(
            delivery.channel, "duplicate" if receipt.duplicate else "new"
        ).inc()
        log.info(
            "message accepted",
            extra={
                "channel": delivery.channel,
                "journal_id": receipt.journal_id,
                "duplicate": receipt.duplicate,
                "case": receipt.case_number,
                "external_id": delivery.external_id,
            },
        )
        return receipt


async def read_body(request: Any) -> bytes | None:
    """The body, or None when it is larger than MAX_BODY."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)
