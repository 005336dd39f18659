"""One `his up` shared by the e2e tests that only use the public API.

It has rate and registration limits high enough for generated and matrix traffic (all from
127.0.0.1), and emergency grants and portal invitations short enough to watch one expire. Tests
that stop, kill or restart processes start their own
hospital instead (test_his_up.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from his.infra.nats import free_port
from tests.e2e.harness import Hospital

#: Break-the-glass access in the shared hospital lasts 6 seconds.
EMERGENCY_MINUTES = 0.1
#: A portal invitation in the shared hospital can be redeemed for 30 seconds.
INVITATION_MINUTES = 0.5


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
    yield h
    h.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests of the shared hospital together, after the other e2e tests.

    Otherwise its package-scoped hospital would run alongside the module-scoped one of
    test_his_up.py, two hospitals at once on a small machine.
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
