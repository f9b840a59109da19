"""A journaled SMS webhook body (Twilio's form, or our generic JSON) to an InboundMessage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ingest.message import InboundAttachment, InboundMessage, ReplyRoute
from ingest.phone import region_of, sender_address

CHANNEL = "sms"
# Headers of an SMS outbox row (see docs/channels.md, "Outbox rows").
ACCOUNT_HEADER = "SMS-Account"
FROM_HEADER = "SMS-From"
MAX_MEDIA = 10  # Twilio's limit per MMS


def twilio_form(raw: bytes) -> list[tuple[str, str]]:
    """The POST parameters exactly as Twilio sent them (order and repeats kept)."""
    return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)


def parse(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    if meta.get("provider") == "twilio":
        return _twilio(raw, meta)
    return _generic(raw, meta)


def _twilio(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    form = dict(twilio_form(raw))
    sender = meta.get("from") or sender_address(form.get("From", ""))
    to = meta.get("to") or sender_address(form.get("To", ""))
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    media = [
        (form.get(f"MediaUrl{i}", ""), form.get(f"MediaContentType{i}", "")) for i in range(count)
    ]
    return _message(
        meta,
        sender=sender,
        to=to,
        text=form.get("Body", ""),
        media=media,
        sent_at=None,
        fields={
            "sms.provider": "twilio",
            "sms.from_country": form.get("FromCountry") or region_of(sender),
            "sms.segments": _int(form.get("NumSegments")),
            "sms.messaging_service": form.get("MessagingServiceSid"),
            "sms.opt_out": form.get("OptOutType"),
        },
    )


def _generic(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("an SMS webhook body is a JSON object")
    sender = meta.get("from") or sender_address(str(doc.get("from") or ""))
    media = [
        (str(m.get("url") or ""), str(m.get("content_type") or ""))
        for m in (doc.get("media") or [])[:MAX_MEDIA]
        if isinstance(m, dict)
    ]
    return _message(
        meta,
        sender=sender,
        to=meta.get("to") or sender_address(str(doc.get("to") or "")),
        text=str(doc.get("text") or ""),
        media=media,
        sent_at=_when(doc.get("sent_at")),
        fields={
            "sms.provider": "generic",
            "sms.from_country": region_of(sender),
            "sms.segments": _int(doc.get("segments")),
            "sms.messaging_service": None,
            "sms.opt_out": None,
        },
    )


def _message(
    meta: dict[str, Any],
    *,
    sender: str,
    to: str,
    text: str,
    media: list[tuple[str, str]],
    sent_at: datetime | None,
    fields: dict[str, Any],
) -> InboundMessage:
    if not sender:
        raise ValueError("the SMS has no sender")
    account = str(meta.get("account") or "")
    attachments = [
        InboundAttachment(
            filename=_filename(url),
            content_type=content_type or "application/octet-stream",
            data=b"",
            url=url,
        )
        for url, content_type in media
        if url
    ]
    return InboundMessage(
        channel=CHANNEL,
        external_id=str(meta.get("external_id") or ""),
        identity_kind="phone",
        sender=sender,
        recipients=[to] if to else [],
        text=text if text.strip() or not attachments else "[MMS without text]",
        attachments=attachments,
        sent_at=sent_at,
        fields={
            **fields,
            "sms.to": to,
            "sms.account": account,
            "sms.media_count": len(attachments),
        },
        reply_route=ReplyRoute(sender, {ACCOUNT_HEADER: account, FROM_HEADER: to}),
    )


def _filename(url: str) -> str | None:
    last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    return last or None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
