"""The `sla:` section of the configuration: policies, their KPI items, and the sweep.

A policy (Dynamics' SLA) is a list of items; each item promises one KPI, a
*first response by* or a *resolve by*, when its condition on the case holds,
with warn and fail durations counted in business time of a named calendar.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ingest.section import Section

KPIS = ("first_response", "resolution")
SUCCESS = {"first_response": "first_reply", "resolution": "resolved"}
# Status reasons as in ingest/store/models.py, which cannot be imported here
# (the store imports the configuration); a test keeps the two in step.
PAUSABLE = ("In Progress", "On Hold", "Waiting for Details", "Researching")
DEFAULT_PAUSE = ["On Hold", "Waiting for Details"]

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_UNITS = {
    "m": 1.0,
    "min": 1.0,
    "mins": 1.0,
    "minute": 1.0,
    "minutes": 1.0,
    "h": 60.0,
    "hour": 60.0,
    "hours": 60.0,
}


def parse_duration(value: Any) -> float:
    """Business minutes from `90`, `"15m"`, `"8h"` or `"1h 30m"`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of minutes or text such as 15m, 8h, 1h 30m")
    if isinstance(value, int | float):
        minutes = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = _PART.findall(text)
        if not parts or _PART.sub("", text).strip():
            raise ValueError(
                f"{value!r} is not a duration: write minutes or hours, e.g. 15m, 8h, 1h 30m"
            )
        minutes = 0.0
        for number, unit in parts:
            if unit in ("d", "day", "days", "w", "week", "weeks"):
                raise ValueError(
                    f"{value!r}: write business time in hours (a working day is as long as "
                    "the calendar says, so 'days' would be ambiguous); e.g. 9h, 24h"
                )
            if unit not in _UNITS:
                raise ValueError(f"{value!r}: unknown unit {unit!r} (use m or h)")
            minutes += float(number) * _UNITS[unit]
    else:
        raise ValueError("a duration is a number of minutes or text such as 15m, 8h, 1h 30m")
    if minutes <= 0:
        raise ValueError("a duration must be longer than zero")
    return minutes


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _address(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in value.strip()):
        raise ValueError(f"{value!r} is not an email address")
    return value.strip()


Addresses = Annotated[list[str], BeforeValidator(_one_or_many)]


class SlaItemConfig(Section):
    """One KPI promise: when `when` holds, `kpi` is due within `fail_after`."""

    name: str = Field(min_length=1, max_length=120)
    kpi: Literal["first_response", "resolution"]
    when: dict[str, Any] | None = None
    calendar: str | None = Field(None, description="default: the policy's; none = 24x7")
    warn_after: Duration | None = None
    fail_after: Duration
    success: Literal["first_reply", "resolved"] | None = Field(
        None, description="default: first_reply for first_response, resolved for resolution"
    )

    @model_validator(mode="after")
    def _warn_before_fail(self) -> SlaItemConfig:
        if self.warn_after is not None and self.warn_after >= self.fail_after:
            raise ValueError("warn_after must be shorter than fail_after")
        return self

    @property
    def success_on(self) -> str:
        return self.success or SUCCESS[self.kpi]


class SlaPolicyConfig(Section):
    description: str = ""
    calendar: str | None = Field(None, description="the items' calendar unless they name one")
    pause_on: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(
        default_factory=lambda: list(DEFAULT_PAUSE)
    )
    notify: Addresses = Field(default_factory=list)
    items: list[SlaItemConfig] = Field(min_length=1)

    @field_validator("pause_on")
    @classmethod
    def _pausable(cls, value: list[str]) -> list[str]:
        out = []
        for reason in value:
            match = next((r for r in PAUSABLE if r.lower() == str(reason).strip().lower()), None)
            if match is None:
                raise ValueError(
                    f"{reason!r} is not a status reason of an active case "
                    f"(one of: {', '.join(PAUSABLE)})"
                )
            out.append(match)
        return out

    @field_validator("notify")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @model_validator(mode="after")
    def _unique_items(self) -> SlaPolicyConfig:
        names = [i.name for i in self.items]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"item names must be unique in a policy: {', '.join(doubled)}")
        return self


class SlaConfig(Section):
    """SLA policies, which one applies by default, and the sweep that acts on deadlines."""

    policies: dict[str, SlaPolicyConfig] = Field(default_factory=dict)
    default_policy: str | None = Field(None, description="for cases whose entitlement names none")
    sweep_interval: float = Field(5.0, gt=0, description="seconds between sweeps")
    batch_size: int = Field(200, ge=1, le=10_000, description="KPIs moved per transaction")
    notify: Addresses = Field(default_factory=list, description="also told of every warning")
    case_url: str | None = Field(
        None,
        description="link to a case in mail, with {number}; default: the agent API on http",
    )

    @field_validator("notify")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @field_validator("case_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and "{number}" not in value:
            raise ValueError("case_url must contain {number}, e.g. https://help.example/c/{number}")
        return value

    @model_validator(mode="after")
    def _default_exists(self) -> SlaConfig:
        if self.default_policy is not None and self.default_policy not in self.policies:
            known = ", ".join(sorted(self.policies)) or "none are configured"
            raise ValueError(f"default_policy {self.default_policy!r} is not a policy ({known})")
        return self
