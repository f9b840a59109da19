"""Splitting a reply that is longer than a channel allows into parts it accepts.

Cuts at the last paragraph break, else line break, else sentence end, else
space that fits; only a single word longer than the limit is cut inside.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

Measure = Callable[[str], int]

_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", " ")
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
# twitter-text v3: these code point ranges weigh 1, everything else 2; a URL is 23.
_LIGHT = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))
_URL_WEIGHT = 23
X_POST_LIMIT = 280  # weighted characters
X_DM_LIMIT = 10_000
TELEGRAM_LIMIT = 4096  # UTF-16 code units, after entity parsing; we send plain text
SMS_LIMIT = 1600  # Twilio's limit for one Messages request


def x_weighted_length(text: str) -> int:
    """A post's length as X counts it: most CJK and emoji count double, a URL 23."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for match in _URL.finditer(text):
        total += _weigh(text[position : match.start()]) + _URL_WEIGHT
        position = match.end()
    return total + _weigh(text[position:])


def _weigh(text: str) -> int:
    return sum(1 if any(lo <= ord(c) <= hi for lo, hi in _LIGHT) else 2 for c in text)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Parts of `text`, each at most `limit` by `measure`, whitespace at the cuts dropped."""
    if limit < 1:
        raise ValueError("limit must be positive")
    text = text.strip()
    parts: list[str] = []
    while text:
        if measure(text) <= limit:
            parts.append(text)
            break
        head = _longest_prefix(text, limit, measure)
        cut = _cut_point(head)
        part, text = text[:cut].rstrip(), text[cut:].lstrip()
        parts.append(part)
    return parts


def split_numbered(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Like `split`, with " (i/n)" after each part when there is more than one."""
    parts = split(text, limit, measure)
    if len(parts) < 2:
        return parts
    # Leave room for the longest suffix, then split again so every part fits with it.
    room = limit - measure(f" ({len(parts) + 9}/{len(parts) + 9})")
    parts = split(text, max(room, 1), measure)
    return [f"{part} ({i}/{len(parts)})" for i, part in enumerate(parts, 1)]


def _longest_prefix(text: str, limit: int, measure: Measure) -> str:
    """The longest prefix within the limit (binary search: measures need not be additive)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _cut_point(head: str) -> int:
    for mark in _BREAKS:
        at = head.rfind(mark)
        # A break in the first third would leave a part that is mostly empty.
        if at > len(head) // 3:
            return at + len(mark.rstrip(" ")) if mark.strip() else at
    return len(head)
