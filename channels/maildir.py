"""Reading a Maildir for `ingestd import --maildir`: files become journal deliveries.

A Maildir has no UIDs, so an interrupted import resumes by key: every file is
read again (local and fast), and whatever the journal already holds is
counted as a duplicate without being written. Files never change here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from channels import mime
from channels.imapconn import HEADER_LIMIT
from channels.imapsync import Sink, Tally, header_key, journal_key
from ingest import failpoints
from ingest.journal import Delivery, Receipt
from ingest.store import StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 200  # files per journal commit


class NotAMaildir(Exception):
    pass


def message_files(root: Path) -> list[Path]:
    """Every message file in new/ and cur/, in delivery order (names start with the time)."""
    folders = [root / "new", root / "cur"]
    if not any(f.is_dir() for f in folders):
        raise NotAMaildir(f"{root} is not a Maildir: it has neither a new/ nor a cur/ folder")
    files = [
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
    ]
    return sorted(files, key=lambda p: p.name)


def read_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        head = handle.read(HEADER_LIMIT)
    for end in (b"\r\n\r\n", b"\n\n"):
        at = head.find(end)
        if at >= 0:
            return head[: at + len(end)]
    return head


class MaildirImport:
    def __init__(
        self,
        root: Path,
        sink: Sink,
        max_message_size: int,
        *,
        batch_size: int = BATCH,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[Tally], None] | None = None,
    ) -> None:
        self.root = root
        self.sink = sink
        self.cap = max_message_size
        self.batch_size = batch_size
        self.stop = stop
        self.progress = progress

    def run(self) -> Tally:
        files = message_files(self.root)
        tally = Tally(candidates=len(files))
        self._report(tally)
        for batch in _chunks(files, self.batch_size):
            self._batch(batch, tally)
            tally.done += len(batch)
            self._report(tally)
            if self.stop():
                break
        return tally

    def _batch(self, files: Sequence[Path], tally: Tally) -> None:
        deliveries: list[Delivery] = []
        for path in files:
            try:
                delivery = self._delivery(path)
            except OSError as exc:  # renamed or removed by a mail client meanwhile
                tally.errors += 1
                log.warning("maildir file unreadable", extra={"file": str(path), "error": str(exc)})
                continue
            if delivery.quarantine is None:
                tally.fetched += 1
            deliveries.append(delivery)
        keys = {d.external_id for d in deliveries if d.quarantine is None}
        known = self.sink.known(keys)
        fresh = [d for d in deliveries if d.quarantine is not None or d.external_id not in known]
        tally.duplicates += len(deliveries) - len(fresh)
        if not fresh:
            return
        results = self.sink.journal(fresh)
        for delivery, result in zip(fresh, results, strict=True):
            if isinstance(result, StoreUnavailable):
                raise result
            if not isinstance(result, Receipt):
                tally.errors += 1
                log.error(
                    "maildir message not journaled",
                    extra={"file": delivery.meta.get("file"), "error": str(result)},
                )
            elif delivery.quarantine is not None:
                tally.oversize += 1
            elif result.duplicate:
                tally.duplicates += 1
            else:
                tally.new += 1
        failpoints.hit("import.after_commit")

    def _delivery(self, path: Path) -> Delivery:
        size = path.stat().st_size
        meta: dict[str, Any] = {
            "listener": "import",
            "backfill": True,
            "source": f"maildir:{self.root}",
            "file": path.name,
            "size": size,
        }
        if size <= self.cap:
            raw = path.read_bytes()
            return Delivery(mime.CHANNEL, journal_key(raw), raw, meta)
        head = read_header(path)
        error = (
            f"message too large: {size} bytes, over the cap of {self.cap} bytes (import "
            f"--max-size); left in the Maildir: {path}; only its header is kept here"
        )
        key = f"oversize:maildir:{header_key(head) or mime.raw_key(head)}"
        return Delivery(mime.CHANNEL, key, head, {**meta, "oversize": True, "cap": self.cap}, error)

    def _report(self, tally: Tally) -> None:
        if self.progress is not None:
            self.progress(tally)


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
