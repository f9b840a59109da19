"""The condition language of rule items: fields, operators, and their compiled form.

Conditions are parsed once, when the rules are loaded, into closures: a message
is then tested by plain function calls over values computed once per message.
The same tree explains itself for `ingestd rules test`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from ingest import guard
from ingest.message import InboundMessage
from ingest.store.models import Account, Contact

FieldType = Literal["text", "texts", "number", "flag", "weekday", "value"]
Scope = Literal["record_creation", "routing", "sla"]
Test = Callable[["Facts"], bool]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {
    **{d: d for d in WEEKDAYS},
    **{
        name: WEEKDAYS[i]
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_MISSING = object()

TEXT_OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "matches",
    "exists",
)
NUMBER_OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "exists")
OPERATORS: dict[FieldType, tuple[str, ...]] = {
    "text": TEXT_OPERATORS,
    "texts": TEXT_OPERATORS,
    "number": NUMBER_OPERATORS,
    "flag": ("equals", "not_equals", "exists"),
    "weekday": ("equals", "not_equals", "in", "not_in"),
    "value": tuple(dict.fromkeys(TEXT_OPERATORS + NUMBER_OPERATORS)),
}
ALL_OPERATORS = frozenset(OPERATORS["value"])
# Scopes that also read another scope's fields: SLA items read the case as routing does.
_ALSO_READS: dict[str, tuple[str, ...]] = {"sla": ("routing",)}
_NEGATED = {"not_equals": "equals", "not_in": "in", "not_contains": "contains"}


class CalendarLike(Protocol):
    def is_open(self, instant: datetime) -> bool: ...


class Facts(dict[tuple[str, bool], Any]):
    """What conditions read about one message, each value computed on first use.

    It is a dict of (field, casefolded) to value so that compiled rules read a
    value with one subscript; a missing key is computed by `__missing__`.
    """

    __slots__ = (
        "_account",
        "_entitled",
        "calendars",
        "case",
        "contact",
        "is_reply",
        "known",
        "msg",
        "now",
        "zone",
    )

    def __init__(
        self,
        msg: InboundMessage,
        *,
        now: datetime,
        zone: ZoneInfo,
        contact: Contact | None = None,
        known: bool | None = None,
        entitled: Callable[[], bool] | None = None,
        is_reply: bool = False,
        calendars: dict[str, CalendarLike] | None = None,
        case: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.msg = msg
        self.now = now
        self.zone = zone
        self.contact = contact
        self._account: Any = _MISSING
        self.known = contact is not None if known is None else known
        self._entitled = entitled
        self.is_reply = is_reply
        self.calendars = calendars or {}
        self.case = case

    def __missing__(self, key: tuple[str, bool]) -> Any:
        value = read_field(self, key[0])
        if key[1]:
            value = _fold(value)
        self[key] = value
        return value

    @property
    def account(self) -> Account | None:
        # Read on demand: loading the relationship costs more than most rules.
        if self._account is _MISSING:
            self._account = self.contact.account if self.contact is not None else None
        account: Account | None = self._account
        return account

    def entitled(self) -> bool:
        return self._entitled() if self._entitled is not None else False


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list | tuple):
        return [v.casefold() if isinstance(v, str) else v for v in value]
    return value


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    help: str
    read: Callable[[Facts], Any]
    scope: Scope | None = None  # None: every kind of rule set may use it


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


def _local_time(f: Facts) -> datetime:
    return f.now.astimezone(f.zone)


def _customer_tier(f: Facts) -> str | None:
    if f.contact is not None and f.contact.tier:
        return f.contact.tier
    return f.account.tier if f.account is not None else None


def _case(name: str) -> Callable[[Facts], Any]:
    return lambda f: f.case.get(name) if f.case is not None else None


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(
            "message.channel", "text", "email, telegram, sms or twitter", lambda f: f.msg.channel
        ),
        FieldSpec("message.to", "texts", "every recipient address", lambda f: f.msg.recipients),
        FieldSpec("message.from", "text", "the sender's address or id", lambda f: f.msg.sender),
        FieldSpec(
            "message.from_domain",
            "text",
            "the sender's mail domain",
            lambda f: _domain(f.msg.sender),
        ),
        FieldSpec(
            "message.from_name", "text", "the sender's display name", lambda f: f.msg.sender_name
        ),
        FieldSpec("message.subject", "text", "the subject", lambda f: f.msg.subject),
        FieldSpec("message.text", "text", "the text body", lambda f: f.msg.text),
        FieldSpec(
            "message.attachment_names",
            "texts",
            "file names of the attachments",
            lambda f: [a.filename for a in f.msg.attachments if a.filename],
        ),
        FieldSpec(
            "message.attachment_count",
            "number",
            "how many attachments",
            lambda f: len(f.msg.attachments),
        ),
        FieldSpec(
            "message.language", "text", "declared language, e.g. de", lambda f: f.msg.language
        ),
        FieldSpec(
            "message.auto_reply",
            "flag",
            "an out-of-office or other automatic reply",
            lambda f: guard.is_auto_reply(f.msg),
        ),
        FieldSpec(
            "message.bounce", "flag", "a delivery failure report", lambda f: guard.is_bounce(f.msg)
        ),
        FieldSpec(
            "message.noreply",
            "flag",
            "sent from a no-reply address",
            lambda f: guard.is_noreply(f.msg.sender),
        ),
        FieldSpec("message.is_reply", "flag", "continues one of our cases", lambda f: f.is_reply),
        FieldSpec("customer.known", "flag", "the sender is a known contact", lambda f: f.known),
        FieldSpec(
            "customer.name",
            "text",
            "the contact's full name",
            lambda f: f.contact.full_name if f.contact else None,
        ),
        FieldSpec(
            "customer.email",
            "text",
            "the contact's email address",
            lambda f: f.contact.email if f.contact else None,
        ),
        FieldSpec(
            "customer.tier", "text", "the contact's tier, else its account's", _customer_tier
        ),
        FieldSpec(
            "customer.account",
            "text",
            "the account's name",
            lambda f: f.account.name if f.account else None,
        ),
        FieldSpec(
            "customer.account_tier",
            "text",
            "the account's tier",
            lambda f: f.account.tier if f.account else None,
        ),
        FieldSpec(
            "customer.has_entitlement",
            "flag",
            "an entitlement allows a case on this channel today",
            lambda f: f.entitled(),
        ),
        FieldSpec(
            "time.weekday",
            "weekday",
            "mon .. sun, in rules_timezone",
            lambda f: WEEKDAYS[_local_time(f).weekday()],
        ),
        FieldSpec(
            "time.hour", "number", "0 .. 23, in rules_timezone", lambda f: _local_time(f).hour
        ),
        FieldSpec("case.title", "text", "the new case's title", _case("title"), "routing"),
        FieldSpec("case.priority", "text", "High, Normal or Low", _case("priority"), "routing"),
        FieldSpec(
            "case.product", "text", "the product set by the rule", _case("product"), "routing"
        ),
        FieldSpec(
            "case.category", "text", "the category set by the rule", _case("category"), "routing"
        ),
        FieldSpec(
            "case.channel", "text", "the channel the case came from", _case("channel"), "routing"
        ),
        FieldSpec("case.queue", "text", "the case's queue", _case("queue"), "sla"),
    )
}


def _channel_field(name: str) -> Callable[[Facts], Any]:
    return lambda f: f.msg.fields.get(name)


# What only one chat channel knows; missing (so no condition holds) on the others.
CHANNEL_FIELDS: tuple[tuple[str, FieldType, str], ...] = (
    ("telegram.chat_type", "text", "private, group, supergroup or channel"),
    ("telegram.username", "text", "the sender's Telegram username, without @"),
    ("telegram.bot", "text", "the username of the bot written to"),
    ("telegram.edited", "flag", "an edit of an earlier message"),
    ("telegram.command", "text", "the /command the text starts with, e.g. help"),
    ("telegram.chat_title", "text", "the group's title (groups only)"),
    ("telegram.is_bot", "flag", "the sender is a bot"),
    ("sms.to", "text", "our number written to, E.164"),
    ("sms.from_country", "text", "the sender's country, ISO code such as DE"),
    ("sms.provider", "text", "twilio or generic"),
    ("sms.account", "text", "the name of the SMS account in config"),
    ("sms.media_count", "number", "how many MMS media"),
    ("sms.segments", "number", "SMS segments the message took"),
    ("sms.messaging_service", "text", "Twilio's MessagingServiceSid"),
    ("sms.opt_out", "text", "Twilio's OptOutType: STOP, START or HELP"),
    ("twitter.kind", "text", "mention or dm"),
    ("twitter.lang", "text", "the post's language as X detected it, e.g. en"),
    ("twitter.username", "text", "the sender's X username, without @"),
    ("twitter.account", "text", "our account's username"),
    ("twitter.conversation_id", "text", "the id of the thread's first post"),
    ("twitter.is_reply", "flag", "the post replies to another post"),
    ("twitter.verified", "flag", "the sender's account is verified"),
)
FIELDS.update(
    (name, FieldSpec(name, kind, help, _channel_field(name))) for name, kind, help in CHANNEL_FIELDS
)

# Fields named by a prefix and a key the author chooses.
PREFIXES: dict[str, tuple[str, Scope | None]] = {
    "message.header.": ("a mail header, e.g. message.header.x-priority", None),
    "customer.attribute.": ("a custom field of the contact, else of its account", None),
    "case.custom.": ("a custom field set by the record-creation rule", "routing"),
}


def _read_prefixed(f: Facts, name: str) -> Any:
    if name.startswith("message.header."):
        return f.msg.headers.get(name.removeprefix("message.header.").lower())
    if name.startswith("customer.attribute."):
        key = name.removeprefix("customer.attribute.")
        if f.contact is not None and key in (f.contact.attributes or {}):
            return f.contact.attributes[key]
        if f.account is not None:
            return (f.account.attributes or {}).get(key)
        return None
    if name.startswith("case.custom."):
        custom = (f.case or {}).get("custom") or {}
        return custom.get(name.removeprefix("case.custom."))
    raise KeyError(name)


def read_field(f: Facts, name: str) -> Any:
    spec = FIELDS.get(name)
    return spec.read(f) if spec is not None else _read_prefixed(f, name)


def field_type(name: str) -> tuple[FieldType, Scope | None] | None:
    spec = FIELDS.get(name)
    if spec is not None:
        return spec.type, spec.scope
    for prefix, (_help, scope) in PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return ("text" if prefix == "message.header." else "value"), scope
    return None


# -- the tree ---------------------------------------------------------------


class Namespace:
    """Constants that generated rule code refers to by name."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"_k{len(self.values)}"
        self.values[name] = value
        return name


class Node:
    """A condition: `test` is the compiled form, `explain` says why it failed."""

    test: Test

    def source(self, ns: Namespace) -> str:
        """A Python expression over the facts `c`, for code generated from a rule list."""
        return f"{ns.bind(self.test)}(c)"

    def describe(self) -> str:
        raise NotImplementedError

    def explain(self, f: Facts) -> str | None:
        """None when the condition holds, else a sentence for the rule's author."""
        raise NotImplementedError


class Always(Node):
    def __init__(self) -> None:
        self.test = lambda f: True

    def source(self, ns: Namespace) -> str:
        return "True"

    def describe(self) -> str:
        return "always"

    def explain(self, f: Facts) -> str | None:
        return None


Inline = Callable[[str, Callable[[Any], str]], str]


class Leaf(Node):
    def __init__(
        self,
        field: str,
        op: str,
        operand: Any,
        test: Test,
        key: tuple[str, bool],
        inline: Inline | None = None,
    ) -> None:
        self.field, self.op, self.operand, self.test, self.key = field, op, operand, test, key
        self.inline = inline

    def source(self, ns: Namespace) -> str:
        if self.inline is None:
            return super().source(ns)
        return self.inline(f"c[{ns.bind(self.key)}]", ns.bind)

    def describe(self) -> str:
        return f"{self.field} {self.op.replace('_', ' ')} {_show(self.operand)}"

    def explain(self, f: Facts) -> str | None:
        if self.test(f):
            return None
        actual = read_field(f, self.field)
        return f"{self.describe()}: it is {_show(actual)}"


class BusinessHours(Node):
    def __init__(self, calendar: str) -> None:
        self.calendar = calendar

        def test(f: Facts) -> bool:
            return f.calendars[calendar].is_open(f.now)

        self.test = test

    def describe(self) -> str:
        return f"inside business hours of {self.calendar!r}"

    def explain(self, f: Facts) -> str | None:
        return None if self.test(f) else f"not {self.describe()} at {f.now.isoformat()}"


class All(Node):
    def __init__(self, children: Sequence[Node]) -> None:
        self.children = list(children)
        tests = tuple(c.test for c in self.children)
        if len(tests) == 1:
            self.test = tests[0]
        elif len(tests) == 2:
            first, second = tests
            self.test = lambda f: first(f) and second(f)
        else:

            def test(f: Facts) -> bool:
                for t in tests:  # noqa: SIM110 (a generator costs more per call)
                    if not t(f):
                        return False
                return True

            self.test = test

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.children)

    def source(self, ns: Namespace) -> str:
        return "(" + " and ".join(c.source(ns) for c in self.children) + ")"

    def explain(self, f: Facts) -> str | None:
        for child in self.children:
            why = child.explain(f)
            if why is not None:
                return why
        return None


class AnyOf(Node):
    def __init__(self, children: Sequence[Node]) -> None:
        self.children = list(children)
        tests = tuple(c.test for c in self.children)

        def test(f: Facts) -> bool:
            for t in tests:  # noqa: SIM110
                if t(f):
                    return True
            return False

        self.test = test

    def describe(self) -> str:
        return "any of (" + "; ".join(c.describe() for c in self.children) + ")"

    def source(self, ns: Namespace) -> str:
        return "(" + " or ".join(c.source(ns) for c in self.children) + ")"

    def explain(self, f: Facts) -> str | None:
        reasons = [child.explain(f) for child in self.children]
        if any(r is None for r in reasons):
            return None
        return "none of: " + "; ".join(str(r) for r in reasons)


class Not(Node):
    def __init__(self, child: Node) -> None:
        self.child = child
        inner = child.test
        self.test = lambda f: not inner(f)

    def describe(self) -> str:
        return f"not ({self.child.describe()})"

    def source(self, ns: Namespace) -> str:
        return f"(not {self.child.source(ns)})"

    def explain(self, f: Facts) -> str | None:
        return None if self.test(f) else f"{self.describe()}: but it holds"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- parsing ------------------------------------------------------------------

Report = Callable[[tuple[str | int, ...], str], None]


class ConditionParser:
    """Turns the YAML under `when:` into a Node, reporting every problem it finds."""

    def __init__(self, scope: Scope, calendars: Sequence[str], report: Report) -> None:
        self.scope = scope
        self.calendars = set(calendars)
        self.report = report

    def parse(self, data: Any, loc: tuple[str | int, ...]) -> Node:
        if data is None or data == {}:
            return Always()
        if not isinstance(data, dict):
            self.report(loc, "a condition is a mapping of fields to values, or all/any/not")
            return Always()
        nodes = [self._entry(key, value, (*loc, key)) for key, value in data.items()]
        return nodes[0] if len(nodes) == 1 else All(nodes)

    def _entry(self, key: Any, value: Any, loc: tuple[str | int, ...]) -> Node:
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                self.report(loc, f"{key} takes a non-empty list of conditions")
                return Always()
            children = [self.parse(item, (*loc, i)) for i, item in enumerate(value)]
            return All(children) if key == "all" else AnyOf(children)
        if key == "not":
            return Not(self.parse(value, loc))
        if key == "business_hours":
            if not isinstance(value, str):
                self.report(loc, "business_hours takes the name of a calendar")
            elif value not in self.calendars:
                known = ", ".join(sorted(self.calendars)) or "none are configured"
                self.report(loc, f"unknown calendar {value!r} (calendars: {known})")
            return BusinessHours(str(value))
        return self._field(str(key), value, loc)

    def _field(self, name: str, value: Any, loc: tuple[str | int, ...]) -> Node:
        typed = field_type(name)
        if typed is None:
            self.report(loc, _unknown_field(name))
            return Always()
        ftype, scope = typed
        also = _ALSO_READS.get(self.scope, ())
        if scope is not None and scope != self.scope and scope not in also:
            self.report(loc, f"{name} is only known to {scope.replace('_', '-')} rules")
            return Always()
        if isinstance(value, dict):
            options = dict(value)
            case_sensitive = options.pop("case_sensitive", False)
            if not isinstance(case_sensitive, bool):
                self.report((*loc, "case_sensitive"), "case_sensitive is true or false")
                case_sensitive = False
            if not options:
                self.report(loc, "name an operator, e.g. {contains: refund}")
                return Always()
            leaves = [
                self._leaf(name, ftype, str(op), operand, not case_sensitive, (*loc, str(op)))
                for op, operand in options.items()
            ]
            return leaves[0] if len(leaves) == 1 else All(leaves)
        # Shorthand: `field: value` is equals, `field: [a, b]` is in.
        op = "in" if isinstance(value, list) else "equals"
        return self._leaf(name, ftype, op, value, True, loc)

    def _leaf(
        self,
        name: str,
        ftype: FieldType,
        op: str,
        operand: Any,
        fold: bool,
        loc: tuple[str | int, ...],
    ) -> Node:
        if op not in ALL_OPERATORS:
            self.report(loc, _unknown_operator(op))
            return Always()
        if op not in OPERATORS[ftype]:
            allowed = ", ".join(OPERATORS[ftype])
            self.report(
                loc, f"{op} does not apply to {name} ({_TYPE_WORDS[ftype]}); use one of {allowed}"
            )
            return Always()
        fold = fold and ftype in ("text", "texts", "value")
        try:
            predicate = _predicate(ftype, op, operand, fold)
        except ValueError as exc:
            self.report(loc, str(exc))
            return Always()
        # A regular expression ignores case itself (re.IGNORECASE) and reads the
        # value as written: casefolding first would turn "Straße" into "strasse",
        # which the author's pattern no longer matches.
        key = (name, fold and op != "matches")
        if op == "exists":
            test: Test = lambda f: predicate(f[key])  # noqa: E731
        elif ftype in ("texts",):
            test = _over_list(predicate, key, op in _NEGATED)
        else:
            test = lambda f: predicate(f[key])  # noqa: E731
        inline = _inline(ftype, op, operand, fold) if op != "exists" else None
        return Leaf(name, op, operand, test, key, inline)


_TYPE_WORDS: dict[FieldType, str] = {
    "text": "text",
    "texts": "a list of text",
    "number": "a number",
    "flag": "true or false",
    "weekday": "a weekday",
    "value": "a custom value",
}


def _over_list(predicate: Callable[[Any], bool], key: tuple[str, bool], negated: bool) -> Test:
    # A list field holds when any element does; a negated operator when none
    # does (the predicate is already negated per element, so all must hold).
    if negated:
        return lambda f: all(predicate(v) for v in f[key] or ())
    return lambda f: any(predicate(v) for v in f[key] or ())


def _unknown_field(name: str) -> str:
    known = [*FIELDS, *PREFIXES]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown field {name!r}{hint} (see the rules reference in the README)"


def _unknown_operator(op: str) -> str:
    close = difflib.get_close_matches(op, sorted(ALL_OPERATORS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown operator {op!r}{hint}"


def _predicate(ftype: FieldType, op: str, operand: Any, fold: bool) -> Callable[[Any], bool]:
    """A test of one value (one element, for list fields)."""
    if op == "exists":
        if not isinstance(operand, bool):
            raise ValueError("exists takes true or false")
        want = operand
        return lambda v: (v is not None and v != "" and v != []) is want
    if op in _NEGATED:
        positive = _predicate(ftype, _NEGATED[op], operand, fold)
        return lambda v: not positive(v)
    norm = _normaliser(ftype, fold)
    if op == "equals":
        x = norm(operand, op)
        return lambda v: v == x
    if op == "in":
        if not isinstance(operand, list) or not operand:
            raise ValueError("in takes a non-empty list, e.g. [gold, platinum]")
        options = frozenset(norm(o, op) for o in operand)

        def member(v: Any) -> bool:
            try:
                return v in options
            except TypeError:  # a list or mapping (a JSON attribute) is no single value
                return False

        return member
    if op in ("contains", "starts_with", "ends_with"):
        words = tuple(
            _text(o, op, fold) for o in (operand if isinstance(operand, list) else [operand])
        )
        if not words:
            raise ValueError(f"{op} takes text or a list of text")
        if op == "starts_with":
            return lambda v: isinstance(v, str) and v.startswith(words)
        if op == "ends_with":
            return lambda v: isinstance(v, str) and v.endswith(words)
        if len(words) == 1:
            (word,) = words
            return lambda v: isinstance(v, str) and word in v
        return lambda v: isinstance(v, str) and any(w in v for w in words)
    if op == "matches":
        if not isinstance(operand, str):
            raise ValueError("matches takes a regular expression in quotes")
        try:
            pattern = re.compile(operand, re.IGNORECASE if fold else 0)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        search = pattern.search
        return lambda v: isinstance(v, str) and search(v) is not None
    # gt, gte, lt, lte
    if isinstance(operand, bool) or not isinstance(operand, int | float):
        raise ValueError(f"{op} takes a number")
    bound = operand
    compare: Callable[[Any], bool] = {
        "gt": lambda v: v > bound,
        "gte": lambda v: v >= bound,
        "lt": lambda v: v < bound,
        "lte": lambda v: v <= bound,
    }[op]

    def ordered(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and compare(v)

    return ordered


def _text(value: Any, op: str, fold: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{op} takes text, not {_show(value)}")
    text = str(value)
    return text.casefold() if fold else text


def _normaliser(ftype: FieldType, fold: bool) -> Callable[[Any, str], Any]:
    if ftype == "flag":

        def flag(value: Any, op: str) -> bool:
            if not isinstance(value, bool):
                raise ValueError(f"{op} takes true or false")
            return value

        return flag
    if ftype == "number":

        def number(value: Any, op: str) -> float | int:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{op} takes a number, not {_show(value)}")
            return value

        return number
    if ftype == "weekday":

        def weekday(value: Any, op: str) -> str:
            day = _WEEKDAY_NAMES.get(str(value).strip().lower())
            if day is None:
                raise ValueError(f"{_show(value)} is not a weekday (mon, tue, ... sun)")
            return day

        return weekday
    if ftype == "value":

        def anything(value: Any, op: str) -> Any:
            if isinstance(value, str) and fold:
                return value.casefold()
            if isinstance(value, list | dict):
                raise ValueError(f"{op} takes a single value, not {_show(value)}")
            return value

        return anything
    return lambda value, op: _text(value, op, fold)


_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "equals": "==", "not_equals": "!="}


def _inline(ftype: FieldType, op: str, operand: Any, fold: bool) -> Inline | None:
    """The operator as inline Python over a single value, or None to call the predicate.

    Only for scalar fields whose values are str/None, int or bool, where the
    expression means exactly what `_predicate` does (the tests compare both).
    """
    if ftype == "texts":
        return _inline_list(op, operand, fold)
    if ftype not in ("text", "number", "flag", "weekday"):
        return None
    if op in _NEGATED and op != "not_equals":
        positive = _inline(ftype, _NEGATED[op], operand, fold)
        if positive is None:
            return None
        return lambda v, bind: f"(not {positive(v, bind)})"
    norm = _normaliser(ftype, fold)
    if op in ("equals", "not_equals"):
        x = norm(operand, op)
        return lambda v, bind: f"({v} {_COMPARE[op]} {bind(x)})"
    if op == "in":
        options = frozenset(norm(o, op) for o in operand)
        return lambda v, bind: f"({v} in {bind(options)})"
    if op in ("gt", "gte", "lt", "lte"):
        if ftype != "number":
            return None
        # A number field may be missing (a chat channel's count on another channel).
        return lambda v, bind: f"({v} is not None and {v} {_COMPARE[op]} {bind(operand)})"
    if ftype != "text":
        return None
    if op == "contains":
        words = [_text(o, op, fold) for o in (operand if isinstance(operand, list) else [operand])]
        # `v or ''` stands for a missing value, which holds no text: only right
        # when the operand cannot match "" (else the closure decides, as explain does).
        if len(words) != 1 or not words[0]:
            return None
        return lambda v, bind: f"({bind(words[0])} in ({v} or ''))"
    if op in ("starts_with", "ends_with"):
        prefixes = tuple(
            _text(o, op, fold) for o in (operand if isinstance(operand, list) else [operand])
        )
        if "" in prefixes:
            return None
        method = "startswith" if op == "starts_with" else "endswith"
        return lambda v, bind: f"({v} or '').{method}({bind(prefixes)})"
    if op == "matches":
        search = re.compile(operand, re.IGNORECASE if fold else 0).search
        if search("") is not None:
            return None
        return lambda v, bind: f"({bind(search)}({v} or '') is not None)"
    return None


def _inline_list(op: str, operand: Any, fold: bool) -> Inline | None:
    """equals/in over a list field: any element (negated: none)."""
    if op in ("equals", "not_equals"):
        x = _text(operand, op, fold)
        test = "in" if op == "equals" else "not in"
        return lambda v, bind: f"({bind(x)} {test} ({v} or ()))"
    if op in ("in", "not_in"):
        options = frozenset(_text(o, op, fold) for o in operand)
        negate = "" if op == "not_in" else "not "
        return lambda v, bind: f"({negate}{bind(options)}.isdisjoint({v} or ()))"
    return None


def compile_first_match(tests: Sequence[tuple[Node, Any]]) -> Callable[[Facts], Any]:
    """One generated function trying each (condition, result) in order; None if none holds.

    A rule list becomes straight-line `if` statements, so a message costs about
    what the same rules hand-written in Python would (see bench/rules.py).
    """
    ns = Namespace()
    lines = ["def first_match(c):"]
    for node, result in tests:
        lines.append(f"    if {node.source(ns)}:")
        lines.append(f"        return {ns.bind(result)}")
    lines.append("    return None")
    try:
        code = compile("\n".join(lines), "<rules>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        # Nesting deeper than the parser allows: the closures do the same work.
        pairs = [(node.test, result) for node, result in tests]

        def fallback(c: Facts) -> Any:
            for test, result in pairs:
                if test(c):
                    return result
            return None

        return fallback
    exec(code, ns.values)  # noqa: S102 (our own generated code over bound constants)
    generated: Callable[[Facts], Any] = ns.values["first_match"]
    return generated
