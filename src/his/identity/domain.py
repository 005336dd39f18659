"""Identity rules: roles, e-mail addresses, the password policy, refresh-token families. No IO."""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources

from his.access import STAFF


class InvalidCredentialsError(ValueError):
    """Unknown user or wrong password: callers must not be told which."""


class WeakPasswordError(ValueError):
    """The password breaks the policy; the message says how."""


class InvalidEmailError(ValueError):
    """Not an e-mail address."""


class EmailTakenError(Exception):
    """An account with this e-mail address exists."""


class NoSuchAccountError(LookupError):
    """No account has this id."""


class LastAdministratorError(Exception):
    """The change would leave the hospital without an active administrator."""


class PasswordChangeRequiredError(Exception):
    """The password was right, but it must be changed before the account signs in again."""


class EmailUnverifiedError(Exception):
    """The password was right, but the account's address was not confirmed yet (the link
    e-mailed at registration)."""


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def normalise_email(email: str) -> str:
    """E-mail addresses are unique case-insensitively: compare them lower-cased and NFKC-folded."""
    folded = unicodedata.normalize("NFKC", email).strip().lower()
    if len(folded) > 254 or not _EMAIL.match(folded):
        raise InvalidEmailError("email is not a valid address")
    return folded


def _load_common() -> frozenset[str]:
    text = resources.files("his.identity").joinpath("common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


COMMON_PASSWORDS = _load_common()


#: zxcvbn looks at this many characters at most (it refuses longer input; the rest only adds).
ESTIMATED_LENGTH = 72


def strength(password: str, hints: Iterable[str] = ()) -> tuple[int, str]:
    """zxcvbn's estimate of ``password`` (its score, 0 to 4, and its warning, if any), knowing
    ``hints`` (the person's name and address): patterns, keyboard walks, repeats, dates, leet
    speak and dictionaries of common passwords, names and words, English and others. Imported
    when first needed: its dictionaries cost about 15 MB and 70 ms, paid by identity alone."""
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:ESTIMATED_LENGTH], user_inputs=[h for h in hints if h])
    feedback = result.get("feedback") or {}
    return int(result["score"]), str(feedback.get("warning") or "")


@dataclass(frozen=True)
class PasswordPolicy:
    """NIST SP 800-63B style: length matters, composition rules do not; common passwords, simple
    patterns and passwords made of the person's own name or address are refused, the last two by
    a strength estimate (zxcvbn's score: 3 means about 10^8 guesses or more, beyond an online
    guesser throttled as sign-ins are, and costly offline against argon2id)."""

    min_length: int = 12
    max_length: int = 128
    min_score: int = 3

    def check(self, password: str, *, email: str = "", full_name: str = "") -> None:
        if len(password) < self.min_length:
            raise WeakPasswordError(f"password must have at least {self.min_length} characters")
        if len(password) > self.max_length:
            raise WeakPasswordError(f"password must have at most {self.max_length} characters")
        lowered = password.lower()
        if lowered in COMMON_PASSWORDS or _strip_digits(lowered) in COMMON_PASSWORDS:
            raise WeakPasswordError("password is too common")
        if len(set(password)) < 4:
            raise WeakPasswordError("password repeats too few characters")
        if _is_sequence(lowered):
            raise WeakPasswordError("password is a simple sequence")
        local = email.split("@", 1)[0].lower()
        if len(local) >= 4 and local in lowered:
            raise WeakPasswordError("password must not contain the e-mail address")
        for part in full_name.lower().split():
            if len(part) >= 4 and part in lowered:
                raise WeakPasswordError("password must not contain your name")
        score, warning = strength(password, [local, *full_name.lower().split()])
        if score < self.min_score:
            why = f" ({warning.rstrip('.').lower()})" if warning else ""
            raise WeakPasswordError(f"password is too easy to guess{why}; a few unrelated words make a strong one")


#: The full name of the administrator ``his up`` creates at first start.
ADMIN_FULL_NAME = "Administrator"


def check_admin_account(email: str, password: str | None, policy: PasswordPolicy | None = None) -> None:
    """Raise ``InvalidEmailError`` or ``WeakPasswordError`` (saying why) if ``his up`` could not
    create this administrator; ``password=None`` means one is generated, which always passes."""
    email_key = normalise_email(email)
    if password is not None:
        (policy or PasswordPolicy()).check(password, email=email_key, full_name=ADMIN_FULL_NAME)


def _strip_digits(text: str) -> str:
    return text.rstrip("0123456789!.")


def _is_sequence(text: str) -> bool:
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return len(steps) == 1 and steps.pop() in (-1, 0, 1)


@dataclass(frozen=True)
class User:
    """An account: its address as given and as compared (``email_key``), its roles (sorted) and
    its password's hash."""

    id: uuid.UUID
    email: str
    email_key: str
    full_name: str
    password_hash: str = field(repr=False)
    roles: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None = None
    #: An administrator asked for a new password (or it was generated): the next sign-in must
    #: change it (``POST /api/auth/login/password``) before any token is issued.
    password_change_required: bool = False
    #: The second factor (``his.identity.mfa``): the TOTP secret, encrypted, once enrolment was
    #: confirmed (and when), one being enrolled, and the last step a code was accepted for.
    totp_secret: bytes | None = field(default=None, repr=False)
    totp_pending: bytes | None = field(default=None, repr=False)
    totp_enabled_at: datetime | None = None
    totp_last_step: int | None = None
    #: When the address was confirmed: by the link e-mailed at self-registration, by a password
    #: reset (which proves the mailbox too), or at creation by an administrator. An account whose
    #: address is not confirmed cannot sign in.
    email_verified_at: datetime | None = None


@dataclass(frozen=True)
class Account:
    """An account as an administrator lists it: no password hash, whether sign-ins are held
    back for it (``locked``) and whether it has a second factor (``mfa``)."""

    id: uuid.UUID
    email: str
    full_name: str
    roles: tuple[str, ...]
    active: bool
    locked: bool
    mfa: bool
    password_change_required: bool
    created_at: datetime


def account_of(user: User, *, locked: bool) -> Account:
    return Account(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        roles=user.roles,
        active=user.disabled_at is None,
        locked=locked,
        mfa=user.totp_enabled_at is not None,
        password_change_required=user.password_change_required,
        created_at=user.created_at,
    )


def account_key(email_key: str) -> str:
    """The throttle key that counts every sign-in attempt for an account, from anywhere."""
    return f"acct:{email_key}"


def pair_prefix(email_key: str) -> str:
    """The start of the throttle keys that count an account's attempts from one address each."""
    return f"acct-ip:{email_key} "


def leaves_no_admin(user: User, *, roles: Iterable[str] | None, active: bool | None, other_admins: int) -> bool:
    """Whether changing ``user``'s ``roles`` or ``active`` (None: unchanged) would leave no
    active administrator, ``other_admins`` being the active administrators but ``user``."""
    was_admin = user.disabled_at is None and "ADMIN" in user.roles
    stays_admin = (active if active is not None else user.disabled_at is None) and "ADMIN" in (
        roles if roles is not None else user.roles
    )
    return was_admin and not stays_admin and other_admins == 0


#: How many accounts one call of the staff directory names at most.
MAX_STAFF_IDS = 200


@dataclass(frozen=True)
class StaffMember:
    """An account as the staff directory names it: its id, its name and its staff roles (sorted;
    never PATIENT: whether a member of staff is also a patient here is not the directory's to say)."""

    id: uuid.UUID
    full_name: str
    roles: tuple[str, ...]


def staff_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The staff roles among ``roles``, sorted (every role but PATIENT)."""
    return tuple(sorted({r for r in roles if r in STAFF}))


def in_directory(roles: Iterable[str], disabled_at: datetime | None) -> bool:
    """Whether the staff directory names an account: one with a staff role, not disabled. A
    patient's account (PATIENT only) is never named."""
    return disabled_at is None and bool(staff_roles(roles))


def in_order(ids: Iterable[uuid.UUID], found: Iterable[StaffMember]) -> list[StaffMember]:
    """The members ``found`` in the order of ``ids``, each once; ids not found are left out."""
    by_id = {m.id: m for m in found}
    return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]


def token_hash(token: str) -> bytes:
    """What is kept of a refresh token: its SHA-256 (the token itself is only ever the holder's)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class RefreshToken:
    """A stored refresh token (its hash), in a family that rotation keeps together."""

    id: str
    family_id: str
    user_id: str
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    #: When the sign-in that began the family happened: no rotation outlives ``SESSION_MAX_AGE``.
    started_at: datetime | None = None


class RefreshOutcome(StrEnum):
    ROTATE = "rotate"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"  # a rotated token came back: someone holds a copy; revoke the family


def judge_refresh(token: RefreshToken, now: datetime) -> RefreshOutcome:
    if token.revoked_at is not None:
        return RefreshOutcome.REVOKED
    if token.rotated_at is not None:
        return RefreshOutcome.REUSED
    if token.expires_at <= now:
        return RefreshOutcome.EXPIRED
    if token.started_at is not None and token.started_at + SESSION_MAX_AGE <= now:
        return RefreshOutcome.EXPIRED
    return RefreshOutcome.ROTATE


@dataclass(frozen=True)
class Claim:
    """An attempt counted against a throttle's key (``at``: when, to forget it later), or refused
    (``at`` is None) with the seconds until one would be counted."""

    at: datetime | None
    wait: float = 0.0


def refusal_at_limit(recent: list[datetime], limit: int, window: timedelta, now: datetime) -> Claim | None:
    """The refusal of one more attempt if ``recent`` (a key's attempts within ``window`` before
    ``now``, newest first) holds ``limit`` already; None if one more fits."""
    if len(recent) >= limit:  # once the limit-th newest leaves the window, one more fits
        return Claim(None, (recent[limit - 1] + window - now).total_seconds())
    return None


@dataclass(frozen=True)
class Backoff:
    """How long attempts wait after failures: the first ``free`` failures cost nothing, then each
    further one doubles the wait after it, from ``base_seconds`` up to ``cap_seconds``. Failures
    older than ``window_seconds`` are forgotten."""

    free: int = 5
    base_seconds: float = 1.0
    cap_seconds: float = 15 * 60
    window_seconds: float = 24 * 3600

    def after(self, failures: int) -> float:
        """Seconds the next attempt waits after the last of ``failures`` recent failures."""
        if failures < self.free:
            return 0.0
        return min(self.cap_seconds, self.base_seconds * 2.0 ** min(failures - self.free, 40))

    def refusal(self, recent: list[datetime], now: datetime) -> Claim | None:
        """The refusal of one more attempt if the wait that ``recent`` (the attempts within the
        window, newest first) earned has not passed since the last of them; None if it has."""
        wait = self.after(len(recent))
        if recent and recent[0] + timedelta(seconds=wait) > now:
            return Claim(None, (recent[0] + timedelta(seconds=wait) - now).total_seconds())
        return None


ACCESS_TOKEN_TTL = timedelta(minutes=15)
#: A signed-out session is remembered this long past the expiry of its last access token (the
#: verifiers accept a token up to 30 s late).
REVOCATION_LEEWAY = timedelta(seconds=60)
#: A refresh token unused this long expires (the sliding lifetime)...
REFRESH_TOKEN_TTL = timedelta(days=14)
#: ...and a session ends this long after its sign-in, however often it was refreshed.
SESSION_MAX_AGE = timedelta(days=30)
