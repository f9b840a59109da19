"""Signed tokens: round trips, purposes, tampering, expiry, rotation, and their shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.signing import ExpiredToken, InvalidToken, Signer

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
SIGNER = Signer(b"a secret of thirty-two bytes....")


def test_a_token_carries_its_payload_for_its_purpose_only() -> None:
    token = SIGNER.sign_id("reply-to", 1234)
    assert SIGNER.verify_id("reply-to", token, now=NOW) == 1234
    with pytest.raises(InvalidToken):
        SIGNER.verify_id("survey", token, now=NOW)
    with pytest.raises(InvalidToken):
        Signer(b"another secret of 32 bytes......").verify_id("reply-to", token, now=NOW)


def test_tokens_survive_a_lower_or_upper_cased_local_part() -> None:
    token = SIGNER.sign_id("reply-to", 10**12)
    assert token == token.lower()
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert SIGNER.verify_id("reply-to", token.upper(), now=NOW) == 10**12
    # support+<token>@ stays within RFC 5321's 64 characters for a local part.
    assert len("support+" + token) <= 64


def test_any_change_to_a_token_is_refused() -> None:
    token = SIGNER.sign_id("reply-to", 99)
    for i in range(len(token)):
        changed = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
        with pytest.raises(InvalidToken):
            SIGNER.verify_id("reply-to", changed, now=NOW)
    for junk in ("", "x", "!!!!", token[:-1], token + "a", "a" * 2000):
        with pytest.raises(InvalidToken):
            SIGNER.verify_id("reply-to", junk, now=NOW)


def test_expiry() -> None:
    token = SIGNER.sign_id("survey", 5, expires_at=NOW + timedelta(days=7))
    assert SIGNER.verify_id("survey", token, now=NOW + timedelta(days=6, hours=23)) == 5
    with pytest.raises(ExpiredToken):
        SIGNER.verify_id("survey", token, now=NOW + timedelta(days=7, minutes=2))


def test_a_rotated_secret_still_verifies_old_tokens() -> None:
    old = Signer(b"the old secret, sixteen+ bytes")
    token = old.sign_id("reply-to", 3)
    rotated = Signer(
        b"the new secret, sixteen+ bytes", previous=[b"the old secret, sixteen+ bytes"]
    )
    assert rotated.verify_id("reply-to", token, now=NOW) == 3
    with pytest.raises(InvalidToken):
        old.verify_id("reply-to", rotated.sign_id("reply-to", 4), now=NOW)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["reply-to", "message-id", "survey"]))
def test_any_payload_round_trips(payload: bytes, purpose: str) -> None:
    token = SIGNER.sign(purpose, payload)
    assert SIGNER.verify(purpose, token, now=NOW) == payload
