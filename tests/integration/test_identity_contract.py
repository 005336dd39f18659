"""One contract for identity's ports, run against PostgreSQL (``his.identity.store``) and the
in-memory fakes (``his.testing.identity``) alike: what the use cases' unit tests assume of the
fake holds of the database.

Both sides start empty, and the PostgreSQL side is emptied again behind the suite. Every unit of
work runs half an hour after midnight of a new year's day in Berlin (the UTC date is still the
old year's); the moments given to the repositories are that one and others around it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import asyncpg
import pytest
from asyncpg.exceptions import CharacterNotInRepertoireError

from his.events.identity import UserRegistered
from his.identity.domain import EmailTakenError, RefreshToken, StaffMember, User, token_hash
from his.identity.keys import RETIRE_AFTER, SigningKey, StoredKey
from his.identity.ports import IdentityUnits, IdentityWork
from his.identity.store import IdentityStore
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.identity import FakeIdentity
from tests.support.calendar import HARD_DATES

HARD = HARD_DATES[0]
#: The moment every unit of work here says it is.
NOW = HARD.at(0, 30)
TABLES = (
    "refresh_token, recovery_code, mfa_policy, password_reset, email_verification, app_user, signing_key,"
    " login_failure, outbox"
)
PASSPHRASE = b"a passphrase for the contract's keys"


@dataclass
class Side:
    units: IdentityUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]
    #: Disable an account (no use case does yet; the column is there and sign-ins honour it).
    disable: Callable[[uuid.UUID], Awaitable[None]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeIdentity(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        async def disable_in_memory(user_id: uuid.UUID) -> None:
            fake.state.users[user_id] = replace(fake.state.users[user_id], disabled_at=NOW)

        yield Side(fake, in_memory, disable_in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "identity", "pw-identity-contract")
    await migrations.upgrade(admin_dsn, "identity")
    await _empty(admin_dsn)
    db = Database(dsn, schema="identity", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    async def disable_in_table(user_id: uuid.UUID) -> None:
        await db.pool.execute("UPDATE app_user SET disabled_at = $2 WHERE id = $1", user_id, NOW)

    try:
        yield Side(IdentityStore(db), in_outbox, disable_in_table)
    finally:
        await db.close()
        await _empty(admin_dsn)  # the next file's tests find the schema as a fresh one


async def _empty(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(f'identity.{t.strip()}' for t in TABLES.split(','))}")
    finally:
        await conn.close()


async def _add_user(
    u: IdentityWork,
    email_key: str | None = None,
    *,
    roles: tuple[str, ...] = ("PATIENT",),
    name: str = "Ay Se",
    verified: bool = True,
) -> uuid.UUID:
    user_id = uuid.uuid4()
    key = email_key or f"user-{user_id.hex[:8]}@example.org"
    await u.users.add(
        user_id=user_id,
        email=key.upper(),
        email_key=key,
        full_name=name,
        password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        roles=roles,
        at=NOW,
        verified=verified,
    )
    return user_id


async def _user(side: Side, email_key: str | None = None, *, roles: tuple[str, ...] = ("PATIENT",)) -> uuid.UUID:
    async with side.units.uow() as u:
        return await _add_user(u, email_key, roles=roles)


async def _issue(
    side: Side, user_id: uuid.UUID, family: uuid.UUID | None = None, *, at: timedelta = timedelta()
) -> tuple[bytes, uuid.UUID]:
    """A refresh token issued to the user ``at`` after NOW (a new family unless given): its hash and family."""
    hashed, family = token_hash(uuid.uuid4().hex), family or uuid.uuid4()
    async with side.units.uow() as u:
        await u.refresh_tokens.add(
            token_id=uuid.uuid4(),
            token_hash=hashed,
            family_id=family,
            user_id=user_id,
            at=NOW + at,
            expires_at=NOW + at + timedelta(days=14),
        )
    return hashed, family


async def test_an_account_is_kept_as_added(side: Side) -> None:
    async with side.units.uow() as u:
        assert not await u.users.has_admin(lock=True)
        patient = await _add_user(u, "ay.se@example.org", roles=("PATIENT",))
        staff = await _add_user(u, roles=("DOCTOR", "NURSE"))
    async with side.units.read() as u:
        found = await u.users.by_email("ay.se@example.org")
        assert await u.users.get(patient) == found
        assert await u.users.by_email("AY.SE@example.org") is None  # the key is compared as given
        assert await u.users.get(uuid.uuid4()) is None
        assert (await u.users.get(staff)) is not None
        assert not await u.users.has_admin()
    assert found == User(
        id=patient,
        email="AY.SE@EXAMPLE.ORG",
        email_key="ay.se@example.org",
        full_name="Ay Se",
        password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        roles=("PATIENT",),
        created_at=NOW,
        email_verified_at=NOW,
    )
    staffed = await _user(side, roles=("ADMIN", "AUDITOR"))
    async with side.units.uow() as u:
        assert await u.users.has_admin(lock=True)
        await u.users.set_password_hash(staffed, "$argon2id$new")
        await u.users.set_password_hash(uuid.uuid4(), "$argon2id$nobody")  # nobody: nothing
    async with side.units.read() as u:
        admin = await u.users.get(staffed)
        assert admin is not None and (admin.roles, admin.password_hash) == (("ADMIN", "AUDITOR"), "$argon2id$new")


async def test_the_staff_directory_names_accounts_with_a_staff_role_not_disabled(side: Side) -> None:
    async with side.units.uow() as u:
        doctor = await _add_user(u, roles=("DOCTOR",), name="Deniz Doğan")
        nurse = await _add_user(u, roles=("NURSE", "LAB_TECH"), name="Nur Yalın")  # kept as given, unsorted
        patient = await _add_user(u, roles=("PATIENT",), name="Ay Se")
        both = await _add_user(u, roles=("PATIENT", "RECEPTIONIST"), name="Pelin Hasta")
        gone = await _add_user(u, roles=("DOCTOR",), name="Eski Doktor")
        auditor = await _add_user(u, roles=("AUDITOR", "ADMIN", "BILLING"), name="Can Denetçi")
    await side.disable(gone)
    asked = [nurse, uuid.uuid4(), patient, doctor, gone, both, auditor, nurse]
    async with side.units.read() as u:
        found = await u.users.staff(asked)
        assert await u.users.staff([]) == []
        assert await u.users.staff([patient, gone, uuid.uuid4()]) == []
    async with side.units.uow() as u:  # in a unit of work alike
        assert await u.users.staff([doctor]) == [StaffMember(doctor, "Deniz Doğan", ("DOCTOR",))]
    assert sorted(found, key=lambda m: m.id) == sorted(
        [
            StaffMember(doctor, "Deniz Doğan", ("DOCTOR",)),
            StaffMember(nurse, "Nur Yalın", ("LAB_TECH", "NURSE")),
            StaffMember(both, "Pelin Hasta", ("RECEPTIONIST",)),  # named as staff, never as a patient
            StaffMember(auditor, "Can Denetçi", ("ADMIN", "AUDITOR", "BILLING")),
        ],
        key=lambda m: m.id,
    )


async def test_an_address_is_taken_once_and_a_refused_account_leaves_nothing(side: Side) -> None:
    first = await _user(side, email_key="taken@example.org")
    with pytest.raises(EmailTakenError):
        async with side.units.uow() as u:
            u.add(UserRegistered(user_id=first, roles=["PATIENT"]), aggregate_id=first)
            await _add_user(u, "taken@example.org", name="Someone Else")
    async with side.units.uow() as u:  # ON CONFLICT DO NOTHING: the unit itself goes on
        with pytest.raises(EmailTakenError):
            await _add_user(u, "taken@example.org")
        second = await _add_user(u, "free@example.org")
        u.add(UserRegistered(user_id=second, roles=["PATIENT"]), aggregate_id=second)
    async with side.units.read() as u:
        kept = await u.users.by_email("taken@example.org")
        assert kept is not None and (kept.id, kept.full_name) == (first, "Ay Se")
    assert await side.published() == [UserRegistered.type]


@pytest.mark.parametrize("roles", [(), ("SURGEON",), ("DOCTOR", "doctor")], ids=["none", "unknown", "lower-case"])
async def test_roles_outside_the_check_are_refused(side: Side, roles: tuple[str, ...]) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        async with side.units.uow() as u:
            await _add_user(u, "odd@example.org", roles=roles)
    async with side.units.read() as u:
        assert await u.users.by_email("odd@example.org") is None


async def test_text_with_a_nul_is_refused_as_the_database_refuses_it(side: Side) -> None:
    with pytest.raises(CharacterNotInRepertoireError):
        async with side.units.uow() as u:
            await _add_user(u, "nul@example.org", name="Ay\x00Se")
    with pytest.raises(CharacterNotInRepertoireError):
        async with side.units.read() as u:
            await u.users.by_email("a\x00b@example.org")
    with pytest.raises(CharacterNotInRepertoireError):
        async with side.units.uow() as u:
            await u.attempts.recent("acct:a\x00b@example.org", NOW - timedelta(minutes=15), 5)
    async with side.units.read() as u:
        assert await u.users.by_email("nul@example.org") is None


async def test_a_refused_statement_aborts_the_unit(side: Side) -> None:
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        async with side.units.uow() as u:
            with pytest.raises(asyncpg.CheckViolationError):
                await _add_user(u, "first@example.org", roles=("SURGEON",))
            await u.users.get(uuid.uuid4())
    with pytest.raises(asyncpg.InFailedSQLTransactionError):  # the commit of an aborted transaction fails
        async with side.units.uow() as u:
            await _add_user(u, "second@example.org")
            with pytest.raises(asyncpg.CheckViolationError):
                await _add_user(u, "third@example.org", roles=())
    async with side.units.read() as u:  # reads run no transaction: a refused one aborts nothing
        with pytest.raises(CharacterNotInRepertoireError):
            await u.users.by_email("\x00")
        assert await u.users.by_email("second@example.org") is None


async def test_a_refresh_token_is_kept_by_its_hash_and_rotated(side: Side) -> None:
    user = await _user(side)
    hashed, family = await _issue(side, user)
    async with side.units.uow() as u:
        stored = await u.refresh_tokens.get(hashed, lock=True)
        assert await u.refresh_tokens.get(token_hash("not a token")) is None
        assert stored is not None
        await u.refresh_tokens.mark_rotated(stored.id, NOW + timedelta(minutes=3))
    assert stored == RefreshToken(
        id=stored.id,
        family_id=str(family),
        user_id=str(user),
        expires_at=NOW + timedelta(days=14),
        rotated_at=None,
        revoked_at=None,
        started_at=NOW,  # a new sign-in: the moment it was issued
    )
    async with side.units.read() as u:
        rotated = await u.refresh_tokens.get(hashed)
    assert rotated is not None and (rotated.rotated_at, rotated.revoked_at) == (NOW + timedelta(minutes=3), None)


async def test_a_token_needs_an_account_and_a_hash_of_its_own(side: Side) -> None:
    user = await _user(side)
    hashed, _ = await _issue(side, user)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _issue(side, uuid.uuid4())
    with pytest.raises(asyncpg.UniqueViolationError):
        async with side.units.uow() as u:
            await u.refresh_tokens.add(
                token_id=uuid.uuid4(),
                token_hash=hashed,
                family_id=uuid.uuid4(),
                user_id=user,
                at=NOW,
                expires_at=NOW + timedelta(days=14),
            )


async def test_revoking_a_family_stamps_only_its_tokens_not_revoked_yet(side: Side) -> None:
    user, other = await _user(side), await _user(side)
    first, family = await _issue(side, user)
    second, _ = await _issue(side, user, family, at=timedelta(minutes=1))
    elsewhere, _ = await _issue(side, user)
    theirs, _ = await _issue(side, other, family)  # another account's token in the family: revoked with it
    async with side.units.uow() as u:
        assert await u.refresh_tokens.revoke_family(str(family), NOW + timedelta(minutes=2)) == 3
    async with side.units.uow() as u:
        assert await u.refresh_tokens.revoke_family(str(family), NOW + timedelta(minutes=9)) == 0
        assert await u.refresh_tokens.revoke_family(str(uuid.uuid4()), NOW) == 0
    async with side.units.read() as u:
        revoked = [await u.refresh_tokens.get(h) for h in (first, second, theirs, elsewhere)]
    assert [t.revoked_at if t else "gone" for t in revoked] == [NOW + timedelta(minutes=2)] * 3 + [None]


async def test_the_other_sessions_of_a_user_are_revoked_and_one_kept(side: Side) -> None:
    user, other = await _user(side), await _user(side)
    here, session = await _issue(side, user)
    there, _ = await _issue(side, user)
    done, gone = await _issue(side, user)
    async with side.units.uow() as u:
        await u.refresh_tokens.revoke_family(str(gone), NOW)
    theirs, _ = await _issue(side, other)
    later = NOW + timedelta(minutes=5)
    async with side.units.uow() as u:
        assert await u.refresh_tokens.revoke_others(user, keep=str(session), at=later) == 1
    async with side.units.read() as u:
        states = [await u.refresh_tokens.get(h) for h in (here, there, done, theirs)]
    assert [t.revoked_at if t else "gone" for t in states] == [None, later, NOW, None]
    async with side.units.uow() as u:  # no session to keep: every one
        assert await u.refresh_tokens.revoke_others(user, keep=None, at=later) == 1
        assert await u.refresh_tokens.revoke_others(other, keep=None, at=later) == 1


async def test_revoked_sessions_since_a_moment_with_their_last_revocation(side: Side) -> None:
    user = await _user(side)
    _, early = await _issue(side, user)
    _, split = await _issue(side, user)
    _, late = await _issue(side, user)
    _, live = await _issue(side, user)
    async with side.units.uow() as u:
        await u.refresh_tokens.revoke_family(str(early), NOW - timedelta(minutes=20))
        await u.refresh_tokens.revoke_family(str(split), NOW - timedelta(minutes=10))
    await _issue(side, user, split)  # issued into a revoked family (as no use case does)
    async with side.units.uow() as u:
        await u.refresh_tokens.revoke_family(str(split), NOW - timedelta(minutes=1))
        await u.refresh_tokens.revoke_family(str(late), NOW)
    async with side.units.read() as u:
        since = dict(await u.refresh_tokens.revoked_since(NOW - timedelta(minutes=10)))
        exactly = dict(await u.refresh_tokens.revoked_since(NOW))
        after = await u.refresh_tokens.revoked_since(NOW + timedelta(microseconds=1))
    assert since == {str(split): NOW - timedelta(minutes=1), str(late): NOW}
    assert exactly == {str(late): NOW} and after == []
    assert str(live) not in since


def _key(created: timedelta, retires: timedelta | None = None) -> StoredKey:
    key = SigningKey.generate(NOW + created).stored(PASSPHRASE)
    if retires is None:
        return key
    return StoredKey(key.kid, key.private_pem, key.public_jwk, key.created_at, NOW + retires)


async def test_the_key_ring_lists_keys_not_retired_newest_first(side: Side) -> None:
    old = _key(-timedelta(days=45))  # retires 30 days, 15 minutes and an hour after it was made
    retired = _key(-timedelta(days=60), retires=timedelta())  # retires exactly now
    newest, middle = _key(-timedelta(hours=1)), _key(-timedelta(days=20))
    async with side.units.uow() as u:
        assert await u.signing_keys.current(NOW, lock=True) == []
        for key in (middle, retired, newest, old):
            await u.signing_keys.add(key)
    async with side.units.read() as u:
        current = await u.signing_keys.current(NOW)
        then = await u.signing_keys.current(NOW - timedelta(days=20))
    assert old.retires_at == NOW - timedelta(days=45) + RETIRE_AFTER < NOW
    assert current == [newest, middle]
    assert [k.kid for k in then] == [newest.kid, middle.kid, old.kid, retired.kid]  # not retired then
    assert SigningKey.load(current[0].private_pem, PASSPHRASE, current[0].created_at).kid == newest.kid


async def test_a_key_kept_already_is_left_as_it_is(side: Side) -> None:
    key = _key(-timedelta(days=1))
    async with side.units.uow() as u:
        await u.signing_keys.add(key)
        await u.signing_keys.add(StoredKey(key.kid, b"another", {"kid": key.kid}, NOW, NOW + timedelta(days=1)))
    async with side.units.read() as u:
        assert await u.signing_keys.current(NOW) == [key]


async def test_attempts_are_counted_newest_first_and_forgotten_one_by_one(side: Side) -> None:
    key, other = "acct-ip:ay.se@example.org 192.0.2.1", "ip:192.0.2.1"
    moments = [NOW - timedelta(minutes=m) for m in (20, 15, 10, 5, 5, 0)]
    async with side.units.uow() as u:
        for at in moments:
            await u.attempts.add(key, at)
        await u.attempts.add(other, NOW)
    async with side.units.uow() as u:
        window = NOW - timedelta(minutes=15)  # attempts after it, not at it
        assert await u.attempts.recent(key, window, None) == [NOW, *[NOW - timedelta(minutes=5)] * 2, moments[2]]
        assert await u.attempts.recent(key, window, 2) == [NOW, NOW - timedelta(minutes=5)]
        await u.attempts.forget(key, NOW - timedelta(minutes=5))  # one of the two made then
        await u.attempts.forget(key, NOW + timedelta(minutes=1))  # none then: nothing
        assert await u.attempts.recent(key, window, None) == [NOW, NOW - timedelta(minutes=5), moments[2]]
    async with side.units.uow() as u:
        assert await u.attempts.prune(NOW - timedelta(minutes=15)) == 1  # before it, not at it
        assert await u.attempts.recent(key, NOW - timedelta(days=1), None) == [
            NOW,
            NOW - timedelta(minutes=5),
            moments[2],
            moments[1],
        ]
        await u.attempts.clear(key)
        assert await u.attempts.recent(key, NOW - timedelta(days=1), None) == []
        assert await u.attempts.recent(other, NOW - timedelta(days=1), 10) == [NOW]


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            user = await _add_user(u, "gone@example.org")
            await u.attempts.add("register:all", NOW)
            await u.signing_keys.add(_key(timedelta()))
            u.add(UserRegistered(user_id=user, roles=["PATIENT"]), aggregate_id=user)
            raise RuntimeError("the use case fails after writing")
    async with side.units.uow() as u:
        assert await u.users.by_email("gone@example.org") is None
        assert await u.attempts.recent("register:all", NOW - timedelta(days=1), None) == []
        assert await u.signing_keys.current(NOW) == []
        assert u.clock() == NOW
    assert await side.published() == []


async def test_a_rotated_token_keeps_its_session_start(side: Side) -> None:
    user = await _user(side)
    hashed = token_hash(uuid.uuid4().hex)
    async with side.units.uow() as u:
        await u.refresh_tokens.add(
            token_id=uuid.uuid4(),
            token_hash=hashed,
            family_id=uuid.uuid4(),
            user_id=user,
            at=NOW + timedelta(days=20),
            expires_at=NOW + timedelta(days=34),
            started_at=NOW - timedelta(days=5),
        )
    async with side.units.read() as u:
        stored = await u.refresh_tokens.get(hashed)
    assert stored is not None and stored.started_at == NOW - timedelta(days=5)


async def test_an_administrator_changes_roles_disables_and_requires_a_new_password(side: Side) -> None:
    admin = await _user(side, roles=("ADMIN",))
    other = await _user(side, roles=("ADMIN", "AUDITOR"))
    async with side.units.uow() as u:
        assert await u.users.active_admins(lock=True) == 2
        await u.users.set_roles(other, ["NURSE", "AUDITOR", "NURSE"])
        await u.users.set_disabled(admin, NOW)
        await u.users.require_password_change(other, True)
        assert await u.users.active_admins() == 0
    async with side.units.read() as u:
        a, o = await u.users.get(admin), await u.users.get(other)
    assert a is not None and a.disabled_at == NOW and a.roles == ("ADMIN",)
    assert o is not None and o.roles == ("AUDITOR", "NURSE") and o.password_change_required
    async with side.units.uow() as u:
        await u.users.set_disabled(admin, None)
        await u.users.require_password_change(other, False)
        assert await u.users.active_admins() == 1
    async with side.units.read() as u:
        a, o = await u.users.get(admin), await u.users.get(other)
    assert a is not None and a.disabled_at is None and o is not None and not o.password_change_required


async def test_roles_set_outside_the_check_are_refused(side: Side) -> None:
    user = await _user(side)
    with pytest.raises(asyncpg.CheckViolationError):
        async with side.units.uow() as u:
            await u.users.set_roles(user, ["SURGEON"])


async def test_accounts_are_searched_by_address_or_name_by_name(side: Side) -> None:
    async with side.units.uow() as u:
        zeynep = await _add_user(u, "zeynep.kaya@example.org", name="Zeynep Kaya")
        ali = await _add_user(u, "ali@example.org", name="Ali Kaya")
        await _add_user(u, "percent@example.org", name="Cem 100%")
        other = await _add_user(u, "x_y@example.org", name="Xavier Young")
    async with side.units.read() as u:
        assert [x.id for x in await u.users.search("kaya", limit=10)] == [ali, zeynep]
        assert [x.id for x in await u.users.search("kaya", limit=1)] == [ali]
        assert [x.id for x in await u.users.search("zeynep.k", limit=10)] == [zeynep]
        assert [x.id for x in await u.users.search("x_y", limit=10)] == [other]
        assert await u.users.search("0%c", limit=10) == []  # wildcards are plain characters
        assert len(await u.users.search("", limit=10)) == 4


async def test_attempts_are_counted_per_key_and_cleared_by_prefix(side: Side) -> None:
    async with side.units.uow() as u:
        for key, minutes in (("acct:a@x.org", 1), ("acct:a@x.org", 2), ("acct:b@x.org", 3), ("acct:a@x.org", -20)):
            await u.attempts.add(key, NOW + timedelta(minutes=minutes))
        for ip in ("192.0.2.1", "192.0.2.2"):
            await u.attempts.add(f"acct-ip:a@x.org {ip}", NOW)
        await u.attempts.add("acct-ip:a@x.org.evil {ip}", NOW)
    async with side.units.read() as u:
        counts = await u.attempts.counts(["acct:a@x.org", "acct:b@x.org", "acct:c@x.org"], NOW - timedelta(minutes=15))
    assert counts == {"acct:a@x.org": 2, "acct:b@x.org": 1}
    async with side.units.uow() as u:
        assert await u.attempts.clear_prefix("acct-ip:a@x.org ") == 2
        assert await u.attempts.recent("acct-ip:a@x.org.evil {ip}", NOW - timedelta(days=1), None) == [NOW]


async def test_a_second_factor_is_begun_enabled_used_step_by_step_and_reset(side: Side) -> None:
    user = await _user(side)
    async with side.units.uow() as u:
        await u.users.set_totp_pending(user, b"pending secret")
    async with side.units.read() as u:
        begun = await u.users.get(user)
    assert begun is not None and (begun.totp_pending, begun.totp_secret, begun.totp_enabled_at) == (
        b"pending secret",
        None,
        None,
    )
    async with side.units.uow() as u:
        await u.users.enable_totp(user, b"pending secret", step=1000, at=NOW)
        assert not await u.users.use_totp_step(user, 1000)  # used at enrolment
        assert not await u.users.use_totp_step(user, 999)
        assert await u.users.use_totp_step(user, 1001)
        assert not await u.users.use_totp_step(uuid.uuid4(), 5)
    async with side.units.read() as u:
        on = await u.users.get(user)
    assert on is not None and (on.totp_secret, on.totp_pending, on.totp_enabled_at, on.totp_last_step) == (
        b"pending secret",
        None,
        NOW,
        1001,
    )
    async with side.units.uow() as u:
        await u.users.reset_totp(user)
    async with side.units.read() as u:
        off = await u.users.get(user)
    assert off is not None and (off.totp_secret, off.totp_enabled_at, off.totp_last_step) == (None, None, None)


async def test_recovery_codes_are_replaced_and_each_used_once(side: Side) -> None:
    user, other = await _user(side), await _user(side)
    async with side.units.uow() as u:
        await u.recovery_codes.replace(user, [b"a" * 32, b"b" * 32])
        await u.recovery_codes.replace(other, [b"a" * 32])
        assert await u.recovery_codes.use(user, b"a" * 32, NOW)
        assert not await u.recovery_codes.use(user, b"a" * 32, NOW)
        assert not await u.recovery_codes.use(user, b"c" * 32, NOW)
        assert await u.recovery_codes.remaining(user) == 1 and await u.recovery_codes.remaining(other) == 1
        await u.recovery_codes.replace(user, [b"d" * 32])
        assert await u.recovery_codes.remaining(user) == 1
        assert not await u.recovery_codes.use(user, b"b" * 32, NOW)  # replaced: gone


async def test_the_second_factor_policy_names_roles(side: Side) -> None:
    admin = uuid.uuid4()
    async with side.units.uow() as u:
        assert await u.mfa_policy.roles() == set()
        await u.mfa_policy.set_roles(["DOCTOR", "ADMIN", "DOCTOR"], at=NOW, by=admin)
    async with side.units.uow() as u:
        assert await u.mfa_policy.roles() == {"ADMIN", "DOCTOR"}
        await u.mfa_policy.set_roles(["NURSE"], at=NOW, by=admin)
        assert await u.mfa_policy.roles() == {"NURSE"}
    with pytest.raises(asyncpg.CheckViolationError):
        async with side.units.uow() as u:
            await u.mfa_policy.set_roles(["CHIEF"], at=NOW, by=admin)


@pytest.mark.parametrize("table", ["password_resets", "email_verifications"])
async def test_a_link_works_once_briefly_and_a_newer_one_voids_it(side: Side, table: str) -> None:
    user, other = await _user(side), await _user(side)
    first, second, theirs = b"1" * 32, b"2" * 32, b"3" * 32
    async with side.units.uow() as u:
        links = getattr(u, table)
        await links.add(first, user, at=NOW, expires_at=NOW + timedelta(minutes=30))
        await links.add(theirs, other, at=NOW, expires_at=NOW + timedelta(minutes=30))
        assert await links.holder(first, NOW) == user
        await links.add(second, user, at=NOW, expires_at=NOW + timedelta(minutes=30))
        assert await links.holder(first, NOW) is None  # voided by the newer link
        assert await links.holder(theirs, NOW) == other  # another account's is not
        assert await links.holder(second, NOW + timedelta(minutes=30)) is None  # expired
        assert await links.use(second, NOW + timedelta(minutes=30)) is None
        assert await links.use(second, NOW + timedelta(minutes=29)) == user
        assert await links.use(second, NOW + timedelta(minutes=29)) is None  # once
        assert await links.holder(b"unknown" * 4, NOW) is None
    async with side.units.uow() as u:  # the two kinds of link are apart: a reset link confirms nothing
        other_kind = u.email_verifications if table == "password_resets" else u.password_resets
        await links_add(getattr(u, table), b"4" * 32, user)
        assert await other_kind.holder(b"4" * 32, NOW) is None


async def links_add(links: object, token: bytes, user: uuid.UUID) -> None:
    await links.add(token, user, at=NOW, expires_at=NOW + timedelta(minutes=30))  # type: ignore[attr-defined]


async def test_an_address_is_confirmed_once_and_a_name_changed(side: Side) -> None:
    async with side.units.uow() as u:
        pending = await _add_user(u, verified=False)
        made = await _add_user(u)
    async with side.units.uow() as u:
        assert (await u.users.get(pending)).email_verified_at is None  # type: ignore[union-attr]
        assert await u.users.verify_email(pending, NOW + timedelta(hours=1))
        assert not await u.users.verify_email(pending, NOW + timedelta(hours=2))  # once: the first moment stays
        assert not await u.users.verify_email(made, NOW + timedelta(hours=1))  # made confirmed
        assert not await u.users.verify_email(uuid.uuid4(), NOW)
        await u.users.set_full_name(pending, "Ay Se Again")
    async with side.units.read() as u:
        found = await u.users.get(pending)
        assert found is not None and found.email_verified_at == NOW + timedelta(hours=1)
        assert found.full_name == "Ay Se Again"
        assert (await u.users.get(made)).email_verified_at == NOW  # type: ignore[union-attr]
