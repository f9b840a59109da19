"""A journaled X post (a mention) or direct message to an InboundMessage.

The journal row's raw bytes are JSON: `{"kind": "mention" | "dm", "item": <the
post or DM event as the API returned it>, "author": <the user object>,
"media": [<media objects>]}`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ingest.message import InboundAttachment, InboundMessage, ReplyRoute

CHANNEL = "twitter"
MENTION = "mention"
DM = "dm"
# Headers of an X outbox row (see docs/channels.md, "Outbox rows").
ACCOUNT_HEADER = "X-Account"
MODE_HEADER = "X-Mode"  # reply (default when X-Reply-To-Post is set) | dm | post
REPLY_TO_HEADER = "X-Reply-To-Post"
# Languages X gives posts it cannot classify: no language at all.
_NO_LANGUAGE = {"und", "zxx", "qme", "qht", "qam", "qst", "qct"}


def post_key(post_id: str) -> str:
    return str(post_id)


def dm_key(event_id: str) -> str:
    return f"dm:{event_id}"


def parse(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    doc = json.loads(raw)
    kind = doc.get("kind")
    item: dict[str, Any] = doc["item"]
    author: dict[str, Any] = doc.get("author") or {}
    account = str(meta.get("account") or "")
    our_username = meta.get("account_username")
    if kind == MENTION:
        sender = str(item["author_id"])
        replied = next(
            (r["id"] for r in item.get("referenced_tweets") or [] if r.get("type") == "replied_to"),
            None,
        )
        conversation = item.get("conversation_id")
        lang = item.get("lang")
        headers = {ACCOUNT_HEADER: account, MODE_HEADER: "reply", REPLY_TO_HEADER: str(item["id"])}
        message_id = post_key(item["id"])
        in_reply_to = post_key(replied) if replied else None
        # The thread's first post: every reply in a thread names it, so the whole
        # thread lands on the case of any post of it we already have.
        references = (
            [post_key(conversation)] if conversation and str(conversation) != item["id"] else []
        )
    elif kind == DM:
        sender = str(item["sender_id"])
        lang, conversation, replied = None, item.get("dm_conversation_id"), None
        headers = {ACCOUNT_HEADER: account, MODE_HEADER: "dm"}
        message_id, in_reply_to, references = dm_key(item["id"]), None, []
    else:
        raise ValueError(f"unknown X item kind {kind!r}")
    media = [_attachment(m) for m in doc.get("media") or []]
    return InboundMessage(
        channel=CHANNEL,
        external_id=str(meta.get("external_id") or message_id),
        identity_kind="x",
        sender=sender,
        sender_name=author.get("name"),
        sender_handle=author.get("username"),
        recipients=[f"@{our_username}"] if our_username else [],
        text=str(item.get("text") or ""),
        attachments=[a for a in media if a is not None],
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        sent_at=parse_time(item.get("created_at")),
        language=lang.lower() if lang and lang not in _NO_LANGUAGE else None,
        fields={
            "twitter.kind": kind,
            "twitter.lang": lang,
            "twitter.username": author.get("username"),
            "twitter.account": our_username or account,
            "twitter.conversation_id": conversation,
            "twitter.is_reply": replied is not None,
            "twitter.verified": author.get("verified"),
        },
        reply_route=ReplyRoute(sender, headers),
    )


def _attachment(media: dict[str, Any]) -> InboundAttachment | None:
    url = media.get("url")
    content_type = "image/jpeg" if media.get("type", "photo") == "photo" else None
    if not url:  # videos and GIFs: X gives a preview image, not the file
        url, content_type = media.get("preview_image_url"), "image/jpeg"
    if not url:
        return None
    return InboundAttachment(
        filename=str(url).rpartition("/")[2] or None,
        content_type=content_type or "application/octet-stream",
        data=b"",
        url=str(url),
    )


def parse_time(value: Any) -> datetime | None:
    """An X API timestamp ("2026-11-26T09:00:00.000Z") as an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None
