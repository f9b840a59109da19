"""Configuration of the chat channels: Telegram bots, SMS providers, X accounts.

Each is off until it lists at least one bot, account or provider. Secrets are
`SecretStr`, so `ingestd config` prints them redacted; use `${ENV_VAR}`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ingest.phone import NotAPhoneNumber, e164
from ingest.section import Section

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _unique(names: list[str], what: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{what} names must be unique: {', '.join(duplicates)}")


def _public_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


class TelegramBotConfig(Section):
    name: str = Field(pattern=_NAME, description="used in the webhook path and in outbox rows")
    token: SecretStr
    mode: Literal["polling", "webhook"] = "polling"
    webhook_secret: SecretStr | None = Field(
        None, description="sent back by Telegram in X-Telegram-Bot-Api-Secret-Token"
    )
    # This bot only: another Bot API server (a local one) than the section's.
    base_url: str | None = None
    base_file_url: str | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not _BOT_TOKEN.match(value.get_secret_value()):
            raise ValueError("not a bot token (123456789:AA... as BotFather gives it)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET_TOKEN.match(value.get_secret_value()):
            raise ValueError("1 to 256 characters, only A-Z, a-z, 0-9, _ and -")
        return value

    @property
    def bot_id(self) -> str:
        return self.token.get_secret_value().partition(":")[0]


class TelegramConfig(Section):
    bots: list[TelegramBotConfig] = Field(default_factory=list)
    base_url: str = Field(
        "https://api.telegram.org/bot", description="the Bot API; the token is appended"
    )
    base_file_url: str = "https://api.telegram.org/file/bot"
    local_mode: bool = Field(False, description="a local Bot API server (--local)")
    public_url: str | None = Field(None, description="where Telegram reaches our webhooks")
    poll_timeout: int = Field(30, ge=0, le=50, description="getUpdates long-poll seconds")
    max_file_size: int = Field(20 * 1024 * 1024, ge=0, description="larger files are not fetched")
    conversation_window_hours: float = Field(72.0, gt=0)
    start_template: str | None = "telegram_start"
    end_template: str | None = "telegram_end"
    lease_seconds: float = Field(15.0, gt=0, description="one daemon polls a bot at a time")

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        return _public_url(value)

    @model_validator(mode="after")
    def _bots(self) -> TelegramConfig:
        _unique([b.name for b in self.bots], "bot")
        _unique([b.bot_id for b in self.bots], "bot token")
        for bot in self.bots:
            if bot.mode == "webhook" and (bot.webhook_secret is None or not self.public_url):
                raise ValueError(
                    f"bot {bot.name!r}: webhook mode needs webhook_secret and telegram.public_url"
                )
        return self


class SmsAccountConfig(Section):
    name: str = Field(pattern=_NAME)
    provider: Literal["twilio", "generic"]
    numbers: list[str] = Field(default_factory=list, description="our numbers, E.164")
    # Twilio
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    messaging_service_sid: str | None = None
    api_base_url: str = "https://api.twilio.com"
    # A generic provider: HMAC-SHA256 webhooks in, JSON POSTs out
    secret: SecretStr | None = None
    send_url: str | None = None
    max_length: int = Field(1600, ge=70, le=10_000, description="characters per outbound SMS")

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, value: list[str]) -> list[str]:
        try:
            return [e164(n) for n in value]
        except NotAPhoneNumber as exc:
            raise ValueError(f"{exc}; write numbers in E.164, e.g. +14155550100") from None

    @model_validator(mode="after")
    def _provider(self) -> SmsAccountConfig:
        if self.provider == "twilio":
            if not self.account_sid or self.auth_token is None:
                raise ValueError("a twilio account needs account_sid and auth_token")
            if not self.numbers and not self.messaging_service_sid:
                raise ValueError("a twilio account needs numbers or a messaging_service_sid")
        elif self.secret is None:
            raise ValueError("a generic provider needs a secret (for the HMAC signatures)")
        return self

    @property
    def sender(self) -> str | None:
        """What outbound messages go out from: the first number."""
        return self.numbers[0] if self.numbers else None


class SmsConfig(Section):
    accounts: list[SmsAccountConfig] = Field(default_factory=list)
    public_url: str | None = Field(
        None, description="the URL prefix providers call, for signatures"
    )
    default_region: str | None = Field(None, description="reads national numbers, e.g. DE")
    replay_window_seconds: int = Field(300, ge=30, le=3600)
    conversation_window_hours: float = Field(72.0, gt=0)
    timeout: float = Field(30.0, gt=0, description="seconds per provider API request")

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        return _public_url(value)

    @model_validator(mode="after")
    def _accounts(self) -> SmsConfig:
        _unique([a.name for a in self.accounts], "SMS account")
        numbers = [n for a in self.accounts for n in a.numbers]
        _unique(numbers, "SMS number")
        return self


class TwitterAccountConfig(Section):
    name: str = Field(pattern=_NAME)
    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    mentions: bool = True
    direct_messages: bool = True


class TwitterConfig(Section):
    accounts: list[TwitterAccountConfig] = Field(default_factory=list)
    api_base_url: str = Field("https://api.twitter.com", description="the X API v2 host")
    poll_interval: float = Field(120.0, gt=0, description="seconds between polls")
    max_backoff_seconds: float = Field(900.0, gt=0)
    backfill_hours: float = Field(0.0, ge=0, description="history read on the very first poll")
    conversation_window_hours: float = Field(72.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    timeout: float = Field(30.0, gt=0, description="seconds per API request")

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _accounts(self) -> TwitterConfig:
        _unique([a.name for a in self.accounts], "X account")
        return self


def conversation_windows(
    telegram: TelegramConfig, sms: SmsConfig, twitter: TwitterConfig
) -> dict[str, timedelta]:
    return {
        "telegram": timedelta(hours=telegram.conversation_window_hours),
        "sms": timedelta(hours=sms.conversation_window_hours),
        "twitter": timedelta(hours=twitter.conversation_window_hours),
    }


def reply_channels(telegram: TelegramConfig, sms: SmsConfig, twitter: TwitterConfig) -> set[str]:
    """Chat channels with a configured sender, so their outbox rows can go out."""
    configured = {"telegram": telegram.bots, "sms": sms.accounts, "twitter": twitter.accounts}
    return {channel for channel, items in configured.items() if items}


def command_templates(telegram: TelegramConfig) -> dict[tuple[str, str], str]:
    templates = {("telegram", "start"): telegram.start_template}
    templates[("telegram", "end")] = telegram.end_template
    return {key: name for key, name in templates.items() if name}
