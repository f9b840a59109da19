"""A real Dovecot IMAP server per test: its own config, port, user and Maildir.

`scripts/ensure-dovecot.sh` (run by `make test`) installs Debian's
dovecot-imapd; the `dovecot` fixture starts `/usr/sbin/dovecot -F` under a
temporary directory (ready in well under a second) and stops it after the
test. Tests put mail in with IMAP APPEND and look at flags and folders with
their own imapclient connection.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from tests.support import free_port, missing

DOVECOT = Path("/usr/sbin/dovecot")
USER = "support@example.test"
PASSWORD = "dovecot-test-secret"


class Dovecot:
    """One Dovecot with one user whose mail lives under `root`."""

    def __init__(self, root: Path, tls: bool = False) -> None:
        self.root = root
        self.tls = tls
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.process: subprocess.Popen[bytes] | None = None
        self.ca_file: Path | None = None
        self._write_config()

    # -- lifecycle ----------------------------------------------------------

    def _write_config(self) -> None:
        root = self.root
        for sub in ("base", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        if os.geteuid() == 0:
            # Dovecot will not store mail as root; its helpers must reach the files.
            user, group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
            shutil.chown(root / "home", user, group)
            for path in (root, root / "passwd"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            services = ""
        else:
            user = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            services = (
                f"default_login_user = {user}\n"
                f"default_internal_user = {user}\n"
                f"default_internal_group = {group}\n"
                "service anvil {\n  chroot =\n}\n"
            )
        ssl = "ssl = no\n"
        imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        if self.tls:
            self.ca_file = _self_signed(root)
            ssl = f"ssl = yes\nssl_cert = <{root / 'cert.pem'}\nssl_key = <{root / 'key.pem'}\n"
            imaps = (
                "  inet_listener imaps {\n"
                f"    address = 127.0.0.1\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
            )
        login_chroot = "  chroot =\n" if os.geteuid() != 0 else ""
        (root / "dovecot.conf").write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root / "base"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
{services}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={root / "home"}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
{login_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
{imaps}}}
"""
        )

    def start(self) -> Dovecot:
        self.process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() reaches every child
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited {self.process.returncode}: {err}{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"dovecot did not answer on port {self.port}:\n{self.log()}")

    def stop(self, graceful: bool = False) -> None:
        """Kill the server and all its processes at once (a crash: clients see the
        connection drop), or with `graceful` shut it down as an operator would: it
        says BYE to clients, which takes Dovecot about ten seconds with IDLE clients."""
        if self.process is None or self.process.poll() is not None:
            return
        if graceful:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- what tests do with it ------------------------------------------------

    def mailbox(self, name: str = "support", **overrides: Any) -> dict[str, Any]:
        """A mailbox entry for ingestd's `imap.mailboxes`."""
        entry: dict[str, Any] = {
            "name": name,
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "username": USER,
            "password": PASSWORD,
            "timeout": 5,
        }
        entry.update(overrides)
        return entry

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(USER, PASSWORD)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self,
        *messages: EmailMessage | bytes,
        folder: str = "INBOX",
        flags: tuple[bytes, ...] = (),
        when: datetime | None = None,
    ) -> None:
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for msg in messages:
                raw = msg if isinstance(msg, bytes) else msg.as_bytes()
                client.append(folder, raw, flags=flags, msg_time=when)

    def messages(self, folder: str = "INBOX") -> dict[str, tuple[bytes, ...]]:
        """Message-ID → flags, for every message in the folder."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return {}
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            if not uids:
                return {}
            fetched = client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out = {}
        for data in fetched.values():
            header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().strip()
            out[header.partition(":")[2].strip()] = tuple(data[b"FLAGS"])
        return out

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            return int(client.select_folder(folder, readonly=True)[b"UIDVALIDITY"])


def _self_signed(root: Path) -> Path:
    """A certificate for 127.0.0.1 that the test trusts as its own CA."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (root / "key.pem").chmod(0o644)
    return root / "cert.pem"


def start_dovecot(tls: bool = False) -> Dovecot:
    if not DOVECOT.exists():
        missing("Dovecot", f"{DOVECOT} is not installed (scripts/ensure-dovecot.sh installs it)")
    # Not pytest's tmp_path: its 0700 parents would keep Dovecot's helpers out.
    root = Path(tempfile.mkdtemp(prefix="ingestd-dovecot-"))
    server = Dovecot(root, tls=tls)
    try:
        return server.start()
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        missing("Dovecot", str(exc))
        raise


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def dovecot_tls() -> Iterator[Dovecot]:
    server = start_dovecot(tls=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
