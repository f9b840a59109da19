"""SMS webhooks: Twilio's form POST, and a generic JSON POST for other providers.

Every request is authenticated before anything is stored: Twilio's
`X-Twilio-Signature` over the public URL and the POST parameters, or our
HMAC-SHA256 over a timestamp and the body (older than the replay window:
refused). Then the body is journaled as received, keyed by the provider's
message id, and only then answered 200; a store that cannot commit gets 503,
so the provider retries. A re-sent message (same MessageSid) is answered 200
again and stored once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.acceptor import Acceptor, read_body
from channels.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    hmac_problem,
    twilio_valid,
)
from channels.sms_parse import CHANNEL, twilio_form
from ingest.channelconfig import SmsAccountConfig, SmsConfig
from ingest.journal import Delivery
from ingest.logs import redact_secret
from ingest.phone import sender_address

log = logging.getLogger(__name__)

TWILIO_PATH = "/webhooks/twilio/sms"
GENERIC_PATH = "/webhooks/sms/{account}"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class SmsWebhooks:
    def __init__(
        self, config: SmsConfig, acceptor: Acceptor, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.acceptor = acceptor
        self.wall_clock = wall_clock  # replay checks compare with the provider's clock
        for account in config.accounts:
            for secret in (account.auth_token, account.secret):
                if secret is not None:
                    redact_secret(secret.get_secret_value())

    def routes(self) -> list[Route]:
        routes = []
        if any(a.provider == "twilio" for a in self.config.accounts):
            routes.append(Route(TWILIO_PATH, self.twilio, methods=["POST"]))
        if any(a.provider == "generic" for a in self.config.accounts):
            routes.append(Route(GENERIC_PATH, self.generic, methods=["POST"]))
        return routes

    def _public_url(self, request: Request) -> str:
        """The URL the provider signed: ours as the world sees it, behind any proxy."""
        if not self.config.public_url:
            return str(request.url)
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{self.config.public_url}{request.url.path}{query}"

    def _address(self, raw: str) -> str:
        return sender_address(raw, self.config.default_region)

    # -- Twilio -----------------------------------------------------------------

    def _twilio_account(self, to: str, service: str | None) -> SmsAccountConfig | None:
        for account in self.config.accounts:
            if account.provider != "twilio":
                continue
            if to in account.numbers:
                return account
            if service and account.messaging_service_sid == service:
                return account
        return None

    async def twilio(self, request: Request) -> Response:
        acceptor = self.acceptor
        if not acceptor.ready():
            return acceptor.unavailable(CHANNEL, "starting")
        body = await read_body(request)
        if body is None:
            return acceptor.refuse(CHANNEL, 413, "body too large", "bad_request")
        try:
            params = twilio_form(body)
        except UnicodeDecodeError:
            return acceptor.refuse(CHANNEL, 400, "the form is not UTF-8", "bad_request")
        form = dict(params)
        to = self._address(form.get("To", ""))
        account = self._twilio_account(to, form.get("MessagingServiceSid"))
        if account is None:
            return acceptor.refuse(
                CHANNEL, 404, "no SMS account for this number", "unknown_target", to=to
            )
        signature = request.headers.get("X-Twilio-Signature")
        assert account.auth_token is not None  # config guarantees it for twilio
        if not signature or not twilio_valid(
            account.auth_token.get_secret_value(), self._public_url(request), params, signature
        ):
            why = "bad signature" if signature else "missing signature"
            return acceptor.refuse(CHANNEL, 403, why, "bad_signature", account=account.name)
        if form.get("AccountSid") and form["AccountSid"] != account.account_sid:
            return acceptor.refuse(
                CHANNEL, 403, "AccountSid is not this account's", "bad_signature"
            )
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid")
        if not sid:
            return acceptor.refuse(CHANNEL, 400, "no MessageSid", "bad_request")
        meta = {
            "listener": "twilio-webhook",
            "provider": "twilio",
            "account": account.name,
            "from": self._address(form.get("From", "")),
            "to": to,
        }
        receipt = await acceptor.accept(Delivery(CHANNEL, sid, body, meta))
        if receipt is None:
            return acceptor.unavailable(CHANNEL, "store unavailable")
        # An empty TwiML document: no automatic reply from Twilio itself.
        return Response(TWIML_EMPTY, 200, media_type="text/xml")

    # -- generic JSON -----------------------------------------------------------

    async def generic(self, request: Request) -> Response:
        acceptor = self.acceptor
        if not acceptor.ready():
            return acceptor.unavailable(CHANNEL, "starting")
        name = request.path_params["account"]
        account = next(
            (a for a in self.config.accounts if a.name == name and a.provider == "generic"), None
        )
        if account is None:
            return acceptor.refuse(CHANNEL, 404, "no such SMS account", "unknown_target")
        body = await read_body(request)
        if body is None:
            return acceptor.refuse(CHANNEL, 413, "body too large", "bad_request")
        assert account.secret is not None  # config guarantees it for generic
        problem = hmac_problem(
            account.secret.get_secret_value(),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            self.wall_clock(),
            self.config.replay_window_seconds,
        )
        if problem is not None:
            label = "stale" if problem.startswith("stale") else "bad_signature"
            return acceptor.refuse(CHANNEL, 403, problem, label, account=name)
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            message_id, sender = str(doc["id"]), str(doc["from"])
            to = self._address(str(doc.get("to") or (account.sender or "")))
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            return acceptor.refuse(
                CHANNEL, 400, f"not an SMS message: {exc}", "bad_request", account=name
            )
        meta = {
            "listener": "sms-webhook",
            "provider": "generic",
            "account": name,
            "from": self._address(sender),
            "to": to,
        }
        receipt = await acceptor.accept(Delivery(CHANNEL, f"{name}:{message_id}", body, meta))
        if receipt is None:
            return acceptor.unavailable(CHANNEL, "store unavailable")
        return JSONResponse(
            {"ok": True, "journal_id": receipt.journal_id, "duplicate": receipt.duplicate}
        )
