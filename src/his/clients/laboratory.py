"""Client of laboratory's released results: a resulted order's values, which
``his.laboratory.order.resulted.v2`` does not carry (ADR 0032). Patients asks for them when it
copies an order's results into the chart.

The route is internal (``GET /lab/order-results?order_id=…`` on laboratory's listener,
``HIS_LABORATORY_URL``): the gateway never forwards it, and the listener admits only patients'
workload certificate on it (``his.kernel.callers``). No user token goes with the call: no user is
asking, the service applies an event.

Not found is an answer (None): laboratory knows no such resulted order. Anything else that is not
an answer — no connection, a timeout, a 5xx, a refusal of our certificate — is
``DependencyUnavailableError`` (a refusal ``DependencyRefusedError``), which a consumer's handler
lets through so the event is delivered again later. A breaker makes calls fail fast while
laboratory is down, so a batch of events does not wait out one timeout each.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import aiohttp
from pydantic import BaseModel, ValidationError

from his.kernel.pki import WorkloadIdentity
from his.kernel.resilience import CircuitBreaker, DependencyRefusedError, DependencyUnavailableError

#: The route on laboratory's listener, admitted to patients' certificate only.
RESULTS_PATH = "/lab/order-results"
#: How long one call may take (seconds).
TIMEOUT = 3.0


@dataclass(frozen=True)
class ReleasedResult:
    """One result as laboratory stored it: the value, its unit and range, and its flag."""

    code: str
    value: str
    unit: str | None
    reference_low: Decimal | None
    reference_high: Decimal | None
    flag: str


@dataclass(frozen=True)
class ReleasedOrder:
    """A resulted order's results, in the order the tests were asked for."""

    order_id: uuid.UUID
    patient_id: uuid.UUID
    results: tuple[ReleasedResult, ...]


class ReleasedResults(Protocol):
    async def released(self, order_id: uuid.UUID) -> ReleasedOrder | None:
        """The results of a resulted order, or None if laboratory knows no such resulted order;
        ``DependencyUnavailableError`` if laboratory cannot answer."""
        ...


class _Result(BaseModel):
    code: str
    value: str
    unit: str | None
    reference_low: Decimal | None
    reference_high: Decimal | None
    flag: str


class _Order(BaseModel):
    """What of laboratory's answer (its ``LabOrder``) the client reads."""

    id: uuid.UUID
    patient_id: uuid.UUID
    results: list[_Result]


class HttpLaboratory:
    """``ReleasedResults`` over laboratory's listener, with this service's workload certificate."""

    def __init__(self, laboratory_url: str, identity: WorkloadIdentity | None, *, timeout: float = TIMEOUT) -> None:
        self.url = laboratory_url.rstrip("/")
        self._tls = identity.client_context() if identity else True
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the loop
        self.breaker = CircuitBreaker("laboratory", failure_threshold=3, reset_timeout=5.0)

    @classmethod
    def from_env(cls) -> HttpLaboratory:
        """The client of the laboratory at ``HIS_LABORATORY_URL``, with the process's identity."""
        url = os.environ.get("HIS_LABORATORY_URL", "")
        if not url:
            raise RuntimeError("HIS_LABORATORY_URL is not set: lab results cannot be fetched")
        return cls(url, WorkloadIdentity.from_env())

    async def released(self, order_id: uuid.UUID) -> ReleasedOrder | None:
        self.breaker.acquire()  # CircuitOpenError is a DependencyUnavailableError
        try:
            status, body = await self._get(order_id)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.breaker.failure()
            raise DependencyUnavailableError("laboratory", repr(exc)) from exc
        except BaseException:
            self.breaker.release()
            raise
        if status >= 500:
            self.breaker.failure()
            raise DependencyUnavailableError("laboratory", f"answered {status}")
        self.breaker.success()
        if status in (404, 409):
            return None
        if status != 200:  # 401/403: our certificate is not admitted; 422: a call it cannot take
            raise DependencyRefusedError("laboratory", str(status), body[:200].decode(errors="replace"))
        try:
            doc = _Order.model_validate_json(body)
        except ValidationError as exc:
            raise DependencyUnavailableError("laboratory", f"unreadable answer: {exc.error_count()} errors") from exc
        return ReleasedOrder(
            doc.id,
            doc.patient_id,
            tuple(
                ReleasedResult(r.code, r.value, r.unit, r.reference_low, r.reference_high, r.flag) for r in doc.results
            ),
        )

    async def _get(self, order_id: uuid.UUID) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        params = {"order_id": str(order_id)}
        async with self._session.get(f"{self.url}{RESULTS_PATH}", params=params, ssl=self._tls) as r:
            return r.status, await r.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class FakeLaboratory:
    """``ReleasedResults`` in memory: the orders laboratory would answer with; ``down`` makes every
    call fail as an outage does. ``asked`` counts the calls."""

    orders: dict[uuid.UUID, ReleasedOrder] = field(default_factory=dict)
    down: bool = False
    asked: int = 0

    def add(self, order: ReleasedOrder) -> None:
        self.orders[order.order_id] = order

    async def released(self, order_id: uuid.UUID) -> ReleasedOrder | None:
        self.asked += 1
        if self.down:
            raise DependencyUnavailableError("laboratory", "down (fake)")
        return self.orders.get(order_id)


class LaboratoryFromEnv:
    """``HttpLaboratory.from_env()``, made at the first call: the subscriptions are declared
    where no hospital runs (the catalogue, the list of durable consumers)."""

    def __init__(self) -> None:
        self._client: HttpLaboratory | None = None

    async def released(self, order_id: uuid.UUID) -> ReleasedOrder | None:
        if self._client is None:
            self._client = HttpLaboratory.from_env()
        return await self._client.released(order_id)
