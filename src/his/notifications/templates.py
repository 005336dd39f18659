"""Message templates (Jinja2, shipped with the package): the first line is the subject."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

TEMPLATES = (
    "welcome",
    "appointment_booked",
    "appointment_cancelled",
    "appointment_rescheduled",
    "appointment_reminder",
    "waitlist_offer",
    "portal_invitation",
)


class Renderer:
    def __init__(self, timezone: str = "UTC") -> None:
        self.zone = ZoneInfo(timezone)
        # Plain text, never HTML: nothing to escape, and nothing a value could inject.
        self.env = Environment(
            loader=PackageLoader("his.notifications", "templates"),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - plain-text messages, not HTML
        )
        self.env.filters["when"] = lambda v: self._local(v).strftime("%A %d %B %Y, %H:%M")
        self.env.filters["clock"] = lambda v: self._local(v).strftime("%H:%M")

    def _local(self, value: str | datetime) -> datetime:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.astimezone(self.zone)

    def render(self, template: str, context: Mapping[str, object]) -> tuple[str, str]:
        """(subject, body) of ``template`` with ``context``."""
        text = self.env.get_template(f"{template}.txt.j2").render(**context)
        subject, _, body = text.partition("\n")
        return subject.strip(), body.lstrip("\n")
