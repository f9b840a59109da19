"""Reading a folder, in-process against a real Dovecot: cursor, scans, dedupe, TLS, IDLE.

The daemon tests (test_imap_daemon.py) cover the same paths end to end; these
pin down the decisions one by one, quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from channels import mime
from channels.imapconn import NETWORK_ERRORS, AuthenticationFailed, ImapConnection, TlsFailed
from channels.imapsync import FolderSync, SyncOptions, Tally, cursor_name
from ingest.clock import SystemClock
from ingest.config import Config, DatabaseConfig, ImapMailboxConfig
from ingest.journal import Delivery
from ingest.pollsink import DirectSink
from ingest.store import Store
from ingest.store.models import JournalEntry
from tests.dovecot import Dovecot
from tests.harness import email

SEEN = b"\\Seen"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(DatabaseConfig(url=f"sqlite:///{tmp_path / 'ingestd.db'}"))
    store.migrate()
    yield store
    store.dispose()


class Reader:
    """A mailbox config, a connection and a sink: one FolderSync, pass by pass."""

    def __init__(self, dovecot: Dovecot, store: Store, **overrides: Any) -> None:
        self.config = ImapMailboxConfig.model_validate(dovecot.mailbox(**overrides))
        self.conn = ImapConnection(self.config)
        self.conn.open()
        self.sink = DirectSink(store, SystemClock(), mime.CHANNEL)
        self.store = store

    def sync(self, **options: Any) -> FolderSync:
        opts = SyncOptions(cursor_name=cursor_name(self.config), **options)
        return FolderSync(self.config, self.conn, self.sink, opts, SystemClock())

    def run(self, **options: Any) -> Tally:
        return self.sync(**options).run_pass()

    def journal_keys(self) -> list[str]:
        with self.store.read() as session:
            return sorted(session.execute(select(JournalEntry.external_id)).scalars())

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def reader(dovecot: Dovecot, store: Store) -> Iterator[Reader]:
    r = Reader(dovecot, store)
    yield r
    r.close()


def msgid(msg: Any) -> str:
    return str(msg["Message-ID"])


def test_first_look_takes_unread_mail_then_everything_new(dovecot: Dovecot, reader: Reader) -> None:
    history = email("Read long ago")
    unread = email("Waiting for us")
    dovecot.append(history, flags=(SEEN,))
    dovecot.append(unread)

    tally = reader.run()

    assert (tally.new, tally.acknowledged) == (1, 1)
    assert reader.journal_keys() == [msgid(unread).strip("<>")]
    # After the first look the cursor rules: new mail is taken even if already read.
    read_by_a_colleague = email("Opened in Thunderbird before we got it")
    dovecot.append(read_by_a_colleague, flags=(SEEN,))
    assert reader.run().new == 1
    assert msgid(read_by_a_colleague).strip("<>") in reader.journal_keys()
    assert msgid(history).strip("<>") not in reader.journal_keys()
    flags = dovecot.messages()
    assert all(SEEN in f for f in flags.values())


def test_scan_all_takes_the_history_too(dovecot: Dovecot, reader: Reader) -> None:
    dovecot.append(email("old"), flags=(SEEN,))
    dovecot.append(email("new"))
    assert reader.run(scan="all").new == 2


def test_known_mail_is_acknowledged_without_downloading_it(
    dovecot: Dovecot, reader: Reader
) -> None:
    # The same message came in by SMTP first: one journal row, one case.
    msg = email("Sent to both the MX and the mailbox")
    reader.sink.journal([Delivery(mime.CHANNEL, mime.message_key(msg.as_bytes()), msg.as_bytes())])
    dovecot.append(msg)

    tally = reader.run()

    assert (tally.fetched, tally.new, tally.duplicates, tally.acknowledged) == (0, 0, 1, 1)
    assert len(reader.journal_keys()) == 1
    assert SEEN in dovecot.messages()[msgid(msg)]


def test_mail_without_message_id_is_keyed_by_its_bytes_and_read_once(
    dovecot: Dovecot, reader: Reader
) -> None:
    raw = b"From: ann@customer.example\r\nSubject: no id\r\n\r\nhello\r\n"
    dovecot.append(raw)
    assert reader.run().new == 1
    assert reader.journal_keys() == [mime.raw_key(raw)]
    # Forget the cursor (a crash before it moved): the message is read again,
    # and the journal recognises the bytes.
    reader.sink.set_cursor(cursor_name(reader.config), {})
    again = reader.run(scan="all")
    assert (again.fetched, again.new, again.duplicates) == (1, 0, 1)


def test_batches_move_the_cursor_and_a_stop_resumes_where_it_was(
    dovecot: Dovecot, reader: Reader
) -> None:
    dovecot.append(*[email(f"message {i}") for i in range(23)])
    stop_after_first = reader.sync(scan="all", batch_size=10)
    stop_after_first.stop = lambda: True
    first = stop_after_first.run_pass()
    assert (first.done, first.new) == (10, 10)
    cursor = reader.sink.cursor(cursor_name(reader.config))
    assert cursor is not None
    assert cursor["uid"] == 10
    rest = reader.run(scan="all", batch_size=10)
    assert (rest.candidates, rest.new, rest.duplicates) == (13, 13, 0)
    assert len(reader.journal_keys()) == 23
    assert all(SEEN in f for f in dovecot.messages().values())


def test_processed_folder_receives_mail_after_the_commit(dovecot: Dovecot, store: Store) -> None:
    r = Reader(dovecot, store, processed_folder="Processed")
    try:
        r.conn.ensure_folder("Processed")
        msg = email("Move me")
        dovecot.append(msg)
        assert r.run().acknowledged == 1
        assert dovecot.messages() == {}
        assert SEEN in dovecot.messages("Processed")[msgid(msg)]
    finally:
        r.close()


def test_wrong_password_is_a_clear_authentication_error(dovecot: Dovecot) -> None:
    config = ImapMailboxConfig.model_validate(dovecot.mailbox(password="not-it"))
    conn = ImapConnection(config)
    with pytest.raises(AuthenticationFailed, match=r"refused the login of 'support@example.test'"):
        conn.open()
    conn.close()


def test_idle_wakes_on_new_mail_and_notices_a_closed_connection(
    dovecot: Dovecot, reader: Reader
) -> None:
    reader.run()
    stop = threading.Event()
    # Mail that lands between the last command and IDLE is announced together with
    # "+ idling"; imaplib buffers both lines, and the wait must still end at once.
    dovecot.append(email("just before IDLE"))
    began = time.monotonic()
    assert reader.conn.idle(20, stop) is True
    assert time.monotonic() - began < 5
    assert reader.run().new == 1

    threading.Timer(0.3, dovecot.append, args=(email("wake up"),)).start()
    began = time.monotonic()
    assert reader.conn.idle(20, stop) is True
    assert time.monotonic() - began < 10
    assert reader.run().new == 1

    # A connection that dies without a word (no BYE: our side shut here) ends
    # the IDLE at once, rather than spinning on an empty socket until the timeout.
    threading.Timer(0.3, reader.conn.interrupt).start()
    began = time.monotonic()
    with pytest.raises(ConnectionError, match="closed the connection"):
        reader.conn.idle(20, stop)
    assert time.monotonic() - began < 10

    # A server that dies mid-IDLE: the same, and the next command fails.
    fresh = Reader(dovecot, reader.store)
    threading.Timer(0.3, dovecot.stop).start()
    began = time.monotonic()
    with pytest.raises(ConnectionError):
        fresh.conn.idle(20, stop)
    assert time.monotonic() - began < 10
    with pytest.raises(NETWORK_ERRORS):
        fresh.run()
    fresh.close()


def test_tls_and_starttls_verify_the_server_certificate(dovecot_tls: Dovecot, store: Store) -> None:
    assert dovecot_tls.ca_file is not None
    dovecot_tls.append(email("over TLS"))
    tls = Reader(
        dovecot_tls,
        store,
        security="tls",
        port=dovecot_tls.tls_port,
        ca_file=str(dovecot_tls.ca_file),
    )
    assert tls.run().new == 1
    tls.close()
    starttls = Reader(dovecot_tls, store, security="starttls", ca_file=str(dovecot_tls.ca_file))
    assert starttls.conn.client is not None
    assert starttls.conn.client._starttls_done
    starttls.close()
    untrusted = ImapMailboxConfig.model_validate(
        dovecot_tls.mailbox(security="tls", port=dovecot_tls.tls_port)
    )
    with pytest.raises(TlsFailed, match=r"certificate of 127\.0\.0\.1 is not trusted"):
        ImapConnection(untrusted).open()


def test_starttls_is_never_silently_skipped(dovecot: Dovecot) -> None:
    plain_only = ImapMailboxConfig.model_validate(dovecot.mailbox(security="starttls"))
    conn = ImapConnection(plain_only)
    with pytest.raises(TlsFailed, match="does not offer STARTTLS"):
        conn.open()
    conn.close()


# -- configuration ------------------------------------------------------------


def _mailbox(**values: Any) -> dict[str, Any]:
    base = {"name": "support", "host": "imap.example.com", "username": "u", "password": "p"}
    return {**base, **values}


def test_config_defaults_and_ports() -> None:
    config = Config.model_validate({"imap": {"mailboxes": [_mailbox()]}})
    [box] = config.imap.mailboxes
    assert (box.security, box.server_port, box.folder, box.initial_scan) == (
        "tls",
        993,
        "INBOX",
        "unseen",
    )
    assert box.password.get_secret_value() == "p"
    secret = ImapMailboxConfig.model_validate(_mailbox(password="hunter2-secret"))
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in secret.model_dump_json()
    assert ImapMailboxConfig.model_validate(_mailbox(security="starttls")).server_port == 143


@pytest.mark.parametrize(
    ("mailboxes", "message"),
    [
        ([_mailbox(), _mailbox(name="SUPPORT")], "mailbox names must be unique"),
        ([_mailbox(security="none")], "password in clear"),
        ([_mailbox(processed_folder="INBOX")], "processed_folder must differ"),
        ([_mailbox(idle_timeout=1800)], "less than or equal to 1740"),
        ([_mailbox(name="has space")], "should match pattern"),
    ],
)
def test_config_refuses_unsafe_or_ambiguous_mailboxes(
    mailboxes: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({"imap": {"mailboxes": mailboxes}})
