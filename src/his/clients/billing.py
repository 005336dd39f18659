"""Client of billing's terms (``his.billing.v1.BillingTerms.GetTerms``): the payer plans and the
currencies the hospital can bill, for the services that check a payer or a price at their edge.

Which services may call it is billing's allowlist (``src/his/billing/api/grpc.py``). The real
adapter keeps the answer for a short while (``ttl``, 30 s by default): a plan added in billing
is accepted elsewhere within that time. A call that gets no answer raises
``DependencyUnavailableError`` (a 503 to the user): an unchecked value is never let through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from his.kernel.pki import WorkloadIdentity
from his.kernel.problems import ProblemError
from his.kernel.resilience import DependencyUnavailableError


@dataclass(frozen=True)
class Terms:
    """What billing can bill: payer plan codes and invoice currencies, each sorted."""

    payers: tuple[str, ...]
    currencies: tuple[str, ...]


class UnknownValueError(ValueError):
    """A value the hospital does not know; ``valid`` names the ones it does (for a 422)."""

    def __init__(self, field: str, value: str, valid: tuple[str, ...]) -> None:
        super().__init__(f"unknown {field} {value!r}: valid values are {', '.join(valid)}")
        self.field, self.value, self.valid = field, value, valid

    def problem(self) -> ProblemError:
        """The 422 to answer: the message, the field and the valid values as members."""
        return ProblemError(422, str(self), field=self.field, valid_values=list(self.valid))


def known_payer(terms: Terms, payer: str) -> str:
    """The payer code as billing spells it (codes are upper-case; input is matched without case),
    or ``UnknownValueError`` naming the valid codes."""
    code = payer.strip().upper()
    if code not in terms.payers:
        raise UnknownValueError("payer", payer, terms.payers)
    return code


def known_currency(terms: Terms, currency: str) -> str:
    """The currency if billing invoices in it, else ``UnknownValueError`` naming those it does."""
    if currency not in terms.currencies:
        raise UnknownValueError("currency", currency, terms.currencies)
    return currency


class BillingTermsLookup(Protocol):
    async def terms(self) -> Terms:
        """Billing's terms now (or as recently cached); ``DependencyUnavailableError`` if billing
        cannot answer."""
        ...


class GrpcBillingTerms:
    """The real adapter. grpcio is imported here, so only processes that call billing load it."""

    def __init__(
        self, target: str, identity: WorkloadIdentity, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from his.kernel import rpc
        from his.proto.billing.v1 import billing_pb2_grpc

        self.client = rpc.RpcClient("billing", rpc.channel(target, identity), timeout=2.0)
        self.stub = billing_pb2_grpc.BillingTermsStub(self.client.channel)
        self.ttl, self.clock = ttl, clock
        self._cached: tuple[float, Terms] | None = None

    async def terms(self) -> Terms:
        from his.proto.billing.v1 import billing_pb2

        now = self.clock()
        if self._cached is not None and self._cached[0] > now:
            return self._cached[1]
        answer = await self.client.ask(self.stub.GetTerms, billing_pb2.GetTermsRequest(), absent=())
        assert answer is not None  # no code is "absent": every refusal raises
        found = Terms(tuple(sorted(p.code for p in answer.payers)), tuple(sorted(answer.currencies)))
        self._cached = (now + self.ttl, found)
        return found


@dataclass
class FakeBillingTerms:
    """In-memory terms for tests: the plans and currency billing seeds."""

    payers: tuple[str, ...] = ("ALLIANZ", "NOVA", "SELF", "SGK")
    currencies: tuple[str, ...] = ("TRY",)
    #: When set, every look-up fails as an outage would.
    down: bool = False

    async def terms(self) -> Terms:
        if self.down:
            raise DependencyUnavailableError("billing", "down (fake)")
        return Terms(tuple(sorted(self.payers)), tuple(sorted(self.currencies)))
