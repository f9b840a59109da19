"""YAML documents that remember where each value came from.

Support leads and operators edit YAML by hand; every error we report names the
file and line, so the loader keeps a map from each value's path to its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One error in a YAML document, located for a person to fix."""

    file: str
    line: int | None
    field: str
    message: str
    rule: str | None = None  # the rule item the problem is in, for rule files

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule!r}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "field": self.field,
            "message": self.message,
        }


class SourceError(Exception):
    """A document that cannot be used, with every problem found in it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class YamlDocument:
    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line of the value at `loc`, or of its nearest ancestor that exists."""
        parts = tuple(loc)
        while True:
            if parts in self.lines:
                return self.lines[parts]
            if not parts:
                return None
            parts = parts[:-1]

    def problems_from(self, error: ValidationError, prefix: Loc = ()) -> list[Problem]:
        out = []
        for item in error.errors():
            loc = prefix + tuple(p for p in item["loc"] if isinstance(p, str | int))
            out.append(
                Problem(
                    file=self.path,
                    line=self.line_of(loc),
                    field=dotted(loc),
                    message=_message(item),
                )
            )
        return out


def dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _message(item: Any) -> str:
    msg = str(item["msg"])
    if item["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    if item["type"] == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def parse(text: str, path: str, env: dict[str, str] | None = None) -> YamlDocument:
    """Parse YAML text, interpolating ${VAR} and ${VAR:-default} in strings."""
    node: yaml.Node | None = None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except ValueError as exc:  # PyYAML's timestamp constructor: an impossible date
        bad = _bad_timestamp(node, ()) if node is not None else None
        if bad is None:
            raise SourceError([Problem(path, None, "", f"not valid YAML: {exc}")]) from exc
        where, at, value = bad
        message = f"{value!r} reads as a date but is not one ({exc}); quote it if it is text"
        raise SourceError([Problem(path, at, dotted(where), message)]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SourceError([Problem(path, line, "", f"not valid YAML: {problem}")]) from exc
    doc = YamlDocument(path=path, data=data)
    problems: list[Problem] = []
    if node is not None:
        duplicates: list[tuple[Loc, int]] = []
        _index(node, (), doc.lines, duplicates)
        for where, line in duplicates:
            problems.append(
                Problem(path, line, dotted(where), "this key appears twice here; one would be lost")
            )
    doc.data = _interpolate(doc.data, (), doc, os.environ if env is None else env, problems)
    if problems:
        raise SourceError(problems)
    return doc


def load(path: Path, env: dict[str, str] | None = None) -> YamlDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise SourceError([Problem(str(path), None, "", f"not UTF-8 text: {exc}")]) from exc
    return parse(text, str(path), env)


def _index(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], duplicates: list[tuple[Loc, int]]
) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if isinstance(key, str):
                if key in seen:
                    # PyYAML keeps the last value silently: a lost condition.
                    duplicates.append(((*loc, key), key_node.start_mark.line + 1))
                seen.add(key)
                lines[(*loc, key)] = key_node.start_mark.line + 1
                _index(value_node, (*loc, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*loc, i), lines, duplicates)


def _bad_timestamp(node: yaml.Node, loc: Loc) -> tuple[Loc, int, str] | None:
    """Where an unquoted value that looks like a date is none (2026-02-30)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag != "tag:yaml.org,2002:timestamp":
            return None
        try:
            yaml.constructor.SafeConstructor().construct_yaml_timestamp(node)
        except ValueError:
            return loc, node.start_mark.line + 1, str(node.value)
        return None
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node.value, str) else str(key_node.value)
            found = _bad_timestamp(key_node, loc) or _bad_timestamp(value_node, (*loc, key))
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _bad_timestamp(item, (*loc, i))
            if found is not None:
                return found
    return None


def _interpolate(value: Any, loc: Loc, doc: YamlDocument, env: Any, problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), doc, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), doc, env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return str(env[name])
        if default is not None:
            return default
        problems.append(
            Problem(
                doc.path, doc.line_of(loc), dotted(loc), f"environment variable {name} is not set"
            )
        )
        return ""

    return _ENV_REF.sub(substitute, value)
