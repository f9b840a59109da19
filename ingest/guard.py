"""Mail that must never be answered automatically: auto-replies, bounces, no-reply senders.

Answering an out-of-office notice with an acknowledgement that the other side
answers again is how mail loops start (RFC 3834 section 2 and 5).
"""

from __future__ import annotations

import re

from ingest.message import InboundMessage

# Subjects of auto-replies from systems that send no RFC 3834 header.
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|"
    r"abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|absence du bureau|"
    r"respuesta autom[áa]tica|fuera de la oficina|autosvar|automatisch antwoord|"
    r"afwezigheidsbericht|risposta automatica)\b",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
_NOREPLY_LOCAL = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|mailer-daemon|postmaster|bounces?)"
    r"([-+_.].*)?$",
    re.IGNORECASE,
)


def is_auto_reply(msg: InboundMessage) -> bool:
    headers = msg.headers
    submitted = headers.get("auto-submitted", "").strip().lower()
    if submitted and submitted != "no":
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers or "x-autoresponse" in headers:
        return True
    suppress = headers.get("x-auto-response-suppress", "").lower()
    if any(word in suppress for word in ("all", "oof", "autoreply")):
        return True
    if headers.get("precedence", "").strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if "list-id" in headers or "list-unsubscribe" in headers or "x-loop" in headers:
        return True
    return bool(_AUTO_SUBJECT.match(msg.subject))


def is_bounce(msg: InboundMessage) -> bool:
    content_type = msg.headers.get("content-type", "").lower()
    if "multipart/report" in content_type and "delivery-status" in content_type:
        return True
    return _BOUNCE_SENDER.match(msg.sender) is not None or "x-failed-recipients" in msg.headers


def is_noreply(address: str) -> bool:
    local = address.rpartition("@")[0] if "@" in address else ""
    return bool(local and _NOREPLY_LOCAL.match(local))


def never_answer(msg: InboundMessage) -> str | None:
    """Why no automatic mail may go to this message's sender, or None."""
    if is_bounce(msg):
        return "the message is a bounce"
    if is_auto_reply(msg):
        return "the message is an auto-reply"
    if is_noreply(msg.sender):
        return "the sender is a no-reply address"
    return None
