"""Each change to an account is a record of the audit chain as well as an event (ADR 0031).

Identity writes it in the unit of work that makes the change, so both commit or neither does,
and the record takes the next number of identity's gap-free sequence (ADR 0028): a record
removed from the chain afterwards is named by ``his audit verify``. The record names the account
concerned (``account_id``) and no patient; its actor is whoever made the change: an
administrator, or the account's holder (then its purpose is ``own_account``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from his.events.audit import Action, IdentityRecordAccessed, record_account_access
from his.kernel.ports import Work

#: The purpose of a change an administrator made to someone's account (or to every account).
ADMINISTRATION = "account_administration"
#: The purpose of a change the account's holder made to their own account.
OWN_ACCOUNT = "own_account"


def record_account_change(
    uow: Work,
    account_id: uuid.UUID | None,
    *,
    by: uuid.UUID,
    roles: Iterable[str],
    what: str,
    action: Action = "update",
) -> None:
    """Add to ``uow`` the audit record of a change to ``account_id`` (None: a setting of every
    account, the second factor's policy) made by the account ``by`` holding ``roles``: resource
    ``account/<what>`` (``roles``, ``disabled``, ``password`` …)."""
    record_account_access(
        uow,
        IdentityRecordAccessed,
        by,
        roles,
        account_id=account_id,
        action=action,
        resource=f"account/{what}",
        purpose=OWN_ACCOUNT if by == account_id else ADMINISTRATION,
    )
