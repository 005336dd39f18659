"""An administrator disables a leaver under `his up`: the leaver's access token, unexpired and
correctly signed, is refused within two seconds at the gateway and by every service called
directly (with the gateway's own certificate, past the gateway), and their refresh token and
password no longer work."""

from __future__ import annotations

import time

import httpx

from his.kernel.pki import WorkloadIdentity
from tests.e2e.harness import Hospital, create_user
from tests.support.waiting import wait_until

#: A route of each service that needs a token and no parameters (its own path, as the gateway
#: forwards it): a valid token is answered anything but 401 there.
SIGNED_IN_ROUTES = {
    "identity": "/staff",
    "patients": "/patients/me",
    "practitioners": "/practitioners/specialties",
    "scheduling": "/appointments/services",
    "admissions": "/wards",
    "laboratory": "/lab/catalog",
    "inventory": "/inventory/units",
    "billing": "/payers",
    "notifications": "/notifications/preferences",
    "audit": "/audit",
}
WITHIN = 2.0  # seconds


def test_a_disabled_account_is_refused_everywhere_within_two_seconds(shared_hospital: Hospital) -> None:
    h = shared_hospital
    admin = h.login()
    user_id, nurse = create_user(h, admin, "NURSE", "leaver")
    pki = h.data / "pki"
    as_gateway = WorkloadIdentity(pki / "gateway.crt", pki / "gateway.key", pki / "ca.crt")
    direct = httpx.Client(verify=as_gateway.client_context(), timeout=5)
    urls = {svc: h.url(svc) + path for svc, path in SIGNED_IN_ROUTES.items()}

    def answers() -> dict[str, int]:
        out = {svc: direct.get(url, headers=nurse).status_code for svc, url in urls.items()}
        out["gateway"] = httpx.get(f"{h.gateway}/api/lab/catalog", headers=nurse, timeout=5).status_code
        return out

    before = answers()
    assert 401 not in before.values(), before
    r = httpx.patch(f"{h.gateway}/api/admin/users/{user_id}", json={"active": False}, headers=admin, timeout=10)
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    disabled = time.monotonic()
    seen: dict[str, float] = {}

    def all_refused() -> bool:
        for where, status in answers().items():
            if status == 401:
                seen.setdefault(where, time.monotonic() - disabled)
        return len(seen) == len(urls) + 1

    wait_until(all_refused, timeout=WITHIN, every=0.1, what="the disabled account's token refused everywhere")
    print("[accounts] refused after " + ", ".join(f"{w} {t:.2f}s" for w, t in sorted(seen.items())))
    assert httpx.get(f"{h.gateway}/api/lab/catalog", headers=nurse, timeout=5).status_code == 401
    listed = httpx.get(f"{h.gateway}/api/admin/users", params={"q": "leaver"}, headers=admin, timeout=10)
    assert any(i["id"] == user_id and not i["active"] for i in listed.json()["items"]), listed.text
