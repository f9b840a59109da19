"""Customer commands on chat channels: `/start` greets, `/end` closes the conversation.

As in Zammad's Telegram channel: `/start` is what Telegram sends when someone
opens the bot, so it is answered (from a template) but opens no case; `/end`
is the customer saying they are done, so their open case on that channel is
resolved, with a resolution activity saying who closed it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ingest import lifecycle
from ingest.message import InboundMessage
from ingest.sla import SlaBook
from ingest.store.models import (
    Activity,
    ActivityState,
    ActivityType,
    Case,
    CaseState,
    Direction,
    StatusReason,
)

START = "start"
END = "end"
KNOWN = frozenset({START, END})


def skip_reason(command: str) -> str:
    if command == END:
        return "/end: the customer has no open conversation on this channel"
    return f"/{command}: the customer opened the chat (greeted, no case)"


def close_conversation(
    session: Session, case: Case, msg: InboundMessage, now: datetime, book: SlaBook
) -> None:
    """Resolve the case at the customer's request; the next message starts a new conversation."""
    if case.state == CaseState.ACTIVE.value:
        # Through the lifecycle, so KPIs end and an entitlement term counts as for any resolution.
        lifecycle.resolve(session, case, now, book, StatusReason.PROBLEM_SOLVED.value)
    session.add(
        Activity(
            case=case,
            type=ActivityType.RESOLUTION.value,
            direction=Direction.INCOMING.value,
            channel=msg.channel,
            state=ActivityState.CLOSED.value,
            sender=msg.sender,
            recipients=[],
            subject="Closed by the customer",
            text=f"The customer ended the conversation with /{END} on {msg.channel}.",
            references=[],
            created_at=now,
        )
    )
    session.flush()
