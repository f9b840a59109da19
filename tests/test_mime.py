"""Email bytes to InboundMessage: the fields the pipeline needs, from real-world mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels import mime
from tests.support import CORPUS


def raw(*lines: str) -> bytes:
    return ("\r\n".join(lines)).encode("utf-8")


def test_basic_fields() -> None:
    msg = mime.parse(
        raw(
            "From: =?utf-8?q?Jos=C3=A9_P=C3=A9rez?= <Jose@Example.COM>",
            "To: Support <support@example.com>, other@example.com",
            "Cc: boss@example.com",
            "Subject: =?utf-8?b?w4lxdWlwbyByb3Rv?=",
            "Message-ID: <abc@example.com>",
            "In-Reply-To: <parent@example.com>",
            "References: <root@example.com>\r\n <parent@example.com>",
            "Date: Wed, 04 Mar 2026 15:00:00 +0100",
            "",
            "Hola",
        ),
        {"rcpt_tos": ["support@example.com"]},
    )
    assert msg.sender == "jose@example.com"
    assert msg.sender_name == "José Pérez"
    assert msg.subject == "Équipo roto"
    assert msg.recipients == ["support@example.com", "other@example.com", "boss@example.com"]
    assert msg.message_id == "abc@example.com"
    assert msg.in_reply_to == "parent@example.com"
    assert msg.references == ["root@example.com", "parent@example.com"]
    assert msg.thread_ids == ["parent@example.com", "root@example.com"]
    assert msg.text.strip() == "Hola"
    assert msg.sent_at is not None
    assert msg.sent_at.isoformat() == "2026-03-04T14:00:00+00:00"


def test_key_is_message_id_or_a_stable_hash() -> None:
    with_id = raw("Message-ID: <k@example.com>", "Subject: x", "", "body")
    assert mime.message_key(with_id) == "k@example.com"
    without = raw("From: a@example.com", "Subject: x", "", "body")
    assert mime.message_key(without) == mime.message_key(without)
    assert mime.message_key(without).startswith("sha256:")
    assert mime.message_key(without) != mime.message_key(without + b"!")
    huge = raw("Message-ID: <" + "x" * 2000 + "@example.com>", "", "b")
    assert mime.message_key(huge).startswith("sha256:")


def test_html_only_mail_becomes_readable_text() -> None:
    msg = mime.parse(
        raw(
            "From: a@example.com",
            "Content-Type: text/html; charset=utf-8",
            "",
            "<html><head><style>p{color:red}</style></head><body>"
            "<p>Hello&nbsp;team,</p><ul><li>one</li><li>two</li></ul>"
            "<script>alert(1)</script></body></html>",
        )
    )
    assert msg.html is not None
    assert msg.text == "Hello team,\n\n- one\n- two"


def test_attachments_and_wrong_charsets() -> None:
    msg = mime.parse(
        raw(
            "From: a@example.com",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="b"',
            "",
            "--b",
            "Content-Type: text/plain; charset=x-unknown-charset",
            "",
            "caf\u00e9",
            "--b",
            "Content-Type: application/pdf",
            "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf",
            "Content-Transfer-Encoding: base64",
            "",
            "JVBERi0xLjQ=",
            "--b--",
        )
    )
    assert msg.text.strip() == "café"
    assert "text: unknown charset 'x-unknown-charset'" in msg.defects
    [attachment] = msg.attachments
    assert attachment.filename == "résumé.pdf"
    assert attachment.data == b"%PDF-1.4"


def test_sender_falls_back_to_the_envelope() -> None:
    msg = mime.parse(raw("Subject: no from", "", "x"), {"mail_from": "Bounce@Example.com"})
    assert msg.sender == "bounce@example.com"


CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")


def test_the_shared_corpus_is_present() -> None:
    # An empty parametrisation below would pass silently without it.
    assert len(CORPUS_FILES) >= 279, f"expected the real-world corpus at {CORPUS}"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_message_parses(path: Path) -> None:
    data = path.read_bytes()
    msg = mime.parse(data)
    assert msg.external_id == mime.message_key(data)
    assert msg.sender
