"""One `his up` shared by the e2e tests that only use the public API.

It has rate and registration limits high enough for generated and matrix traffic (all from
127.0.0.1), and emergency grants and portal invitations short enough to watch one expire. Tests
that stop, kill, restart or reconfigure processes share the private hospital of tests/e2e/private/
instead; the few others that start a hospital of their own (the overload, the soak, the bench
smoke tests) measure or load it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from his.infra.nats import free_port
from tests.e2e.harness import Hospital, invite, register_patient

#: Break-the-glass access in the shared hospital lasts 6 seconds.
EMERGENCY_MINUTES = 0.1
#: A portal invitation in the shared hospital can be redeemed for 30 seconds.
INVITATION_MINUTES = 0.5


@dataclass(frozen=True)
class LateInvitation:
    """A portal invitation issued as soon as the shared hospital is up, for
    ``test_portal.test_an_expired_code_is_refused``: the 30 seconds it lasts pass while the other
    tests run, instead of being waited for."""

    invitation: dict[str, Any]
    code: str
    tag: str


#: The shared hospital's late invitation, once it is up.
LATE: dict[str, LateInvitation] = {}


def issue_late_invitation(h: Hospital) -> LateInvitation:
    admin = h.login()
    tag = uuid.uuid4().hex[:8]
    address = f"portal-late-{tag}@example.org"
    patient = register_patient(h, admin, f"Portal-Late-{tag}", email=address)
    invitation, code = invite(h, admin, patient["id"], address)
    expires = datetime.fromisoformat(invitation["expires_at"])
    assert (expires - datetime.now(UTC)).total_seconds() <= INVITATION_MINUTES * 60
    return LateInvitation(invitation, code, tag)


@pytest.fixture(scope="package")
def shared_hospital(open_tmp: Callable[[str], Path]) -> Iterator[Hospital]:
    h = Hospital(
        open_tmp("shared") / "data",
        free_port(),
        HIS_GATEWAY_RATE_PER_IP="100000",
        HIS_GATEWAY_RATE_PER_SUBJECT="100000",
        HIS_GATEWAY_BURST="100000",
        HIS_REGISTRATIONS_PER_ADDRESS="100000",
        HIS_REGISTRATIONS_OVERALL="100000",
        HIS_EMERGENCY_ACCESS_MINUTES=str(EMERGENCY_MINUTES),
        HIS_INVITATION_MINUTES=str(INVITATION_MINUTES),
    )
    h.start()
    LATE["invitation"] = issue_late_invitation(h)
    yield h
    h.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests of the shared hospital together, after the other e2e tests.

    Otherwise its package-scoped hospital would run alongside the private one of
    tests/e2e/private/ (or another test's own), two hospitals at once on a small machine.
    """
    here = Path(__file__).parent

    def e2e(item: pytest.Item) -> bool:
        return here in Path(str(item.path)).parents

    shared = [i for i in items if e2e(i) and "shared_hospital" in getattr(i, "fixturenames", ())]
    # The generated traffic goes last: its failed logins lock logins from this address for a while.
    shared.sort(key=lambda i: Path(str(i.path)).name == "test_schemathesis.py")
    others = [i for i in items if i not in shared]
    last = max((n for n, i in enumerate(others) if e2e(i)), default=None)
    if not shared or last is None:
        return
    items[:] = others[: last + 1] + shared + others[last + 1 :]
