"""What the chat senders share: replies sent in parts, and the account a row names.

Sending in parts: a retry after a failed part sends only the rest.

An outbox row is one message to us, but a channel may need several sends
(a long Telegram text, an SMS over 1,600 characters, an X thread). The parts
already sent are remembered in memory per row: a retry in this process skips
them. After a restart the whole row is sent again; that is the outbox's
at-least-once window (see ingest/outbox.py), unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from ingest.outbox import PermanentFailure

T = TypeVar("T")

# Sends part number `index` (from 0); gets the id of the part sent before it (an X
# thread replies to it), returns the id of the part it sent.
SendOne = Callable[[int, str, str | None], Awaitable[str]]
_MAX_REMEMBERED = 10_000


class PartProgress:
    def __init__(self) -> None:
        self._sent: dict[int, list[str]] = {}

    async def send(self, row_id: int, parts: Sequence[str], send_one: SendOne) -> list[str]:
        """Send the parts not yet sent for this row; return every part's id, in order."""
        if row_id not in self._sent and len(self._sent) >= _MAX_REMEMBERED:
            self._sent.pop(next(iter(self._sent)))  # rows abandoned for good: the oldest
        done = self._sent.setdefault(row_id, [])
        for index in range(len(done), len(parts)):
            done.append(await send_one(index, parts[index], done[-1] if done else None))
        del self._sent[row_id]
        return done


def configured(items: Mapping[str, T], name: str | None, what: str) -> T:
    """The configured bot or account a row names; with only one configured, that one."""
    if not name and len(items) == 1:
        return next(iter(items.values()))
    if not name or name not in items:
        known = ", ".join(items) or "none"
        raise PermanentFailure(f"no configured {what} {name!r} (configured: {known})")
    return items[name]
