"""The patient portal's first step under `his up`: a patient registered at reception links the
record to their own account with a one-time code mailed to them, and the code is refused in every
other case. Nothing of the code travels on the bus.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from his.patients.domain import InvitationCodes
from tests.e2e.conftest import INVITATION_MINUTES, LATE
from tests.e2e.harness import Hospital, create_user, invite, own_account, published_events, register_patient
from tests.support.waiting import wait_until

PASSWORD = "my own secret passphrase 42"


def sign_up(h: Hospital, tag: str) -> dict[str, str]:
    """A patient creates their own account (role PATIENT, no record) and signs in."""
    address = f"portal-user-{tag}-{uuid.uuid4().hex[:6]}@example.org"
    own_account(h, address, PASSWORD, f"Deniz {tag}")
    return h.login(address, PASSWORD)


def redeem(h: Hospital, who: dict[str, str], code: str) -> httpx.Response:
    return httpx.post(f"{h.gateway}/api/patients/invitations/redeem", headers=who, json={"code": code}, timeout=10)


def test_reception_invites_and_the_patient_links_their_record_with_the_mailed_code(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    _, clerk = create_user(h, admin, "RECEPTIONIST", "portal")
    tag = uuid.uuid4().hex[:8]
    address = f"portal-{tag}@example.org"
    patient = register_patient(h, clerk, f"Portal-{tag}", email=address)
    me = sign_up(h, tag)
    assert httpx.get(f"{gw}/api/patients/me", headers=me, timeout=10).status_code == 404

    invitation, code = invite(h, clerk, patient["id"], address)  # read from the maildir
    assert invitation["patient_id"] == patient["id"] and invitation["channel"] == "email"
    assert code not in str(invitation)

    # Refused: a staff account (even with the right code), a wrong code, text that is no code.
    for staff in (clerk, admin):
        r = redeem(h, staff, code)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", r.text
    wrong = redeem(h, me, InvitationCodes([b"w" * 32]).code(uuid.uuid4()))
    assert wrong.status_code == 404 and wrong.json()["reason"] == "unknown"
    assert redeem(h, me, "not a code").status_code == 422

    linked = redeem(h, me, code)
    assert linked.status_code == 200, linked.text
    record = httpx.get(f"{gw}/api/patients/me", headers=me, timeout=10)
    assert record.status_code == 200 and record.json()["id"] == patient["id"]

    # Once only: neither the same account nor another patient's account can use it again.
    again = redeem(h, me, code)
    assert again.status_code == 409, again.text
    other = redeem(h, sign_up(h, f"{tag}-b"), code)
    assert other.status_code == 409 and other.json()["reason"] == "redeemed"

    # The services that check ownership learn the link: the patient reads their own delivery
    # history (the invitation among it) and who has seen their record (the invitation, the link).
    def own(path: str) -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/{path}", params={"patient_id": str(patient["id"])}, headers=me, timeout=10)
        return list(r.json()["items"]) if r.status_code == 200 else []

    wait_until(
        lambda: any(d["template"] == "portal_invitation" for d in own("notifications")),
        what="the patient's own delivery history",
    )
    wait_until(lambda: {"create", "update"} <= {e["action"] for e in own("audit")}, what="the patient's audit trail")
    assert code not in published_events(h) and code.replace("-", "") not in published_events(h)


def test_an_expired_code_is_refused(shared_hospital: Hospital) -> None:
    """The invitation was issued when the shared hospital came up (``conftest.LATE``): by now it
    has expired, or is about to."""
    h = shared_hospital
    issued = LATE["invitation"]
    invitation, code, tag = issued.invitation, issued.code, issued.tag
    expires = datetime.fromisoformat(invitation["expires_at"])
    wait_until(
        lambda: datetime.now(UTC) > expires,
        timeout=INVITATION_MINUTES * 60 + 10,
        every=0.5,
        what="the invitation to expire",
    )
    late = redeem(h, sign_up(h, tag), code)
    assert late.status_code == 409 and late.json()["reason"] == "expired", late.text
