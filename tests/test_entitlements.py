"""Entitlements: terms counted and given back, restrict or not, dates, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from ingest import cli, entitlements, lifecycle
from ingest.entitlementadmin import EntitlementSpec, create
from ingest.entitlements import TermsExhausted, effective_state, remaining_for
from ingest.store.models import Account, Case, Contact, ContactIdentity, Entitlement
from tests.harness import Harness, email
from tests.support import Database

ANN = "ann@customer.example"
BEN = "ben@customer.example"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")

CONTRACT_RULES = """
kind: record_creation
name: Intake
items:
  - name: Contract support
    when: {message.subject: {starts_with: "[contract]"}}
    then: {create_case: true, require_entitlement: true}
  - name: Everything else
    then: {create_case: true, create_contact: true}
"""

SETTINGS: dict[str, Any] = {
    "calendars": {
        "office": {"timezone": "Europe/Berlin", "hours": dict.fromkeys(WEEKDAYS, "09:00-17:00")}
    },
    "sla": {
        "default_policy": "Standard",
        "policies": {
            "Standard": {
                "calendar": "office",
                "items": [{"name": "Resolve", "kpi": "resolution", "fail_after": "16h"}],
            },
            "Gold": {
                "calendar": "office",
                "items": [
                    {"name": "Gold respond", "kpi": "first_response", "fail_after": "15m"},
                    {"name": "Gold resolve", "kpi": "resolution", "fail_after": "8h"},
                ],
            },
        },
    },
}


@pytest.fixture
def h(database: Database, tmp_path: Path) -> Iterator[Harness]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-intake.yaml").write_text(CONTRACT_RULES)
    running = Harness(database.url, rules_dir=str(rules), **SETTINGS)
    yield running
    running.close()


def add_customers(h: Harness) -> None:
    """Customer Ltd with two contacts, Ann and Ben."""
    now = h.clock.now()
    with h.store.write() as session:
        account = Account(name="Customer Ltd", attributes={}, created_at=now, updated_at=now)
        for name, address in (("Ann Lee", ANN), ("Ben Roe", BEN)):
            contact = Contact(
                full_name=name,
                email=address,
                attributes={},
                account=account,
                created_at=now,
                updated_at=now,
            )
            session.add(
                ContactIdentity(contact=contact, kind="email", address=address, created_at=now)
            )


def entitle(h: Harness, **fields: Any) -> int:
    today = h.clock.now().date()
    spec = EntitlementSpec.model_validate(
        {
            "name": "Support 2026",
            "account": "Customer Ltd",
            "start": today,
            "end": today + timedelta(days=30),
            **fields,
        }
    )
    with h.store.write() as session:
        entitlement, _ = create(session, spec, h.clock.now(), ["Standard", "Gold"])
        return entitlement.id


def mail(h: Harness, subject: str, sender: str = ANN) -> Case | None:
    receipt = h.deliver(email(subject=subject, sender=sender))
    h.process()
    number = h.row(receipt.journal_id).case_number
    return h.case(number) if number else None


def left(h: Harness, entitlement_id: int) -> tuple[int | None, dict[str, int | None]]:
    with h.store.read() as session:
        entitlement = session.get(Entitlement, entitlement_id)
        assert entitlement is not None
        return entitlement.remaining_terms, {
            c.channel: c.remaining_terms for c in entitlement.channels
        }


def act(h: Harness, number: str, verb: str) -> None:
    book, now = h.pipeline.sla, h.clock.now()
    with h.store.write() as session:
        case = session.execute(select(Case).where(Case.number == number)).scalar_one()
        if verb == "resolve":
            lifecycle.resolve(session, case, now, book)
        elif verb == "cancel":
            lifecycle.cancel(session, case, now, book)
        else:
            lifecycle.reopen(session, case, now, book)


def test_terms_count_down_on_creation_and_come_back_on_cancel(h: Harness) -> None:
    add_customers(h)
    gold = entitle(h, terms=2, sla="Gold")
    first = mail(h, "[contract] printer down")
    assert first is not None
    assert (first.entitlement_id, first.sla_policy, first.entitlement_charged) == (
        gold,
        "Gold",
        True,
    )
    assert left(h, gold) == (1, {})
    second = mail(h, "[contract] scanner down", sender=BEN)  # the account covers its contacts
    assert second is not None
    assert left(h, gold) == (0, {})
    # Restricted and used up: a message that requires an entitlement is skipped ...
    assert mail(h, "[contract] fax down") is None
    # ... and one that does not is a case under the default SLA, with no term counted.
    plain = mail(h, "a question")
    assert plain is not None
    assert (plain.entitlement_id, plain.sla_policy) == (None, "Standard")
    assert left(h, gold) == (0, {})

    act(h, second.number, "cancel")
    assert left(h, gold) == (1, {})
    assert h.case(second.number).entitlement_charged is False
    with pytest.raises(lifecycle.TransitionError):
        act(h, second.number, "cancel")
    third = mail(h, "[contract] fax down again")
    assert third is not None
    assert third.entitlement_id == gold
    assert left(h, gold) == (0, {})
    # A cancelled case reopened takes its term back, past zero if it must.
    act(h, second.number, "reopen")
    assert left(h, gold) == (-1, {})


def test_allow_negative_lets_cases_open_past_zero(h: Harness) -> None:
    add_customers(h)
    loose = entitle(h, terms=1, restrict=False)
    for subject in ("[contract] one", "[contract] two", "[contract] three"):
        case = mail(h, subject)
        assert case is not None
        assert case.entitlement_id == loose
    assert left(h, loose) == (-2, {})


def test_terms_counted_on_resolution_are_counted_once(h: Harness) -> None:
    add_customers(h)
    on_resolution = entitle(h, terms=2, decrement_on="resolution")
    case = mail(h, "[contract] slow network")
    assert case is not None
    assert left(h, on_resolution) == (2, {})
    act(h, case.number, "resolve")
    assert left(h, on_resolution) == (1, {})
    act(h, case.number, "reopen")
    act(h, case.number, "resolve")
    assert left(h, on_resolution) == (1, {})  # resolved twice, counted once
    act(h, case.number, "reopen")
    act(h, case.number, "cancel")
    assert left(h, on_resolution) == (2, {})


def test_terms_per_channel(h: Harness) -> None:
    add_customers(h)
    split = entitle(h, terms=5, channels={"email": 1, "sms": None})
    case = mail(h, "[contract] by mail")
    assert case is not None
    assert left(h, split) == (4, {"email": 0, "sms": None})
    assert mail(h, "[contract] by mail again") is None  # email's share is used up
    with h.store.read() as session:
        entitlement = session.get(Entitlement, split)
        assert entitlement is not None
        assert remaining_for(entitlement, "sms") == 4  # unlimited on sms, within the total
        assert remaining_for(entitlement, "telegram") == 0  # not granted at all


def test_dates_states_and_which_entitlement_applies(h: Harness) -> None:
    add_customers(h)
    today = h.clock.now().date()
    expired = entitle(
        h, name="Last year", start=today - timedelta(days=400), end=today - timedelta(days=1)
    )
    waiting = entitle(
        h, name="Next month", start=today + timedelta(days=30), end=today + timedelta(days=60)
    )
    draft = entitle(h, name="Draft", state="Draft")
    assert mail(h, "[contract] nothing valid today") is None

    account_wide = entitle(h, name="Account")
    preferred = entitle(h, name="Preferred", default=True, sla="Gold")
    case = mail(h, "[contract] which one")
    assert case is not None
    assert (case.entitlement_id, case.sla_policy) == (preferred, "Gold")
    # Ben's own entitlement wins over the account's default.
    own = entitle(h, name="Ben's own", account=None, contact=BEN)
    case = mail(h, "[contract] mine", sender=BEN)
    assert case is not None
    assert case.entitlement_id == own
    # Narrowed to Ben, ending first and marked default: it would win for Ann if it covered her.
    narrowed = entitle(
        h, name="Only Ben", contacts=[BEN], default=True, end=today + timedelta(days=9)
    )
    case = mail(h, "[contract] Ann again")
    assert case is not None
    assert case.entitlement_id == preferred  # not narrowed to Ann
    with h.store.read() as session:
        states = {
            e.id: effective_state(e, today) for e in session.execute(select(Entitlement)).scalars()
        }
    assert states == {
        expired: "Expired",
        waiting: "Waiting",
        draft: "Draft",
        account_wide: "Active",
        preferred: "Active",
        own: "Active",
        narrowed: "Active",
    }


def test_the_last_term_goes_to_one_case_only(h: Harness) -> None:
    add_customers(h)
    first, second = mail(h, "first"), mail(h, "second")
    assert first is not None
    assert second is not None
    last = entitle(h, terms=1)
    # Two daemons decided with one term left; the first to count it wins.
    for session_case, wins in ((first.number, True), (second.number, False)):
        with h.store.write() as session:
            case = session.execute(select(Case).where(Case.number == session_case)).scalar_one()
            entitlement = session.get(Entitlement, last)
            assert entitlement is not None
            if wins:
                entitlements.charge(session, case, entitlement)
            else:
                with pytest.raises(TermsExhausted):
                    entitlements.charge(session, case, entitlement)
    assert left(h, last) == (0, {})
    charged = (h.case(first.number).entitlement_charged, h.case(second.number).entitlement_charged)
    assert charged == (True, False)


# -- the CLI ----------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration file for the CLI, its SQLite store holding Customer Ltd."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    path = tmp_path / "ingestd.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": url}, **SETTINGS}))
    h = Harness(url, **SETTINGS)
    try:
        add_customers(h)
    finally:
        h.close()
    return path


def test_entitlements_cli(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, config, "entitlements", "add", "Gold 2026", "--account", "customer ltd",
        "--end", "2026-12-31", "--start", "2026-01-01", "--terms", "10",
        "--channel-terms", "email=8", "--sla", "Gold", "--default", "--json",
    )  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert (added["customer"]["account"], added["terms"], added["sla"], added["default"]) == (
        "Customer Ltd",
        {"total": 10, "remaining": 10},
        "Gold",
        True,
    )
    assert added["channels"] == [{"channel": "email", "total": 8, "remaining": 8}]

    code, out, _ = run_cli(
        capsys, config, "entitlements", "add", "Solo", "--contact", "New@Person.example",
        "--end", "2099-01-01", "--allow-negative", "--decrement-on", "resolution",
    )  # fmt: skip
    assert code == 0
    assert "contact new@person.example created" in out

    end = ["--end", "2027-01-01"]
    for args, words in [
        (["--account", "Nobody Inc", *end], "no account named 'Nobody Inc'"),
        (["--contact", "x@y.example", *end, "--sla", "Platinum"], "unknown SLA policy"),
        (["--contact", "x@y.example", *end, "--start", "2027-02-01"], "end is before start"),
        (["--account", "Customer Ltd", *end, "--contacts", "zed@else.example"], "not a contact"),
        (["--contact", "x@y.example", *end, "--channel-terms", "email"], "CHANNEL=N"),
    ]:
        code, _, err = run_cli(capsys, config, "entitlements", "add", "Bad", *args)
        assert code == 1
        assert words in err, err

    code, out, _ = run_cli(capsys, config, "entitlements", "list", "--json")
    assert [(e["name"], e["state"]) for e in json.loads(out)] == [
        ("Gold 2026", "Active"),
        ("Solo", "Active"),
    ]
    code, out, _ = run_cli(capsys, config, "entitlements", "list", "--customer", "person")
    assert "Solo" in out
    assert "Gold 2026" not in out
    code, out, _ = run_cli(capsys, config, "entitlements", "show", "Gold 2026")
    assert code == 0
    assert "10 of 10; email 8 of 8" in out
    assert run_cli(capsys, config, "entitlements", "show", "404")[0] == 3

    assert run_cli(capsys, config, "entitlements", "cancel", "Gold 2026")[0] == 0
    code, out, _ = run_cli(capsys, config, "entitlements", "list", "--state", "Cancelled", "--json")
    assert [e["name"] for e in json.loads(out)] == ["Gold 2026"]
    code, _, err = run_cli(capsys, config, "entitlements", "activate", "Gold 2026")
    assert code == 1
    assert "only a draft is activated" in err


def test_entitlements_import(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    dates = "    start: 2026-01-01\n    end: 2026-12-31\n"
    broken.write_text(
        "entitlements:\n"
        f"  - name: Fine\n    contact: ann@customer.example\n{dates}"
        f"  - name: Typo\n    account: Customer Ltd\n{dates}"
        "    trems: 5\n"
        f"  - name: Unknown account\n    account: Nobody\n{dates}"
    )
    code, _, err = run_cli(capsys, config, "entitlements", "import", str(broken))
    assert code == 1
    assert f"{broken}:10: entitlements[1].trems: unknown field" in err
    fixed = tmp_path / "entitlements.yaml"
    fixed.write_text(broken.read_text().replace("trems", "terms"))
    code, _, err = run_cli(capsys, config, "entitlements", "import", str(fixed))
    assert code == 1
    assert f"{fixed}:11: entitlements[2]: no account named 'Nobody'" in err
    # All or none: nothing was added.
    code, out, _ = run_cli(capsys, config, "entitlements", "list", "--json")
    assert json.loads(out) == []

    fixed.write_text(fixed.read_text().replace("account: Nobody", "contact: new@person.example"))
    code, out, _ = run_cli(capsys, config, "entitlements", "import", str(fixed), "--json")
    assert code == 0
    report = json.loads(out)
    assert [e["name"] for e in report["created"]] == ["Fine", "Typo", "Unknown account"]
    assert report["created"][1]["terms"] == {"total": 5, "remaining": 5}
    # Importing again changes nothing.
    code, out, _ = run_cli(capsys, config, "entitlements", "import", str(fixed))
    assert code == 0
    assert out.count("already there") == 3


def test_effective_states_follow_the_dates() -> None:
    entitlement = Entitlement(
        state="Active", start_date=date(2026, 1, 1), end_date=date(2026, 12, 31)
    )
    assert effective_state(entitlement, date(2025, 12, 31)) == "Waiting"
    assert effective_state(entitlement, date(2026, 1, 1)) == "Active"
    assert effective_state(entitlement, date(2026, 12, 31)) == "Active"
    assert effective_state(entitlement, date(2027, 1, 1)) == "Expired"
    entitlement.state = "Cancelled"
    assert effective_state(entitlement, date(2026, 6, 1)) == "Cancelled"
