"""Accounts under `his up`: an administrator disables a leaver, whose access token, unexpired
and correctly signed, is refused within two seconds at the gateway and by every service called
directly (with the gateway's own certificate, past the gateway); a second factor where the policy
says; a forgotten password reset by a link from the hospital's maildir."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp

from his.kernel.pki import WorkloadIdentity
from tests.e2e.harness import Hospital, create_user, mail_to
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
    public = httpx.Client(timeout=5)
    urls = {svc: h.url(svc) + path for svc, path in SIGNED_IN_ROUTES.items()}

    pool = ThreadPoolExecutor(len(urls) + 1)

    def status(client: httpx.Client, url: str) -> int:
        return client.get(url, headers=nurse).status_code

    def answers() -> dict[str, int]:
        """Every service's answer, asked at once (so a round takes as long as its slowest call)."""
        futures = {svc: pool.submit(status, direct, url) for svc, url in urls.items()}
        futures["gateway"] = pool.submit(status, public, f"{h.gateway}/api/lab/catalog")
        return {where: f.result() for where, f in futures.items()}

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


def test_a_second_factor_where_policy_says_and_a_reset_link_that_works_once(shared_hospital: Hospital) -> None:
    """Under `his up`: an administrator requires a second factor of the lab's role; a lab
    technician's right password is then not enough, they enrol with it at sign-in and sign in with
    codes. The same technician forgets the password: the link reaches the hospital's maildir,
    resets it once, and the second factor is still asked."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    address = f"lab-mfa-{time.time_ns()}@hospital.example"
    password = "quartz lantern over the harbour"
    body = {"email": address, "password": password, "full_name": "Lab Second", "roles": ["LAB_TECH"]}
    assert httpx.post(f"{gw}/api/admin/users", json=body, headers=admin, timeout=10).status_code == 201
    creds = {"email": address, "password": password}
    policy = httpx.put(f"{gw}/api/admin/mfa-policy", json={"roles": ["LAB_TECH"]}, headers=admin, timeout=10)
    assert policy.status_code == 200, policy.text
    try:
        told = httpx.post(f"{gw}/api/auth/login", json=creds, timeout=10)
        assert told.status_code == 403 and told.json()["code"] == "mfa_enrolment_required", told.text
        secret = httpx.post(f"{gw}/api/auth/login/totp", json=creds, timeout=10).json()["secret"]
        first = httpx.post(f"{gw}/api/auth/login", json=creds | {"code": pyotp.TOTP(secret).now()}, timeout=10)
        assert first.status_code == 200 and len(first.json()["recovery_codes"]) == 10, first.text
        needed = httpx.post(f"{gw}/api/auth/login", json=creds, timeout=10)
        assert needed.status_code == 401 and needed.json()["code"] == "mfa_required"
        recovery = first.json()["recovery_codes"][0]
        assert httpx.post(f"{gw}/api/auth/login", json=creds | {"code": recovery}, timeout=10).status_code == 200

        asked = httpx.post(f"{gw}/api/auth/password-reset", json={"email": address}, timeout=10)
        nobody = httpx.post(f"{gw}/api/auth/password-reset", json={"email": f"x{address}"}, timeout=10)
        assert asked.status_code == nobody.status_code == 202
        links: list[str] = []

        def mailed() -> bool:
            for msg in mail_to(h, address).values():
                links.extend(re.findall(r"https?://\S+/password-reset\?token=\S+", msg.get_content()))
            return bool(links)

        wait_until(mailed, what="the reset link in the maildir")
        assert links[0].startswith(f"{gw}/password-reset?"), links  # the console of this hospital
        token = parse_qs(urlsplit(links[0]).query)["token"][0]
        new = {"token": token, "new_password": "violet harbour under the lantern"}
        assert httpx.post(f"{gw}/api/auth/password-reset/confirm", json=new, timeout=10).status_code == 204
        again = httpx.post(f"{gw}/api/auth/password-reset/confirm", json=new, timeout=10)
        assert again.status_code == 400, again.text  # once
        moved = {"email": address, "password": new["new_password"]}
        after = httpx.post(f"{gw}/api/auth/login", json=moved, timeout=10)
        assert after.status_code == 401 and after.json()["code"] == "mfa_required"  # still asked
    finally:
        reset = httpx.put(f"{gw}/api/admin/mfa-policy", json={"roles": []}, headers=admin, timeout=10)
        assert reset.status_code == 200
