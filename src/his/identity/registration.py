"""Self-registration that does not tell whether an address has an account, and a new account's
address confirmed before it signs in.

``register`` answers alike (201 and an id) for a new address and for one that has an account,
and does the same costly work for both (the password is hashed either way); the difference
goes by e-mail, to the address's owner, after the answer:

- a new address gets an account that cannot sign in yet and a link to confirm the address;
- an address whose account is not confirmed yet gets a new link, and the account takes this
  registration's name and password (the latest registration wins; its link voids the older);
- an address with a confirmed account gets a message saying so, with the way to reset a
  forgotten password; nothing changes. A disabled account's address gets nothing.

The id answered is the new account's; for an address that had one it is a fresh random id that
names no account, so that two registrations of one address look alike whatever the address.

Confirming (``confirm``) needs the link and the password of the registration it was sent for.
The link alone is not enough: whoever registered someone else's address (an account made ready
for its owner to adopt, with a password the registrant knows) cannot confirm it without the
mailbox, and the owner who did not register cannot confirm it without the password. A password
reset through the e-mailed link confirms the address too (``his.identity.recovery``).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from his.access import Role
from his.events.identity import EmailVerified
from his.identity.auditing import record_account_change
from his.identity.domain import EmailTakenError, InvalidCredentialsError, token_hash
from his.identity.handlers import Identity
from his.identity.mailer import Mailer
from his.identity.ports import IdentityWork
from his.kernel.mail import Channel

#: How long a confirmation link works.
CONFIRM_LINK_TTL = timedelta(hours=24)


class InvalidConfirmationLinkError(Exception):
    """The link is unknown, used, voided by a newer registration, or expired."""


class Registration:
    """Self-registration over identity's units, its links sent through ``mail`` and pointing at
    ``public_url``'s ``/verify-email`` (the console's page)."""

    def __init__(self, identity: Identity, mail: Channel, public_url: str) -> None:
        self.identity, self.mailer = identity, Mailer(mail, public_url)

    async def register(self, *, email: str, password: str, full_name: str, client_ip: str) -> uuid.UUID:
        """Register a PATIENT account for ``email``, within the registration limits of the address
        and of everyone (``ThrottledError`` past them); ``WeakPasswordError`` and
        ``InvalidEmailError`` say what is wrong with what was sent, whoever has the address."""
        ident = self.identity
        email_key, full_name = ident._check(email, password, full_name)  # what costs nothing first
        await ident.claim_registration(client_ip)
        hashed = await ident.passwords.hash(password)
        answer, message = uuid.uuid4(), None  # an id that names no account, unless one is made
        async with ident.units.uow() as uow:
            now = uow.clock()
            user = await uow.users.by_email(email_key)
            if user is None:
                try:
                    answer = await ident.insert(
                        uow,
                        email=email,
                        email_key=email_key,
                        full_name=full_name,
                        password_hash=hashed,
                        roles=None,
                        created_by=None,
                        verified=False,
                    )
                except EmailTakenError:  # registered at this moment by another request: no e-mail
                    return answer
                record_account_change(uow, answer, by=answer, roles=[Role.PATIENT], what="account", action="create")
                token = await self._link(uow, answer, now)
                message = (email.strip(), "Confirm your address", self._welcome(full_name, token))
            elif user.disabled_at is not None:
                pass
            elif user.email_verified_at is None:
                await uow.users.set_password_hash(user.id, hashed)
                await uow.users.set_full_name(user.id, full_name)
                record_account_change(uow, user.id, by=user.id, roles=user.roles, what="account")
                token = await self._link(uow, user.id, now)
                message = (user.email, "Confirm your address", self._welcome(full_name, token))
            else:
                message = (user.email, "You already have an account", self._known(user.full_name))
        if message is not None:  # once committed: a link in the mailbox works
            to, subject, body = message
            self.mailer.send(to=to, subject=subject, body=body, at=now)
        return answer

    async def _link(self, uow: IdentityWork, user_id: uuid.UUID, now: datetime) -> str:
        """A new confirmation link for the account (its older ones stop working): its token."""
        token = secrets.token_urlsafe(32)
        await uow.email_verifications.add(token_hash(token), user_id, at=now, expires_at=now + CONFIRM_LINK_TTL)
        return token

    def _welcome(self, name: str, token: str) -> str:
        hours = int(CONFIRM_LINK_TTL.total_seconds() // 3600)
        return (
            f"Dear {name},\n\n"
            "an account at the hospital was registered with this address. To confirm that the\n"
            f"address is yours, open this link within {hours} hours and enter the password you chose:\n\n"
            f"{self.mailer.link('/verify-email', token)}\n\n"
            "If you did not register, ignore this message: nobody can sign in with this address\n"
            "until it is confirmed.\n"
        )

    def _known(self, name: str) -> str:
        return (
            f"Dear {name},\n\n"
            "someone tried to register a new account at the hospital with this address. You already\n"
            "have one: sign in with it. If you forgot its password, ask for a new one here:\n\n"
            f"{self.mailer.public_url}/password-reset\n\n"
            "If it was not you, ignore this message: nothing was changed.\n"
        )

    async def confirm(self, token: str, password: str, client_ip: str) -> None:
        """Confirm the address of the link's account with the password of the registration it
        was sent for (throttled as a sign-in is). ``InvalidConfirmationLinkError`` for a link
        that does not work (or a password that is not its registration's: the link still works
        then); ``ThrottledError``. Confirming an address already confirmed is done already."""
        ident, hashed_token = self.identity, token_hash(token)
        async with ident.units.read() as u:
            user_id = await u.email_verifications.holder(hashed_token, u.clock())
            user = await u.users.get(user_id) if user_id else None
        if user is None or user.disabled_at is not None:
            raise InvalidConfirmationLinkError(
                "the link is not valid: it was used, replaced by a newer one, or expired"
            )
        try:
            found, signed_in = await ident._authenticate(user.email_key, password, client_ip, unconfirmed=True)
        except InvalidCredentialsError:
            raise InvalidConfirmationLinkError("the password is not the one this address was registered with") from None
        async with ident.units.uow() as uow:
            await signed_in(uow)
            if found.id != user.id or await uow.email_verifications.use(hashed_token, uow.clock()) != user.id:
                raise InvalidConfirmationLinkError(
                    "the link is not valid: it was used, replaced by a newer one, or expired"
                )
            if await uow.users.verify_email(user.id, uow.clock()):
                uow.add(EmailVerified(user_id=user.id, how="link"), aggregate_id=user.id)
                record_account_change(uow, user.id, by=user.id, roles=user.roles, what="email_verified")

    async def sent(self) -> None:
        """Wait until every e-mail asked for so far was handed over (tests, and shutdown)."""
        await self.mailer.sent()
