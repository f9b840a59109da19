"""Email bytes to an InboundMessage, tolerant of the mail real systems send."""

from __future__ import annotations

import email.utils
import hashlib
import re
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

from channels.htmltext import html_to_text
from ingest.message import InboundAttachment, InboundMessage

CHANNEL = "email"
_MSGID = re.compile(r"<([^<>\s]{1,900})>")
_MAX_KEY = 500
_MAX_REFERENCES = 50
_MAX_PARTS = 500


def message_key(raw: bytes) -> str:
    """The journal key: the Message-ID, or a hash of the bytes when it has none.

    Runs before the acknowledgement, so it reads the header block only.
    """
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[: end + 2]
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
    message_id = _first_msgid(str(headers.get("Message-ID", "") or ""))
    if message_id and len(message_id) <= _MAX_KEY:
        return message_id
    return raw_key(raw)


def raw_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def parse(raw: bytes, meta: dict[str, Any] | None = None) -> InboundMessage:
    meta = meta or {}
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    defects: list[str] = [type(d).__name__ for d in msg.defects]

    name, address = _sender(msg, meta, defects)
    message_id = _first_msgid(_header(msg, "Message-ID", defects))
    text, html, attachments = _body(msg, defects)
    if not text and html:
        text = html_to_text(html)
    return InboundMessage(
        channel=CHANNEL,
        external_id=meta.get("external_id") or message_key(raw),
        identity_kind="email",
        sender=address,
        sender_name=name,
        recipients=_recipients(msg, meta, defects),
        subject=_header(msg, "Subject", defects).strip(),
        text=text,
        html=html,
        attachments=attachments,
        message_id=message_id,
        in_reply_to=_first_msgid(_header(msg, "In-Reply-To", defects)),
        references=_all_msgids(_header(msg, "References", defects))[-_MAX_REFERENCES:],
        headers=_header_map(msg, defects),
        sent_at=_date(_header(msg, "Date", defects)),
        language=_language(_header(msg, "Content-Language", defects)),
        defects=defects,
    )


def _language(value: str) -> str | None:
    tag = value.split(",")[0].strip().lower()
    return tag[:35] if tag and re.fullmatch(r"[a-z]{1,8}(-[a-z0-9]{1,8})*", tag) else None


def normalise_address(address: str) -> str:
    return address.strip().strip("<>").lower()


def _header(msg: Message, name: str, defects: list[str]) -> str:
    """A header as text; a header the modern parser chokes on is decoded leniently."""
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception as exc:  # the email package raises many types on hostile headers
        defects.append(f"header {name}: {type(exc).__name__}")
    raw = msg.get_all(name) if isinstance(msg, Message) else None
    if not raw:
        return ""
    try:
        return str(make_header(decode_header(str(raw[0]))))
    except Exception:
        return str(raw[0]).encode("utf-8", "replace").decode("utf-8", "replace")


def _header_map(msg: Message, defects: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in list(msg.keys())[:200]:
        lower = key.lower()
        if lower not in out:
            out[lower] = _header(msg, key, defects)[:2000]
    return out


def _sender(msg: Message, meta: dict[str, Any], defects: list[str]) -> tuple[str | None, str]:
    for header in ("From", "Sender", "Reply-To"):
        pairs = email.utils.getaddresses([_header(msg, header, defects)])
        for name, address in pairs:
            if "@" in address:
                return (name.strip() or None), normalise_address(address)
    envelope = str(meta.get("mail_from") or "")
    if "@" in envelope:
        defects.append("sender taken from the envelope")
        return None, normalise_address(envelope)
    return None, "unknown@invalid"


def _recipients(msg: Message, meta: dict[str, Any], defects: list[str]) -> list[str]:
    seen: list[str] = []
    for value in meta.get("rcpt_tos") or []:
        address = normalise_address(str(value))
        if address not in seen:
            seen.append(address)
    fields = [_header(msg, h, defects) for h in ("To", "Cc")]
    for _name, address in email.utils.getaddresses(fields):
        address = normalise_address(address)
        if "@" in address and address not in seen:
            seen.append(address)
    return seen


def _first_msgid(value: str) -> str | None:
    ids = _all_msgids(value)
    if ids:
        return ids[0]
    value = value.strip()
    # Some senders omit the angle brackets; an id too long to be real is ignored.
    return value if value and " " not in value and len(value) <= _MAX_KEY else None


def _all_msgids(value: str) -> list[str]:
    return _MSGID.findall(value or "")


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _body(
    msg: EmailMessage | Message, defects: list[str]
) -> tuple[str, str | None, list[InboundAttachment]]:
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[InboundAttachment] = []
    stack: list[Message] = [msg]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        ctype = part.get_content_type()
        if part.is_multipart() and ctype != "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[0:0] = [p for p in payload if isinstance(p, Message)]
            continue
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part, defects)
        if ctype == "text/plain" and disposition != "attachment" and not filename:
            texts.append(_text_of(part, defects))
        elif ctype == "text/html" and disposition != "attachment" and not filename:
            htmls.append(_text_of(part, defects))
        else:
            attachments.append(_attachment(part, ctype, filename, disposition))
    if stack:
        defects.append(
            f"more than {_MAX_PARTS} MIME parts: the rest is kept only in the raw message"
        )
    text = "\n\n".join(t.strip("\n") for t in texts if t.strip())
    html = "\n".join(htmls) if htmls else None
    return text, html, attachments


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception as exc:
        defects.append(f"filename: {type(exc).__name__}")
        return None
    return str(name).strip() or None if name else None


def _text_of(part: Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    return _decode(payload, (part.get_content_charset() or "utf-8").lower(), defects).replace(
        "\r\n", "\n"
    )


def _decode(payload: bytes, charset: str, defects: list[str]) -> str:
    try:
        return payload.decode(charset)
    except LookupError:
        defects.append(f"unknown charset {charset!r}")
    except UnicodeDecodeError:
        defects.append(f"text not valid {charset}")
    # Mislabelled mail is most often UTF-8 or Windows-1252.
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", "replace")


def _attachment(
    part: Message, ctype: str, filename: str | None, disposition: str
) -> InboundAttachment:
    if ctype == "message/rfc822":
        inner = part.get_payload()
        inner_msg = inner[0] if isinstance(inner, list) and inner else None
        data = inner_msg.as_bytes(policy=policy.compat32) if isinstance(inner_msg, Message) else b""
        filename = filename or "forwarded-message.eml"
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
    content_id = str(part.get("Content-ID") or "").strip().strip("<>") or None
    return InboundAttachment(
        filename=filename,
        content_type=ctype,
        data=data,
        content_id=content_id,
        inline=disposition == "inline" or (disposition == "" and content_id is not None),
    )
