"""Linking a patient's own account to their record in tests, the only way there is: reception
issues an invitation, the patient redeems its code from their account.

The code reaches a real patient by mail; in-process tests derive it from the invitation's id with
the key their patients router was given (``CODES``), as the patients service does to send it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import httpx

from his.patients.domain import InvitationCodes
from tests.support.api import bearer

#: The key of the patients routers built by the tests (``router(..., invitation_codes=CODES)``).
CODES = InvitationCodes([b"portal-invitations-test-key-0032"])


async def invite(
    client: httpx.AsyncClient, patient_id: object, *, channel: str = "email", clerk: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """Issue an invitation as reception: (invitation id, its code)."""
    headers = clerk or bearer(uuid.uuid4(), "RECEPTIONIST")
    r = await client.post(f"/patients/{patient_id}/invitations", headers=headers, json={"channel": channel})
    assert r.status_code == 201, r.text
    invitation = r.json()["id"]
    return invitation, CODES.code(uuid.UUID(invitation))


async def link_account(
    client: httpx.AsyncClient,
    patient_id: object,
    account: uuid.UUID,
    *,
    clerk: Mapping[str, str] | None = None,
    patient: Mapping[str, str] | None = None,
) -> None:
    """Link ``account`` (a PATIENT account) to the patient's record, as the patient would
    (``clerk`` and ``patient``: headers of the two callers, when not signed with the tests' key)."""
    _, code = await invite(client, patient_id, clerk=clerk)
    headers = patient or bearer(account, "PATIENT")
    r = await client.post("/patients/invitations/redeem", headers=headers, json={"code": code})
    assert r.status_code == 200, r.text
