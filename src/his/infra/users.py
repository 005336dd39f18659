"""One system user per process of a hospital, when ``his up`` runs as root.

A service run as root could read every other service's key and the CA's. Run as root, ``his up``
runs each service, the gateway and the console as a system user of its own (``his-<name>``,
no home, no login shell), all in one system group (``his``), so that each reads only its own key
and certificate (its database password reaches it in its environment alone). Those users must
pass through the directories above their files and the code they import late: a directory they
cannot search gets one ACL entry, ``group:his:--x`` (``his.infra.acl``), the way PostgreSQL's own
user is let through (docs/adr/0023); where that cannot be done, ``his up`` stops with one line.
"""

from __future__ import annotations

import errno
import grp
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from his.infra import acl
from his.infra.procs import ServerStartError

GROUP = "his"
#: Tells the operator what was done to let the users through (``his up`` prints it).
Notice = Callable[[str], None]


@dataclass(frozen=True)
class Account:
    """The system user a process runs as: its name, uid and (the group ``his``'s) gid."""

    name: str
    uid: int
    gid: int


def user_name(process: str) -> str:
    return f"{GROUP}-{process}"


def _group() -> int:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True, capture_output=True)
        return grp.getgrnam(GROUP).gr_gid


def ensure(process: str) -> Account:
    """The system user of ``process``, created (in the group ``his``) on first use."""
    gid, name = _group(), user_name(process)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", "-g", GROUP, name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, gid)


def _first_blocked(who: Account, chain: list[Path]) -> Path | None:
    try:
        return acl.first_blocked(who.uid, who.gid, chain)
    except OSError as exc:
        raise ServerStartError(f"cannot check what {who.name} may reach: {exc}") from None


def _refusal(path: Path, why: str) -> str:
    return (
        f"the services (run as the system users of the group {GROUP}, because his runs as root) cannot reach "
        f"{path}: {why}. Run his as an ordinary user, or move the checkout and HIS_DATA_DIR out of {path}"
    )


def let_through(who: Account, target: Path, notice: Notice) -> None:
    """Make every directory from / down to ``target`` passable for the group of ``who``: an ACL
    entry for the group on each one ``who`` cannot search, or a refusal (``ServerStartError``)."""
    chain = [*reversed(target.absolute().parents), target.absolute()]
    blocked = _first_blocked(who, chain)
    while blocked is not None:
        if not blocked.is_dir():
            raise ServerStartError(_refusal(blocked, "it is not a directory they may search"))
        try:
            acl.grant_search(blocked, who.gid, group=True)
        except OSError as exc:
            unsupported = exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)
            why = "has no ACLs" if unsupported else f"refused one ({exc.strerror})"
            raise ServerStartError(_refusal(blocked, f"it is private, and its filesystem {why}")) from None
        notice(f"the group {GROUP} (the services' users) may now pass through {blocked}: ACL group:{GROUP}:--x")
        again = _first_blocked(who, chain)
        if again == blocked:
            raise ServerStartError(_refusal(blocked, "it is private, and an ACL entry did not help"))
        blocked = again
