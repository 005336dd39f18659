"""Identity's staff directory as the audit service asks it: ``GET /staff?id=…`` on identity's
listener (``HIS_IDENTITY_URL``, with this service's workload certificate), on behalf of the
caller, whose bearer token goes with the call; any signed-in user may ask it.

A patient's "who saw my record" names each member of staff who read it. The names are a help,
not the record: if identity cannot answer, the trail is shown without them (and a warning logged).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence

import aiohttp

from his.kernel.pki import WorkloadIdentity

log = logging.getLogger("his.audit.directory")

#: Ids per call: the directory's limit.
PER_CALL = 200


class HttpStaffDirectory:
    """``his.audit.ports.StaffDirectory`` over identity's HTTP listener."""

    def __init__(self, identity_url: str) -> None:
        self.url = identity_url.rstrip("/")
        ident = WorkloadIdentity.from_env()
        self._tls = ident.client_context() if ident else True
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the loop

    @classmethod
    def from_env(cls) -> HttpStaffDirectory | None:
        url = os.environ.get("HIS_IDENTITY_URL", "")
        return cls(url) if url else None

    async def names(self, ids: Sequence[uuid.UUID], authorization: str) -> dict[uuid.UUID, str]:
        found: dict[uuid.UUID, str] = {}
        try:
            for start in range(0, len(ids), PER_CALL):
                found |= await self._call(ids[start : start + PER_CALL], authorization)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            log.warning("the staff directory did not answer (%r): the trail is shown without names", exc)
        return found

    async def _call(self, ids: Sequence[uuid.UUID], authorization: str) -> dict[uuid.UUID, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0))
        params = [("id", str(i)) for i in ids]
        headers = {"authorization": authorization}
        async with self._session.get(f"{self.url}/staff", params=params, headers=headers, ssl=self._tls) as r:
            r.raise_for_status()
            doc = await r.json()
        return {uuid.UUID(str(s["id"])): str(s["full_name"]) for s in doc["items"]}
