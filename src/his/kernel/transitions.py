"""A lifecycle's allowed steps, written once as data. Pure, no IO.

An aggregate's domain module writes its table, ``(state, action) → next state``, and the error
a refused step raises; ``Lifecycle`` answers the next state (raising that error for any pair not
in the table), whether a step is allowed, and which steps a state has: what a screen offers as
buttons, and what a test walks to check every pair.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)
A = TypeVar("A", bound=Hashable)


class Lifecycle(Generic[S, A]):
    """``lifecycle(state, action)`` is the next state, or ``refuse(state, action)`` raised."""

    def __init__(self, steps: Mapping[tuple[S, A], S], *, refuse: Callable[[S, A], Exception]) -> None:
        self._steps = dict(steps)
        self._refuse = refuse

    def __call__(self, state: S, action: A) -> S:
        try:
            return self._steps[(state, action)]
        except KeyError:
            raise self._refuse(state, action) from None

    def allows(self, state: S, action: A) -> bool:
        return (state, action) in self._steps

    def exits(self, state: S) -> list[A]:
        """The actions a ``state`` can take, in the table's order."""
        return [a for (s, a) in self._steps if s == state]

    @property
    def steps(self) -> dict[tuple[S, A], S]:
        """Every allowed step (a copy)."""
        return dict(self._steps)
