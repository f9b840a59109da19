"""Reading one IMAP folder without losing or repeating a message.

A pass selects the folder, works out which UIDs it has not handled yet (the
cursor: last UID handled, with the folder's UIDVALIDITY), and takes them in
batches. Per batch: messages the journal already has are only acknowledged;
messages over the size cap become a quarantine record and stay on the server
untouched; the rest are fetched with BODY.PEEK[] and journaled. Only after the
journal commit are they flagged \\Seen (and moved), and only after that does
the cursor move. A crash anywhere repeats at most one batch, and the journal's
unique key absorbs the repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from channels import mime
from channels.imapconn import ImapConnection, MessageInfo
from ingest import failpoints
from ingest.clock import Clock
from ingest.config import ImapMailboxConfig
from ingest.journal import Delivery, Receipt
from ingest.store import StoreUnavailable

log = logging.getLogger(__name__)

BATCH_MESSAGES = 100
BATCH_BYTES = 16 * 1024 * 1024
INFO_CHUNK = 500
# After a UIDVALIDITY change, mail that arrived since this long before the last
# look is taken even if someone has read it (server and daemon clocks differ).
RESCAN_MARGIN = timedelta(days=1)
# The cursor's checked_at is refreshed at least this often when nothing arrives.
CHECKED_REFRESH = timedelta(hours=1)


class Sink(Protocol):
    """What a folder reader may do with the store."""

    def journal(self, deliveries: Sequence[Delivery]) -> list[Receipt | BaseException]: ...

    def known(self, keys: Collection[str]) -> set[str]: ...

    def cursor(self, name: str) -> dict[str, Any] | None: ...

    def set_cursor(self, name: str, value: dict[str, Any]) -> None: ...


class JournalRefused(Exception):
    """The store took the batch but refused one message in it (not an outage)."""


@dataclass
class Tally:
    """What a pass (or an import) did, message by message."""

    candidates: int = 0  # messages it set out to look at
    fetched: int = 0  # bodies downloaded
    new: int = 0
    duplicates: int = 0  # already in the journal (by IMAP before, SMTP, an import)
    oversize: int = 0  # left on the server, recorded in quarantine
    errors: int = 0
    acknowledged: int = 0  # flagged \Seen (and moved) after the commit
    done: int = 0  # candidates dealt with so far

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SyncOptions:
    cursor_name: str
    acknowledge: bool = True  # the daemon flags and moves; an import leaves the mailbox as is
    scan: Literal["unseen", "all"] = "unseen"
    meta: dict[str, Any] = field(default_factory=dict)
    failpoint: str = "imap"
    batch_size: int = BATCH_MESSAGES  # messages per journal commit (and acknowledgement)


def cursor_name(mailbox: ImapMailboxConfig, prefix: str = "imap") -> str:
    return f"{prefix}:{mailbox.name}/{mailbox.folder}"


def header_key(message_id_header: bytes) -> str | None:
    """The journal key from a Message-ID header alone, or None if the body is needed."""
    try:
        key = mime.message_key(message_id_header or b"\r\n")
    except Exception:
        return None
    return None if key.startswith("sha256:") else key


def journal_key(raw: bytes) -> str:
    try:
        return mime.message_key(raw)
    except Exception:  # a header block the parser rejects still deserves a key
        return mime.raw_key(raw)


class FolderSync:
    """One pass over one folder; the connection is the caller's."""

    def __init__(
        self,
        mailbox: ImapMailboxConfig,
        conn: ImapConnection,
        sink: Sink,
        options: SyncOptions,
        clock: Clock,
        *,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[Tally], None] | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.conn = conn
        self.sink = sink
        self.options = options
        self.clock = clock
        self.stop = stop
        self.progress = progress
        self._checked_at: datetime | None = None
        self._position = 0

    def run_pass(self) -> Tally:
        cfg, opts = self.mailbox, self.options
        started = self.clock.now()
        tally = Tally()
        state = self.conn.select(cfg.folder, readonly=not opts.acknowledge)
        cursor = self.sink.cursor(opts.cursor_name)
        self._checked_at = _parse_time(cursor.get("checked_at")) if cursor else None
        if cursor is not None and cursor.get("uidvalidity") == state.uidvalidity:
            after = int(cursor.get("uid", 0))
        else:
            if cursor is not None and cursor.get("uidvalidity") is not None:
                log.warning(
                    "imap UIDVALIDITY changed: folder re-scanned, known messages skipped",
                    extra={
                        "channel": mime.CHANNEL,
                        "mailbox": cfg.name,
                        "folder": cfg.folder,
                        "old_uidvalidity": cursor.get("uidvalidity"),
                        "uidvalidity": state.uidvalidity,
                    },
                )
            after = 0
            if opts.scan == "unseen":
                # A first look takes unread mail, not the folder's history (that is
                # what `ingestd import` is for); UIDs above `top` are new anyway.
                if state.uidnext:
                    top = state.uidnext - 1
                else:
                    top = max(self.conn.search(["ALL"]), default=0)
                criteria: list[Any] = ["UNSEEN"]
                if self._checked_at is not None:
                    since = (self._checked_at - RESCAN_MARGIN).date()
                    criteria = ["OR", "UNSEEN", "SINCE", since]
                sparse = [u for u in self.conn.search(criteria) if u <= top]
                if not self._take(sparse, tally, state.uidvalidity, advance=False):
                    return tally
                after = top
                self._save(state.uidvalidity, after)
        self._position = after
        if not self._take(self.conn.uids_after(after), tally, state.uidvalidity, advance=True):
            return tally
        stale = self._checked_at is None or started - self._checked_at >= CHECKED_REFRESH
        if tally.done or stale or cursor is None:
            # Everything in the folder when the pass began has been dealt with.
            self._checked_at = started
            self._save(state.uidvalidity, self._position)
        return tally

    # -- batches ---------------------------------------------------------

    def _take(self, uids: list[int], tally: Tally, uidvalidity: int, advance: bool) -> bool:
        """Handle `uids` in order; False when asked to stop part-way."""
        tally.candidates += len(uids)
        self._report(tally)
        for start in range(0, len(uids), INFO_CHUNK):
            chunk = uids[start : start + INFO_CHUNK]
            infos = self.conn.infos(chunk)
            for batch in _batches(
                chunk, infos, self.mailbox.max_message_size, self.options.batch_size
            ):
                self._handle(batch, infos, tally, uidvalidity)
                tally.done += len(batch)
                if advance:
                    self._save(uidvalidity, batch[-1])
                self._report(tally)
                if self.stop():
                    return False
        return True

    def _handle(
        self, batch: list[int], infos: dict[int, MessageInfo], tally: Tally, uidvalidity: int
    ) -> None:
        cfg, opts = self.mailbox, self.options
        present = [uid for uid in batch if uid in infos]  # the rest were expunged meanwhile
        header_keys = {u: k for u in present if (k := header_key(infos[u].message_id_header))}
        known = self.sink.known(set(header_keys.values())) if header_keys else set()
        acknowledge: list[int] = []
        to_fetch: list[int] = []
        too_large: list[int] = []
        for uid in present:
            if header_keys.get(uid) in known:
                acknowledge.append(uid)
                tally.duplicates += 1
            elif infos[uid].size > cfg.max_message_size:
                too_large.append(uid)
            else:
                to_fetch.append(uid)

        pending: list[tuple[int, Delivery]] = []
        bodies = self.conn.bodies(to_fetch)
        tally.fetched += len(bodies)
        for uid in to_fetch:
            raw = bodies.get(uid)
            if raw is not None:
                pending.append(
                    (
                        uid,
                        Delivery(
                            mime.CHANNEL,
                            journal_key(raw),
                            raw,
                            self._meta(uid, infos[uid], uidvalidity),
                        ),
                    )
                )
        for uid in too_large:
            head = self.conn.header(uid)
            if head is not None:
                pending.append((uid, self._quarantine(uid, infos[uid], head, uidvalidity)))
        failpoints.hit(f"{opts.failpoint}.after_fetch")

        receipts = self._journal([d for _, d in pending], tally)
        for (uid, delivery), receipt in zip(pending, receipts, strict=True):
            if delivery.quarantine:
                tally.oversize += 1
                if not receipt.duplicate:
                    log.warning(
                        "imap message too large: left on the server, quarantine record written",
                        extra={
                            "channel": mime.CHANNEL,
                            "mailbox": cfg.name,
                            "uid": uid,
                            "size": infos[uid].size,
                            "journal_id": receipt.journal_id,
                        },
                    )
                continue
            tally.duplicates += receipt.duplicate
            tally.new += not receipt.duplicate
            acknowledge.append(uid)
        failpoints.hit(f"{opts.failpoint}.after_commit")

        if opts.acknowledge and acknowledge:
            self.conn.acknowledge(sorted(acknowledge), cfg.processed_folder)
            tally.acknowledged += len(acknowledge)
            failpoints.hit(f"{opts.failpoint}.after_ack")

    def _journal(self, deliveries: list[Delivery], tally: Tally) -> list[Receipt]:
        if not deliveries:
            return []
        results = self.sink.journal(deliveries)
        receipts: list[Receipt] = []
        for delivery, result in zip(deliveries, results, strict=True):
            if isinstance(result, StoreUnavailable):
                raise result
            if isinstance(result, BaseException) and not delivery.external_id.startswith("sha256:"):
                # A key the store will not hold (a NUL in a Message-ID, say): the
                # hash of the bytes is always storable, and stable across re-reads.
                fallback = Delivery(
                    delivery.channel,
                    mime.raw_key(delivery.raw),
                    delivery.raw,
                    delivery.meta,
                    delivery.quarantine,
                )
                [result] = self.sink.journal([fallback])
            if isinstance(result, BaseException):
                tally.errors += 1
                raise JournalRefused(f"the journal refused a message: {result}") from result
            receipts.append(result)
        return receipts

    def _meta(self, uid: int, info: MessageInfo, uidvalidity: int) -> dict[str, Any]:
        cfg = self.mailbox
        meta: dict[str, Any] = {
            "listener": "imap",
            "mailbox": cfg.name,
            "folder": cfg.folder,
            "uid": uid,
            "uidvalidity": uidvalidity,
            "size": info.size,
        }
        if info.internaldate is not None:
            meta["internaldate"] = info.internaldate.isoformat()
        return {**meta, **self.options.meta}

    def _quarantine(self, uid: int, info: MessageInfo, head: bytes, uidvalidity: int) -> Delivery:
        cfg = self.mailbox
        where = (
            f"left untouched on the server: mailbox {cfg.name!r}, folder {cfg.folder!r}, "
            f"UID {uid} (UIDVALIDITY {uidvalidity})"
        )
        error = (
            f"message too large: {info.size} bytes, over the cap of {cfg.max_message_size} "
            f"bytes (max_message_size of mailbox {cfg.name!r}); {where}; only its header "
            f"is kept here"
        )
        meta = {**self._meta(uid, info, uidvalidity), "oversize": True, "cap": cfg.max_message_size}
        key = f"oversize:{cfg.name}:{header_key(head) or mime.raw_key(head)}"
        return Delivery(mime.CHANNEL, key, head, meta, quarantine=error)

    def _save(self, uidvalidity: int, uid: int) -> None:
        self._position = uid
        value: dict[str, Any] = {"uidvalidity": uidvalidity, "uid": uid}
        if self._checked_at is not None:
            value["checked_at"] = self._checked_at.isoformat()
        self.sink.set_cursor(self.options.cursor_name, value)

    def _report(self, tally: Tally) -> None:
        if self.progress is not None:
            self.progress(tally)


def _batches(
    uids: list[int], infos: dict[int, MessageInfo], cap: int, most: int
) -> Iterator[list[int]]:
    """Runs of UIDs bounded by count and by bytes to download."""
    batch: list[int] = []
    size = 0
    for uid in uids:
        info = infos.get(uid)
        weight = info.size if info is not None and info.size <= cap else 0
        if batch and (len(batch) >= most or size + weight > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += weight
    if batch:
        yield batch


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
