"""Rule files: load, validate with the author in mind, and compile into a RuleBook.

Every `*.yaml` in the rules directory is one rule set, of kind `record_creation`
(what an inbound message becomes) or `routing` (which queue a new case joins).
Sets of a kind are read in file-name order and their items form one ordered
list; the first item whose conditions hold wins, as in Dynamics 365.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ingest.conditions import ConditionParser, Facts, Node, Scope, compile_first_match
from ingest.section import Section
from ingest.store.models import Priority
from ingest.templating import Expression, Templates, compile_expression
from ingest.yamlsource import Loc, Problem, SourceError, YamlDocument, dotted, parse

CHANNELS = ("email", "telegram", "sms", "twitter")
# The names a rule expression (a case title, a custom field) may use.
EXPRESSION_NAMES = ("message", "customer", "now")
# The names an auto-response template may use.
AUTO_RESPONSE_NAMES = ("message", "customer", "case", "now")
PRIORITIES = tuple(p.value for p in Priority)


class CaseSpec(Section):
    """What a new case gets; each value may be a Jinja2 expression over the message."""

    title: str | None = None
    priority: str | None = None
    product: str | None = None
    category: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)


class ResolvedWindow(Section):
    hours: float = Field(ge=0)
    reopen: bool = False


class RecordActions(Section):
    ignore: bool = False
    create_case: CaseSpec | None = None
    existing_case_only: bool = False
    queue: str | None = None
    create_contact: bool | None = None
    require_entitlement: bool | None = None
    auto_response: str | None = None
    resolved_case_window: ResolvedWindow | None = None

    @field_validator("create_case", mode="before")
    @classmethod
    def _create_case(cls, value: Any) -> Any:
        # `create_case: true` reads better than `create_case: {}`.
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _consistent(self) -> RecordActions:
        if self.ignore:
            extra = [
                n
                for n in ("create_case", "queue", "auto_response", "require_entitlement")
                if getattr(self, n) not in (None, False)
            ]
            if extra or self.existing_case_only:
                raise ValueError(
                    "ignore drops the message: it cannot be combined with "
                    + ", ".join(extra or ["existing_case_only"])
                )
        if self.existing_case_only:
            extra = [
                n for n in ("create_case", "queue", "auto_response") if getattr(self, n) is not None
            ]
            if extra:
                raise ValueError(
                    "existing_case_only never creates a case: remove " + ", ".join(extra)
                )
        return self


class RouteActions(Section):
    queue: str


class _Item(Section):
    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    enabled: bool = True
    when: dict[str, Any] | None = None
    then: dict[str, Any]


class _RuleSetFile(Section):
    kind: Literal["record_creation", "routing"]
    name: str | None = None
    description: str = ""
    channels: list[Literal["email", "telegram", "sms", "twitter"]] | None = None
    defaults: dict[str, Any] | None = None
    # Items are checked one by one, so that one broken item hides no other.
    items: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("items", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        return value if value is not None else []


@dataclass(frozen=True)
class Settings:
    """Everything outside the rules directory that rules may name."""

    queues: Sequence[str]
    calendars: Sequence[str] = ()
    unmatched: Literal["create_case", "skip"] = "create_case"


@dataclass
class Item:
    """One compiled rule item."""

    kind: Scope
    name: str
    rule_set: str
    file: str
    line: int | None
    when: Node
    channels: frozenset[str] | None
    catch_all: bool
    description: str = ""
    enabled: bool = True
    actions: RecordActions = field(default_factory=RecordActions)
    queue: str | None = None  # routing items
    expressions: dict[str, Expression] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"rule {self.name!r} ({Path(self.file).name})"

    def applies_to(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels


@dataclass(frozen=True)
class Trace:
    """How one item fared for a message, for `ingestd rules test`."""

    item: Item
    matched: bool
    why_not: str | None


class RuleBook:
    """A complete, valid set of rules and templates: replaced whole, never edited."""

    def __init__(
        self,
        record_creation: Sequence[Item],
        routing: Sequence[Item],
        templates: Templates,
        settings: Settings,
        version: str,
        files: Sequence[str],
        loaded_at: datetime,
    ) -> None:
        self.record_creation = tuple(record_creation)
        self.routing = tuple(routing)
        self.templates = templates
        self.settings = settings
        self.version = version
        self.files = tuple(files)
        self.loaded_at = loaded_at
        # Per channel, the items that apply, with their tests: the hot path.
        self._record = _by_channel(self.record_creation)
        self._route = _by_channel(self.routing)

    def match(self, facts: Facts) -> Item | None:
        return _first(self._record, facts)

    def route(self, facts: Facts) -> Item | None:
        return _first(self._route, facts)

    def trace(self, facts: Facts, kind: Scope) -> list[Trace]:
        """Every item up to the one that matched, with why each earlier one did not."""
        items = self.record_creation if kind == "record_creation" else self.routing
        out = []
        for item in items:
            if not item.applies_to(facts.msg.channel):
                out.append(Trace(item, False, f"the rule set is for {sorted(item.channels or ())}"))
                continue
            why = item.when.explain(facts)
            out.append(Trace(item, why is None, why))
            if why is None:
                break
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "loaded_at": self.loaded_at.isoformat(),
            "files": [Path(f).name for f in self.files],
            "record_creation_items": len(self.record_creation),
            "routing_items": len(self.routing),
            "templates": sorted(self.templates.templates),
        }


_Compiled = dict[str, Callable[[Facts], Item | None]]


def _by_channel(items: Sequence[Item]) -> _Compiled:
    return {
        channel: compile_first_match([(i.when, i) for i in items if i.applies_to(channel)])
        for channel in CHANNELS
    }


def _first(compiled: _Compiled, facts: Facts) -> Item | None:
    match = compiled.get(facts.msg.channel)
    return match(facts) if match is not None else None


# -- loading ---------------------------------------------------------------------


def load(rules_dir: Path, templates_dir: Path, settings: Settings) -> RuleBook:
    """Read and check every rule file; SourceError lists every problem found."""
    problems: list[Problem] = []
    # A broken template is reported, and the rules are still checked against
    # the others: one report, not one error per run.
    templates = Templates.load(templates_dir, problems)
    paths = sorted(rules_dir.glob("*.yaml")) + sorted(rules_dir.glob("*.yml"))
    digest = hashlib.sha256()
    record: list[Item] = []
    routing: list[Item] = []
    set_names: dict[str, str] = {}
    for path in sorted(paths):
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), None, "", f"cannot read: {exc}"))
            continue
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        try:
            doc = parse(text, str(path), env={})
        except SourceError as exc:
            problems.extend(exc.problems)
            continue
        loader = _FileLoader(doc, settings, templates, problems)
        loaded = loader.load()
        if loaded is None:
            continue
        kind, set_name, items = loaded
        if set_name in set_names:
            problems.append(
                Problem(
                    str(path),
                    doc.line_of(("name",)),
                    "name",
                    f"rule set {set_name!r} is also defined in {set_names[set_name]}",
                )
            )
        set_names[set_name] = str(path)
        (record if kind == "record_creation" else routing).extend(items)
    for items in (record, routing):
        problems.extend(_duplicates(items))
        problems.extend(_unreachable([i for i in items if i.enabled]))
    if problems:
        raise SourceError(problems)
    digest.update(templates.digest.encode())
    return RuleBook(
        [i for i in record if i.enabled],
        [i for i in routing if i.enabled],
        templates,
        settings,
        digest.hexdigest()[:12],
        [str(p) for p in paths],
        datetime.now(UTC),
    )


class _FileLoader:
    def __init__(
        self,
        doc: YamlDocument,
        settings: Settings,
        templates: Templates,
        problems: list[Problem],
    ) -> None:
        self.doc = doc
        self.settings = settings
        self.templates = templates
        self.problems = problems

    def problem(self, loc: Loc, message: str, rule: str | None = None) -> None:
        self.problems.append(
            Problem(self.doc.path, self.doc.line_of(loc), _field(loc), message, rule)
        )

    def load(self) -> tuple[Scope, str, list[Item]] | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem((), "a rule file is a mapping with kind, items and optionally name")
            return None
        try:
            spec = _RuleSetFile.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(self.doc.problems_from(exc))
            return None
        kind: Scope = spec.kind
        set_name = spec.name or Path(self.doc.path).stem
        defaults = RecordActions()
        if spec.defaults is not None:
            if kind == "routing":
                self.problem(("defaults",), "routing rule sets have no defaults")
            else:
                parsed = self._record_actions(spec.defaults, ("defaults",), None)
                defaults = parsed or defaults
        channels = frozenset(spec.channels) if spec.channels else None
        items = []
        for index, raw in enumerate(spec.items):
            loc: Loc = ("items", index)
            try:
                item = _Item.model_validate(raw)
            except ValidationError as exc:
                name = raw.get("name") if isinstance(raw.get("name"), str) else None
                for p in self.doc.problems_from(exc, loc):
                    self.problems.append(_named(p, name))
                continue
            # A disabled item is checked too: switching it on later must not fail.
            compiled = self._item(kind, set_name, item, loc, channels, defaults)
            compiled.enabled = item.enabled
            items.append(compiled)
        return kind, set_name, items

    def _item(
        self,
        kind: Scope,
        set_name: str,
        spec: _Item,
        loc: Loc,
        channels: frozenset[str] | None,
        defaults: RecordActions,
    ) -> Item:
        def report(where: Loc, message: str) -> None:
            self.problem((*loc, "when", *where), message, spec.name)

        parser = ConditionParser(kind, self.settings.calendars, report)
        when = parser.parse(spec.when, ())
        item = Item(
            kind=kind,
            name=spec.name,
            rule_set=set_name,
            file=self.doc.path,
            line=self.doc.line_of((*loc, "name")),
            when=when,
            channels=channels,
            catch_all=not spec.when,
            description=spec.description,
        )
        if kind == "routing":
            try:
                route = RouteActions.model_validate(spec.then)
            except ValidationError as exc:
                for p in self.doc.problems_from(exc, (*loc, "then")):
                    self.problems.append(_named(p, spec.name))
                return item
            self._queue(route.queue, (*loc, "then", "queue"), spec.name)
            item.queue = route.queue
        else:
            actions = self._record_actions(spec.then, (*loc, "then"), spec.name, defaults)
            if actions is not None:
                item.actions = actions
                where = (*loc, "then", "create_case")
                item.expressions = self._expressions(actions, where, spec.name)
        return item

    def _record_actions(
        self,
        then: Mapping[str, Any],
        loc: Loc,
        rule: str | None,
        defaults: RecordActions | None = None,
    ) -> RecordActions | None:
        merged = dict(then)
        if defaults is not None:
            # Set-level defaults apply where the item says nothing; an item
            # that ignores or only appends takes none of the creating ones.
            inherit = defaults.model_dump(exclude_defaults=True)
            if then.get("ignore"):
                inherit = {}
            elif then.get("existing_case_only"):
                inherit = {
                    k: v
                    for k, v in inherit.items()
                    if k not in ("create_case", "queue", "auto_response", "require_entitlement")
                }
            merged = {**inherit, **merged}
        try:
            actions = RecordActions.model_validate(merged)
        except ValidationError as exc:
            for p in self.doc.problems_from(exc, loc):
                self.problems.append(_named(p, rule))
            return None
        # A queue or template inherited from the set's defaults was checked
        # there, once: it is not reported again at every item that inherits it.
        if actions.queue is not None and "queue" in then:
            self._queue(actions.queue, (*loc, "queue"), rule)
        if actions.auto_response is not None and "auto_response" in then:
            self._template(actions.auto_response, (*loc, "auto_response"), rule)
        return actions

    def _queue(self, name: str, loc: Loc, rule: str | None) -> None:
        if name not in self.settings.queues:
            known = ", ".join(self.settings.queues)
            self.problem(loc, f"unknown queue {name!r} (queues in config: {known})", rule)

    def _template(self, name: str, loc: Loc, rule: str | None) -> None:
        if name in self.templates.broken:
            return  # the template's own problem is reported already
        if name not in self.templates:
            known = ", ".join(sorted(self.templates.templates)) or "none"
            self.problem(
                loc,
                f"unknown template {name!r}: no {name}.txt in {self.templates.directory}"
                f" (templates: {known})",
                rule,
            )
            return
        unknown = self.templates.check_names(name, AUTO_RESPONSE_NAMES)
        if unknown:
            self.problem(loc, f"template {name!r}: {unknown}", rule)

    def _expressions(self, actions: RecordActions, loc: Loc, rule: str) -> dict[str, Expression]:
        spec = actions.create_case
        if spec is None:
            return {}
        sources: dict[str, tuple[str, Loc]] = {}
        for name in ("title", "priority", "product", "category"):
            value = getattr(spec, name)
            if value is not None:
                sources[name] = (value, (*loc, name))
        for key, value in spec.custom.items():
            sources[f"custom.{key}"] = (value, (*loc, "custom", key))
        out = {}
        for name, (source, where) in sources.items():
            try:
                out[name] = compile_expression(source, EXPRESSION_NAMES)
            except ValueError as exc:
                self.problem(where, str(exc), rule)
        priority = spec.priority
        if priority is not None and "{" not in priority and priority not in PRIORITIES:
            self.problem(
                (*loc, "priority"),
                f"priority is one of {', '.join(PRIORITIES)}, not {priority!r}",
                rule,
            )
        return out


def _field(loc: Loc) -> str:
    return dotted(loc)


def _named(problem: Problem, rule: str | None) -> Problem:
    return Problem(problem.file, problem.line, problem.field, problem.message, rule)


def _duplicates(items: Iterable[Item]) -> list[Problem]:
    seen: dict[str, Item] = {}
    out = []
    for item in items:
        first = seen.get(item.name)
        if first is not None:
            out.append(
                Problem(
                    item.file,
                    item.line,
                    "name",
                    f"another {item.kind.replace('_', '-')} rule has this name "
                    f"({first.file}:{first.line}); names must be unique",
                    item.name,
                )
            )
        else:
            seen[item.name] = item
    return out


def _unreachable(items: Sequence[Item]) -> list[Problem]:
    out = []
    catch_alls: list[Item] = []
    for item in items:
        for earlier in catch_alls:
            if earlier.channels is None or (
                item.channels is not None and item.channels <= earlier.channels
            ):
                out.append(
                    Problem(
                        item.file,
                        item.line,
                        "",
                        f"unreachable: the catch-all {earlier.name!r} "
                        f"({earlier.file}:{earlier.line}) matches every message first",
                        item.name,
                    )
                )
                break
        if item.catch_all:
            catch_alls.append(item)
    return out
