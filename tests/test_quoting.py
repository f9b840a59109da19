"""New text, quoted history and signature, in the ways real clients write them."""

from __future__ import annotations

import pytest

from channels.htmltext import html_to_text
from ingest.quoting import split

GMAIL = (
    "Thanks, it works now.\n\nAna\n\n"
    "On Wed, Mar 4, 2026 at 3:00 PM Example Support <support@example.com>\nwrote:\n"
    "> Hello Ana,\n> try again.\n"
)
CASES = [
    # (what the client sent, the new text, the signature, where the quote starts)
    (GMAIL, "Thanks, it works now.\n\nAna", "", "On Wed, Mar 4, 2026"),
    (
        "Danke!\n\nAm 04.03.2026 um 15:00 schrieb Support <support@example.com>:\n> Hallo\n",
        "Danke!",
        "",
        "Am 04.03.2026",
    ),
    (
        "Merci\n\nLe mer. 4 mars 2026 à 15:00, Support <support@example.com> a\nécrit :\n> Bonjour",
        "Merci",
        "",
        "Le mer. 4 mars",
    ),
    (
        "Gracias\n\nEl mié, 4 mar 2026 a las 15:00, Soporte (<soporte@example.com>)"
        " escribió:\n> Hola",
        "Gracias",
        "",
        "El mié",
    ),
    (
        "Still broken.\n\nSent from my iPhone\n\n-----Original Message-----\nFrom: Support\n"
        "Sent: Wednesday\nTo: Ana\nSubject: Re: x\n\nHello",
        "Still broken.",
        "Sent from my iPhone",
        "-----Original Message-----",
    ),
    (
        "Here you go.\n\n________________________________\nVon: Support <s@example.com>\n"
        "Gesendet: Mittwoch, 4. März 2026 15:00\nAn: Ana\nBetreff: Drucker\n\nHallo Ana",
        "Here you go.",
        "",
        "________________",
    ),
    (
        "Answer on top\nFrom: Support <s@example.com>\nSent: Wednesday, March 4, 2026 3:00 PM\n"
        "To: Ana <a@example.com>\nSubject: RE: printer\n\nold text",
        "Answer on top",
        "",
        "From: Support",
    ),
    (
        "On Wed, Mar 4, 2026 at 3:00 PM Support <support@example.com> wrote:\n> Hello\n\n"
        "Bottom-posted answer.",
        "Bottom-posted answer.",
        "",
        "On Wed, Mar 4",
    ),
    ("Only text\n-- \nAna Lima\nACME", "Only text", "Ana Lima\nACME", ""),
    (
        "Short answer\n\nVon meinem iPhone gesendet",
        "Short answer",
        "Von meinem iPhone gesendet",
        "",
    ),
    ("My reply\n\nAna wrote:\n> the question\n> more", "My reply", "", "Ana wrote:"),
    (
        "お世話になります。\n\n2026年3月4日(水) 15:00 Support <s@example.com>:\n> こんにちは",
        None,
        "",
        "",
    ),
]


@pytest.mark.parametrize(("text", "new", "signature", "quote_start"), CASES)
def test_split(text: str, new: str | None, signature: str, quote_start: str) -> None:
    parts = split(text)
    if new is not None:
        assert parts.new == new
    assert parts.signature == signature
    assert parts.quoted.startswith(quote_start)


def test_nothing_marked_means_everything_is_new() -> None:
    for text in (
        "My boss wrote: please fix it.\nThanks",  # no date: not an attribution
        "> inline quote\n\nmy answer\n\n> another quote\n\nanswer two",  # interleaved
        "see below\n\n---------- Forwarded message ----------\nFrom: Bob <b@example.com>\n"
        "Date: Wed, Mar 4, 2026\nSubject: printer\nTo: Ana\n\nOn Tue, Mar 3, 2026 Carl wrote:\n> x",
    ):
        parts = split(text)
        assert parts.new == text.strip("\n")
        assert parts.quoted == ""


def test_an_all_quoted_message_shows_everything() -> None:
    text = "> only a quote\n> nothing else"
    assert split(text).new == text


def test_html_blockquotes_split_like_text_quotes() -> None:
    html = (
        "<div>Works now, thanks!</div><div class='gmail_signature'>Ana</div>"
        "<div class='gmail_quote'><div class='gmail_attr'>On Wed, Mar 4, 2026 at 3:00 PM "
        "Support &lt;support@example.com&gt; wrote:</div>"
        "<blockquote>Please restart.</blockquote></div>"
    )
    parts = split(html_to_text(html))
    assert (parts.new, parts.signature) == ("Works now, thanks!", "Ana")
    assert parts.quoted == (
        "On Wed, Mar 4, 2026 at 3:00 PM Support <support@example.com> wrote:\n> Please restart."
    )
