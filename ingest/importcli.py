"""`ingestd import`: back-fill a configured mailbox, or a Maildir, into the journal.

Same guarantees as the daemon's IMAP intake: nothing is written twice (the
journal key, plus a check before fetching), every batch is committed before
the next is read, and an interrupted import resumes where it stopped. An
import leaves the mailbox as it is (read-only, no flags, no moves): it copies
history, it does not take mail away from anyone. Afterwards it processes the
journal rows itself (the pipeline's claims make a running daemon safe
alongside), unless `--no-process` leaves them to the daemon. Imported mail
never triggers an auto-response.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ingest.config import Config

EXIT_USAGE = 2
EXIT_MAILBOX = 5
EXIT_INTERRUPTED = 130


def register(commands: Any) -> None:
    cmd = commands.add_parser(
        "import",
        help="back-fill a configured IMAP mailbox (or a Maildir) into the journal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("mailbox", nargs="?", help="a mailbox name from imap.mailboxes")
    cmd.add_argument("--maildir", type=Path, metavar="PATH", help="import a Maildir instead")
    cmd.add_argument(
        "--restart",
        action="store_true",
        help="mailbox: start again from the first message instead of resuming",
    )
    cmd.add_argument(
        "--max-size",
        type=int,
        metavar="BYTES",
        help="Maildir: larger files become quarantine records (default: smtp.max_message_size)",
    )
    cmd.add_argument(
        "--batch-size",
        type=_batch_size,
        metavar="N",
        help="messages per journal commit (default: 100 from a mailbox, 200 from a Maildir)",
    )
    cmd.add_argument(
        "--no-process",
        action="store_true",
        help="only journal; leave processing to the daemon",
    )
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
    cmd.set_defaults(handler=_import)


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("a batch is 1 to 1000 messages")
    return value


def _import(config: Config, args: argparse.Namespace) -> int:
    from channels import mime
    from ingest import cases, logs
    from ingest.clock import SystemClock
    from ingest.pollsink import DirectSink
    from ingest.store import Store

    if (args.mailbox is None) == (args.maildir is None):
        print(
            "ingestd import: give a MAILBOX name or --maildir PATH (one of them)", file=sys.stderr
        )
        return EXIT_USAGE
    mailbox = None
    if args.mailbox is not None:
        mailbox = config.imap.mailbox(args.mailbox)
        if mailbox is None:
            names = ", ".join(m.name for m in config.imap.mailboxes) or "none"
            print(
                f"ingestd import: no mailbox named {args.mailbox!r} in imap.mailboxes "
                f"(configured: {names})",
                file=sys.stderr,
            )
            return EXIT_USAGE
    logs.configure("WARNING", "text")  # problems on stderr, above the progress bars
    clock = SystemClock()
    store = Store(config.database)
    store.migrate()
    with store.write() as session:
        cases.sync_queues(session, config.queues, clock.now())
    sink = DirectSink(store, clock, mime.CHANNEL)
    console = Console(stderr=True)
    source = f"mailbox {mailbox.name!r}" if mailbox else f"Maildir {args.maildir}"
    started = time.monotonic()
    summary: dict[str, Any] = {"source": source}
    status = 0
    with _progress(console) as progress:
        task = progress.add_task(f"Importing {source}", total=None, counts="")

        def show(tally: Any) -> None:
            progress.update(
                task,
                total=tally.candidates,
                completed=tally.done,
                counts=(
                    f"new {tally.new} · duplicates {tally.duplicates} · "
                    f"oversize {tally.oversize} · errors {tally.errors}"
                ),
            )

        try:
            if mailbox is not None:
                tally = _import_mailbox(mailbox, sink, clock, args, show)
            else:
                tally = _import_maildir(args, config, sink, show)
        except KeyboardInterrupt:
            summary["interrupted"] = "run the same command again to resume"
            status = EXIT_INTERRUPTED
            tally = None
        except _Failed as exc:
            summary["error"] = str(exc)
            status = exc.code
            tally = exc.tally
    if tally is not None:
        summary.update(tally.as_dict())
    summary["seconds"] = round(time.monotonic() - started, 2)
    if status == 0 and not args.no_process:
        summary["processed"] = _process(config, store, clock, console)
    store.dispose()
    _print_summary(summary, args.json)
    return status


class _Failed(Exception):
    def __init__(self, message: str, code: int, tally: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.tally = tally


def _import_mailbox(
    mailbox: Any, sink: Any, clock: Any, args: argparse.Namespace, show: Any
) -> Any:
    from channels.imapconn import NETWORK_ERRORS, AuthenticationFailed, ImapConnection
    from channels.imapsync import BATCH_MESSAGES, FolderSync, SyncOptions, Tally, cursor_name

    options = SyncOptions(
        batch_size=args.batch_size or BATCH_MESSAGES,
        cursor_name=cursor_name(mailbox, "import"),
        acknowledge=False,
        scan="all",
        meta={"listener": "import", "backfill": True},
        failpoint="import",
    )
    if args.restart:
        sink.set_cursor(options.cursor_name, {})
    conn = ImapConnection(mailbox)
    last = Tally()

    def progress(tally: Tally) -> None:
        nonlocal last
        last = tally
        show(tally)

    try:
        conn.open()
        return FolderSync(mailbox, conn, sink, options, clock, progress=progress).run_pass()
    except AuthenticationFailed as exc:
        raise _Failed(str(exc), EXIT_MAILBOX, last) from None
    except NETWORK_ERRORS as exc:
        raise _Failed(
            f"the mailbox server failed: {type(exc).__name__}: {exc}; run again to resume",
            EXIT_MAILBOX,
            last,
        ) from None
    finally:
        conn.close()


def _import_maildir(args: argparse.Namespace, config: Config, sink: Any, show: Any) -> Any:
    from channels.maildir import BATCH, MaildirImport, NotAMaildir

    cap = args.max_size or config.smtp.max_message_size
    batch = args.batch_size or BATCH
    try:
        return MaildirImport(args.maildir, sink, cap, batch_size=batch, progress=show).run()
    except NotAMaildir as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None


def _process(config: Config, store: Any, clock: Any, console: Console) -> int:
    from channels import mime
    from ingest.pipeline import Pipeline
    from ingest.rulewatch import RuleWatcher

    pipeline = Pipeline(
        store,
        config,
        clock,
        {mime.CHANNEL: mime.parse},
        rules=RuleWatcher(config),
        claim_channels=[mime.CHANNEL],
    )
    waiting, _ = pipeline.backlog()
    handled = 0
    with _progress(console) as progress:
        task = progress.add_task("Processing", total=waiting, counts="")
        while batch := pipeline.run_batch():
            handled += batch
            progress.update(task, completed=handled, total=max(waiting, handled))
    return handled


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
        console=console,
        transient=False,
    )


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    lines = [f"import of {summary['source']}:"]
    if "fetched" in summary:
        lines.append(
            f"  looked at {summary['done']} of {summary['candidates']} messages in "
            f"{summary['seconds']}s: fetched {summary['fetched']}, new {summary['new']}, "
            f"duplicates {summary['duplicates']}, oversize {summary['oversize']}, "
            f"errors {summary['errors']}"
        )
    if summary.get("oversize"):
        lines.append(
            "  oversize messages were left where they are; see them with "
            "`ingestd journal list --outcome dead`"
        )
    if "processed" in summary:
        lines.append(f"  processed {summary['processed']} journal rows")
    if "interrupted" in summary:
        lines.append(f"  interrupted: {summary['interrupted']}")
    if "error" in summary:
        lines.append(f"  stopped: {summary['error']}")
    print("\n".join(lines))
