"""MIME parsing cost: huge and hostile HTML, and the shared real-world corpus.

The claim to check: the work per message is bounded. An HTML-only message of
1, 5, 10 or 25 MB costs about what a 1 MB one does (the text is taken from the
first MAX_HTML_CHARS characters), and HTML built to be slow (bare `<`, deep
nesting, unclosed tags) costs about the same per character as ordinary HTML.

    .venv/bin/python -m bench.mime            # the tables (about a minute)

Times are the median of 3 runs of `channels.mime.parse` on the whole message
(MIME parsing, charset decoding, HTML to text), in one process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from channels import mime
from channels.htmltext import MAX_HTML_CHARS
from tests.support import CORPUS  # $INGESTD_CORPUS, else shared/corpus beside the checkout

ROW = "<tr><td>cell</td><td><a href='https://example.com/x'>a link</a></td></tr>\n"
HEAD = b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"


def _median(run: Callable[[], object], times: int = 3) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def html_sizes(console: Console) -> None:
    table = Table(title=f"HTML-only mail (text from the first {MAX_HTML_CHARS:,} characters)")
    for column in ("size", "kind", "parse", "text chars"):
        table.add_column(column, justify="right")
    kinds: dict[str, Callable[[int], str]] = {
        "newsletter tables": lambda n: "<table>" + ROW * (n // len(ROW)) + "</table>",
        "bare '<'": lambda n: "<" * n,
        "deep <div>": lambda n: "<div>" * (n // 5),
        "unclosed <a attrs": lambda n: "<a " + "x=1 " * (n // 4),
    }
    for megabytes in (1, 5, 10, 25):
        for kind, build in kinds.items():
            if kind != "newsletter tables" and megabytes not in (1, 10):
                continue
            raw = HEAD + build(megabytes * 1_000_000).encode()
            text_length = len(mime.parse(raw).text)
            seconds = _median(lambda raw=raw: mime.parse(raw))
            table.add_row(f"{megabytes} MB", kind, f"{seconds:.2f} s", f"{text_length:,}")
    console.print(table)


def corpus(console: Console) -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    if not files:
        console.print(f"no corpus at {CORPUS}")
        return
    timings = []
    for path in files:
        raw = path.read_bytes()
        timings.append((_median(lambda raw=raw: mime.parse(raw)), path, len(raw)))
    timings.sort(reverse=True)
    total = sum(t for t, _, _ in timings)
    table = Table(title=f"Shared corpus: {len(files)} messages parsed in {total:.2f} s")
    for column in ("message", "size", "parse"):
        table.add_column(column, justify="right")
    for seconds, path, size in timings[:5]:
        table.add_row(str(path.relative_to(CORPUS)), f"{size:,} B", f"{seconds * 1000:.0f} ms")
    table.add_row("median", "", f"{statistics.median(t for t, _, _ in timings) * 1000:.1f} ms")
    console.print(table)


def main() -> None:
    console = Console()
    html_sizes(console)
    corpus(console)


if __name__ == "__main__":
    main()
