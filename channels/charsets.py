"""Bytes to text when the declared charset is missing, unknown or wrong.

Mail declares charsets loosely: `us-ascii` over UTF-8 bytes, `iso-8859-1`
over Windows-1252 quotes, `ks_c_5601-1987`, `x-unknown`. Labels are read the
way browsers read them (the WHATWG mapping: a Latin-1 label means
Windows-1252, GB2312 means GB18030, Shift_JIS means CP932), a single-byte
label over valid multi-byte UTF-8 is taken for the UTF-8 it is, and what
fails to decode falls back to UTF-8, then Windows-1252, which never fails.
"""

from __future__ import annotations

import codecs

# Labels Python does not know, or knows as a narrower charset than the mail means.
_ALIASES = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "8859-1": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cn-gb": "gb18030",
    "euc-cn": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "x-windows-949": "cp949",
    "big5": "big5hkscs",
    "x-euc-jp": "euc_jp",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "iso-10646-ucs-2": "utf-16-be",
    "unicode": "utf-16",
    "utf8": "utf-8",
}
# Labels that say "we do not know": go straight to the fallbacks.
_UNKNOWN = {"", "unknown", "unknown-8bit", "x-unknown", "x-user-defined", "default", "charset"}
_SINGLE_BYTE_PREFIXES = ("cp125", "iso8859", "mac-", "koi8", "cp874", "cp437", "cp850")


def codec_for(label: str | None) -> str | None:
    """The Python codec for a declared charset label, or None when it is unknown."""
    name = (label or "").strip().strip("\"'").lower()
    if name in _UNKNOWN:
        return None
    name = _ALIASES.get(name, name)
    for candidate in (name, name.removeprefix("x-"), name.replace("win-", "cp").replace("-", "")):
        try:
            return codecs.lookup(candidate).name
        except LookupError:
            continue
    return None


def decode(data: bytes, label: str | None, defects: list[str], where: str = "text") -> str:
    """Text from bytes, whatever the label says; problems are noted in `defects`."""
    codec = codec_for(label)
    if codec is None and (label or "").strip().lower() not in _UNKNOWN:
        defects.append(f"{where}: unknown charset {label!r}")
    if data.isascii() and (codec is None or _ascii_compatible(codec)):
        return data.decode("ascii")
    if codec is not None and _single_byte(codec) and _is_utf8(data):
        if (label or "").lower() not in ("utf-8", "utf8"):
            defects.append(f"{where}: declared {label} but is UTF-8")
        return data.decode("utf-8")
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            defects.append(f"{where}: not valid {label}")
    if _is_utf8(data):
        return data.decode("utf-8")
    return data.decode("cp1252", "replace")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _single_byte(codec: str) -> bool:
    return codec.startswith(_SINGLE_BYTE_PREFIXES) or codec == "ascii"


def _ascii_compatible(codec: str) -> bool:
    # Stateful and wide encodings give ASCII bytes another meaning.
    return not codec.startswith(("utf-16", "utf-32", "utf-7", "iso2022", "hz"))
