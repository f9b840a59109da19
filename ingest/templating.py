"""Jinja2 templates that support leads edit: sandboxed, checked when loaded.

A mail template is `templates/NAME.txt`: `Subject: ...` on its first line, a
blank line, then the text body; `templates/NAME.html`, if present, is the HTML
part (autoescaped). Rule expressions (a case title, say) use the same sandbox.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from ingest.yamlsource import Problem, SourceError

# What every mail template may use; each use adds its own (e.g. `case`).
_TEXT_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True
)
MAX_OUTPUT = 100_000  # characters; a runaway loop in a template must not fill the outbox


class RenderError(Exception):
    """A template failed while rendering (an undefined name, a sandbox refusal...)."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class MailTemplate:
    name: str
    path: str
    subject: Template
    text: Template
    html: Template | None
    names: frozenset[str]  # the top-level variables it uses

    def render(self, context: Mapping[str, Any]) -> Rendered:
        subject = _render(self.subject, context, self.path)
        return Rendered(
            subject=" ".join(subject.split())[:900],
            text=_render(self.text, context, self.path),
            html=_render(self.html, context, self.path) if self.html is not None else None,
        )


class Expression:
    """One `{{ ... }}` string from a rule, e.g. a case title."""

    def __init__(self, source: str, names: frozenset[str]) -> None:
        self.source = source
        self.names = names
        self.template = _TEXT_ENV.from_string(source)

    def render(self, context: Mapping[str, Any]) -> str:
        return _render(self.template, context, "expression").strip()


def _render(template: Template, context: Mapping[str, Any], where: str) -> str:
    try:
        out = template.render(context)
    except TemplateError as exc:
        raise RenderError(f"{where}: {exc}") from exc
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return out[:MAX_OUTPUT]


def _names(source: str, env: SandboxedEnvironment) -> frozenset[str]:
    ast: nodes.Template = env.parse(source)
    return frozenset(meta.find_undeclared_variables(ast))


def compile_expression(source: str, allowed: Iterable[str]) -> Expression:
    """Compile a rule expression; ValueError names a syntax error or an unknown variable."""
    try:
        names = _names(source, _TEXT_ENV)
        expression = Expression(source, names)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template error: {exc.message}") from None
    unknown = _unknown(names, allowed)
    if unknown:
        raise ValueError(unknown)
    return expression


def _unknown(names: Iterable[str], allowed: Iterable[str]) -> str | None:
    allowed = sorted(allowed)
    for name in sorted(names):
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return f"unknown name {name!r} in the template{hint} (known: {', '.join(allowed)})"
    return None


class Templates:
    """Every mail template in the templates directory, compiled."""

    def __init__(
        self,
        directory: Path,
        templates: dict[str, MailTemplate],
        digest: str,
        broken: frozenset[str] = frozenset(),
    ) -> None:
        self.directory = directory
        self.templates = templates
        self.digest = digest
        self.broken = broken  # templates that exist but did not compile

    def __contains__(self, name: str) -> bool:
        return name in self.templates

    def get(self, name: str) -> MailTemplate:
        return self.templates[name]

    def check_names(self, name: str, allowed: Iterable[str]) -> str | None:
        """A message if the template uses a variable its use does not provide."""
        return _unknown(self.templates[name].names, allowed)

    @classmethod
    def load(cls, directory: Path, report: list[Problem] | None = None) -> Templates:
        """Compile every template; SourceError lists the problems, unless `report`
        is given: then they are added to it, and the templates that compiled are
        returned (with the names of the others in `broken`)."""
        problems: list[Problem] = []
        broken: set[str] = set()
        found: dict[str, MailTemplate] = {}
        digest = hashlib.sha256()
        if not directory.is_dir():
            return cls(directory, {}, digest.hexdigest())
        for path in sorted(directory.glob("*.txt")):
            try:
                text = path.read_text(encoding="utf-8")
                html_path = path.with_suffix(".html")
                html = html_path.read_text(encoding="utf-8") if html_path.exists() else None
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(path), None, "", f"cannot read: {exc}"))
                broken.add(path.stem)
                continue
            digest.update(
                path.name.encode() + b"\0" + text.encode() + b"\0" + (html or "").encode()
            )
            template = _compile_mail(path, text, html, problems)
            if template is not None:
                found[template.name] = template
            else:
                broken.add(path.stem)
        if problems:
            if report is None:
                raise SourceError(problems)
            report.extend(problems)
        return cls(directory, found, digest.hexdigest(), frozenset(broken))


def _compile_mail(
    path: Path, text: str, html: str | None, problems: list[Problem]
) -> MailTemplate | None:
    head, sep, body = text.partition("\n\n")
    first = head.splitlines()[0] if head else ""
    if not sep or not first.lower().startswith("subject:") or len(head.splitlines()) != 1:
        problems.append(
            Problem(
                str(path),
                1,
                "",
                "a template starts with one 'Subject: ...' line, then a blank line, then the body",
            )
        )
        return None
    subject_source = first.partition(":")[2].strip()
    html_path = str(path.with_suffix(".html"))
    try:
        subject = _TEXT_ENV.from_string(subject_source)
        body_template = _TEXT_ENV.from_string(body)
        html_template = _HTML_ENV.from_string(html) if html is not None else None
    except TemplateSyntaxError as exc:
        where = html_path if exc.source is not None and exc.source == html else str(path)
        # The body starts two lines below the subject line.
        line = exc.lineno if where == html_path or exc.source == subject_source else exc.lineno + 2
        problems.append(Problem(where, line, "", f"template error: {exc.message}"))
        return None
    names = _names(subject_source, _TEXT_ENV) | _names(body, _TEXT_ENV)
    if html is not None:
        names |= _names(html, _HTML_ENV)
    return MailTemplate(path.stem, str(path), subject, body_template, html_template, names)
