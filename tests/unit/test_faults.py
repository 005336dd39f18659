"""The fault-point switch: off by default, each service arms only its own points, typos refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from his.kernel import faults


@pytest.fixture
def place() -> Iterator[str]:
    name = faults.point("tst.place", "a place in a test")
    yield name
    faults.disarm()
    faults.POINTS.pop(name, None)


def test_nothing_is_armed_without_the_switch(place: str) -> None:
    assert faults.arm("", scope="tst") == []
    faults.hit(place)  # does nothing: the process lives on


def test_a_service_arms_its_own_points_and_leaves_the_others(place: str) -> None:
    spec = "other.place=kill, tst.place=kill@/tmp/trigger"
    assert faults.arm(spec, scope="other-service") == []
    assert faults.arm(spec, scope="tst") == ["tst.place"]


@pytest.mark.parametrize(
    ("spec", "error"),
    [("tst.plcae=kill", "no fault point 'tst.plcae'"), ("tst.place=explode", "no action 'explode'")],
)
def test_a_misspelt_point_or_action_is_refused_at_start(place: str, spec: str, error: str) -> None:
    with pytest.raises(faults.FaultSpecError, match=error):
        faults.arm(spec, scope="tst")
