"""Under `his up`: an administrator's change to an account reaches the audit chain through the
real services (identity's numbered record on its stream, audit's consumer of it with its own NATS
permissions) and an auditor reads it through the gateway (``GET /api/audit/accounts/{id}``)."""

from __future__ import annotations

import httpx

from tests.e2e.harness import Hospital, create_user
from tests.support.waiting import wait_until


def test_an_administrators_role_change_is_in_the_accounts_audit_trail(shared_hospital: Hospital) -> None:
    h = shared_hospital
    admin = h.login()
    user_id, _ = create_user(h, admin, "NURSE", "audited")
    _, doctor = create_user(h, admin, "DOCTOR", "curious")
    auditor_id, auditor = create_user(h, admin, "AUDITOR", "reader")
    r = httpx.patch(f"{h.gateway}/api/admin/users/{user_id}", json={"roles": ["NURSE", "LAB_TECH"]}, headers=admin)
    assert r.status_code == 200, r.text
    url = f"{h.gateway}/api/audit/accounts/{user_id}"
    found: list[dict[str, object]] = []

    def recorded() -> bool:
        page = httpx.get(url, headers=auditor, timeout=10)
        assert page.status_code == 200, page.text
        found[:] = [i for i in page.json()["items"] if i["resource"] == "account/roles"]
        return bool(found)

    wait_until(recorded, timeout=15, every=0.2, what="the role change in the account's audit trail")
    (change,) = found
    assert change["source"] == "his.identity" and change["account_id"] == user_id
    assert change["actor_roles"] == ["ADMIN"] and change["purpose"] == "account_administration"
    assert change["actor_kind"] == "staff" and change["actor_id"] != auditor_id
    assert httpx.get(url, headers=doctor, timeout=10).status_code == 403  # other staff may not read it
