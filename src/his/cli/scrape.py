"""Figures for `his status` from two scrapes of a process's /metrics. Pure: no IO.

A scrape is reduced to the few cumulative numbers the status view needs (HTTP requests,
server errors and the latency histogram, operator routes left out); request rate and p95 are
then computed from the difference between two scrapes, as Prometheus' ``rate`` and
``histogram_quantile`` would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from his.kernel.metrics import OPS_ROUTES

HTTP_HISTOGRAM = "his_http_request_duration_seconds"


@dataclass(frozen=True)
class Scrape:
    """Cumulative figures of one process at one moment (``at``, in seconds of a monotonic clock)."""

    at: float
    requests: float = 0.0
    errors: float = 0.0
    #: Cumulative bucket counts by upper bound (seconds), ``math.inf`` included.
    buckets: dict[float, float] = field(default_factory=dict)
    #: Other samples worth showing, by sample name (label sets summed).
    gauges: dict[str, float] = field(default_factory=dict)


#: Gauges summed over their label sets for the status view.
SUMMED = (
    "his_outbox_backlog",
    "his_outbox_oldest_age_seconds",
    "his_consumer_pending",
    "his_dlq_depth",
    "his_appointments_booked_total",
    "his_admissions_total",
    "his_invoices_issued_total",
)


def parse(text: str, at: float) -> Scrape:
    """Reduce a Prometheus text exposition to a ``Scrape`` (operator routes left out)."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(HTTP_HISTOGRAM) and s.labels.get("route") in OPS_ROUTES:
                continue
            if s.name == f"{HTTP_HISTOGRAM}_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name == f"{HTTP_HISTOGRAM}_count":
                requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            elif s.name in SUMMED:
                gauges[s.name] = gauges.get(s.name, 0.0) + s.value
    return Scrape(at, requests, errors, buckets, gauges)


@dataclass(frozen=True)
class Window:
    """HTTP figures between two scrapes."""

    seconds: float
    requests: float
    rate: float
    error_rate: float
    p95: float | None


def window(before: Scrape | None, after: Scrape) -> Window:
    """Request rate, server-error rate and p95 latency between two scrapes of one process.

    Without a ``before`` (or when the process restarted in between: counters went down), the
    figures cover the process's whole life, with no rate.
    """
    if before is None or after.requests < before.requests:
        return Window(0.0, after.requests, 0.0, 0.0, quantile(0.95, after.buckets))
    seconds = max(after.at - before.at, 1e-9)
    delta = {le: n - before.buckets.get(le, 0.0) for le, n in after.buckets.items()}
    requests = after.requests - before.requests
    return Window(
        seconds, requests, requests / seconds, (after.errors - before.errors) / seconds, quantile(0.95, delta)
    )


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly inside its bucket
    (as ``histogram_quantile`` does); None without observations. In the +Inf bucket it is the
    largest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound
