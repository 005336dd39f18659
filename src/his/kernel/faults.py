"""Fault points: named places in the real code where a reliability test can stop the process.

A test-only switch, off unless ``HIS_FAULT_POINTS`` is set. Some windows matter for a promise
and are too narrow to hit from outside: the instant after a payment committed and before its
answer left, say. Killing a process "around then" proves nothing about that instant, so the code
names the instant::

    AFTER_COMMIT = faults.point("billing.payment.after_commit", "a desk payment committed, not yet answered")
    ...
    faults.hit(AFTER_COMMIT)

and a test starts the service with ``HIS_FAULT_POINTS="billing.payment.after_commit=kill@/tmp/t"``
(entries separated by commas). ``kill`` sends the process SIGKILL, as the kernel's OOM killer or
a node failure would: nothing after the point runs, no ``finally``, no answer. With ``@FILE`` the
point fires only while FILE exists, and removes it as it fires: the test arms the fault at the
moment it chooses, and a process restarted with the same environment does not fire it again.

Unknown point names and actions are refused when the switch is read (at start), so a misspelt
name is an error, not a fault test that silently injects nothing. When the switch is off,
``hit`` is one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger("his.faults")

#: Every fault point of the code base, by name (``<service or kernel>.<place>``), with what it is.
POINTS: dict[str, str] = {}
ACTIONS = ("kill",)


@dataclass(frozen=True)
class Armed:
    action: str
    trigger: str | None = None  # a file: fire only while it exists, consuming it


_armed: dict[str, Armed] = {}


class FaultSpecError(ValueError):
    """``HIS_FAULT_POINTS`` names a point or an action that does not exist."""


def point(name: str, description: str) -> str:
    """Declare a fault point (at import time); returns its name, to pass to ``hit``."""
    POINTS[name] = description
    return name


def arm(spec: str, *, scope: str) -> list[str]:
    """Arm the points of ``spec`` that belong to ``scope`` (a service's name) or to the kernel.

    ``spec`` is ``name=action[@file]``, comma-separated; entries of other services are left to
    them (every process of a hospital is given the same switch). Returns the names armed.
    """
    armed: list[str] = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, what = entry.partition("=")
        if name.split(".", 1)[0] not in (scope, "kernel"):
            continue
        action, _, trigger = what.partition("@")
        if name not in POINTS:
            raise FaultSpecError(f"HIS_FAULT_POINTS: no fault point {name!r}; known: {', '.join(sorted(POINTS))}")
        if action not in ACTIONS:
            raise FaultSpecError(f"HIS_FAULT_POINTS: {name}: no action {action!r}; one of {', '.join(ACTIONS)}")
        _armed[name] = Armed(action, trigger or None)
        armed.append(name)
        log.warning("fault point %s is armed (%s): a test-only switch", name, what)
    return armed


def disarm() -> None:
    _armed.clear()


def hit(name: str) -> None:
    """The code reached fault point ``name``: act if a test armed it, else do nothing."""
    armed = _armed.get(name)
    if armed is None:
        return
    if armed.trigger is not None:
        try:
            os.unlink(armed.trigger)  # whoever removes it fires: once, even across restarts
        except FileNotFoundError:
            return
    log.warning("fault point %s: %s", name, armed.action)
    os.kill(os.getpid(), signal.SIGKILL)
