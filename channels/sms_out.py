"""Outbound SMS: Twilio's Messages resource, or a signed JSON POST to a generic provider.

The row's recipient is the customer's E.164 number; `SMS-Account` names the
configured account (optional with one), `SMS-From` our number to send from
(default: the account's first number, or its Messaging Service). A text over
the account's `max_length` (Twilio: 1,600 characters) goes as several SMS.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from channels.outparts import PartProgress, configured
from channels.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, hmac_signature
from channels.sms_parse import ACCOUNT_HEADER, CHANNEL, FROM_HEADER
from channels.textsplit import split
from ingest.channelconfig import SmsAccountConfig, SmsConfig
from ingest.outbox import OutboundMessage, PermanentFailure, Sent, TemporaryFailure
from ingest.phone import NotAPhoneNumber, e164

# Twilio error codes that no retry can fix: invalid or unreachable number, opted out.
_TWILIO_PERMANENT = {21211, 21212, 21408, 21603, 21604, 21606, 21610, 21614, 21612}


class SmsSender:
    channel = CHANNEL

    def __init__(self, config: SmsConfig) -> None:
        self.config = config
        self.accounts = {a.name: a for a in config.accounts}
        self.http = httpx.AsyncClient(timeout=config.timeout)
        self.progress = PartProgress()

    def _account(self, message: OutboundMessage) -> SmsAccountConfig:
        name = message.headers.get(ACCOUNT_HEADER)
        sender = message.headers.get(FROM_HEADER)
        if not name and sender:  # the account that owns the number to send from
            name = next((a.name for a in self.accounts.values() if sender in a.numbers), None)
        return configured(self.accounts, name, "SMS account")

    async def send(self, message: OutboundMessage) -> Sent:
        account = self._account(message)
        text = (message.body_text or "").strip()
        if not text:
            raise PermanentFailure("the message has no text")
        try:
            to = e164(message.recipient, self.config.default_region)
        except NotAPhoneNumber as exc:
            raise PermanentFailure(str(exc)) from None
        sender = message.headers.get(FROM_HEADER) or account.sender
        parts = split(text, account.max_length)

        async def send_one(index: int, part: str, previous: str | None) -> str:
            if account.provider == "twilio":
                return await self._twilio(account, to, sender, part)
            return await self._generic(account, to, sender, part, f"{message.id}.{index}")

        ids = await self.progress.send(message.id, parts, send_one)
        return Sent(f"{account.provider} accepted {', '.join(ids)}", message_id=ids[0])

    async def _twilio(
        self, account: SmsAccountConfig, to: str, sender: str | None, text: str
    ) -> str:
        assert account.account_sid
        assert account.auth_token
        form = {"To": to, "Body": text}
        if account.messaging_service_sid and (not sender or sender not in account.numbers):
            form["MessagingServiceSid"] = account.messaging_service_sid
        elif sender:
            form["From"] = sender
        else:
            raise PermanentFailure(f"SMS account {account.name!r} has no number to send from")
        base = account.api_base_url.rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{account.account_sid}/Messages.json"
        answer = await self._post(
            url,
            data=form,
            auth=(account.account_sid, account.auth_token.get_secret_value()),
        )
        if answer.status_code in (200, 201):
            return str(_json(answer).get("sid") or "?")
        body = _json(answer)
        code = body.get("code")
        detail = body.get("message") or answer.text[:200]
        problem = f"Twilio {answer.status_code} (error {code}): {detail}"
        if code in _TWILIO_PERMANENT:
            raise PermanentFailure(problem)
        raise _failure(answer.status_code, problem)

    async def _generic(
        self, account: SmsAccountConfig, to: str, sender: str | None, text: str, part_id: str
    ) -> str:
        if not account.send_url:
            raise PermanentFailure(f"SMS account {account.name!r} has no send_url")
        assert account.secret is not None
        body = json.dumps(
            {"id": f"ingestd-{part_id}", "to": to, "from": sender, "text": text}
        ).encode()
        stamp = str(int(time.time()))
        answer = await self._post(
            account.send_url,
            content=body,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: hmac_signature(account.secret.get_secret_value(), stamp, body),
            },
        )
        if 200 <= answer.status_code < 300:
            return str(_json(answer).get("id") or f"ingestd-{part_id}")
        raise _failure(answer.status_code, f"provider {answer.status_code}: {answer.text[:200]}")

    async def _post(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self.http.aclose()


def _failure(status: int, problem: str) -> PermanentFailure | TemporaryFailure:
    # 401/403: credentials, which a config fix repairs; 408/429/5xx pass by themselves.
    if status in (401, 403, 408, 409, 425, 429) or status >= 500:
        return TemporaryFailure(problem)
    return PermanentFailure(problem)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
