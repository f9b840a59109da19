"""The daemon's configuration: `config/ingestd.yaml`, validated, with env overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from ingest import yamlsource
from ingest.calendars import CalendarConfig, load_calendars
from ingest.channelconfig import SmsConfig, TelegramConfig, TwitterConfig
from ingest.section import Section
from ingest.slaconfig import SlaConfig
from ingest.yamlsource import Problem, SourceError

DEFAULT_PATH = Path("config/ingestd.yaml")

# The values a deployment changes most, settable without editing the file.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "INGESTD_DATABASE_URL": ("database", "url"),
    "INGESTD_SMTP_HOST": ("smtp", "host"),
    "INGESTD_SMTP_PORT": ("smtp", "port"),
    "INGESTD_HTTP_HOST": ("http", "host"),
    "INGESTD_HTTP_PORT": ("http", "port"),
    "INGESTD_LOG_LEVEL": ("logging", "level"),
    "INGESTD_LOG_FORMAT": ("logging", "format"),
}


class DatabaseConfig(Section):
    url: str = "sqlite:///var/ingestd.db"
    # FULL survives power loss as well as a killed process; the journal's group
    # commit keeps the fsync cost per batch rather than per message.
    sqlite_synchronous: Literal["off", "normal", "full", "extra"] = "full"
    busy_timeout: float = Field(5.0, gt=0, description="seconds to wait for a locked database")
    pool_size: int = Field(5, ge=1)
    connect_timeout: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = value.partition(":")[0].lower()
        backend = scheme.partition("+")[0]
        if backend not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"unsupported database {scheme!r}: use sqlite:///FILE or postgresql://..."
            )
        if backend == "sqlite" and value.rstrip("/").endswith((":memory:", "sqlite:")):
            raise ValueError("SQLite needs a file (sqlite:///var/ingestd.db): connections share it")
        return value


class SmtpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)
    hostname: str | None = None
    addresses: list[str] = Field(default_factory=lambda: ["support@example.com"], min_length=1)
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(100, ge=1)
    timeout: float = Field(60.0, gt=0, description="idle seconds before a client is dropped")
    # support+anything@ reaches support@: replies to our Reply-To tokens arrive that way.
    plus_addresses: bool = True

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        out = []
        for address in value:
            local, at, domain = address.strip().rpartition("@")
            if not at or not local or not domain or " " in address.strip():
                raise ValueError(f"{address!r} is not an email address")
            out.append(f"{local}@{domain.lower()}".lower())
        return out


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class QueueConfig(Section):
    name: str = Field(min_length=1)
    description: str = ""
    owner_email: str | None = None


class OutboxConfig(Section):
    batch_size: int = Field(50, ge=1, le=1000, description="rows claimed per run")
    max_attempts: int = Field(12, ge=1, description="send attempts before a row fails for good")
    backoff_base_seconds: float = Field(60.0, ge=0, description="first retry delay, doubled …")
    backoff_max_seconds: float = Field(3600.0, ge=0, description="… up to this")
    poll_interval: float = Field(5.0, gt=0, description="seconds between looks for due rows")
    lease_seconds: float = Field(
        300.0, gt=0, description="how long a claimed row is reserved for its deliverer"
    )
    send_timeout: float = Field(120.0, gt=0, description="hard limit on one send, all steps")

    @model_validator(mode="after")
    def _lease_covers_a_send(self) -> OutboxConfig:
        if self.lease_seconds <= self.send_timeout:
            raise ValueError("lease_seconds must be longer than send_timeout")
        return self


DEFAULT_RELAY_PORTS = {"none": 25, "starttls": 587, "tls": 465}


def _check_address(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in value.strip()):
        raise ValueError(f"{value!r} is not an email address")
    return value.strip()


class OutboundEmailConfig(Section):
    """The SMTP relay that outbound mail goes through, and how it is signed."""

    enabled: bool = False
    host: str = "localhost"
    port: int | None = Field(None, ge=1, le=65535, description="default: 25, 587 or 465")
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(30.0, gt=0, description="seconds per SMTP step")
    ca_file: Path | None = Field(None, description="CA bundle for the relay's certificate")
    local_hostname: str | None = Field(None, description="EHLO name; default: this host's FQDN")
    from_address: str = "support@example.com"
    from_name: str | None = None
    envelope_from: str | None = Field(None, description="MAIL FROM; default: from_address")
    message_id_domain: str | None = Field(None, description="default: from_address's domain")
    # Reply-To: support+<signed token>@domain, so a reply finds its case whatever
    # the client does to the subject and the threading headers.
    reply_token: bool = True
    reply_token_days: int | None = Field(None, ge=1, description="token lifetime; None: forever")

    @field_validator("from_address", "envelope_from")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @model_validator(mode="after")
    def _credentials(self) -> OutboundEmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        if self.username is not None and self.security == "none":
            raise ValueError(
                "credentials would cross the network in clear: use security starttls or tls"
            )
        return self

    @property
    def relay_port(self) -> int:
        return self.port or DEFAULT_RELAY_PORTS[self.security]

    @property
    def id_domain(self) -> str:
        return self.message_id_domain or self.from_address.rpartition("@")[2].lower()


# --- IMAP mailboxes (issue 4) ---------------------------------------------
DEFAULT_IMAP_PORTS = {"none": 143, "starttls": 143, "tls": 993}
_LOOPBACK = ("localhost", "127.", "::1", "[::1]")


class ImapMailboxConfig(Section):
    """One mailbox that ingestd reads: where, as whom, and how it acknowledges."""

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$",
        description="unique; names the cursor and the lease",
    )
    enabled: bool = True
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="default: 993 (tls) or 143")
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str = Field(min_length=1)
    password: SecretStr
    ca_file: Path | None = Field(None, description="CA bundle for the server's certificate")
    folder: str = Field("INBOX", min_length=1)
    processed_folder: str | None = Field(
        None, description="move mail here after the commit; default: only flag it \\Seen"
    )
    initial_scan: Literal["unseen", "all"] = Field(
        "unseen", description="what a first look (or a UIDVALIDITY change) takes"
    )
    idle: bool = True
    idle_timeout: float = Field(
        600.0, ge=1, le=1740, description="seconds before IDLE is re-issued (under 29 minutes)"
    )
    poll_interval: float = Field(60.0, gt=0, description="seconds between polls without IDLE")
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    timeout: float = Field(60.0, gt=0, description="seconds per network step")

    @model_validator(mode="after")
    def _coherent(self) -> ImapMailboxConfig:
        if self.security == "none" and not self.host.lower().startswith(_LOOPBACK):
            raise ValueError(
                "security none would send the password in clear: use tls or starttls "
                "(none is allowed for a server on this host only)"
            )
        if self.processed_folder is not None and self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder")
        return self

    @property
    def server_port(self) -> int:
        return self.port or DEFAULT_IMAP_PORTS[self.security]


class ImapConfig(Section):
    mailboxes: list[ImapMailboxConfig] = Field(default_factory=list)
    degraded_after: float = Field(
        300.0, ge=0, description="seconds a mailbox may fail before /healthz says degraded"
    )
    lease_seconds: float = Field(30.0, ge=3, description="how long a mailbox's lease lasts")
    max_backoff: float = Field(300.0, ge=1, description="longest wait between reconnects")

    @field_validator("mailboxes")
    @classmethod
    def _unique(cls, value: list[ImapMailboxConfig]) -> list[ImapMailboxConfig]:
        names = [m.name.lower() for m in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"mailbox names must be unique: {', '.join(duplicates)}")
        return value

    def mailbox(self, name: str) -> ImapMailboxConfig | None:
        return next((m for m in self.mailboxes if m.name.lower() == name.lower()), None)


class SigningConfig(Section):
    """The secret behind signed tokens (reply addresses, later survey links)."""

    # Unset: one is generated at first start and kept in the store, shared by all daemons.
    secret: SecretStr | None = Field(None, description="at least 16 characters; use ${ENV}")
    previous_secrets: list[SecretStr] = Field(default_factory=list)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the signing secret needs at least 16 characters")
        return value


class AutomaticMailConfig(Section):
    """Limits on mail ingestd sends by itself (auto-responses, SLA and survey mail)."""

    max_per_address: int = Field(5, ge=1, description="automatic mails to one address per window")
    max_per_case: int = Field(5, ge=1, description="automatic mails about one case per window")
    window_minutes: float = Field(60.0, gt=0)
    # A hard bounce (5.x.x) stops automatic mail to the address for this long.
    suppress_hard_bounces_days: float = Field(30.0, ge=0)


class PipelineConfig(Section):
    batch_size: int = Field(100, ge=1, le=10_000)
    max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(30.0, ge=0)
    retry_max_seconds: float = Field(3600.0, ge=0)
    poll_interval: float = Field(1.0, gt=0, description="seconds between looks for work")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Config(Section):
    database: DatabaseConfig = DatabaseConfig()
    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    queues: list[QueueConfig] = Field(
        default_factory=lambda: [QueueConfig(name="General Support")], min_length=1
    )
    default_queue: str = "General Support"
    pipeline: PipelineConfig = PipelineConfig()
    logging: LoggingConfig = LoggingConfig()
    rules_dir: Path = Path("rules")
    # What becomes of a message no record-creation item matches.
    rules_unmatched: Literal["create_case", "skip"] = "create_case"
    # The zone that rule conditions on `time.weekday` and `time.hour` read.
    rules_timezone: str = "UTC"
    rules_reload_interval: float = Field(1.0, gt=0, description="seconds between looks for edits")
    templates_dir: Path = Path("templates")
    calendars: dict[str, CalendarConfig] = Field(default_factory=dict)
    outbox: OutboxConfig = OutboxConfig()
    outbound_email: OutboundEmailConfig = OutboundEmailConfig()
    imap: ImapConfig = ImapConfig()
    sla: SlaConfig = SlaConfig()
    telegram: TelegramConfig = TelegramConfig()
    sms: SmsConfig = SmsConfig()
    twitter: TwitterConfig = TwitterConfig()
    signing: SigningConfig = SigningConfig()
    automatic_mail: AutomaticMailConfig = AutomaticMailConfig()
    source: str = Field("<defaults>", exclude=True)

    @field_validator("rules_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return value

    @model_validator(mode="after")
    def _queues(self) -> Config:
        names = [q.name for q in self.queues]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"queue names must be unique: {', '.join(duplicates)}")
        if self.default_queue not in names:
            raise ValueError(f"default_queue {self.default_queue!r} is not one of queues: {names}")
        return self


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("INGESTD_CONFIG") or DEFAULT_PATH)


def load(path: Path, env: dict[str, str] | None = None) -> Config:
    """Read, interpolate, override and validate; raise SourceError naming file and line."""
    environ = dict(os.environ) if env is None else env
    doc = yamlsource.load(path, environ)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise SourceError([Problem(doc.path, 1, "", "the configuration must be a mapping")])
    overridden: dict[tuple[str | int, ...], str] = {}
    for variable, loc in ENV_OVERRIDES.items():
        if environ.get(variable):
            section = doc.data.setdefault(loc[0], {})
            if not isinstance(section, dict):
                continue
            section[loc[1]] = environ[variable]
            overridden[loc] = variable
    try:
        config = Config.model_validate({**doc.data, "source": doc.path})
    except ValidationError as exc:
        problems = []
        for problem in doc.problems_from(exc):
            override = next(
                (v for loc, v in overridden.items() if problem.field == ".".join(map(str, loc))),
                None,
            )
            if override:
                problem = Problem(f"environment {override}", None, problem.field, problem.message)
            problems.append(problem)
        raise SourceError(problems) from exc
    # Holiday files are read now, so that a broken one stops `ingestd config`
    # and start-up with its file and line, not a traceback later.
    calendars = load_calendars(dict(config.calendars), path.parent)
    # SLA items name calendars and hold conditions: checked here, with their lines.
    from ingest.sla import SlaBook

    SlaBook.from_config(config, calendars, doc)
    return config
