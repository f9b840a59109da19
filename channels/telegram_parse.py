"""A journaled Telegram update (and the files fetched with it) to an InboundMessage.

The journal row's raw bytes are JSON: `{"update": <the update as Telegram sent
it>, "files": [<each file of the message, fetched before journaling>]}`, so
processing never waits on the network and a dead letter can be replayed.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from telegram import (
    Animation,
    Audio,
    Contact,
    Document,
    Location,
    Message,
    PhotoSize,
    Sticker,
    Update,
    User,
    Venue,
    Video,
    VideoNote,
    Voice,
)

from ingest import commands
from ingest.message import InboundAttachment, InboundMessage, ReplyRoute

CHANNEL = "telegram"
# Headers of a Telegram outbox row (see docs/channels.md, "Outbox rows").
BOT_HEADER = "Telegram-Bot"
REPLY_TO_HEADER = "Telegram-Reply-To"


@dataclass(frozen=True)
class FileRef:
    """A file a message carries, as the Bot API describes it (before fetching)."""

    file_id: str
    file_unique_id: str
    kind: str  # photo | document | audio | voice | video | video_note | animation
    name: str
    content_type: str
    size: int | None


def message_of(update: Update) -> tuple[Message | None, bool]:
    """The customer message in an update, and whether it is an edit."""
    if update.message is not None:
        return update.message, False
    if update.edited_message is not None:
        return update.edited_message, True
    return None, False


def files_of(message: Message, max_size: int) -> list[FileRef]:
    """The files worth fetching: for a photo, the largest size within `max_size`."""
    found: list[FileRef] = []
    if message.photo:
        fitting = [p for p in message.photo if p.file_size is None or p.file_size <= max_size]
        best: PhotoSize = max(fitting or message.photo, key=lambda p: p.width * p.height)
        found.append(_ref(best, "photo", f"photo_{message.message_id}.jpg", "image/jpeg"))
    media: list[tuple[Any, str, str, str]] = [
        (message.document, "document", "document", "application/octet-stream"),
        (message.audio, "audio", "audio", "audio/mpeg"),
        (message.voice, "voice", "voice.ogg", "audio/ogg"),
        (message.video, "video", "video.mp4", "video/mp4"),
        (message.video_note, "video_note", "video_note.mp4", "video/mp4"),
        (message.animation, "animation", "animation.mp4", "video/mp4"),
    ]
    for item, kind, default_name, default_type in media:
        if item is None or (kind == "document" and message.animation is not None):
            continue  # Telegram sends an animation as a document too
        assert isinstance(item, Document | Audio | Voice | Video | VideoNote | Animation)
        name = getattr(item, "file_name", None) or default_name
        content_type = getattr(item, "mime_type", None) or default_type
        found.append(_ref(item, kind, name, content_type))
    return found


def _ref(item: Any, kind: str, name: str, content_type: str) -> FileRef:
    return FileRef(item.file_id, item.file_unique_id, kind, name, content_type, item.file_size)


def message_key(bot_id: str, chat_id: int, message_id: int) -> str:
    """How a Telegram message is known in activities: unique per bot and chat."""
    return f"tg:{bot_id}:{chat_id}:{message_id}"


def parse(raw: bytes, meta: dict[str, Any]) -> InboundMessage:
    doc = json.loads(raw)
    update = Update.de_json(doc["update"], None)
    message, edited = message_of(update)
    if message is None:
        raise ValueError(f"update {update.update_id} carries no message")
    bot_id = str(meta.get("bot_id") or "")
    bot_name = str(meta.get("bot") or "")
    bot_username = meta.get("bot_username")
    chat = message.chat
    user = message.from_user
    sender = str(user.id) if user is not None else f"chat:{chat.id}"
    key = message_key(bot_id, chat.id, message.message_id)

    attachments, notes = _attachments(doc.get("files") or [])
    text = message.text or message.caption or ""
    command = None if edited else _command(text, bot_username)
    if not text:
        text = _describe(message)
    text = "\n".join([text, *notes]).strip()

    headers = {BOT_HEADER: bot_name}
    if chat.type != "private":
        # In a group, say which message the answer is about.
        headers[REPLY_TO_HEADER] = str(message.message_id)
    sent = message.edit_date if edited and message.edit_date else message.date
    reply_to = message.reply_to_message
    return InboundMessage(
        channel=CHANNEL,
        external_id=str(meta.get("external_id") or f"{bot_id}:{update.update_id}"),
        identity_kind="telegram",
        sender=sender,
        sender_name=user.full_name if user is not None else chat.title,
        sender_handle=user.username if user is not None else None,
        recipients=[f"@{bot_username}"] if bot_username else [],
        text=text,
        attachments=attachments,
        # An edit is a message of its own, answering the message it edits.
        message_id=f"{key}@{int(sent.timestamp())}" if edited else key,
        in_reply_to=key
        if edited
        else (message_key(bot_id, chat.id, reply_to.message_id) if reply_to else None),
        sent_at=sent.astimezone(UTC) if sent else None,
        language=_language(user),
        command=command if command in commands.KNOWN else None,
        fields={
            "telegram.chat_type": chat.type,
            "telegram.username": user.username if user is not None else None,
            "telegram.bot": bot_username or bot_name,
            "telegram.edited": edited,
            "telegram.command": command,
            "telegram.chat_title": chat.title,
            "telegram.is_bot": bool(user.is_bot) if user is not None else False,
        },
        reply_route=ReplyRoute(str(chat.id), headers),
    )


def _language(user: User | None) -> str | None:
    """The language of the user's Telegram app: the best hint of the language they write."""
    code = user.language_code if user is not None else None
    return code.lower() if code else None


def _command(text: str, bot_username: str | None) -> str | None:
    """`/start`, `/end@our_bot` ...: the command, if it is addressed to us."""
    if not text.startswith("/"):
        return None
    word = text.split(maxsplit=1)[0][1:]
    name, _, target = word.partition("@")
    if target and bot_username and target.lower() != bot_username.lower():
        return None  # another bot's command in a group
    return name.lower() or None


def _attachments(files: list[dict[str, Any]]) -> tuple[list[InboundAttachment], list[str]]:
    found: list[InboundAttachment] = []
    notes: list[str] = []
    for item in files:
        name = str(item.get("name") or "file")
        data = item.get("data")
        if data is None:
            notes.append(f"[{item.get('kind', 'file')} {name} not stored: {item.get('note')}]")
            continue
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            notes.append(f"[{name} not stored: its journaled data is corrupt]")
            continue
        found.append(
            InboundAttachment(
                filename=name,
                content_type=str(item.get("content_type") or "application/octet-stream"),
                data=content,
            )
        )
    return found, notes


def _describe(message: Message) -> str:
    """Words for a message without text, so the activity says what arrived."""
    item = message.effective_attachment
    if isinstance(item, Location):
        return f"[location {item.latitude:.5f}, {item.longitude:.5f}]"
    if isinstance(item, Venue):
        return f"[venue {item.title}, {item.address}]"
    if isinstance(item, Contact):
        return f"[contact {item.first_name} {item.last_name or ''} {item.phone_number}]".strip()
    if isinstance(item, Sticker):
        return f"[sticker {item.emoji or ''}]".replace(" ]", "]")
    if message.photo:
        return "[photo]"
    for kind in ("document", "audio", "voice", "video", "video_note", "animation"):
        if getattr(message, kind, None) is not None:
            return f"[{kind.replace('_', ' ')}]"
    return "[message without text]"
