"""The second factor: time-based one-time passwords (TOTP, RFC 6238) and recovery codes. Pure.

A code is six digits from an authenticator app, for 30-second steps; the step before and the one
after are accepted too (a phone's clock a little off), and each step once only: the account keeps
the last step it accepted, so a code seen over a shoulder cannot be used again. A recovery code
(ten at enrolment, each usable once) stands in for a lost phone; only its SHA-256 is kept (they
are random, 60 bits each: a hash is enough, and a slow one would buy nothing).

The TOTP secret is kept encrypted (AES-256-GCM, ``his.kernel.crypto``) with a key derived from
identity's key passphrase, bound to the account's id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyotp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from his.kernel.crypto import FieldCipher

#: How an authenticator app names the hospital beside the account's address.
TOTP_ISSUER = "his"
RECOVERY_CODES = 10
#: Steps accepted either side of the current one (30 s each).
WINDOW = 1


class SecondFactorRequiredError(Exception):
    """The password was right; the account signs in with a code from its authenticator as well."""


class EnrolmentRequiredError(Exception):
    """The password was right; the account's role needs a second factor, and it has none yet."""


class AlreadyEnrolledError(Exception):
    """The account has a second factor; an administrator resets it before another is enrolled."""


class NotEnrollingError(Exception):
    """No enrolment was started (``POST /api/auth/mfa/totp``) to confirm."""


@dataclass(frozen=True)
class Enrolment:
    """What an authenticator app needs: the secret, and the same as an ``otpauth://`` URI (what a
    QR code shows)."""

    secret: str
    uri: str


def new_enrolment(email: str) -> Enrolment:
    secret = pyotp.random_base32()
    return Enrolment(secret, pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER))


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The step of ``code`` within ``WINDOW`` steps of ``now``, or None."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current, current - WINDOW, current + WINDOW):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten codes like ``k7qm-3xd2-p9wa`` (60 random bits each)."""
    out = []
    for _ in range(RECOVERY_CODES):
        text = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12]
        out.append(f"{text[:4]}-{text[4:8]}-{text[8:]}")
    return out


def recovery_hash(code: str) -> bytes:
    """What is kept of a recovery code; spaces, dashes and case do not matter when it is typed."""
    return hashlib.sha256("".join(c for c in code.lower() if c.isalnum()).encode()).digest()


def secrets_cipher(passphrase: bytes) -> FieldCipher:
    """The cipher of TOTP secrets, its key derived from identity's key passphrase."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"his.identity totp secrets").derive(passphrase)
    return FieldCipher([key])


def aad(user_id: uuid.UUID) -> bytes:
    """What binds an encrypted secret to its account: copied to another row, it does not decrypt."""
    return b"totp:" + user_id.bytes
