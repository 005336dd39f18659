"""The console's use cases for sessions: open one at sign-in, find the live one a cookie names
(and note the request), renew its tokens after a refresh, end it at sign-out, sweep the ended.

The tokens are one ciphertext (``FieldCipher``) whose associated data is the session's id, so a
ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from his.console.domain import IDLE, LIFETIME, Locale, Session, Tokens, digest, new_cookie, new_csrf
from his.console.ports import ConsoleUnits
from his.kernel.clock import Clock
from his.kernel.crypto import DecryptionError, FieldCipher

log = logging.getLogger("his.console")

#: A session's last request is written at most this often (not on every page and htmx call): the
#: idle end comes at most this much early.
SEEN_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Live:
    """A live session and the tokens it holds."""

    session: Session
    tokens: Tokens


class SessionBook:
    def __init__(self, units: ConsoleUnits, cipher: FieldCipher, clock: Clock) -> None:
        self.units, self.cipher, self.clock = units, cipher, clock

    def _seal(self, session_id: bytes, tokens: Tokens) -> bytes:
        return self.cipher.encrypt(json.dumps({"access": tokens.access, "refresh": tokens.refresh}), session_id)

    def _open(self, session_id: bytes, sealed: bytes) -> Tokens:
        doc = json.loads(self.cipher.decrypt(sealed, session_id))
        return Tokens(access=str(doc["access"]), refresh=str(doc["refresh"]))

    async def open(
        self, user_id: uuid.UUID, roles: tuple[str, ...], tokens: Tokens, locale: Locale
    ) -> tuple[str, Live]:
        """A new session for a user who just signed in: the cookie to give the browser, and the
        session."""
        cookie, now = new_cookie(), self.clock()
        session = Session(digest(cookie), user_id, roles, new_csrf(), locale, now, now)
        async with self.units.uow() as u:
            await u.sessions.add(session, self._seal(session.id, tokens))
        return cookie, Live(session, tokens)

    async def find(self, cookie: str | None, *, touch: bool = True) -> Live | None:
        """The live session ``cookie`` names, its last request now (unless ``touch`` is False: a
        page's live feed reconnecting is not the user at work); None for none (an ended session,
        or one whose tokens do not decrypt, is removed)."""
        if not cookie:
            return None
        session_id, now = digest(cookie), self.clock()
        async with self.units.uow() as u:
            found = await u.sessions.get(session_id)
            if found is None:
                return None
            session, sealed = found
            if not session.live(now):
                await u.sessions.remove(session_id)
                return None
            try:
                tokens = self._open(session_id, sealed)
            except DecryptionError:  # altered, or sealed under another session or an unknown key
                log.warning("a session's tokens do not decrypt; the session is ended")
                await u.sessions.remove(session_id)
                return None
            if not touch or now - session.seen_at < SEEN_EVERY:  # a minute's precision is enough
                return Live(session, tokens)
            await u.sessions.seen(session_id, now)
        return Live(replace(session, seen_at=max(session.seen_at, now)), tokens)

    async def renew(self, session: Session, tokens: Tokens) -> None:
        """Keep the tokens a refresh gave in place of the old ones."""
        async with self.units.uow() as u:
            await u.sessions.renew(session.id, self._seal(session.id, tokens))

    async def relocale(self, session: Session, locale: Locale) -> None:
        """Show the session's pages in ``locale`` from now on."""
        async with self.units.uow() as u:
            await u.sessions.relocale(session.id, locale)

    async def forget(self, session: Session) -> None:
        """End a session whose sign-in identity no longer honours (its refresh was refused)."""
        async with self.units.uow() as u:
            await u.sessions.remove(session.id)

    async def end(self, cookie: str | None) -> Tokens | None:
        """End the session ``cookie`` names; its tokens (to sign out of identity too), or None
        (none, or tokens that do not decrypt)."""
        if not cookie:
            return None
        session_id = digest(cookie)
        async with self.units.uow() as u:
            found = await u.sessions.get(session_id)
            if found is None:
                return None
            await u.sessions.remove(session_id)
        try:
            return self._open(session_id, found[1])
        except DecryptionError:
            return None

    async def sweep(self) -> int:
        """Remove the sessions that have ended; how many."""
        now = self.clock()
        async with self.units.uow() as u:
            return await u.sessions.remove_ended(now - IDLE, now - LIFETIME)
