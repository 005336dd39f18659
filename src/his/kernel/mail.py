"""Channel adapters: how a rendered message leaves the hospital.

Every adapter has the same small interface (``Channel``). In the default local setup e-mail goes
to a real maildir under the data directory (any mail client can open it) and SMS to a spool
file; with ``HIS_SMTP_HOST`` set, e-mail goes to that SMTP server (``MailSettings``,
``email_channel``). Deliveries carry their id, and the local adapters write under that id, so
delivering the same message twice (a crash between sending and recording it) leaves one message,
not two.

The notifications service sends patients' messages through them; identity sends its own (a
password reset link), which must never travel on the bus or sit in another service's history.
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy, default
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from his.kernel.resilience import DependencyUnavailableError


@dataclass(frozen=True)
class Outgoing:
    delivery_id: uuid.UUID
    channel: str
    to: str
    subject: str
    body: str
    #: When it is sent (the dispatcher's clock): the message's Date.
    at: datetime


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing) -> None:
        """Hand the message over; raise ``DependencyUnavailableError`` if it could not be, to retry."""
        ...


#: RFC 5322: a line SHOULD be at most 78 characters and MUST be at most 998.
LINE, MAX_LINE = 78, 998


class FoldedSubject(UniqueUnstructuredHeader, BaseHeader):  # type: ignore[misc]  # typeshed: max_count
    """A Subject folded as RFC 5322 (2.2.3) asks: at the last space that keeps a line within 78
    characters, so that unfolding gives the text back and the first line starts with it.

    The standard library's folder moves a whole plain-ASCII subject of 70 to 77 characters to
    a line of its own, leaving ``Subject:`` empty ("Reminder: your appointment tomorrow,
    Wednesday 29 September 2027, 10:00" is one). A subject with other characters needs encoded
    words, and that folding is left to the standard library.
    """

    def fold(self, *, policy: Policy) -> str:
        words = str(self).split(" ")
        plain = str(self).isascii() and all(w.isprintable() and w for w in words)
        if not plain or any(len(w) > MAX_LINE - len("Subject: ") for w in words):
            return super().fold(policy=policy)
        lines = [f"{self.name}: {words[0]}"]
        for word in words[1:]:
            if len(lines[-1]) + 1 + len(word) <= LINE:
                lines[-1] += f" {word}"
            else:
                lines.append(f" {word}")
        return policy.linesep.join(lines) + policy.linesep


_headers = HeaderRegistry()
_headers.map_to_type("subject", FoldedSubject)
#: The policy of every message the hospital sends (``email.policy.default`` with that Subject).
MAIL_POLICY = default.clone(header_factory=_headers)


def email_message(m: Outgoing, sender: str) -> EmailMessage:
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = sender
    msg["To"] = m.to
    msg["Subject"] = " ".join(m.subject.split())  # one line, single spaces: what a mail client shows
    msg["Date"] = format_datetime(m.at.astimezone())
    msg["Message-ID"] = f"<{m.delivery_id.hex}@his.local>"  # unique, and the same if the delivery is sent again
    msg["X-His-Delivery"] = str(m.delivery_id)
    msg.set_content(m.body)
    return msg


class MaildirChannel:
    """E-mail into a maildir (``new/``), written atomically through ``tmp/`` as the format asks."""

    name = "email"

    def __init__(self, root: Path, sender: str = "his <no-reply@his.local>") -> None:
        self.root, self.sender = root, sender
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for d in (root, root / "tmp", root / "new", root / "cur"):
            if d.stat().st_uid == os.geteuid():  # run as root, `his up` owns it and shares it by ACL
                d.chmod(0o700)  # messages hold names, addresses and appointments: for the owner only

    async def send(self, message: Outgoing) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, m: Outgoing) -> None:
        name = f"{int(time.time())}.{m.delivery_id.hex}.his"
        if any(next((self.root / d).glob(f"*.{m.delivery_id.hex}.his*"), None) for d in ("new", "cur")):
            return  # already delivered: the same delivery never lands twice
        tmp = self.root / "tmp" / name
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(bytes(email_message(m, self.sender)))
        os.replace(tmp, self.root / "new" / name)


class SmtpChannel:
    """E-mail through an SMTP server (STARTTLS when asked), with a timeout."""

    name = "email"

    def __init__(
        self, host: str, port: int, *, sender: str, user: str | None, password: str | None, starttls: bool
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.user, self.password, self.starttls = user, password, starttls

    async def send(self, message: Outgoing) -> None:
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DependencyUnavailableError("smtp", f"{type(exc).__name__}: {exc}") from exc

    def _send(self, m: Outgoing) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(email_message(m, self.sender))


class SpoolSmsChannel:
    """Text messages appended to a spool file (JSON lines) for an SMS gateway to pick up."""

    name = "sms"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o600)  # texts hold phone numbers and appointments: for the owner only

    async def send(self, message: Outgoing) -> None:
        await asyncio.to_thread(self._append, message)

    def _append(self, m: Outgoing) -> None:
        if self.path.exists() and str(m.delivery_id) in self.path.read_text():
            return
        line = {
            "id": str(m.delivery_id),
            "to": m.to,
            "text": f"{m.subject}. {m.body.splitlines()[0] if m.body else ''}",
        }
        with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


@dataclass
class FakeChannel:
    """Records what it was given (tests); can be told to fail."""

    name: str = "email"
    sent: list[Outgoing] = field(default_factory=list)
    failing: bool = False

    async def send(self, message: Outgoing) -> None:
        if self.failing:
            raise DependencyUnavailableError(self.name, "told to fail")
        self.sent.append(message)


class MailSettings(BaseSettings):
    """Where e-mail goes (``HIS_*`` environment variables, or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    #: With an SMTP host, e-mail goes there; without one, into the maildir under the data directory.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    mail_from: str = "his <no-reply@his.local>"


def email_channel(s: MailSettings, data: Path) -> Channel:
    """The hospital's e-mail: its SMTP server if one is set, else the maildir ``data/mail/maildir``."""
    if s.smtp_host:
        return SmtpChannel(
            s.smtp_host,
            s.smtp_port,
            sender=s.mail_from,
            user=s.smtp_user,
            password=s.smtp_password,
            starttls=s.smtp_starttls,
        )
    return MaildirChannel(data / "mail" / "maildir", sender=s.mail_from)
