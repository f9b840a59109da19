"""Rules evaluation: compiled YAML rules against the same logic written as Python `if`s.

For 10, 100 and 1,000 record-creation items this generates real rule files in a
temporary directory, loads them with `ingest.ruleset.load` (validation and all),
and generates Python source for the very same items as plain `if` statements over
values computed once per message. Both choose an item for every message of one
fixed corpus; the run stops if they ever disagree, and otherwise reports the
median evaluation time per message of each, their ratio, and the issue's goals.

    .venv/bin/python -m bench.rules            # the table, and bench/results-rules.json
    .venv/bin/python -m bench.rules --profile always  # cProfile even when the goal holds

What is timed, per message:
  rules        Facts(msg, ...) built fresh as `intake.decide` builds it (no store),
               then `RuleBook.match(facts)`.
  hand-written the values a careful programmer computes once (subject, sender
               domain and recipients casefolded, tier, attachment count), then the
               generated chain of `if`s, returning the name of the first item that
               holds.

The corpus is built so that most messages fall through to the catch-all at the
end (the worst case: every item is tried) and the rest match at spread-out
positions. Rule items are a deterministic function of their index, so the
100-item set is the 10-item set plus 90 more, and so on.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import linecache
import math
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from rich.console import Console
from rich.table import Table

from ingest.conditions import Facts
from ingest.message import InboundAttachment, InboundMessage
from ingest.ruleset import RuleBook, Settings, load
from ingest.store.models import Account, Contact

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
RESULTS = Path(__file__).resolve().parent / "results-rules.json"

SIZES = (10, 100, 1000)
CORPUS_SIZE = 400
REPEATS = 11
MIN_REPEAT_NS = 60_000_000  # each repeat runs whole passes over the corpus for >= 60 ms
GOAL_RATIO = 3.0
GOAL_US_AT_1000 = 500.0  # "well under a millisecond": at most half of one
SEED = 20240611
CATCH_ALL = "Everything else"
QUEUES = ("General Support", "Gold Support", "Billing")
NOW = datetime(2024, 6, 11, 9, 30, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Berlin")

# -- the rule items ------------------------------------------------------------------

# A condition, as a small tree both generators read:
#   ("leaf", field, op, operand) | ("all", [nodes]) | ("any", [nodes]) | ("not", node)
Cond = tuple[Any, ...]

COMPANIES = (
    "northwind", "contoso", "fabrikam", "adventure", "tailspin", "wingtip", "litware",
    "proseware", "lucerne", "humongous", "woodgrove", "alpine", "fourthcoffee", "margie",
    "blueyonder", "coho", "wideworld", "trey", "relecloud", "southridge",
)  # fmt: skip
KEYWORDS = (
    "outage", "refund", "invoice", "password", "delivery", "warranty", "upgrade",
    "cancel", "login", "broken", "urgent", "billing", "shipping", "install", "license",
)  # fmt: skip
PRODUCTS = (
    "router", "thermostat", "camera", "doorbell", "hub", "sensor", "speaker", "lock",
    "switch", "plug", "tracker", "scale",
)  # fmt: skip
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "gmx.de", "icloud.com")
TIERS = (None, None, "Bronze", "Silver", "Gold", "Platinum", "Partner")
SUPPORT_TO = ("support@help.example.com", "service@help.example.com")


@dataclass(frozen=True)
class ItemSpec:
    """Item `index`'s own vocabulary, from which its condition and its target mail come."""

    index: int
    company: str
    domain: str
    alt_domain: str
    keywords: tuple[str, str]
    product: str
    sku: str
    order: str
    case_ref: str
    vip: str

    @property
    def name(self) -> str:
        return f"{self.company.title()} {self.index:04d}"


def item_spec(index: int) -> ItemSpec:
    rng = random.Random(SEED * 1009 + index)
    company = f"{rng.choice(COMPANIES)}{index}"
    return ItemSpec(
        index=index,
        company=company,
        domain=f"{company}.com",
        alt_domain=f"{company}-group.net",
        keywords=(rng.choice(KEYWORDS), rng.choice(KEYWORDS)),
        product=f"{rng.choice(PRODUCTS)}-{index}",
        sku=f"{index:04d}",
        order=f"{7000 + index}",
        case_ref=f"[case-{index:05d}]",
        vip=f"vip-{company}@help.example.com",
    )


def leaf(field: str, op: str, operand: Any) -> Cond:
    return ("leaf", field, op, operand)


def condition(s: ItemSpec) -> Cond:
    """Eight shapes of realistic item, in turn: every operator the brief names, nested."""
    shape = s.index % 8
    if shape == 0:  # a customer's mail about certain subjects
        return (
            "all",
            [
                leaf("message.from_domain", "in", [s.domain, s.alt_domain]),
                leaf("message.subject", "contains", list(s.keywords)),
            ],
        )
    if shape == 1:  # a case reference in the subject, or the customer's VIP address
        return (
            "any",
            [
                leaf("message.subject", "starts_with", [s.case_ref, f"re: {s.case_ref}"]),
                leaf("message.to", "equals", s.vip),
            ],
        )
    if shape == 2:  # gold customers quoting one SKU
        return (
            "all",
            [
                leaf("customer.tier", "in", ["Gold", "Platinum"]),
                leaf("message.subject", "matches", rf"\bsku[- ]?{s.sku}\b"),
            ],
        )
    if shape == 3:  # many attachments to the customer's address, not from test domains
        return (
            "all",
            [
                leaf("message.to", "contains", s.company),
                leaf("message.attachment_count", "gt", 2),
                ("not", leaf("message.from_domain", "ends_with", [".invalid", ".test"])),
            ],
        )
    if shape == 4:  # the customer's silver contacts, or anyone but bronze about a product
        return (
            "any",
            [
                (
                    "all",
                    [
                        leaf("message.from_domain", "equals", s.domain),
                        leaf("customer.tier", "equals", "Silver"),
                    ],
                ),
                (
                    "all",
                    [
                        leaf("message.subject", "contains", s.product),
                        ("not", leaf("customer.tier", "in", ["Bronze"])),
                    ],
                ),
            ],
        )
    if shape == 5:  # a subsidiary's mail about a product
        return (
            "all",
            [
                leaf("message.from_domain", "ends_with", f".{s.domain}"),
                leaf("message.subject", "starts_with", [s.product, f"re: {s.product}"]),
            ],
        )
    if shape == 6:  # replies about an order, with a document or from a gold customer
        return (
            "all",
            [
                leaf("message.subject", "matches", rf"^(re|fwd?):\s*order\s*#?{s.order}\d*\b"),
                (
                    "any",
                    [
                        leaf("message.attachment_count", "gt", 0),
                        leaf("customer.tier", "equals", "Gold"),
                    ],
                ),
            ],
        )
    # shape 7: the customer's mail, but not its newsletters
    return (
        "all",
        [
            leaf("message.from_domain", "equals", s.domain),
            ("not", leaf("message.subject", "contains", ["newsletter", "unsubscribe"])),
        ],
    )


def actions(s: ItemSpec) -> dict[str, Any]:
    shape = s.index % 4
    if shape == 0:
        return {"create_case": {"priority": "High"}, "queue": "Gold Support"}
    if shape == 1:
        return {
            "create_case": {"title": "{{ message.subject }}", "category": "Billing"},
            "auto_response": "acknowledgement",
        }
    if shape == 2:
        return {"create_case": {"product": s.product.split("-")[0]}, "queue": "Billing"}
    return {"create_case": True}


# -- as YAML ---------------------------------------------------------------------------


def yaml_when(c: Cond) -> dict[str, Any]:
    """The `when:` mapping, written as a support lead would (shorthand where it reads well)."""
    kind = c[0]
    if kind == "leaf":
        _, field, op, operand = c
        if op == "equals" and field != "customer.tier":
            return {field: operand}
        if op == "in" and field == "customer.tier":
            return {field: operand}  # `field: [a, b]` is `in`
        return {field: {op: operand}}
    if kind == "not":
        return {"not": yaml_when(c[1])}
    children = [yaml_when(child) for child in c[1]]
    if kind == "all":
        merged: dict[str, Any] = {}
        for child in children:
            if merged.keys() & child.keys():
                return {"all": children}
            merged.update(child)
        return merged  # the keys of one mapping must all hold
    return {"any": children}


def write_rules(directory: Path, count: int) -> None:
    """`count` items in files of up to 250, the last item the catch-all in its own file."""
    specs = [item_spec(i) for i in range(count - 1)]
    for start in range(0, len(specs), 250):
        chunk = specs[start : start + 250]
        document = {
            "kind": "record_creation",
            "name": f"Accounts {start + 1}-{start + len(chunk)}",
            "description": "Generated by bench/rules.py",
            "defaults": {
                "create_contact": True,
                "resolved_case_window": {"hours": 72, "reopen": True},
            },
            "items": [
                {
                    "name": s.name,
                    "description": f"Mail from or about {s.company}",
                    "when": yaml_when(condition(s)),
                    "then": actions(s),
                }
                for s in chunk
            ],
        }
        path = directory / f"10-accounts-{start // 250:02d}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    catch_all = {
        "kind": "record_creation",
        "name": "Catch-all",
        "items": [
            {
                "name": CATCH_ALL,
                "then": {"create_case": True, "auto_response": "acknowledgement"},
            }
        ],
    }
    (directory / "90-catch-all.yaml").write_text(yaml.safe_dump(catch_all, sort_keys=False))


# -- as Python -------------------------------------------------------------------------

# The variables the hand-written function computes once per message.
VARIABLES = {
    "message.subject": "subject",
    "message.from_domain": "from_domain",
    "message.to": "to",
    "customer.tier": "tier",
    "message.attachment_count": "attachment_count",
}
LIST_FIELDS = {"message.to"}

PROLOGUE = """\
def choose(msg, contact):
    subject = msg.subject.casefold()
    sender = msg.sender
    from_domain = sender.rpartition("@")[2].casefold() if "@" in sender else ""
    to = [r.casefold() for r in msg.recipients]
    tier = None
    if contact is not None:
        if contact.tier:
            tier = contact.tier
        elif contact.account is not None:
            tier = contact.account.tier
        if tier is not None:
            tier = tier.casefold()
    attachment_count = len(msg.attachments)
"""


class PythonWriter:
    """Python source for the same items; regular expressions are compiled once, up front."""

    def __init__(self) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}

    def pattern(self, source: str) -> str:
        name = f"_re{len(self.patterns)}"
        # It searches the casefolded subject, and every generated pattern is lower
        # case, so it needs no re.IGNORECASE (the rules engine searches the subject
        # as written, with re.IGNORECASE: the same answer, which the run checks).
        self.patterns[name] = re.compile(source)
        return name

    def expr(self, c: Cond) -> str:
        kind = c[0]
        if kind == "all":
            return "(" + " and ".join(self.expr(x) for x in c[1]) + ")"
        if kind == "any":
            return "(" + " or ".join(self.expr(x) for x in c[1]) + ")"
        if kind == "not":
            return f"not {self.expr(c[1])}"
        _, field, op, operand = c
        v = VARIABLES[field]
        if isinstance(operand, str):
            operand = operand.casefold()
        elif isinstance(operand, list):
            operand = [o.casefold() if isinstance(o, str) else o for o in operand]
        if field in LIST_FIELDS:
            return self._list(v, op, operand)
        return self._one(v, op, operand)

    def _one(self, v: str, op: str, operand: Any) -> str:
        if op == "equals":
            return f"{v} == {operand!r}"
        if op == "in":
            return f"{v} in {_set(operand)}"
        if op == "gt":
            return f"{v} > {operand!r}"
        if op == "contains":
            words = operand if isinstance(operand, list) else [operand]
            if len(words) == 1:
                return f"{words[0]!r} in {v}"
            return "(" + " or ".join(f"{w!r} in {v}" for w in words) + ")"
        if op in ("starts_with", "ends_with"):
            method = "startswith" if op == "starts_with" else "endswith"
            words = operand if isinstance(operand, list) else [operand]
            arg = repr(words[0]) if len(words) == 1 else repr(tuple(words))
            return f"{v}.{method}({arg})"
        if op == "matches":
            return f"{self.pattern(operand)}.search({v})"
        raise ValueError(op)

    def _list(self, v: str, op: str, operand: Any) -> str:
        if op == "equals":
            return f"{operand!r} in {v}"
        if op == "in":
            return f"not {_set(operand)}.isdisjoint({v})"
        if op == "contains":
            return f"any({operand!r} in r for r in {v})"
        if op == "ends_with":
            return f"any(r.endswith({operand!r}) for r in {v})"
        raise ValueError(op)


def _set(values: Sequence[Any]) -> str:
    return "{" + ", ".join(repr(x) for x in values) + "}"


def python_source(count: int, writer: PythonWriter) -> str:
    lines = [PROLOGUE]
    for i in range(count - 1):
        s = item_spec(i)
        lines.append(f"    if {writer.expr(condition(s))}:\n        return {s.name!r}\n")
    lines.append(f"    return {CATCH_ALL!r}\n")
    return "".join(lines)


Choose = Callable[[InboundMessage, Contact | None], str]


def hand_written(count: int) -> tuple[Choose, str]:
    writer = PythonWriter()
    source = python_source(count, writer)
    namespace: dict[str, Any] = dict(writer.patterns)
    code = compile(source, f"<hand-written {count} items>", "exec")
    exec(code, namespace)  # noqa: S102 (our own generated source)
    return namespace["choose"], source


# -- the corpus --------------------------------------------------------------------------

Mail = tuple[InboundMessage, Contact | None]

BACKGROUND_SUBJECTS = (
    "Question about my order",
    "Can't log in since this morning",
    "Invoice for May looks wrong",
    "Re: your delivery is delayed",
    "Refund request",
    "URGENT: outage in our office",
    "Password reset does not arrive",
    "Warranty claim for a broken unit",
    "How do I upgrade my plan?",
    "Fwd: Order #51234",
    "Please cancel my subscription",
    "Install help needed",
    "Billing address change",
    "License key not accepted",
    "Shipping to Switzerland?",
    "Newsletter: June product news",
    "[case-99123] still not fixed",
    "Thanks!",
    "",
)


def _attachments(n: int) -> list[InboundAttachment]:
    return [InboundAttachment(f"scan-{i}.pdf", "application/pdf", b"%PDF") for i in range(n)]


def _contact(rng: random.Random, tier: str | None, *, via_account: bool) -> Contact | None:
    if tier is None and rng.random() < 0.5:
        return None  # an unknown sender
    if via_account:
        return Contact(full_name="A Customer", tier=None, account=Account(name="Acme", tier=tier))
    return Contact(full_name="A Customer", tier=tier)


def _message(
    i: int,
    rng: random.Random,
    *,
    local: str,
    domain: str,
    subject: str,
    to: list[str],
    attachments: int,
) -> InboundMessage:
    return InboundMessage(
        channel="email",
        external_id=f"<bench-{i}@mail.example>",
        identity_kind="email",
        sender=f"{local}@{domain}",
        sender_name=local.title(),
        recipients=to,
        subject=subject,
        text="Hello,\nplease help.\n",
        attachments=_attachments(attachments),
        message_id=f"<bench-{i}@mail.example>",
    )


def background(i: int, rng: random.Random) -> Mail:
    """Mail no generated item is about (the catch-all's), but sharing their words."""
    if rng.random() < 0.6:
        domain = rng.choice(FREE_MAIL)
    else:
        domain = f"{rng.choice(COMPANIES)}-partners.example.org"
    subject = rng.choice(BACKGROUND_SUBJECTS)
    if rng.random() < 0.3:
        subject = subject.upper()
    to = [rng.choice(SUPPORT_TO)]
    if rng.random() < 0.3:
        to.append("Accounts@Help.Example.com")
    tier = rng.choice(TIERS)
    msg = _message(
        i,
        rng,
        local=f"user{i}",
        domain=domain,
        subject=subject,
        to=to,
        attachments=rng.choice((0, 0, 0, 1, 2, 3, 4)),
    )
    return msg, _contact(rng, tier, via_account=rng.random() < 0.4)


def targeted(i: int, rng: random.Random, s: ItemSpec) -> Mail:
    """Mail about item `s`: it often matches that item, sometimes only nearly."""
    hit = rng.random() < 0.8  # otherwise a near miss: one part of the condition fails
    domain = rng.choice((s.domain, s.alt_domain, f"eu.{s.domain}"))
    kw = rng.choice(s.keywords).upper()
    subjects = {
        0: f"{kw}: please call us" if hit else "Please call us",
        1: f"RE: {s.case_ref.upper()} any news?" if hit else f"About {s.case_ref}",
        2: f"Question about SKU-{s.sku}" if hit else f"Question about SKU {int(s.sku) + 1}",
        3: "Documents attached",
        4: f"My {s.product.upper()} stopped working",
        5: f"{s.product} firmware" if hit else f"firmware for {s.product}",
        6: f"Fwd: Order #{s.order}12" if hit else f"Order #{s.order}12",
        7: "Contract renewal" if hit else "Newsletter from us",
    }
    shape = s.index % 8
    to = [rng.choice(SUPPORT_TO)]
    if shape == 1 and hit:
        to = [s.vip.upper()]
    if shape == 3:
        to.append(f"{s.company}@help.example.com")
    if shape == 5:
        domain = f"eu.{s.domain}" if hit else s.domain
    if shape in (4, 7):
        domain = s.domain
    attachments = rng.choice((0, 1, 3, 5)) if shape in (3, 6) else 0
    if shape == 3:
        attachments = 4 if hit else 1
    tier = rng.choice(("Gold", "Platinum", "Silver")) if hit else rng.choice(TIERS)
    msg = _message(
        i,
        rng,
        local=f"someone{i}",
        domain=domain,
        subject=subjects[shape],
        to=to,
        attachments=attachments,
    )
    return msg, _contact(rng, tier, via_account=rng.random() < 0.4)


def corpus(size: int, largest: int) -> list[Mail]:
    """70% background mail, 30% about items spread over the largest rule set."""
    rng = random.Random(SEED)
    out = []
    for i in range(size):
        if rng.random() < 0.7:
            out.append(background(i, rng))
        else:
            out.append(targeted(i, rng, item_spec(rng.randrange(largest - 1))))
    return out


# -- timing ---------------------------------------------------------------------------


def rules_pass(book: RuleBook, mails: Sequence[Mail]) -> list[str]:
    """What `intake.decide` does with the rules, minus the store: fresh Facts, then match."""
    calendars: dict[str, Any] = {}
    out = []
    for msg, contact in mails:
        facts = Facts(
            msg,
            now=NOW,
            zone=ZONE,
            contact=contact,
            entitled=_not_entitled,
            is_reply=False,
            calendars=calendars,
        )
        item = book.match(facts)
        out.append(item.name if item is not None else "")
    return out


def _not_entitled() -> bool:
    return False


def timed_rules(book: RuleBook, mails: Sequence[Mail], passes: int) -> int:
    match = book.match
    calendars: dict[str, Any] = {}
    entitled = _not_entitled
    start = time.perf_counter_ns()
    for _ in range(passes):
        for msg, contact in mails:
            match(
                Facts(
                    msg,
                    now=NOW,
                    zone=ZONE,
                    contact=contact,
                    entitled=entitled,
                    is_reply=False,
                    calendars=calendars,
                )
            )
    return time.perf_counter_ns() - start


def timed_hand(choose: Choose, mails: Sequence[Mail], passes: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(passes):
        for msg, contact in mails:
            choose(msg, contact)
    return time.perf_counter_ns() - start


Run = Callable[[int], int]


def measure(runs: dict[str, Run], messages: int) -> dict[str, dict[str, Any]]:
    """Median µs per message of each run, over REPEATS rounds of enough passes for 60 ms.

    The runs take turns within every round, so that a noisy neighbour on this
    machine slows both sides of a comparison rather than one.
    """
    passes = {}
    for name, run in runs.items():
        run(1)  # warm up
        passes[name] = max(1, math.ceil(MIN_REPEAT_NS / max(run(1), 1)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    gc.collect()
    gc.disable()
    try:
        for _ in range(REPEATS):
            for name, run in runs.items():
                samples[name].append(run(passes[name]) / (passes[name] * messages) / 1000)
    finally:
        gc.enable()
    return {
        name: {
            "median_us": statistics.median(xs),
            "min_us": min(xs),
            "max_us": max(xs),
            "samples_us": [round(x, 3) for x in xs],
            "passes_per_repeat": passes[name],
        }
        for name, xs in samples.items()
    }


def positions(book: RuleBook, chosen: Sequence[str]) -> dict[str, Any]:
    """Where the corpus matched: how much of the rule list the typical message walks."""
    index = {item.name: i for i, item in enumerate(book.record_creation)}
    where = [index[name] + 1 for name in chosen]
    return {
        "catch_all": sum(1 for name in chosen if name == CATCH_ALL),
        "matched_earlier": sum(1 for name in chosen if name != CATCH_ALL),
        "distinct_items_matched": len(set(chosen)),
        "mean_items_tried": round(statistics.fmean(where), 1),
    }


# -- the run ---------------------------------------------------------------------------


def run_size(
    count: int, mails: Sequence[Mail], console: Console, keep: Path | None
) -> tuple[dict[str, Any], RuleBook]:
    with tempfile.TemporaryDirectory(prefix=f"bench-rules-{count}-") as tmp:
        directory = Path(tmp)
        write_rules(directory, count)
        started = time.perf_counter_ns()
        book = load(directory, TEMPLATES_DIR, Settings(queues=QUEUES))
        load_ms = (time.perf_counter_ns() - started) / 1e6
        yaml_bytes = sum(p.stat().st_size for p in directory.glob("*.yaml"))
        if keep is not None:
            shutil.copytree(directory, keep / f"{count}-items", dirs_exist_ok=True)
    if len(book.record_creation) != count:
        raise AssertionError(f"loaded {len(book.record_creation)} items, wrote {count}")
    started = time.perf_counter_ns()
    choose, source = hand_written(count)
    compile_ms = (time.perf_counter_ns() - started) / 1e6
    if keep is not None:
        (keep / f"{count}-items" / "hand_written.py").write_text(source)

    # The same work, or no figures at all (raised, not asserted: `python -O` keeps it).
    by_rules = rules_pass(book, mails)
    by_hand = [choose(msg, contact) for msg, contact in mails]
    mismatches = [
        (i, r, h) for i, (r, h) in enumerate(zip(by_rules, by_hand, strict=True)) if r != h
    ]
    if mismatches:
        raise AssertionError(f"{count} items: the paths disagree on {mismatches[:5]}")

    timings = measure(
        {
            "rules": lambda n: timed_rules(book, mails, n),
            "hand_written": lambda n: timed_hand(choose, mails, n),
        },
        len(mails),
    )
    rules, hand = timings["rules"], timings["hand_written"]
    ratio = rules["median_us"] / hand["median_us"]
    round_ratios = [r / h for r, h in zip(rules["samples_us"], hand["samples_us"], strict=True)]
    result: dict[str, Any] = {
        "items": count,
        "yaml_bytes": yaml_bytes,
        "python_source_lines": source.count("\n"),
        "load_ms": round(load_ms, 1),
        "hand_written_compile_ms": round(compile_ms, 1),
        "messages_agreeing": len(mails),
        "corpus": positions(book, by_rules),
        "rules": rules,
        "hand_written": hand,
        "ratio": round(ratio, 3),
        "ratio_per_round": [round(x, 2) for x in round_ratios],
        "goal_ratio_pass": ratio <= GOAL_RATIO,
    }
    if count == 1000:
        result["goal_under_us"] = GOAL_US_AT_1000
        result["goal_under_pass"] = rules["median_us"] < GOAL_US_AT_1000
    console.log(
        f"{count:>5} items: loaded in {load_ms:,.0f} ms; all {len(mails)} messages agree; "
        f"rules {rules['median_us']:.2f} µs, hand-written {hand['median_us']:.2f} µs"
    )
    return result, book


def profile(book: RuleBook, mails: Sequence[Mail], top: int = 14) -> list[dict[str, Any]]:
    """cProfile of one pass of the rules path: where the time goes, heaviest first."""
    profiler = cProfile.Profile()
    gc.disable()
    try:
        profiler.enable()
        timed_rules(book, mails, 1)
        profiler.disable()
    finally:
        gc.enable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime")
    out = []
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values())
    for (filename, line, function), entry in sorted(
        entries.items(), key=lambda kv: kv[1][2], reverse=True
    )[:top]:
        _cc, calls, tottime, cumtime, _callers = entry
        where = filename
        if filename.startswith(str(ROOT)):
            where = str(Path(filename).relative_to(ROOT))
        out.append(
            {
                "function": f"{where}:{line}({function})" if line else function,
                "calls": calls,
                "calls_per_message": round(calls / len(mails), 1),
                "tottime_share": round(tottime / total, 3),
                "cumtime_ms": round(cumtime * 1000, 1),
                "source": linecache.getline(filename, line).strip()[:60] if line else "",
            }
        )
    return out


def profile_table(rows: Sequence[dict[str, Any]], items: int) -> Table:
    t = Table(title=f"cProfile, rules path, {items:,} items (own time, heaviest first)")
    t.add_column("function")
    t.add_column("source line")
    t.add_column("calls/msg", justify="right")
    t.add_column("own time", justify="right")
    for r in rows:
        t.add_row(
            r["function"],
            r["source"],
            f"{r['calls_per_message']:,.0f}",
            f"{r['tottime_share']:.0%}",
        )
    return t


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def table(results: Sequence[dict[str, Any]]) -> Table:
    t = Table(title=f"Rules evaluation per message (median of {REPEATS} rounds)")
    t.add_column("items", justify="right")
    t.add_column("load", justify="right")
    t.add_column("catch-all", justify="right")
    t.add_column("tried", justify="right")
    t.add_column("rules µs", justify="right")
    t.add_column("hand µs", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column(f"≤{GOAL_RATIO:g}x", justify="center")
    t.add_column(f"<{GOAL_US_AT_1000:g}µs", justify="center")
    for r in results:
        c = r["corpus"]
        under = r.get("goal_under_pass")
        t.add_row(
            f"{r['items']:,}",
            f"{r['load_ms'] / 1000:.2f} s",
            f"{c['catch_all']}/{r['messages_agreeing']}",
            f"{c['mean_items_tried']:,.0f}",
            f"{r['rules']['median_us']:,.1f}",
            f"{r['hand_written']['median_us']:,.1f}",
            f"{r['ratio']:.2f}x",
            _verdict(r["goal_ratio_pass"]),
            "" if under is None else _verdict(under),
        )
    return t


def _verdict(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[red]FAIL[/]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rules evaluation against hand-written ifs.")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument("--corpus", type=int, default=CORPUS_SIZE, metavar="MESSAGES")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="cProfile the largest set (auto: when the ratio goal fails)",
    )
    parser.add_argument("--keep", type=Path, help="keep the generated YAML and Python here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if min(args.sizes) < 2:
        parser.error("a rule set needs at least 2 items (one, and the catch-all)")
    console = Console(width=max(Console().width, 120))
    started = time.perf_counter()
    mails = corpus(args.corpus, max(args.sizes))
    results = []
    books = {}
    for count in sorted(set(args.sizes)):
        result, books[count] = run_size(count, mails, console, args.keep)
        results.append(result)
    console.print(table(results))
    passed = all(r["goal_ratio_pass"] and r.get("goal_under_pass", True) for r in results)
    report: dict[str, Any] = {
        "benchmark": "rules",
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "method": {
            "corpus_messages": len(mails),
            "rounds": REPEATS,
            "statistic": "median µs per message; the two paths alternate within each round",
            "min_round_ms": MIN_REPEAT_NS / 1e6,
            "gc_during_timing": False,
            "rules_path": "Facts(...) per message, then RuleBook.match",
            "hand_written_path": "casefolded values per message, then a generated if-chain",
        },
        "goals": {"ratio_at_most": GOAL_RATIO, "us_per_message_at_1000_under": GOAL_US_AT_1000},
        "results": results,
        "all_goals_pass": passed,
    }
    ratio_failed = not all(r["goal_ratio_pass"] for r in results)
    if args.profile == "always" or (args.profile == "auto" and ratio_failed):
        largest = max(books)
        rows = profile(books[largest], mails)
        console.print(profile_table(rows, largest))
        report["profile"] = {"items": largest, "top": rows}
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {args.output} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
