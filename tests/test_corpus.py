"""Every message of the shared real-world corpus through the pipeline, on both stores.

279 messages from other mail libraries' test suites (bounces, torture tests,
spam, broken MIME), journaled one row per file and processed with the
starter rules. None may fail or stay pending: each becomes a case, lands on
one, is a duplicate of an earlier file with the same Message-ID, is skipped by
a rule, or is a dead letter with its reason. The README reports these counts.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from channels import mime
from ingest import guard
from ingest.journal import Delivery, Receipt
from ingest.store.models import JournalEntry
from tests.harness import Harness
from tests.support import CORPUS, REPO, Database

EXPECTED = {"created": 196, "duplicate": 52, "skipped": 29, "appended": 2}
STARTER_IGNORE = "rule 'Automatic replies and bounces' (10-record-creation.yaml)"


def test_every_corpus_message_is_ingested_or_a_dead_letter(database: Database) -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 279, f"the shared corpus is expected at {CORPUS}"
    h = Harness(
        database.url,
        rules_dir=str(REPO / "rules"),
        templates_dir=str(REPO / "templates"),
        queues=[{"name": q} for q in ("General Support", "Gold Support", "Billing")],
    )
    try:
        deliveries = [
            Delivery("email", f"corpus:{p.relative_to(CORPUS)}", p.read_bytes(), {}) for p in files
        ]
        assert all(isinstance(r, Receipt) for r in h.journal.commit(deliveries))
        h.process()
        with h.store.read() as session:
            rows = list(session.execute(select(JournalEntry)).scalars())
    finally:
        h.close()

    outcomes = Counter(row.outcome for row in rows)
    assert dict(outcomes) == EXPECTED  # no dead letters, nothing failed or pending
    for row in rows:
        if row.outcome == "skipped":
            assert row.decided_by == STARTER_IGNORE
            msg = mime.parse(row.raw)
            assert guard.never_answer(msg) is not None
        elif row.outcome == "dead":  # none today; if one appears it must say why
            assert row.last_error
    skipped = [mime.parse(r.raw) for r in rows if r.outcome == "skipped"]
    assert sum(1 for m in skipped if guard.is_bounce(m)) == 17
    assert sum(1 for m in skipped if not guard.is_bounce(m)) == 12
