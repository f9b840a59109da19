"""Separating what a customer wrote this time from the history they quoted and their signature.

An activity keeps the full text (`text`) and, for display, the new text
(`new_text`) and the signature (`signature`). The split is conservative: when
nothing marks a quote, the whole text is new; a forwarded message is never
cut (what was forwarded is usually the point of the mail).

Recognised, in this order:
- a reply header: "On … wrote:" (and its German, French, Spanish, Italian,
  Dutch, Portuguese, Scandinavian, Polish, Russian, Turkish, Japanese and
  Chinese forms, over up to three wrapped lines); Outlook's
  "-----Original Message-----" in several languages; a line of underscores or
  a bare "From: … / Sent: … / To: … / Subject: …" header block (Outlook,
  also in translation);
- a block of `>`-quoted lines at the end (HTML blockquotes arrive as `>`
  lines too, see channels/htmltext.py), with the line that introduces it;
- a signature after a `-- ` line, or a phone's "Sent from my iPhone".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINES = 20_000  # lines examined; a longer text keeps the rest as it is
# The fullwidth colon ends CJK attributions.
_COLONS = (":", "\uff1a")
_WROTE = (
    r"wrote|schrieb|a écrit|escribió|escribio|ha scritto|scrisse|schreef|escreveu|"
    r"skrev|kirjoitti|napisał|napisal|написал|написала|пишет|yazd\u0131|έγραψε|írta|"
    r"napsal|a scris|kirjutas|rašė|wrote the following"
)
_ATTRIBUTION = re.compile(rf"^(?P<lead>.{{0,400}}?)\b({_WROTE})\s*[:\uff1a]?\s*$", re.IGNORECASE)
_OPENER = re.compile(r"^(on|am|le|el|il|op|em|den|d\.|på|w dniu|dne|в|el día|a)\b", re.IGNORECASE)
_ATTRIBUTION_CJK = re.compile(r"^.{0,200}(写道|寫道|のメッセージ|님이 작성|에 작성)[:\uff1a]?\s*$")
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(original message|original-nachricht|ursprüngliche nachricht|"
    r"message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht|"
    r"mensagem original|opprinnelig melding|originalmeddelande|alkuperäinen viesti|"
    r"wiadomość oryginalna|исходное сообщение|original meddelelse)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_FROM = re.compile(r"^\s*\**(from|von|de|da|van|från|fra|od|от|lähettäjä)\s*\**\s*:", re.I)
_SENT = re.compile(
    r"^\s*\**(sent|date|gesendet|datum|envoyé|date d'envoi|enviado|enviado el|inviato|"
    r"data|verzonden|skickat|sendt|wysłano|отправлено|lähetetty|to|an|à|para|a|aan|till|til|"
    r"do|кому|subject|betreff|objet|asunto|oggetto|onderwerp|assunto|ämne|emne|temat|тема)"
    r"\s*\**\s*:",
    re.I,
)
_FORWARD = re.compile(
    r"^\s*(-{3,}\s*(forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|messaggio inoltrato|doorgestuurd bericht)|begin forwarded message:)",
    re.IGNORECASE,
)
_MOBILE = re.compile(
    r"^\s*(sent from my \S.{0,40}|sent from (mail|outlook|yahoo mail) for \S.{0,30}|"
    r"get outlook for \S.{0,30}|von meinem \S.{0,40} gesendet|envoyé de mon \S.{0,40}|"
    r"enviado desde mi \S.{0,40}|inviato da(l mio)? \S.{0,40}|verzonden (vanaf|met) mijn \S.{0,40}|"
    r"skickat från min \S.{0,40}|sendt fra min \S.{0,40}|wysłane z mojego \S.{0,40})\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Split:
    new: str  # what the sender wrote this time, without signature
    quoted: str  # the history they quoted, from its header on
    signature: str


def split(text: str) -> Split:
    lines = text.split("\n")
    head, tail = lines[:MAX_LINES], lines[MAX_LINES:]
    forward = next((i for i, line in enumerate(head) if _FORWARD.match(line)), None)
    cut = _quote_start(head[:forward] if forward is not None else head)
    if forward is not None and cut is None:
        # What was forwarded is the message: nothing in it is history or signature.
        return Split(text.strip("\n"), "", "")
    if cut is None:
        new_lines, quoted_lines = _trailing_quote(head)
    else:
        new_lines, quoted_lines = head[:cut], head[cut:]
        if not "".join(new_lines).strip():
            # Bottom-posted: the answer follows the quote.
            new_lines = [ln for ln in head[cut + 1 :] if not ln.lstrip().startswith(">")]
            quoted_lines = [
                head[cut],
                *(ln for ln in head[cut + 1 :] if ln.lstrip().startswith(">")),
            ]
    new_lines, signature = _signature(new_lines)
    new = "\n".join(new_lines).strip("\n")
    if not new.strip():
        # Nothing we can call new: show everything rather than nothing.
        return Split(text.strip("\n"), "", "")
    return Split(new, "\n".join(quoted_lines + tail).strip("\n"), signature)


def _quote_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(">"):
            continue
        if _ORIGINAL.match(line):
            return i
        if _UNDERSCORES.match(line) and _header_block(lines, i + 1):
            return i
        if _FROM.match(line) and _header_block(lines, i):
            return i
        if _attribution(lines, i):
            return i
    return None


def _attribution(lines: list[str], i: int) -> bool:
    first = lines[i].strip()
    if not (_OPENER.match(first) or first[:1].isdigit()):
        return False  # an attribution starts "On <date>", "Am <date>", or with the date
    # Clients wrap long attributions: join up to three lines and look again.
    joined = ""
    for j in range(i, min(i + 3, len(lines))):
        part = lines[j].strip()
        if not part or part.startswith(">"):
            break
        joined = f"{joined} {part}".strip()
        if len(joined) > 500:
            return False
        ends = joined.endswith(_COLONS)
        if (ends or j == i) and _is_attribution(joined):
            return ends or _quote_follows(lines, j + 1)
    return False


def _is_attribution(text: str) -> bool:
    if _ATTRIBUTION_CJK.match(text):
        return True
    match = _ATTRIBUTION.match(text)
    if match is None:
        return False
    lead = match.group("lead")
    # "On <date>, <someone> wrote:" has a date; a sentence that merely says "wrote" has not.
    return any(c.isdigit() for c in lead) and (_OPENER.match(lead) is not None or "@" in lead)


def _quote_follows(lines: list[str], start: int) -> bool:
    for line in lines[start : start + 3]:
        if line.strip():
            return line.lstrip().startswith(">")
    return False


def _header_block(lines: list[str], start: int) -> bool:
    """A From: line followed by at least two more header-like lines (Sent, To, Subject)."""
    window = [ln for ln in lines[start : start + 8] if ln.strip()]
    if not window or not _FROM.match(window[0]):
        return False
    return sum(1 for ln in window[1:5] if _SENT.match(ln)) >= 2


def _trailing_quote(lines: list[str]) -> tuple[list[str], list[str]]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    start = end
    while start and (lines[start - 1].lstrip().startswith(">") or not lines[start - 1].strip()):
        start -= 1
    if start == end:
        return lines, []
    while start < end and not lines[start].strip():
        start += 1
    # The line that introduces the quote ("X wrote:") goes with it.
    intro = start - 1
    while intro >= 0 and not lines[intro].strip():
        intro -= 1
    if intro >= 0 and lines[intro].rstrip().endswith(":") and len(lines[intro]) < 300:
        start = intro
    return lines[:start], lines[start:]


def _signature(lines: list[str]) -> tuple[list[str], str]:
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line == "-- " or (line.rstrip() == "--" and len(lines) - i <= 12):
            return lines[:i], "\n".join(lines[i + 1 :]).strip("\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    if last >= 0 and _MOBILE.match(lines[last]):
        return lines[:last], lines[last].strip()
    return lines, ""
