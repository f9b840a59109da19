"""The daemon's configuration: `config/ingestd.yaml`, validated, with env overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest import yamlsource
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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    templates_dir: Path = Path("templates")
    source: str = Field("<defaults>", exclude=True)

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
        return Config.model_validate({**doc.data, "source": doc.path})
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
