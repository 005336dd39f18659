"""One private hospital for the tests of this package, which stop, kill or reconfigure it.

Its gateway keeps `his up`'s default limits (the shared hospital's are raised for generated and
matrix traffic); only the read deadlines are shortened, for the edge-abuse tests. It also has
billing's fault point after a payment's commit (test_his_up.py), notifications without a contact
cache, so that a message sent while patients is stopped must wait for it (test_his_up.py), and
every service exporting its spans to a tiny OTLP collector (test_observability.py). None of these
changes what the other tests here see. A hospital's start and stop cost about 15 s each time: the
tests share this one instead of each starting their own. The files run in name order on it:
the edge-abuse tests first, on a fresh hospital; test_his_up.py's Ctrl-C test restarts it with the
same settings and data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from his.infra.nats import free_port
from tests.e2e.harness import Hospital
from tests.e2e.private import KILL_AFTER_PAYMENT, READ_DEADLINE
from tests.support.otlp import Collector


@pytest.fixture(scope="package")
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    yield c
    c.server.shutdown()


@pytest.fixture(scope="package")
def hospital(open_tmp: Callable[[str], Path], collector: Collector) -> Iterator[Hospital]:
    root = open_tmp("private")
    h = Hospital(
        root / "data",
        free_port(),
        HIS_GATEWAY_HEADER_TIMEOUT=str(READ_DEADLINE),
        HIS_GATEWAY_BODY_TIMEOUT=str(READ_DEADLINE),
        HIS_FAULT_POINTS=f"billing.payment.after_commit=kill@{root / KILL_AFTER_PAYMENT}",
        HIS_CONTACT_CACHE_SECONDS="0",
        HIS_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    h.start()
    yield h
    if h.proc is not None and h.proc.poll() is None:
        h.stop()
