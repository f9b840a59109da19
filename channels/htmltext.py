"""Readable text from customer HTML, with a bounded amount of work.

HTML-only mail (most phone and webmail clients) must read well in a case:
paragraphs and line breaks kept, links shown with their address, lists as
`-` or `1.` items, table rows on one line with ` | ` between cells, quoted
history (`<blockquote>`) prefixed with `> ` so that quote separation treats it
like plain-text quoting, and a Gmail signature after a `-- ` line.

Only the first MAX_HTML_CHARS characters are read: the work per message is
bounded whatever arrives (a 10 MB newsletter costs what a 1 MB one does; see
bench/mime.py for the figures).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

MAX_HTML_CHARS = 1_000_000
MAX_TEXT_CHARS = 500_000

_BLOCK = {
    "p", "div", "tr", "table", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
    "h6", "pre", "hr", "section", "article", "header", "footer", "main", "aside", "nav",
    "address", "figure", "figcaption", "center", "form", "fieldset", "caption", "tbody",
    "thead", "tfoot", "blockquote", "li",
}  # fmt: skip
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre", "hr"}
_SKIP = {"script", "style", "head", "title", "template", "noscript", "svg", "object", "iframe"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "area", "base", "col", "wbr", "source"}
_SPACE = re.compile(r"[ \t\r\n\f\v\xa0\u200b]+")
_SIGNATURE_CLASSES = ("gmail_signature", "moz-signature")
_MAX_LINKS = 2000
_MAX_INDENT = 10  # quote and list levels shown; deeper nesting is shown at this depth


@dataclass
class _List:
    ordered: bool
    counter: int = 0


@dataclass
class _Row:
    cells: int = 0


@dataclass
class _State:
    lines: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    prefix: str = ""  # the quote and list prefix of the current line
    breaks: int = 0  # line breaks asked for before the next text
    size: int = 0


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.s = _State()
        self.skipping: list[str] = []
        self.quote = 0
        self.line_quote = 0  # the quote depth of the line being written
        self.pre = 0
        self.lists: list[_List] = []
        self.rows: list[_Row] = []
        self.links: list[tuple[str, int]] = []  # href, output size when the link opened
        self.link_count = 0
        self.full = False

    # -- output ------------------------------------------------------------------

    def _break(self, count: int = 1) -> None:
        self.s.breaks = max(self.s.breaks, count)

    def _flush_line(self) -> None:
        line = "".join(self.s.current).rstrip()
        self.s.current = []
        self.s.lines.append((self.s.prefix + line).rstrip() if line else self.s.prefix.rstrip())

    def _emit(self, text: str) -> None:
        if self.full or not text:
            return
        at_line_start = self.s.breaks > 0 or (not self.s.current and not self.s.lines)
        if at_line_start:
            if not self.pre:
                text = text.lstrip(" ")
                if not text:
                    return  # whitespace between blocks: no line of its own
            if self.s.current:
                self._flush_line()
            if self.s.breaks > 1 and self.s.lines and self.s.lines[-1].strip("> "):
                # A blank line between two quote depths belongs to the shallower one.
                depth = min(self.line_quote, self.quote)
                self.s.lines.append(("> " * min(depth, _MAX_INDENT)).rstrip())
            self.s.breaks = 0
            self.line_quote = self.quote
            self.s.prefix = self._quote_prefix() + self._list_indent()
        text = text[: MAX_TEXT_CHARS - self.s.size + 1]
        self.s.current.append(text)
        self.s.size += len(text)
        if self.s.size > MAX_TEXT_CHARS:
            self.full = True

    def _quote_prefix(self) -> str:
        return "> " * min(self.quote, _MAX_INDENT)

    def _list_indent(self) -> str:
        return "  " * min(max(len(self.lists) - 1, 0), _MAX_INDENT)

    # -- parser hooks ------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping:
            if tag == self.skipping[-1] or tag in _SKIP:
                self.skipping.append(tag)
            return
        if tag in _SKIP:
            self.skipping.append(tag)
            return
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "br":
            self._newline()
        elif tag == "blockquote":
            self._break(1)
            self.quote += 1
        elif tag in ("ul", "ol"):
            self._break(1)
            self.lists.append(_List(ordered=tag == "ol"))
        elif tag == "li":
            self._break(1)
            self._emit_marker()
        elif tag == "tr":
            self._break(1)
            self.rows.append(_Row())
        elif tag in ("td", "th"):
            if self.rows:
                row = self.rows[-1]
                if row.cells:
                    self._emit(" | ")
                row.cells += 1
        elif tag == "pre":
            self._break(2)
            self.pre += 1
        elif tag == "img":
            alt = " ".join((attributes.get("alt") or "").split())
            if alt:
                self._emit(f"[{alt}]")
        elif tag == "a":
            self.links.append((attributes.get("href") or "", self.s.size))
        elif tag in _BLOCK:
            self._break(2 if tag in _PARAGRAPH else 1)
        if any(c in _SIGNATURE_CLASSES for c in classes):
            self._break(1)
            self._emit("-- ")
            self._break(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag == "blockquote" and self.quote:
            self._break(1)
            self.quote -= 1
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self._break(1)
        elif tag == "tr" and self.rows:
            self.rows.pop()
            self._break(1)
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self._break(2)
        elif tag == "a" and self.links:
            href, opened_at = self.links.pop()
            self._link(href, opened_at)
        elif tag in _BLOCK:
            self._break(2 if tag in _PARAGRAPH else 1)

    def handle_data(self, data: str) -> None:
        if self.skipping or self.full:
            return
        if self.pre:
            for i, piece in enumerate(data.replace("\r\n", "\n").split("\n")):
                if i:
                    self._newline()
                self._emit(piece)
            return
        text = _SPACE.sub(" ", data)
        if text.strip() or self.s.current:
            self._emit(text)

    # -- pieces --------------------------------------------------------------------

    def _newline(self) -> None:
        if self.s.current or self.s.lines:
            self.s.breaks = min(self.s.breaks + 1, 2)

    def _emit_marker(self) -> None:
        if not self.lists:
            self._emit("- ")
            return
        current = self.lists[-1]
        current.counter += 1
        self._emit(f"{current.counter}. " if current.ordered else "- ")

    def _link(self, href: str, opened_at: int) -> None:
        href = href.strip()
        if not href or href.startswith(("#", "javascript:", "cid:", "data:")):
            return
        self.link_count += 1
        if self.link_count > _MAX_LINKS:
            return
        shown = href.removeprefix("mailto:")
        label_length = self.s.size - opened_at
        if label_length <= 0:
            self._emit(shown)
            return
        text = "".join(self.s.current)
        label = text[-label_length:] if label_length <= len(text) else ""
        if shown.rstrip("/") not in label:
            self._emit(f" ({shown})")


def html_to_text(html: str) -> str:
    """Readable plain text from HTML; only the first MAX_HTML_CHARS are read."""
    collector = _Collector()
    collector.feed(html[:MAX_HTML_CHARS])
    collector.close()
    state = collector.s
    if state.current:
        collector._flush_line()
    text = "\n".join(state.lines)
    text = re.sub(r"(?: \| )+", " | ", text)
    text = re.sub(r"(?m)^(>?[> ]*)\| ", r"\1", text)
    text = re.sub(r"(?m) \|$", "", text)
    text = re.sub(r"\n(?:[> ]*\n){2,}", "\n\n", text)
    return text.strip("\n")[:MAX_TEXT_CHARS]


def is_truncated(html: str) -> bool:
    return len(html) > MAX_HTML_CHARS
