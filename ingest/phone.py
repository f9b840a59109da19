"""Phone numbers in E.164 (`+4915112345678`), the form every SMS identity is stored in."""

from __future__ import annotations

import phonenumbers


class NotAPhoneNumber(ValueError):
    pass


def e164(raw: str, region: str | None = None) -> str:
    """The number in E.164; `region` (ISO 3166, e.g. "DE") reads numbers written nationally.

    Raises NotAPhoneNumber for text that is no possible number at all.
    """
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise NotAPhoneNumber(f"{raw!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise NotAPhoneNumber(f"{raw!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sender_address(raw: str, region: str | None = None) -> str:
    """An SMS sender as an identity: E.164 when it is a number, else the sender id as sent.

    Short codes ("72345") and alphanumeric sender ids ("ACME") are not E.164
    numbers, but they are still who wrote: they are kept, trimmed.
    """
    try:
        return e164(raw, region)
    except NotAPhoneNumber:
        return "".join(raw.split())


def region_of(address: str) -> str | None:
    """The ISO country code of an E.164 number ("DE"), or None."""
    try:
        number = phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return None
    region: str | None = phonenumbers.region_code_for_number(number)
    return region
