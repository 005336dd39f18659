"""``Lifecycle``: one table of allowed steps per aggregate, and the error its domain names."""

from __future__ import annotations

from enum import StrEnum

import pytest

from his.admissions.domain import BedAction, BedState, bed_exits, bed_transition
from his.kernel.transitions import Lifecycle


class Light(StrEnum):
    OFF = "off"
    ON = "on"


class Switch(StrEnum):
    FLIP_ON = "flip-on"
    FLIP_OFF = "flip-off"


class RefusedError(ValueError):
    pass


LIGHT = Lifecycle(
    {(Light.OFF, Switch.FLIP_ON): Light.ON, (Light.ON, Switch.FLIP_OFF): Light.OFF},
    refuse=lambda s, a: RefusedError(f"{s.value} cannot {a.value}"),
)


def test_an_allowed_step_gives_the_next_state() -> None:
    assert LIGHT(Light.OFF, Switch.FLIP_ON) is Light.ON
    assert LIGHT.allows(Light.ON, Switch.FLIP_OFF)


def test_any_other_pair_raises_the_domains_error() -> None:
    with pytest.raises(RefusedError, match="on cannot flip-on"):
        LIGHT(Light.ON, Switch.FLIP_ON)
    assert not LIGHT.allows(Light.OFF, Switch.FLIP_OFF)


def test_exits_list_a_states_steps_and_steps_is_a_copy() -> None:
    assert LIGHT.exits(Light.OFF) == [Switch.FLIP_ON]
    LIGHT.steps.clear()
    assert len(LIGHT.steps) == 2


def test_every_bed_state_has_a_way_out() -> None:
    assert all(bed_exits(s) for s in BedState)
    assert bed_transition(BedState.CLEANING, BedAction.RELEASE) is BedState.AVAILABLE
