"""Where an answer to a case goes: its channel, recipient and outbox headers.

For whoever writes reply rows to the outbox (the agent API): the latest
incoming activity of the case that says how to answer it on its channel
(a Telegram chat and bot, an SMS number pair, an X post or DM). Email
activities carry no route; their answer goes to the sender's address.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.message import ReplyRoute
from ingest.store.models import Activity, Case, Direction

_LOOK_BACK = 50  # incoming activities examined, newest first


@dataclass(frozen=True)
class Destination:
    channel: str
    route: ReplyRoute
    activity_id: int  # the message being answered


def destination(session: Session, case: Case) -> Destination | None:
    """How to answer the customer's latest message on the case, or None if it has none."""
    latest = session.execute(
        select(Activity)
        .where(Activity.case_id == case.id, Activity.direction == Direction.INCOMING.value)
        .order_by(Activity.created_at.desc(), Activity.id.desc())
        .limit(_LOOK_BACK)
    ).scalars()
    for activity in latest:
        route = activity.reply_route
        if route and route.get("recipient"):
            headers = {str(k): str(v) for k, v in (route.get("headers") or {}).items()}
            return Destination(
                activity.channel, ReplyRoute(str(route["recipient"]), headers), activity.id
            )
        if activity.channel == "email" and activity.sender:
            return Destination("email", ReplyRoute(activity.sender), activity.id)
    return None
