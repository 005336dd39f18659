"""Property-based tests of the public API from its own OpenAPI document (schemathesis).

Every operation gets 40 generated requests through the real gateway, 20 cases each sent as an
ADMIN (the widest access) and without a token: no response may be a 5xx, and every response
must match the schema and content type the document declares. (20 cases per operation keep the
test under a minute on two cores with about a hundred operations; the stateful phase and the
lifecycle machines of test_lifecycles.py cover sequences.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.e2e.harness import ADMIN, Hospital

CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]

#: An operation of the document, as schemathesis hands it out (its type parameters left open).
Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def operations(hospital: Hospital) -> list[Operation]:
    doc = httpx.get(f"{hospital.gateway}/openapi.json", timeout=10).json()
    ops: list[Operation] = []
    for result in schemathesis.openapi.from_dict(doc).get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"the OpenAPI document has an operation schemathesis cannot use: {result.err()}")
        ops.append(result.ok())
    return ops


class AdminSession:
    """The administrator signed in once; the access token is renewed through the refresh token
    (rotated at each use) when it nears its expiry, since the run can outlast it. Generated
    traffic includes failed logins, which lock further logins from this address for a while."""

    def __init__(self, hospital: Hospital) -> None:
        self.gateway = hospital.gateway
        r = httpx.post(f"{self.gateway}/api/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]}, timeout=10)
        assert r.status_code == 200, r.text
        self._take(r.json())

    def _take(self, tokens: dict[str, object]) -> None:
        self.access, self.refresh = str(tokens["access_token"]), str(tokens["refresh_token"])
        self.renew_at = time.monotonic() + int(str(tokens["expires_in"])) * 0.6

    def headers(self) -> dict[str, str]:
        if time.monotonic() >= self.renew_at:
            r = httpx.post(f"{self.gateway}/api/auth/refresh", json={"refresh_token": self.refresh}, timeout=10)
            assert r.status_code == 200, r.text
            self._take(r.json())
        return {"authorization": f"Bearer {self.access}"}


def test_linked_operations_in_sequence_no_5xx_and_match_the_schema(shared_hospital: Hospital) -> None:
    """Runs before the generated traffic below, whose failed logins lock this address's logins.

    Schemathesis's stateful phase: it follows the document's links (a patient, practitioner,
    appointment, ward, admission or lab order created, then read and acted on by its id) in random
    sequences as ADMIN, with the same checks on every answer."""
    gateway = shared_hospital.gateway
    doc = httpx.get(f"{gateway}/openapi.json", timeout=10).json()
    linked = sum(
        len(r.get("links", {}))
        for ops in doc["paths"].values()
        for op in ops.values()
        for r in op.get("responses", {}).values()
    )
    assert linked >= 15, "the document lost its links"
    admin = AdminSession(shared_hospital)
    machine = schemathesis.openapi.from_dict(doc).as_state_machine()

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case[Operation]) -> dict[str, Any]:
            return {"base_url": gateway, "headers": admin.headers(), "timeout": 30}

        def validate_response(self, response: Any, case: schemathesis.Case[Operation], *_: Any, **__: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=10,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
    )


@pytest.mark.timeout(1200)  # about a hundred operations, each with 20 requests
def test_no_5xx_and_responses_match_the_schema(shared_hospital: Hospital) -> None:
    # The shared hospital's limits are high enough that generated traffic is not merely rate-limited.
    ops = operations(shared_hospital)
    assert len(ops) >= 12
    admin = AdminSession(shared_hospital)
    renewing = threading.Lock()  # a refresh token is good once: one renewal at a time

    def check(op: Operation) -> None:
        with renewing:
            headers = admin.headers()
        generate_and_check(op, shared_hospital.gateway, headers)

    # One operation at a time: Hypothesis is not thread-safe (two threads drawing at once once
    # failed in its own lambda-description cache, a FlakyFailure that says nothing of the API).
    for op in ops:
        check(op)


def generate_and_check(op: Operation, gateway: str, admin: dict[str, str]) -> None:
    @given(case=op.as_strategy())
    # Ten generated requests per operation, each sent with and without a token: the suite's
    # 20-minute budget; `.venv/bin/pytest tests/e2e/test_schemathesis.py` with more is cheap to run alone.
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case[Operation]) -> None:
        case.call_and_validate(base_url=gateway, headers=admin, checks=CHECKS, timeout=30)
        case.call_and_validate(base_url=gateway, checks=CHECKS, timeout=30)

    run()
