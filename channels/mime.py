"""Email bytes to an InboundMessage, tolerant of the mail real systems send.

Parsing never loses a message: charsets that are missing, unknown or wrong
are decoded leniently (`channels/charsets.py`), raw 8-bit headers are read as
UTF-8 or Windows-1252, a multipart without its boundary has the boundary
guessed from the body (or is read as plain text), and a structure the email
package cannot walk at all is taken as a header block and a plain-text body.
Every such repair is listed in `InboundMessage.defects`. The raw bytes stay
in the journal row whatever happens.

The work per message is bounded: at most MAX_PARTS parts and MAX_DEPTH levels
of nesting are read, MAX_HEADER_FIELDS header fields, MAX_TEXT_CHARS of text,
and the HTML-to-text conversion reads a bounded prefix (`channels/htmltext.py`).
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser, HeaderParser
from typing import Any

from channels import charsets
from channels.htmltext import MAX_HTML_CHARS, html_to_text
from ingest.message import DeliveryReport, InboundAttachment, InboundMessage, RecipientStatus

CHANNEL = "email"
_MSGID = re.compile(r"<([^<>\s]{1,900})>")
_MAX_KEY = 500
_MAX_REFERENCES = 50
MAX_PARTS = 500
MAX_DEPTH = 20
MAX_HEADER_FIELDS = 1000
MAX_TEXT_CHARS = 1_000_000
MAX_HTML_STORED = 2 * MAX_HTML_CHARS
_MAX_HEADER_VALUE = 64 * 1024  # one header field; a longer one is read up to here
_MAX_DSN_RECIPIENTS = 100
_FILENAME_MAX = 200
_SURROGATES = re.compile("[\udc80-\udcff]")
_BOUNDARY_LINE = re.compile(rb"^--([!-~][ -~]{0,69}?)(--)?[ \t]*\r?$", re.MULTILINE)
_ORIGINAL_ID = re.compile(r"^message-id:\s*<([^<>\s]{1,900})>", re.IGNORECASE | re.MULTILINE)


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


def normalise_address(address: str) -> str:
    return address.strip().strip("<>").lower()


def parse(raw: bytes, meta: dict[str, Any] | None = None) -> InboundMessage:
    meta = meta or {}
    defects: list[str] = []
    msg: Message
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        defects += [type(d).__name__ for d in msg.defects]
        headers = _Headers(msg, defects)
        body = _walk(msg, headers, defects)
    except MemoryError:
        raise
    except Exception as exc:
        # The structure cannot be walked: keep the header block and the body as text.
        defects.append(f"MIME structure not readable ({type(exc).__name__}); body read as text")
        msg, body = _degraded(raw, defects)
        headers = _Headers(msg, defects)
    return _message(raw, meta, headers, body, defects)


# -- headers ---------------------------------------------------------------------------


class _Headers:
    """Header values as text, decoded leniently where the email package gives up."""

    def __init__(self, msg: Message, defects: list[str]) -> None:
        self.msg = msg
        self.defects = defects
        self.hint = _charset_hint(msg)
        self._raw: dict[str, str] = {}
        self._text: dict[str, str] = {}
        fields = msg.raw_items()
        for count, (name, value) in enumerate(fields):
            if count >= MAX_HEADER_FIELDS:
                defects.append(f"more than {MAX_HEADER_FIELDS} header fields: the rest ignored")
                break
            self._raw.setdefault(name.lower(), str(value))

    def names(self) -> list[str]:
        return list(self._raw)

    def text(self, name: str) -> str:
        key = name.lower()
        if key not in self._text:
            # NUL cannot be stored in a PostgreSQL text column, and means nothing in mail.
            self._text[key] = self._decoded(name).replace("\x00", "")
        return self._text[key]

    def _decoded(self, name: str) -> str:
        raw = self._raw.get(name.lower())
        if raw is None:
            return ""
        if len(raw) > _MAX_HEADER_VALUE:
            self.defects.append(f"header {name}: longer than {_MAX_HEADER_VALUE} characters")
            return self._lenient(raw[:_MAX_HEADER_VALUE], name)
        if _SURROGATES.search(raw):
            self.defects.append(f"header {name}: raw 8-bit characters")
            return self._lenient(raw, name)
        try:
            value = self.msg.get(name)
            text = "" if value is None else str(value)
        except Exception as exc:  # the email package raises many types on hostile headers
            self.defects.append(f"header {name}: {type(exc).__name__}")
            return self._lenient(raw, name)
        if getattr(value, "defects", None):
            # The parser repaired it, sometimes by dropping what mattered ("; <a@b>" -> "<>").
            return self._lenient(raw, name)
        if "\ufffd" in text and "=?" in raw:
            return self._lenient(raw, name)  # an encoded word in a charset Python lacks
        return text

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """(display name, address) pairs; groups are flattened."""
        raw = self._raw.get(name.lower())
        if raw is None:
            return []
        if len(raw) <= _MAX_HEADER_VALUE and not _SURROGATES.search(raw):
            try:
                header = self.msg.get(name)
                found = getattr(header, "addresses", None)
                if found is not None and not getattr(header, "defects", None):
                    pairs = [(str(a.display_name), str(a.addr_spec)) for a in found]
                    if not any("\ufffd" in n or _SURROGATES.search(n) for n, _ in pairs):
                        return pairs
            except Exception as exc:
                self.defects.append(f"header {name}: {type(exc).__name__}")
        return _lenient_addresses(self.text(name))

    def _lenient(self, raw: str, name: str) -> str:
        text = _unescape(raw, self.hint)
        text = re.sub(r"\r?\n(?=[ \t])", "", text).strip()
        try:
            pieces = decode_header(text)
        except Exception:
            return text
        out = []
        for chunk, label in pieces:
            if isinstance(chunk, str):
                out.append(chunk)
            else:
                out.append(charsets.decode(chunk, label or "utf-8", self.defects, f"header {name}"))
        return "".join(out)


def _lenient_addresses(text: str) -> list[tuple[str, str]]:
    """Addresses from a header the parser found defects in: angle brackets win."""
    angled = list(_ANGLED.finditer(text))
    if not angled:
        return [(n, a) for n, a in email.utils.getaddresses([text])]
    pairs, start = [], 0
    for match in angled:
        pairs.append((text[start : match.start()].strip(" \t,;\"'"), match.group(1)))
        start = match.end()
    return pairs


def _unescape(value: str, hint: str | None) -> str:
    """A header read with surrogate escapes back to text: UTF-8, the body's charset, or 1252."""
    if not _SURROGATES.search(value):
        return value
    data = value.encode("utf-8", "surrogateescape")
    return charsets.decode(data, hint or "utf-8", [], "header")


def _charset_hint(msg: Message) -> str | None:
    """The first charset the body declares: the best guess for raw 8-bit headers."""
    for count, part in enumerate(msg.walk()):
        if count > 50:
            break
        label = _charset_of(part)
        if label:
            return label
    return None


def _charset_of(part: Message) -> str | None:
    try:
        label = part.get_content_charset()
    except Exception:  # a hostile Content-Type: no charset, then
        return None
    return str(label) if label else None


# -- the message -----------------------------------------------------------------------


@dataclass
class _Body:
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[InboundAttachment] = field(default_factory=list)
    forwarded: list[Message] = field(default_factory=list)
    statuses: list[RecipientStatus] = field(default_factory=list)
    original_id: str | None = None
    reporting_mta: str | None = None
    is_report: bool = False


def _message(
    raw: bytes, meta: dict[str, Any], headers: _Headers, body: _Body, defects: list[str]
) -> InboundMessage:
    name, address = _sender(headers, meta, defects)
    text = _clip("\n\n".join(t.strip("\n") for t in body.texts if t.strip()), defects, "text")
    html = "\n".join(body.htmls) if body.htmls else None
    if not text and html:
        text = html_to_text(html)
        if len(html) > MAX_HTML_CHARS:
            defects.append(f"HTML longer than {MAX_HTML_CHARS} characters: text from the start")
    if not text and body.forwarded:
        text = _forwarded_text(body.forwarded[0], defects)
    if html is not None and len(html) > MAX_HTML_STORED:
        defects.append(f"HTML of {len(html)} characters not kept on the activity (raw has it)")
        html = None
    _mark_referenced_inline(body.attachments, html)
    return InboundMessage(
        channel=CHANNEL,
        external_id=meta.get("external_id") or message_key(raw),
        identity_kind="email",
        sender=address,
        sender_name=name,
        recipients=_recipients(headers, meta),
        subject=" ".join(headers.text("Subject").split()),
        text=text,
        html=html,
        attachments=body.attachments,
        message_id=_first_msgid(headers.text("Message-ID")),
        in_reply_to=_first_msgid(headers.text("In-Reply-To")),
        references=_all_msgids(headers.text("References"))[-_MAX_REFERENCES:],
        headers=_header_map(headers, meta),
        sent_at=_date(headers.text("Date")),
        language=_language(headers.text("Content-Language")),
        defects=defects,
        report=_report(body, headers),
    )


def _clip(text: str, defects: list[str], what: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    defects.append(f"{what} longer than {MAX_TEXT_CHARS} characters: the rest is in the raw")
    return text[:MAX_TEXT_CHARS]


def _language(value: str) -> str | None:
    tag = value.split(",")[0].strip().lower()
    return tag[:35] if tag and re.fullmatch(r"[a-z]{1,8}(-[a-z0-9]{1,8})*", tag) else None


def _header_map(headers: _Headers, meta: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in headers.names()[:200]:
        out[name] = headers.text(name)[:2000]
    if "return-path" not in out and "mail_from" in meta:
        # What the final MTA would add (RFC 5321 4.4); `<>` marks bounces and auto-replies.
        out["return-path"] = f"<{normalise_address(str(meta['mail_from'] or ''))}>"
    return out


_ADDRESS = re.compile(r"[^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+")
_ANGLED = re.compile(r"<([^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+)>")


def _sender(headers: _Headers, meta: dict[str, Any], defects: list[str]) -> tuple[str | None, str]:
    for header in ("From", "Sender", "Reply-To"):
        for name, address in headers.addresses(header):
            if _ADDRESS.fullmatch(address.strip()):
                return (name.strip() or None), normalise_address(address)
        # An unbalanced quote or bracket confuses the address parser: take the
        # last thing that looks like an address.
        found = _ADDRESS.findall(headers.text(header))
        if found:
            defects.append(f"header {header}: address read leniently")
            return None, normalise_address(found[-1])
    envelope = str(meta.get("mail_from") or "")
    if "@" in envelope:
        defects.append("sender taken from the envelope")
        return None, normalise_address(envelope)
    return None, "unknown@invalid"


def _recipients(headers: _Headers, meta: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for value in meta.get("rcpt_tos") or []:
        address = normalise_address(str(value))
        if address not in seen:
            seen.append(address)
    for header in ("To", "Cc"):
        for _name, address in headers.addresses(header):
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
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# -- the body --------------------------------------------------------------------------


def _walk(msg: Message, headers: _Headers, defects: list[str]) -> _Body:
    body = _Body()
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        ctype = _content_type(part)
        if ctype.startswith("multipart/"):
            children = _children(part, defects)
            if children is None:
                body.texts.append(_text_of(part, defects))
            elif depth >= MAX_DEPTH:
                defects.append(f"MIME nesting deeper than {MAX_DEPTH}: the rest is in the raw")
            else:
                if ctype == "multipart/report" and _report_type(part) == "delivery-status":
                    body.is_report = True
                stack.extend((child, depth + 1) for child in reversed(children))
            continue
        disposition = _disposition(part)
        filename = _filename(part, defects)
        if ctype == "message/delivery-status":
            body.is_report = True
            _read_delivery_status(part, body, defects)
            body.attachments.append(_attachment(part, ctype, filename or "delivery-status.txt"))
        elif ctype in ("message/rfc822", "message/global"):
            inner = _inner_message(part)
            if inner is not None:
                body.forwarded.append(inner)
                if body.is_report and body.original_id is None:
                    body.original_id = _first_msgid(_plain_header(inner, "Message-ID"))
            name = filename or _eml_name(inner)
            body.attachments.append(_attachment(part, ctype, name, inner))
        elif ctype == "text/rfc822-headers":
            data = _payload(part)
            if body.original_id is None:
                head = HeaderParser(policy=policy.compat32).parsestr(
                    data.decode("utf-8", "replace")
                )
                body.original_id = _first_msgid(str(head.get("Message-ID", "") or ""))
            body.attachments.append(_attachment(part, ctype, filename or "original-headers.txt"))
        elif ctype == "text/plain" and disposition != "attachment" and not filename:
            body.texts.append(_text_of(part, defects))
        elif ctype == "text/html" and disposition != "attachment" and not filename:
            body.htmls.append(_text_of(part, defects, MAX_HTML_STORED))
        else:
            if ctype == "application/ms-tnef" and not filename:
                filename = "winmail.dat"
            body.attachments.append(_attachment(part, ctype, filename))
    if stack:
        defects.append(f"more than {MAX_PARTS} MIME parts: the rest is kept only in the raw")
    return body


def _content_type(part: Message) -> str:
    try:
        return str(part.get_content_type()).lower()
    except Exception:
        return "application/octet-stream"


def _report_type(part: Message) -> str:
    try:
        return str(part.get_param("report-type", "") or "").strip().lower()
    except Exception:
        return ""


def _disposition(part: Message) -> str:
    try:
        return str(part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _children(part: Message, defects: list[str]) -> list[Message] | None:
    """A multipart's parts; a missing or wrong boundary is guessed from the body."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    found = _BOUNDARY_LINE.findall(data)
    counts: dict[bytes, int] = {}
    for boundary, _end in found:
        counts[boundary] = counts.get(boundary, 0) + 1
    if not counts:
        defects.append("multipart without parts: read as text")
        return None
    boundary = max(counts, key=lambda b: counts[b])
    header = b'Content-Type: multipart/mixed; boundary="' + boundary.replace(b'"', b"") + b'"\r\n'
    repaired = BytesParser(policy=policy.default).parsebytes(header + b"\r\n" + data)
    children = repaired.get_payload()
    if not isinstance(children, list) or not children:
        defects.append("multipart without parts: read as text")
        return None
    defects.append(f"multipart boundary recovered from the body ({boundary.decode('ascii')})")
    return [p for p in children if isinstance(p, Message)]


def _payload(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _text_of(part: Message, defects: list[str], limit: int = MAX_TEXT_CHARS) -> str:
    data = _payload(part)
    label = _charset_of(part)
    text = charsets.decode(data, label or "us-ascii", defects).replace("\r\n", "\n")
    text = text[: limit + 1].replace("\x00", "")
    try:
        flowed = str(part.get_param("format", "") or "").lower() == "flowed"
        delsp = str(part.get_param("delsp", "") or "").lower() == "yes"
    except Exception:
        flowed = delsp = False
    return _unflow(text, delsp) if flowed else text


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft line breaks back into paragraphs."""
    out: list[str] = []
    pending: str | None = None
    pending_depth = -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        soft = content.endswith(" ") and content.rstrip() != "--"
        if pending is not None and depth == pending_depth:
            pending += content
        else:
            if pending is not None:
                out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
            pending, pending_depth = content, depth
        if soft:
            if delsp:
                pending = pending[:-1]
            continue
        out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
        pending, pending_depth = None, -1
    if pending is not None:
        out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
    return "\n".join(out)


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception as exc:
        defects.append(f"filename: {type(exc).__name__}")
        return None
    raw_name = _raw_filename(part)
    if not name or (raw_name and len(raw_name) > len(str(name)) and raw_name.startswith(str(name))):
        name = raw_name  # unquoted with spaces: the parameter parser stops at the first one
        if not name:
            return None
    text = _unescape(str(name), None)
    if "=?" in text:
        try:
            text = "".join(
                chunk if isinstance(chunk, str) else charsets.decode(chunk, label, defects)
                for chunk, label in decode_header(text)
            )
        except Exception:
            defects.append("filename: broken encoded word")
    return safe_filename(text)


_RAW_NAME = re.compile(r"""(?:^|;)\s*(?:file)?name\s*=\s*(?:"([^"]*)"|([^;\r\n]+))""", re.I)


def _raw_filename(part: Message) -> str | None:
    """A name the parameter parser missed: unquoted, with spaces or encoded words in it."""
    for header in ("Content-Disposition", "Content-Type"):
        for name, value in part.raw_items():
            if name.lower() != header.lower():
                continue
            match = _RAW_NAME.search(re.sub(r"\r?\n[ \t]", " ", str(value)))
            if match:
                found = (match.group(1) or match.group(2) or "").strip()
                if found:
                    return found
    return None


def safe_filename(name: str) -> str | None:
    """A name fit to offer for download: no folders, no control characters, not too long."""
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().strip(".").strip()
    if not name:
        return None
    if len(name) > _FILENAME_MAX:
        _stem, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: _FILENAME_MAX - len(keep) - 1] + ("." + keep if keep else "")
    return name


def _inner_message(part: Message) -> Message | None:
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return inner[0]
    return None


def _plain_header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    return "" if value is None else _unescape(str(value), None)


def _eml_name(inner: Message | None) -> str:
    subject = " ".join(_plain_header(inner, "Subject").split()) if inner is not None else ""
    return (safe_filename(subject[:80]) or "forwarded message") + ".eml"


def _serialise(msg: Message) -> bytes:
    try:
        return msg.as_bytes(policy=policy.compat32)
    except Exception:
        try:
            return str(msg).encode("utf-8", "surrogateescape")
        except Exception:
            return b""


def _attachment(
    part: Message, ctype: str, filename: str | None, inner: Message | None = None
) -> InboundAttachment:
    data = _serialise(inner) if inner is not None else _payload(part)
    if not data and isinstance(part.get_payload(), list):
        # message/delivery-status, message/disposition-notification: blocks of fields.
        data = _delivery_status_text(part).encode("utf-8", "replace")
    try:
        content_id = str(part.get("Content-ID") or "").strip().strip("<>") or None
    except Exception:
        content_id = None
    disposition = _disposition(part)
    return InboundAttachment(
        filename=filename,
        content_type=ctype,
        data=data,
        content_id=content_id[:998] if content_id else None,
        inline=disposition == "inline" or (disposition == "" and content_id is not None),
    )


def _mark_referenced_inline(attachments: list[InboundAttachment], html: str | None) -> None:
    """A part the HTML shows through `cid:` is an inline image, whatever its disposition says."""
    if not html or "cid:" not in html.lower():
        return
    lowered = html.lower()
    for index, item in enumerate(attachments):
        if item.content_id and not item.inline and f"cid:{item.content_id.lower()}" in lowered:
            attachments[index] = InboundAttachment(
                item.filename, item.content_type, item.data, item.content_id, inline=True
            )


def _forwarded_text(inner: Message, defects: list[str]) -> str:
    """The text of a message forwarded as an attachment with nothing written around it."""
    inner_headers = _Headers(inner, [])
    body = _walk(inner, inner_headers, [])
    text = "\n\n".join(t.strip("\n") for t in body.texts if t.strip())
    if not text and body.htmls:
        text = html_to_text("\n".join(body.htmls))
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To"):
        value = inner_headers.text(name)
        if value:
            lines.append(f"{name}: {' '.join(value.split())}")
    return _clip("\n".join(lines) + "\n\n" + text, defects, "forwarded text")


def _degraded(raw: bytes, defects: list[str]) -> tuple[Message, _Body]:
    end = raw.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = raw.find(b"\n\n"), 2
    head, rest = (raw, b"") if end < 0 else (raw[:end], raw[end + sep :])
    msg = BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n")
    text = charsets.decode(rest[: MAX_TEXT_CHARS * 2], "utf-8", defects).replace("\r\n", "\n")
    return msg, _Body(texts=[text])


# -- delivery status notifications (RFC 3464) ------------------------------------------


def _delivery_status_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = []
        for block in payload:
            if isinstance(block, Message):
                blocks.append(
                    "".join(f"{k}: {v}\n" for k, v in block.raw_items()).replace("\r\n", "\n")
                )
        return "\n".join(blocks)
    return _payload(part).decode("utf-8", "replace")


def _read_delivery_status(part: Message, body: _Body, defects: list[str]) -> None:
    text = _delivery_status_text(part)
    blocks = [b for b in re.split(r"\r?\n[ \t]*\r?\n", text) if b.strip()]
    for index, block in enumerate(blocks):
        fields = HeaderParser(policy=policy.compat32).parsestr(block.strip() + "\n")
        if index == 0 and fields.get("Reporting-MTA"):
            body.reporting_mta = _typed_value(str(fields.get("Reporting-MTA")))[:300]
            continue
        recipient = fields.get("Final-Recipient") or fields.get("Original-Recipient")
        action = str(fields.get("Action", "") or "").strip().lower()
        if not recipient or not action:
            continue
        address = normalise_address(_typed_value(str(recipient)))
        if "@" not in address or len(body.statuses) >= _MAX_DSN_RECIPIENTS:
            continue
        status = str(fields.get("Status", "") or "").strip().split(" ")[0][:20] or None
        diagnostic = " ".join(str(fields.get("Diagnostic-Code", "") or "").split())
        body.statuses.append(
            RecipientStatus(address[:320], action[:20], status, _typed_value(diagnostic)[:1000])
        )


def _typed_value(value: str) -> str:
    """`rfc822; ann@example.com` -> `ann@example.com` (RFC 3464 typed fields)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value.strip()


def _report(body: _Body, headers: _Headers) -> DeliveryReport | None:
    failed = headers.text("X-Failed-Recipients")
    statuses = list(body.statuses)
    if not statuses and failed:
        # Exim and others without a DSN: X-Failed-Recipients lists permanent failures.
        for _name, address in email.utils.getaddresses([failed]):
            if "@" in address:
                statuses.append(RecipientStatus(normalise_address(address), "failed", "5.0.0"))
    if not statuses and not body.is_report:
        return None
    original = body.original_id
    if original is None:
        for text in body.texts:
            match = _ORIGINAL_ID.search(text)
            if match:
                original = match.group(1)
                break
    return DeliveryReport(statuses, original, body.reporting_mta)
