"""The foundation's promise, against the running daemon over real SMTP, on both stores."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests import mail
from tests.support import Daemon, Database, wait_until


def _only_case(daemon: Daemon) -> dict[str, Any]:
    cases: list[dict[str, Any]] = wait_until(daemon.cases)
    assert len(cases) == 1, cases
    return cases[0]


def test_mail_becomes_a_case_and_replies_land_on_it(daemon: Daemon) -> None:
    first = mail.message(message_id="<first@customer.example>")
    assert mail.send(daemon.smtp_port, first) == {}
    daemon.wait_settled()

    case = _only_case(daemon)
    assert case["number"].startswith("CAS-")
    assert case["title"] == "Printer on floor 3 is jammed"
    assert case["state"] == "Active"
    assert case["status_reason"] == "In Progress"
    assert case["priority"] == "Normal"
    assert case["queue"] == "General Support"
    assert case["channel"] == "email"
    assert case["customer"]["email"] == "ann@customer.example"
    assert case["customer"]["name"] == "Ann Customer"

    # A reply by In-Reply-To, then one that only names the case in its subject.
    mail.send(
        daemon.smtp_port,
        mail.message(
            subject="Re: Printer", body="Still jammed.", in_reply_to="<first@customer.example>"
        ),
    )
    mail.send(
        daemon.smtp_port,
        mail.message(subject=f"Update [{case['number']}]", body="Now it smokes."),
    )
    # The same message delivered twice is accepted twice and stored once.
    assert mail.send(daemon.smtp_port, first) == {}
    daemon.wait_settled()

    assert len(daemon.cases()) == 1
    shown = daemon.case(case["number"])
    texts = [a["text"].strip() for a in shown["activities"]]
    assert texts == ["It shows error E42 since this morning.", "Still jammed.", "Now it smokes."]
    for activity in shown["activities"]:
        assert activity["type"] == "email"
        assert activity["direction"] == "incoming"
        assert activity["channel"] == "email"
        assert activity["sender"] == "ann@customer.example"
        assert activity["created_at"]


def test_new_subject_from_same_sender_is_a_new_case(daemon: Daemon) -> None:
    mail.send(daemon.smtp_port, mail.message(subject="First problem"))
    mail.send(daemon.smtp_port, mail.message(subject="Second problem"))
    daemon.wait_settled()
    assert sorted(c["title"] for c in daemon.cases()) == ["First problem", "Second problem"]


def test_only_support_addresses_are_accepted(daemon: Daemon) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as client:
        client.ehlo()
        client.mail("spammer@elsewhere.example")
        code, reply = client.rcpt("victim@elsewhere.example")
        assert code == 550
        assert reply.startswith(b"5.1.1")
        code, _ = client.rcpt("sales@example.com")
        assert code == 550
        code, _ = client.rcpt("SUPPORT@Example.COM")
        assert code == 250
    # Mixed recipients: delivered for ours, refused for the others.
    refused = mail.send(
        daemon.smtp_port, mail.message(), rcpt=["support@example.com", "someone@gmail.example"]
    )
    assert set(refused) == {"someone@gmail.example"}
    assert refused["someone@gmail.example"][0] == 550
    daemon.wait_settled()
    assert len(daemon.cases()) == 1


def test_oversized_mail_is_refused_with_552(tmp_path: Path, database: Database) -> None:
    daemon = Daemon(tmp_path, database, {"smtp": {"max_message_size": 4096}}).start()
    try:
        big = mail.message(body=("x" * 70 + "\n") * 300)
        # smtplib declares SIZE, so the refusal comes at MAIL FROM ...
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            mail.send(daemon.smtp_port, big)
        assert refused.value.smtp_code == 552
        # ... and a client that does not declare it hears 552 after the data.
        code, _ = mail.data_reply(daemon.smtp_port, big)
        assert code == 552
        mail.send(daemon.smtp_port, mail.message(body="small"))
        daemon.wait_settled()
        assert len(daemon.cases()) == 1
    finally:
        assert daemon.stop() == 0


def test_store_outage_answers_451_and_the_retry_is_accepted(daemon: Daemon) -> None:
    msg = mail.message(subject="Sent during the outage")
    with daemon.database.outage():
        code, reply = mail.data_reply(daemon.smtp_port, msg)
        assert code == 451, reply
        assert reply.startswith(b"4.3.0")
        assert wait_until(lambda: daemon.health()["http_status"] == 503, timeout=20)
    # The sender's MTA retries after the outage: accepted, one case.
    code, _ = mail.data_reply(daemon.smtp_port, msg)
    assert code == 250
    daemon.wait_settled(timeout=40)
    assert [c["title"] for c in daemon.cases()] == ["Sent during the outage"]
    assert daemon.health()["status"] == "ok"
    rejected = [e for e in daemon.events() if e.get("event") == "store unavailable, answered 451"]
    assert rejected
    assert rejected[0]["channel"] == "email"


def test_aiosmtplib_client(daemon: Daemon) -> None:
    async def send() -> tuple[dict[str, Any], str]:
        return await aiosmtplib.send(
            mail.message(subject="Sent with aiosmtplib"),
            hostname="127.0.0.1",
            port=daemon.smtp_port,
        )

    errors, response = asyncio.run(send())
    assert errors == {}
    assert response.startswith("2.0.0 Ok: queued as ")
    daemon.wait_settled()
    assert daemon.cases()[0]["title"] == "Sent with aiosmtplib"


def test_health_and_metrics(daemon: Daemon) -> None:
    mail.send(daemon.smtp_port, mail.message())
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mail.send(daemon.smtp_port, mail.message(), rcpt=["nobody@example.org"])
    daemon.wait_settled()
    health = daemon.health()
    assert health["http_status"] == 200
    assert health["status"] == "ok"
    assert health["store"]["ok"] is True
    assert health["journal"] == {"backlog": 0, "dead_letters": 0}

    status, body = daemon.http_get("/metrics")
    assert status == 200
    text = body.decode()
    assert 'ingestd_messages_accepted_total{channel="email",result="new"} 1.0' in text
    assert 'ingestd_messages_rejected_total{channel="email",reason="unknown_recipient"} 1.0' in text
    assert 'ingestd_messages_processed_total{channel="email",outcome="created"} 1.0' in text
    assert 'ingestd_pipeline_latency_seconds_count{channel="email"} 1.0' in text


def test_sigterm_finishes_work_and_exits_zero(daemon: Daemon) -> None:
    for i in range(20):
        mail.send(daemon.smtp_port, mail.message(subject=f"Burst {i}"))
    assert daemon.stop(signal.SIGTERM) == 0
    events = [e["event"] for e in daemon.events()]
    assert events[-1] == "ingestd stopped"
    # Everything acknowledged was processed before the exit.
    restarted = daemon.start()
    assert restarted.health()["journal"]["backlog"] == 0
    assert len(daemon.cases()) == 20


def test_logs_are_structured_and_carry_case_and_channel(daemon: Daemon) -> None:
    mail.send(daemon.smtp_port, mail.message())
    daemon.wait_settled()
    number = daemon.cases()[0]["number"]
    processed = [e for e in daemon.events() if e.get("event") == "message processed"]
    assert processed == [{**processed[0], "channel": "email", "case": number, "outcome": "created"}]
    log = daemon.log()
    for line in log.splitlines():
        json.loads(line)  # one JSON event per line


def test_daemon_started_during_a_store_outage_waits_and_says_so(
    tmp_path: Path, database: Database
) -> None:
    daemon = Daemon(tmp_path, database)
    try:
        with database.outage():
            daemon.start(wait_healthy=False)
            health = wait_until(lambda: (report := daemon.health()).get("migrations") and report)
            assert health["status"] == "starting"
            assert health["http_status"] == 503
            assert health["migrations"]["ok"] is False
            assert daemon.process is not None
            assert daemon.process.poll() is None  # still running, still trying
        wait_until(lambda: daemon.health()["http_status"] == 200, timeout=40)
        mail.send(daemon.smtp_port, mail.message(subject="After the outage"))
        daemon.wait_settled()
        assert [c["title"] for c in daemon.cases()] == ["After the outage"]
    finally:
        assert daemon.stop() == 0


def test_cli_human_output_and_unknown_case(daemon: Daemon) -> None:
    mail.send(
        daemon.smtp_port, mail.message(subject="Invoice 42 is wrong", body="We were charged twice.")
    )
    daemon.wait_settled()
    number = daemon.cases()[0]["number"]
    listing = daemon.cli("cases", "list").stdout
    assert number in listing
    assert "Invoice 42 is wrong" in listing
    assert "General Support" in listing
    shown = daemon.cli("cases", "show", number.lower()).stdout
    assert number in shown
    assert "Activities" in shown
    assert "We were charged twice." in shown
    missing = daemon.cli("cases", "show", "CAS-99999-ZZZZZZ", check=False)
    assert missing.returncode == 3
    assert "no case CAS-99999-ZZZZZZ" in missing.stderr
