"""The public route table: which public path goes to which service, and who may call it. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # public path template: /api/patients/{id}/care-team/{relationship_id}
    pattern: re.Pattern[str]
    service: str
    upstream: str  # upstream path template: {0}, {1}… are the pattern's groups
    public: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the path parameters, in order."""
        return tuple(_PARAM.findall(self.path))


def _r(method: str, path: str, service: str, upstream: str, *, public: bool = False) -> Route:
    regex = "^" + _PARAM.sub(r"([^/]+)", path) + "$"
    return Route(method, path, re.compile(regex), service, upstream, public)


# Fixed paths come before the templates they would also match (/api/patients/me, not {id}).
ROUTES: tuple[Route, ...] = (
    _r("POST", "/api/auth/register", "identity", "/auth/register", public=True),
    _r("POST", "/api/auth/login", "identity", "/auth/login", public=True),
    _r("POST", "/api/auth/refresh", "identity", "/auth/refresh", public=True),
    _r("POST", "/api/auth/logout", "identity", "/auth/logout", public=True),
    _r("GET", "/api/auth/jwks", "identity", "/auth/jwks", public=True),
    _r("POST", "/api/auth/password", "identity", "/auth/password"),
    _r("POST", "/api/admin/users", "identity", "/admin/users"),
    _r("POST", "/api/patients", "patients", "/patients"),
    _r("GET", "/api/patients", "patients", "/patients"),
    _r("GET", "/api/patients/me", "patients", "/patients/me"),
    _r("GET", "/api/patients/emergency-access", "patients", "/patients/emergency-access"),
    _r("POST", "/api/patients/invitations/redeem", "patients", "/patients/invitations/redeem"),
    _r("GET", "/api/patients/{id}", "patients", "/patients/{0}"),
    _r("PATCH", "/api/patients/{id}", "patients", "/patients/{0}"),
    _r("GET", "/api/patients/{id}/care-team", "patients", "/patients/{0}/care-team"),
    _r("POST", "/api/patients/{id}/care-team", "patients", "/patients/{0}/care-team"),
    _r("DELETE", "/api/patients/{id}/care-team/{relationship_id}", "patients", "/patients/{0}/care-team/{1}"),
    _r("POST", "/api/patients/{id}/emergency-access", "patients", "/patients/{0}/emergency-access"),
    _r("POST", "/api/patients/{id}/invitations", "patients", "/patients/{0}/invitations"),
    _r("GET", "/api/patients/{id}/records", "patients", "/patients/{0}/records"),
    _r("POST", "/api/patients/{id}/records", "patients", "/patients/{0}/records"),
    _r("GET", "/api/practitioners/specialties", "practitioners", "/practitioners/specialties"),
    _r("POST", "/api/practitioners", "practitioners", "/practitioners"),
    _r("GET", "/api/practitioners", "practitioners", "/practitioners"),
    _r("GET", "/api/practitioners/{id}", "practitioners", "/practitioners/{0}"),
    _r("POST", "/api/practitioners/{id}/shifts", "practitioners", "/practitioners/{0}/shifts"),
    _r("GET", "/api/practitioners/{id}/shifts", "practitioners", "/practitioners/{0}/shifts"),
    _r("POST", "/api/practitioners/{id}/leave-requests", "practitioners", "/practitioners/{0}/leave-requests"),
    _r("GET", "/api/practitioners/{id}/leave-requests", "practitioners", "/practitioners/{0}/leave-requests"),
    _r(
        "POST",
        "/api/practitioners/{id}/leave-requests/{leave_id}/{action}",
        "practitioners",
        "/practitioners/{0}/leave-requests/{1}/{2}",
    ),
    _r("GET", "/api/practitioners/{id}/availability", "practitioners", "/practitioners/{0}/availability"),
    _r("GET", "/api/practitioners/{id}/slots", "scheduling", "/slots/{0}"),
    _r("GET", "/api/appointments/services", "scheduling", "/appointments/services"),
    _r("POST", "/api/appointments", "scheduling", "/appointments"),
    _r("GET", "/api/appointments", "scheduling", "/appointments"),
    _r("GET", "/api/appointments/{id}", "scheduling", "/appointments/{0}"),
    _r("POST", "/api/appointments/{id}/reschedule", "scheduling", "/appointments/{0}/reschedule"),
    _r("POST", "/api/appointments/{id}/{action}", "scheduling", "/appointments/{0}/{1}"),
    _r("POST", "/api/waitlist", "scheduling", "/waitlist"),
    _r("GET", "/api/waitlist", "scheduling", "/waitlist"),
    _r("POST", "/api/waitlist/{id}/accept", "scheduling", "/waitlist/{0}/accept"),
    _r("POST", "/api/waitlist/{id}/withdraw", "scheduling", "/waitlist/{0}/withdraw"),
    _r("GET", "/api/notifications", "notifications", "/notifications"),
    _r("GET", "/api/notifications/alerts", "notifications", "/notifications/alerts"),
    _r("GET", "/api/notifications/preferences", "notifications", "/notifications/preferences"),
    _r("PUT", "/api/notifications/preferences", "notifications", "/notifications/preferences"),
    _r("GET", "/api/audit", "audit", "/audit"),
    _r("GET", "/api/patients/{id}/lab-results", "patients", "/patients/{0}/lab-results"),
    # admissions
    _r("POST", "/api/wards", "admissions", "/wards"),
    _r("GET", "/api/wards", "admissions", "/wards"),
    _r("GET", "/api/wards/{id}", "admissions", "/wards/{0}"),
    _r("PATCH", "/api/wards/{id}", "admissions", "/wards/{0}"),
    _r("GET", "/api/beds", "admissions", "/beds"),
    _r("POST", "/api/beds/{id}/{action}", "admissions", "/beds/{0}/{1}"),
    _r("POST", "/api/admissions/charges/run", "admissions", "/admissions/charges/run"),
    _r("POST", "/api/admissions", "admissions", "/admissions"),
    _r("GET", "/api/admissions", "admissions", "/admissions"),
    _r("GET", "/api/admissions/{id}", "admissions", "/admissions/{0}"),
    _r("GET", "/api/admissions/{id}/charges", "admissions", "/admissions/{0}/charges"),
    _r("POST", "/api/admissions/{id}/transfer", "admissions", "/admissions/{0}/transfer"),
    _r("POST", "/api/admissions/{id}/discharge", "admissions", "/admissions/{0}/discharge"),
    # laboratory
    _r("GET", "/api/lab/catalog", "laboratory", "/lab/catalog"),
    _r("POST", "/api/lab/orders", "laboratory", "/lab/orders"),
    _r("GET", "/api/lab/orders", "laboratory", "/lab/orders"),
    _r("GET", "/api/lab/orders/{id}", "laboratory", "/lab/orders/{0}"),
    _r("POST", "/api/lab/orders/{id}/results", "laboratory", "/lab/orders/{0}/results"),
    _r("POST", "/api/lab/orders/{id}/{action}", "laboratory", "/lab/orders/{0}/{1}"),
    # inventory
    _r("POST", "/api/inventory/items", "inventory", "/inventory/items"),
    _r("GET", "/api/inventory/items", "inventory", "/inventory/items"),
    _r("GET", "/api/inventory/units", "inventory", "/inventory/units"),
    _r("GET", "/api/inventory/stock", "inventory", "/inventory/stock"),
    _r("POST", "/api/inventory/receipts", "inventory", "/inventory/receipts"),
    _r("POST", "/api/inventory/consumptions", "inventory", "/inventory/consumptions"),
    _r("GET", "/api/inventory/expiring", "inventory", "/inventory/expiring"),
    _r("GET", "/api/inventory/backorders", "inventory", "/inventory/backorders"),
    _r("GET", "/api/inventory/alerts", "inventory", "/inventory/alerts"),
    # billing
    _r("GET", "/api/payers", "billing", "/payers"),
    _r("GET", "/api/price-list", "billing", "/price-list"),
    _r("POST", "/api/price-list", "billing", "/price-list"),
    _r("GET", "/api/charges", "billing", "/charges"),
    _r("GET", "/api/invoices", "billing", "/invoices"),
    _r("GET", "/api/invoices/{id}", "billing", "/invoices/{0}"),
    _r("POST", "/api/invoices/{id}/payments", "billing", "/invoices/{0}/payments"),
    _r("GET", "/api/invoices/{id}/payments", "billing", "/invoices/{0}/payments"),
    _r("POST", "/api/invoices/{id}/refunds", "billing", "/invoices/{0}/refunds"),
    _r("POST", "/api/invoices/{id}/online-payments", "billing", "/invoices/{0}/online-payments"),
    _r("GET", "/api/invoices/{id}/online-payments", "billing", "/invoices/{0}/online-payments"),
    # The payment provider's side: its signature, not a user's token, admits it (billing checks).
    _r("POST", "/api/payments/webhooks/{provider}", "billing", "/payments/webhooks/{0}", public=True),
    # The embedded TEST provider's checkout, which a real provider hosts itself.
    _r(
        "GET",
        "/api/test-payment-provider/checkout/{ref}",
        "billing",
        "/test-payment-provider/checkout/{0}",
        public=True,
    ),
    _r(
        "POST",
        "/api/test-payment-provider/checkout/{ref}",
        "billing",
        "/test-payment-provider/checkout/{0}",
        public=True,
    ),
    _r("GET", "/api/claims", "billing", "/claims"),
    _r("GET", "/api/claims/{id}", "billing", "/claims/{0}"),
    _r("POST", "/api/claims/{id}/{action}", "billing", "/claims/{0}/{1}"),
)


@dataclass(frozen=True)
class Match:
    route: Route
    upstream_path: str


def resolve(method: str, path: str) -> Match | bool | None:
    """The matching route; False if the path exists with another method; None if unknown.

    A path segment standing for an id is never ``.`` or ``..``: the upstream path is built from
    it, and a dot segment would name another upstream path than the route's.
    """
    other_method = False
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None or any(g in (".", "..") for g in m.groups()):
            continue
        if route.method != method:
            other_method = True
            continue
        return Match(route, route.upstream.format(*m.groups()))
    return False if other_method else None
