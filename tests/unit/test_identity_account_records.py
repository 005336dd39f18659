"""Every change to an account is a record of the audit chain as well as an event: identity writes
it in the unit of work that makes the change (``his.identity.auditing``), audit appends it to the
chain and shows an account's records to an auditor (``GET /audit/accounts/{id}``).

Identity runs over its in-memory ports with the fixtures of ``test_identity_use_cases``; the
records it published are handed to audit's consumer use case over ``his.testing.audit``, whose
chain is hashed as the store's, so ``his.audit.domain.verify`` walks it. What needs PostgreSQL and
NATS (the producer's number, a record deleted by the superuser) is
``tests/integration/test_audit_account_records.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from his.access import Role
from his.audit import handlers
from his.audit.app import http_over
from his.audit.domain import verify
from his.events.audit import IdentityRecordAccessed
from his.identity.auditing import ADMINISTRATION, OWN_ACCOUNT, record_account_change
from his.kernel.clock import FakeClock
from his.testing.audit import FakeAudit
from his.testing.units import FakeWork
from tests.support.api import bearer, serve
from tests.unit.test_identity_accounts import admin_of, patch, staff
from tests.unit.test_identity_second_factor import code, enrolled, login
from tests.unit.test_identity_use_cases import Idp, idp, make

__all__ = ["idp", "make"]  # the fixtures, shared with test_identity_use_cases


def records(idp: Idp) -> list[IdentityRecordAccessed]:
    return [e for e in idp.fake.events(IdentityRecordAccessed) if isinstance(e, IdentityRecordAccessed)]


def summary(idp: Idp) -> list[tuple[uuid.UUID | None, str, str]]:
    """Each record's account, resource and action, in commit order."""
    return [(r.account_id, r.resource, r.action) for r in records(idp)]


async def test_each_change_an_administrator_makes_is_a_record_naming_the_account_and_the_administrator(
    idp: Idp,
) -> None:
    admin_id, admin = await admin_of(idp)
    nurse_id, _ = await staff(idp, "Changing Nurse", Role.NURSE)
    assert (await patch(idp, admin, nurse_id, roles=["NURSE", "LAB_TECH"])).status_code == 200
    assert (await patch(idp, admin, nurse_id, active=False)).status_code == 200
    assert (await patch(idp, admin, nurse_id, active=True)).status_code == 200
    assert (await patch(idp, admin, nurse_id, password_change_required=True)).status_code == 200
    assert (await idp.client.post(f"/admin/users/{nurse_id}/unlock", headers=admin)).status_code == 200
    put = await idp.client.put("/admin/mfa-policy", json={"roles": ["ADMIN"]}, headers=admin)
    assert put.status_code == 200
    assert summary(idp) == [
        (nurse_id, "account/roles", "update"),
        (nurse_id, "account/disabled", "update"),
        (nurse_id, "account/enabled", "update"),
        (nurse_id, "account/password_change_required", "update"),
        (nurse_id, "account/unlocked", "update"),
        (None, "account/second_factor_policy", "update"),  # a setting of every account
    ]
    for r in records(idp):
        assert r.actor_id == admin_id and r.actor_roles == ["ADMIN"]
        assert r.patient_id is None and r.purpose == ADMINISTRATION and r.outcome == "allowed"
        assert r.producer_seq is None  # numbered by the database as it commits (the integration test)


async def test_no_change_and_a_refused_change_write_no_record(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    nurse_id, _ = await staff(idp, "Same Nurse", Role.NURSE)
    assert (await patch(idp, admin, nurse_id, roles=["NURSE"], active=True)).status_code == 200  # as it was
    assert (await idp.client.put("/admin/mfa-policy", json={"roles": []}, headers=admin)).status_code == 200
    assert (await patch(idp, admin, admin_id, active=False)).status_code == 409  # the last administrator
    nurse_token = await idp.as_holder((await idp.tokens(idp.fake.state.users[nurse_id].email))["access_token"])
    assert (await patch(idp, nurse_token, nurse_id, roles=["ADMIN"])).status_code == 403
    assert records(idp) == []


async def test_removing_a_second_factor_is_a_record_of_its_deletion(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    user_id, address = await staff(idp, "Lost Phone", Role.BILLING)
    secret, _ = await enrolled(idp, address)
    idp.clock.advance(timedelta(seconds=30))
    assert (await login(idp, address, code(idp, secret)))["status"] == 200
    assert (await patch(idp, admin, user_id, mfa=False)).status_code == 200
    (record,) = records(idp)
    assert (record.account_id, record.resource, record.action, record.actor_id) == (
        user_id,
        "account/second_factor",
        "delete",
        admin_id,
    )


def test_a_change_the_holder_makes_is_of_their_own_account() -> None:
    """What the password changes of the account's holder write (``record_account_change``)."""
    uow, user = FakeWork(FakeClock(datetime(2027, 1, 1, tzinfo=UTC))), uuid.uuid4()
    record_account_change(uow, user, by=user, roles=["NURSE"], what="password")
    admin = uuid.uuid4()
    record_account_change(uow, user, by=admin, roles={"ADMIN", "AUDITOR"}, what="password_change_required")
    own, other = (IdentityRecordAccessed.model_validate(e.data) for e in uow.events)
    assert (own.actor_id, own.purpose, own.resource, own.account_id) == (user, OWN_ACCOUNT, "account/password", user)
    assert (other.purpose, other.actor_roles) == (ADMINISTRATION, ["ADMIN", "AUDITOR"])
    assert [e.aggregate_id for e in uow.events] == [str(user), str(user)]


async def test_an_auditor_reads_the_changes_to_an_account_from_the_chain(idp: Idp) -> None:
    """The records identity published, appended by audit's consumer: the chain verifies, the
    account's trail lists them newest first, reading it is recorded, and other staff are refused."""
    admin_id, admin = await admin_of(idp)
    nurse_id, _ = await staff(idp, "Audited Nurse", Role.NURSE)
    other_id, _ = await staff(idp, "Other Nurse", Role.NURSE)
    await patch(idp, admin, nurse_id, roles=["DOCTOR"])
    await patch(idp, admin, other_id, active=False)
    await patch(idp, admin, nurse_id, active=False)
    audit = FakeAudit(idp.clock)
    for env in idp.fake.published:
        if env.type == IdentityRecordAccessed.type:
            async with audit.uow() as u:
                await handlers.record_accessed(u, env, IdentityRecordAccessed.model_validate(env.data))
    assert verify(audit.state.rows()).ok
    auditor = uuid.uuid4()
    async with serve(http_over(audit), base_url="http://audit") as client:
        r = await client.get(f"/audit/accounts/{nurse_id}", headers=bearer(auditor, "AUDITOR"))
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [(i["resource"], i["source"], i["actor_id"]) for i in items] == [
            ("account/disabled", "his.identity", str(admin_id)),
            ("account/roles", "his.identity", str(admin_id)),
        ]
        assert {i["account_id"] for i in items} == {str(nurse_id)}
        assert {i["purpose"] for i in items} == {ADMINISTRATION}
        page = await client.get(f"/audit/accounts/{nurse_id}", params={"limit": 2}, headers=bearer(auditor, "ADMIN"))
        assert [i["resource"] for i in page.json()["items"]] == ["audit_trail", "account/disabled"]  # the read before
        assert page.json()["next_before"] == items[0]["seq"]
        nurse = await client.get(f"/audit/accounts/{nurse_id}", headers=bearer(nurse_id, "NURSE"))
        assert nurse.status_code == 403  # not even the account's holder
        assert (await client.get(f"/audit/accounts/{uuid.uuid4()}", headers=bearer(auditor, "AUDITOR"))).json() == {
            "items": [],
            "next_before": None,
        }
    reads = [(r["actor_id"], r["outcome"]) for r in audit.state.rows() if r["resource"] == "audit_trail"]
    assert reads[:3] == [(auditor, "allowed"), (auditor, "allowed"), (nurse_id, "denied")]
    assert [r["account_id"] for r in audit.state.rows() if r["resource"] == "audit_trail"][:3] == [nurse_id] * 3
    assert verify(audit.state.rows()).ok


async def test_the_holders_own_changes_and_an_administrators_new_account_are_records(idp: Idp) -> None:
    """Registering (and registering again before confirming), confirming the address, changing
    one's password, and resetting a forgotten one are the holder's records; an account an
    administrator makes is theirs."""
    from tests.unit.test_identity_use_cases import NEW_PASSWORD, PASSWORD, email

    address = email()
    assert (await idp.register(address)).status_code == 201
    assert (await idp.register(address)).status_code == 201  # again, before confirming: the latest wins
    assert (await idp.confirm(await idp.link(address))).status_code == 204
    holder = idp.account(address).id
    tokens = await idp.tokens(address)
    own = await idp.client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=await idp.as_holder(tokens["access_token"]),
    )
    assert own.status_code == 204, own.text
    admin_id, admin = await admin_of(idp)
    body = {"email": email(), "password": PASSWORD, "full_name": "Made Nurse", "roles": ["NURSE"]}
    made = await idp.client.post("/admin/users", json=body, headers=admin)
    assert made.status_code == 201, made.text
    nurse_id = uuid.UUID(made.json()["user_id"])
    assert [(r.account_id, r.actor_id, r.resource, r.action, r.purpose) for r in records(idp)] == [
        (holder, holder, "account/account", "create", OWN_ACCOUNT),
        (holder, holder, "account/account", "update", OWN_ACCOUNT),
        (holder, holder, "account/email_verified", "update", OWN_ACCOUNT),
        (holder, holder, "account/password", "update", OWN_ACCOUNT),
        (nurse_id, admin_id, "account/account", "create", ADMINISTRATION),
    ]
    assert records(idp)[-1].actor_roles == ["ADMIN"]
