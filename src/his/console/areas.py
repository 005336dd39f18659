"""The console's areas and the roles each is for, and the roles' names as people read them."""

from __future__ import annotations

from dataclasses import dataclass

from his.console.i18n import N_


@dataclass(frozen=True)
class Area:
    """A part of the console, the roles it is for, and its name in the menu."""

    path: str
    label: str
    roles: frozenset[str]


EVERYONE = frozenset({"ADMIN", "RECEPTIONIST", "DOCTOR", "NURSE", "LAB_TECH", "BILLING", "PATIENT", "AUDITOR"})

#: The console's areas, in the menu's order.
AREAS = (
    Area("/", N_("Home"), EVERYONE),
    Area("/front-desk", N_("Front desk"), frozenset({"RECEPTIONIST", "ADMIN"})),
    Area("/day-list", N_("Day list"), frozenset({"RECEPTIONIST", "ADMIN", "DOCTOR", "NURSE"})),
    Area("/portal", N_("My health"), frozenset({"PATIENT"})),
    Area("/portal/accesses", N_("Who saw my record"), frozenset({"PATIENT"})),
    Area("/portal/preferences", N_("Messages"), frozenset({"PATIENT"})),
    Area("/admin", N_("Administration"), frozenset({"ADMIN"})),
    Area("/admin/emergency-access", N_("Emergency access"), frozenset({"AUDITOR"})),
)
#: Where a user lands after signing in, by role (the first of their roles listed here); the
#: others land on the home page, which lists their areas.
HOMES = (("RECEPTIONIST", "/front-desk"), ("DOCTOR", "/day-list"), ("NURSE", "/day-list"), ("PATIENT", "/portal"))

SEX_NAMES = {"female": N_("Female"), "male": N_("Male"), "other": N_("Other"), "unknown": N_("Unknown")}
STATUS_NAMES = {
    "booked": N_("Booked"),
    "checked_in": N_("Checked in"),
    "completed": N_("Completed"),
    "cancelled": N_("Cancelled"),
    "no_show": N_("Did not come"),
}

ROLE_NAMES = {
    "ADMIN": N_("Administrator"),
    "RECEPTIONIST": N_("Receptionist"),
    "DOCTOR": N_("Doctor"),
    "NURSE": N_("Nurse"),
    "LAB_TECH": N_("Laboratory technician"),
    "BILLING": N_("Billing clerk"),
    "PATIENT": N_("Patient"),
    "AUDITOR": N_("Auditor"),
}


def home_of(roles: frozenset[str]) -> str:
    """The page a user with ``roles`` starts from."""
    return next((path for role, path in HOMES if role in roles), "/")


def areas_for(roles: frozenset[str]) -> list[Area]:
    """The areas a user with ``roles`` may open, in the menu's order."""
    return [a for a in AREAS if a.roles & roles]
