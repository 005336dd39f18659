"""A forgotten password, reset by a one-time link sent to the account's e-mail address.

Asking (``request``) is answered the same whether or not the address has an account: an unknown
address, a disabled account or one asked for too often gets no e-mail, and nothing in the answer
or its timing says which (the e-mail is sent after the answer, off the request). Only the
address's own asking is limited openly (429), which says nothing about any account.

A link works once and for ``RESET_LINK_TTL``; a newer one voids the older. Using it sets the new
password, signs out every session of the account and clears the failed sign-ins that held it
back, and confirms the address of an account that had not confirmed it yet (the link proves
the mailbox as the confirmation link does). The second factor, if the account has one, is still
asked at the next sign-in: a mailbox alone does not take an account over.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from his.events.identity import EmailVerified, PasswordChanged, PasswordResetRequested
from his.identity.auditing import record_account_change
from his.identity.domain import account_key, normalise_email, pair_prefix, token_hash
from his.identity.handlers import Identity
from his.identity.mailer import Mailer
from his.identity.throttles import claim_attempt, granted
from his.kernel.mail import Channel

RESET_LINK_TTL = timedelta(minutes=30)


class InvalidResetLinkError(Exception):
    """The link is unknown, used, voided by a newer one, or expired."""


class PasswordRecovery:
    """Reset links over identity's units, sent through ``mail`` and pointing at ``public_url``."""

    def __init__(
        self,
        identity: Identity,
        mail: Channel,
        public_url: str,
        *,
        per_address: int = 10,
        per_account: int = 3,
        window_seconds: float = 3600.0,
    ) -> None:
        self.identity, self.mailer = identity, Mailer(mail, public_url)
        self.per_address, self.per_account, self.window = per_address, per_account, window_seconds

    async def request(self, email: str, client_ip: str) -> None:
        """Send a reset link to ``email`` if it is an active account's and it was not asked for
        too often. ``ThrottledError`` past the address's own limit; ``InvalidEmailError`` for
        what is not an address."""
        email_key = normalise_email(email)
        ident = self.identity
        async with ident.units.uow() as uow:
            now = uow.clock()
            ip_key = f"reset-ip:{client_ip}"
            granted(ip_key, await claim_attempt(uow.attempts, ip_key, self.per_address, self.window, now))
            claim = await claim_attempt(uow.attempts, f"reset:{email_key}", self.per_account, self.window, now)
            user = await uow.users.by_email(email_key)
            if claim.at is None or user is None or user.disabled_at is not None:
                return
            token = secrets.token_urlsafe(32)
            await uow.password_resets.add(token_hash(token), user.id, at=now, expires_at=now + RESET_LINK_TTL)
            uow.add(PasswordResetRequested(user_id=user.id), aggregate_id=user.id)
        self.mailer.send(to=user.email, subject="Reset your password", body=self._body(user.full_name, token), at=now)

    def _body(self, name: str, token: str) -> str:
        minutes = int(RESET_LINK_TTL.total_seconds() // 60)
        link = self.mailer.link("/password-reset", token)
        return (
            f"Dear {name},\n\n"
            "someone asked to reset the password of your account at the hospital. If it was you,\n"
            f"open this link within {minutes} minutes; it works once:\n\n{link}\n\n"
            "If it was not you, ignore this message: your password stays as it is.\n"
        )

    async def sent(self) -> None:
        """Wait until every e-mail asked for so far was handed over (tests, and shutdown)."""
        await self.mailer.sent()

    async def confirm(self, token: str, new_password: str) -> None:
        """Set the password of the link's account. ``InvalidResetLinkError``; ``WeakPasswordError``
        (the link still works then)."""
        ident, hashed_token = self.identity, token_hash(token)
        async with ident.units.read() as u:
            user_id = await u.password_resets.holder(hashed_token, u.clock())
            user = await u.users.get(user_id) if user_id else None
        if user is None or user.disabled_at is not None:
            raise InvalidResetLinkError("the link is not valid: it was used, replaced by a newer one, or expired")
        ident.policy.check(new_password, email=user.email_key, full_name=user.full_name)
        hashed = await ident.passwords.hash(new_password)
        async with ident.units.uow() as uow:
            if await uow.password_resets.use(hashed_token, uow.clock()) != user.id:
                raise InvalidResetLinkError("the link is not valid: it was used, replaced by a newer one, or expired")
            await uow.users.set_password_hash(user.id, hashed)
            await uow.users.require_password_change(user.id, False)
            await uow.refresh_tokens.revoke_others(user.id, keep=None, at=uow.clock())
            await uow.attempts.clear(account_key(user.email_key))
            await uow.attempts.clear_prefix(pair_prefix(user.email_key))
            uow.add(PasswordChanged(user_id=user.id, how="reset"), aggregate_id=user.id)
            record_account_change(uow, user.id, by=user.id, roles=user.roles, what="password_reset")
            # The link reached the mailbox: an address not confirmed yet is confirmed by it.
            if await uow.users.verify_email(user.id, uow.clock()):
                uow.add(EmailVerified(user_id=user.id, how="reset"), aggregate_id=user.id)
        ident.refusals.forget([account_key(user.email_key), pair_prefix(user.email_key)])
