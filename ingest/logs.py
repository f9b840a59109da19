"""Structured logs: one event per line, with the case number and channel when known."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's terminal-coloured copy of the message
}


# Values that must never reach a log line (bot tokens sit inside API URLs that
# libraries put in their error messages); registered by the channels using them.
_SECRETS: set[str] = set()


def redact_secret(value: str) -> None:
    """Mask `value` as *** wherever it appears in a log line from now on."""
    if len(value) >= 8:
        _SECRETS.add(value)


def _masked(line: str) -> str:
    for secret in _SECRETS:
        if secret in line:
            line = line.replace(secret, "***")
    return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _masked(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _masked(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter that would otherwise log each connection or SQL statement.
    # httpx logs every request URL at INFO, and a Telegram API URL holds the bot token.
    for noisy in (
        "mail.log",
        "uvicorn.access",
        "sqlalchemy",
        "alembic",
        "imapclient",
        "httpx",
        "httpcore",
        "telegram",
        "tweepy",
        "aiohttp",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
