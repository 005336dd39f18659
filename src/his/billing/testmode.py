"""The embedded TEST payment provider: what `his up` uses until a real provider is configured.

It behaves like the test mode of the real card-payment providers and moves no money: it accepts
only its documented test card numbers (``TEST_CARDS``; any future expiry, any three or four digit
CVC), refuses every other number, and confirms a succeeded payment to billing the way a real
provider does, with a webhook signed with the shared secret (``his.billing.payments``), posted
to billing's public webhook route through the gateway. Billing verifies that signature like any
provider's. Every answer, checkout and confirmation says ``test_mode: true``.

A confirmation that could not be delivered (billing or the gateway down) is sent again, signed
afresh, every few seconds for three days, as real providers retry their webhooks.

It lives in the billing process (its checkout sessions in billing's schema); a real provider
keeps those on its side.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

import httpx
from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from his.billing.payments import (
    SIGNATURE_HEADER,
    Checkout,
    Confirmation,
    confirmation_body,
    parse_confirmation,
    sign,
    verify_signature,
)
from his.kernel.db import Database, Record
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.web import public

log = logging.getLogger("his.billing.testmode")

NAME = "test"
#: The public path of the checkout (through the gateway); the session's reference follows.
CHECKOUT_PATH = "/api/test-payment-provider/checkout/"
#: The documented test cards and what paying with each does.
TEST_CARDS = {
    "4242424242424242": "succeeded",
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
#: How long an undelivered confirmation is sent again.
RETRY_FOR_SECONDS = 3 * 24 * 3600

#: Posts a signed confirmation to billing's webhook; answers the HTTP status.
Deliver = Callable[[bytes, dict[str, str]], Awaitable[int]]


class NotATestCardError(ValueError):
    """Not one of the test cards (this provider never takes a real card), or a bad expiry or CVC."""


class UnknownSessionError(LookupError):
    """No checkout session has this reference."""


class AlreadyPaidError(Exception):
    """The checkout session was paid already."""


@dataclass(frozen=True)
class Card:
    number: str
    expiry: str  # MM/YY
    cvc: str


def card_outcome(card: Card, today: date) -> str:
    """``succeeded``, or why the test card is declined; ``NotATestCardError`` for anything else."""
    number = re.sub(r"[\s-]", "", card.number)
    if number not in TEST_CARDS:
        raise NotATestCardError(
            "this is the TEST payment provider: it takes only its test card numbers "
            f"({', '.join(TEST_CARDS)}), never a real card"
        )
    m = re.fullmatch(r"(0[1-9]|1[0-2])/(\d{2})", card.expiry.strip())
    if m is None:
        raise NotATestCardError("expiry must be MM/YY")
    month, year = int(m.group(1)), 2000 + int(m.group(2))
    if (year, month) < (today.year, today.month):
        raise NotATestCardError("the card has expired")
    if not re.fullmatch(r"\d{3,4}", card.cvc.strip()):
        raise NotATestCardError("cvc must be 3 or 4 digits")
    return TEST_CARDS[number]


@dataclass(frozen=True)
class Session:
    """A checkout session of the TEST provider: an intent's amount, open until paid with a test
    card (then it has the event id its confirmation carries)."""

    ref: str
    intent_id: uuid.UUID
    amount: Decimal
    currency: str
    status: str
    event_id: str | None

    @classmethod
    def of(cls, row: Record) -> Session:
        return cls(row["ref"], row["intent_id"], row["amount"], row["currency"], row["status"], row["event_id"])

    def page(self) -> dict[str, object]:
        """The session as the payer's checkout page shows it."""
        return {
            "reference": self.ref,
            "test_mode": True,
            "amount": str(self.amount),
            "currency": self.currency,
            "status": self.status,
            "test_cards": TEST_CARDS,
        }


@dataclass(frozen=True)
class Paid:
    """What paying a checkout did: ``succeeded`` (and whether billing has the confirmation yet) or a decline."""

    outcome: str
    delivered: bool = False


class TestModeProvider:
    """The real adapter of the embedded default: sessions in the database, confirmations over HTTP."""

    __test__ = False  # not a pytest test class, whatever its name
    name = NAME
    test_mode = True

    def __init__(
        self, db: Database, secret: bytes, deliver: Deliver, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db, self.secret, self.deliver, self.clock = db, secret, deliver, clock

    async def start(self, intent_id: uuid.UUID, amount: Decimal, currency: str) -> Checkout:
        ref = "cs_test_" + secrets.token_urlsafe(24)
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO test_provider_session (ref, intent_id, amount, currency, status)
                   VALUES ($1, $2, $3, $4, 'open') ON CONFLICT (intent_id) DO NOTHING""",
                ref,
                intent_id,
                amount,
                currency,
            )
            row = await conn.fetchrow("SELECT * FROM test_provider_session WHERE intent_id = $1", intent_id)
        assert row is not None
        if (row["amount"], row["currency"]) != (amount, currency):
            raise ValueError("this payment was opened with another amount")
        return Checkout(NAME, row["ref"], CHECKOUT_PATH + row["ref"], test_mode=True)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Confirmation:
        digest = verify_signature(self.secret, body, headers.get(SIGNATURE_HEADER), now)
        return parse_confirmation(NAME, body, digest)

    async def session(self, ref: str) -> Session | None:
        """A checkout session."""
        row = await self.db.pool.fetchrow("SELECT * FROM test_provider_session WHERE ref = $1", ref)
        return Session.of(row) if row is not None else None

    async def pay(self, ref: str, card: Card) -> Paid:
        """Pay a checkout session with a test card; a success is confirmed to billing at once."""
        outcome = card_outcome(card, datetime.fromtimestamp(self.clock(), UTC).date())
        async with self.db.uow() as uow:
            row = await uow.conn.fetchrow("SELECT * FROM test_provider_session WHERE ref = $1 FOR UPDATE", ref)
            if row is None:
                raise UnknownSessionError(ref)
            if row["status"] == "succeeded":
                raise AlreadyPaidError(ref)
            if outcome != "succeeded":
                await uow.conn.execute("UPDATE test_provider_session SET attempts = attempts + 1 WHERE ref = $1", ref)
                return Paid(outcome)
            paid = await uow.conn.fetchrow(
                """UPDATE test_provider_session SET attempts = attempts + 1, status = 'succeeded', event_id = $2,
                          completed_at = now() WHERE ref = $1 RETURNING *""",
                ref,
                "evt_test_" + secrets.token_hex(12),
            )
            assert paid is not None
        return Paid(outcome, delivered=await self._confirm(Session.of(paid)))

    async def _confirm(self, session: Session) -> bool:
        """Post the signed confirmation of a paid session; True once billing took it (a 2xx)."""
        assert session.event_id is not None, "a paid session has its event id"
        body = confirmation_body(session.event_id, session.ref, session.amount, session.currency, test_mode=True)
        try:
            status = await self.deliver(
                body, {SIGNATURE_HEADER: sign(self.secret, body, int(self.clock())), "content-type": "application/json"}
            )
        except Exception as exc:  # noqa: BLE001 - any failure to deliver is retried later
            log.warning("test payment provider: confirmation of %s not delivered: %r", session.ref, exc)
            return False
        if not 200 <= status < 300:
            log.warning("test payment provider: billing answered %d to the confirmation of %s", status, session.ref)
            return False
        await self.db.pool.execute("UPDATE test_provider_session SET delivered_at = now() WHERE ref = $1", session.ref)
        return True

    async def redeliver(self) -> int:
        """Send again every confirmation billing has not taken yet (within the retry window)."""
        rows = await self.db.pool.fetch(
            """SELECT * FROM test_provider_session WHERE status = 'succeeded' AND delivered_at IS NULL
               AND completed_at > now() - make_interval(secs => $1) ORDER BY completed_at LIMIT 100""",
            float(RETRY_FOR_SECONDS),
        )
        return sum([await self._confirm(Session.of(r)) for r in rows])

    async def run(self, every: float = 5.0) -> None:
        """Retry undelivered confirmations until cancelled (a background task of billing)."""
        while True:
            try:
                await self.redeliver()
            except Exception:  # the task outlives a failed round (the database was down, say)
                log.exception("test payment provider: redelivery failed")
            await asyncio.sleep(every)


@dataclass
class FakeSession:
    """A checkout session of the in-memory provider."""

    intent_id: uuid.UUID
    amount: Decimal
    currency: str
    status: str = "open"
    event_id: str | None = None


@dataclass
class FakePaymentProvider:
    """In memory, for tests of billing without the provider's tables: the same cards, the same
    signed confirmations, delivered by the test itself (``confirmation``)."""

    secret: bytes = b"fake-provider-secret"
    name: str = "fake"
    test_mode: bool = True
    sessions: dict[str, FakeSession] = field(default_factory=dict)

    async def start(self, intent_id: uuid.UUID, amount: Decimal, currency: str) -> Checkout:
        for ref, s in self.sessions.items():
            if s.intent_id == intent_id:
                if (s.amount, s.currency) != (amount, currency):
                    raise ValueError("this payment was opened with another amount")
                return Checkout(self.name, ref, f"fake://{ref}", test_mode=True)
        ref = "fake_" + secrets.token_hex(8)
        self.sessions[ref] = FakeSession(intent_id, amount, currency)
        return Checkout(self.name, ref, f"fake://{ref}", test_mode=True)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Confirmation:
        digest = verify_signature(self.secret, body, headers.get(SIGNATURE_HEADER), now)
        return parse_confirmation(self.name, body, digest)

    def confirmation(self, ref: str, at: float | None = None) -> tuple[bytes, dict[str, str]]:
        """Pay the session and return the signed confirmation a provider would post."""
        s = self.sessions[ref]
        s.status = "succeeded"
        if s.event_id is None:
            s.event_id = "evt_fake_" + secrets.token_hex(8)
        body = confirmation_body(s.event_id, ref, s.amount, s.currency, test_mode=True)
        return body, {SIGNATURE_HEADER: sign(self.secret, body, int(time.time() if at is None else at))}


class CardIn(BaseModel):
    """A test card, as the checkout form sends it (never stored, never logged)."""

    model_config = ConfigDict(extra="forbid")
    card_number: str = Field(min_length=12, max_length=32)
    expiry: str = Field(min_length=4, max_length=7, description="MM/YY")
    cvc: str = Field(min_length=3, max_length=4)


Reference = Annotated[str, PathParam(max_length=100, pattern=r"^cs_test_[A-Za-z0-9_-]+$")]


def checkout_router(provider: TestModeProvider) -> APIRouter:
    """The TEST provider's checkout, which a real provider hosts on its own site: public (the
    session's unguessable reference is what admits the payer), always in test mode."""
    r = APIRouter(prefix="/test-payment-provider", tags=["test payment provider"])

    @r.get("/checkout/{ref}", openapi_extra=public("/api/test-payment-provider/checkout/{ref}", without_token=True))
    async def checkout(ref: Reference) -> dict[str, object]:
        """A checkout session: amount, currency, status and the test cards it accepts (TEST MODE)."""
        found = await provider.session(ref)
        if found is None:
            raise HTTPException(404, "no such checkout session")
        return found.page()

    @r.post("/checkout/{ref}", openapi_extra=public("/api/test-payment-provider/checkout/{ref}", without_token=True))
    async def pay(ref: Reference, body: CardIn) -> dict[str, object]:
        """Pay a checkout session with a test card (TEST MODE: no money moves). A success is
        confirmed to billing with a signed webhook; a declined test card answers 402; any other
        card number is refused (422): this provider never takes a real card."""
        try:
            done = await provider.pay(ref, Card(body.card_number, body.expiry, body.cvc))
        except NotATestCardError as exc:
            raise ProblemError(422, str(exc), test_mode=True, test_cards=TEST_CARDS) from None
        except UnknownSessionError:
            raise HTTPException(404, "no such checkout session") from None
        except AlreadyPaidError:
            raise HTTPException(409, "this checkout session was paid already") from None
        if done.outcome != "succeeded":
            raise ProblemError(
                402, f"the test card was declined ({done.outcome})", decline_code=done.outcome, test_mode=True
            )
        return {"status": "succeeded", "test_mode": True, "confirmed_to_billing": done.delivered}

    return r


def http_delivery(url: str, *, timeout: float = 10.0) -> Deliver:
    """Deliver confirmations by posting them to ``url`` (billing's public webhook route, through
    the gateway, the way an outside provider reaches it)."""
    client: list[httpx.AsyncClient] = []

    async def deliver(body: bytes, headers: dict[str, str]) -> int:
        if not client:
            client.append(httpx.AsyncClient(timeout=timeout))
        r = await client[0].post(url, content=body, headers=headers)
        return r.status_code

    return deliver
