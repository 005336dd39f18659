"""Run as root, each process of the hospital runs as a system user of its own (ADR 0029).

Each user reads its own key (``pki/<name>.key``, its own, 0600) and every certificate, nothing
else of ``pki``: the CA's key, the operator's and NATS's stay root's, and so does ``secrets``
(a database password reaches a service in its environment alone). ``pki`` is 0710, root's and
the group ``his``'s, so the users pass through it without listing it. The services that deliver
e-mail locally (``MAILERS``) may write ``mail``'s maildir, and no other. Not run as root:
nothing to do, every process is the operator's.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import his
from his.cli.services import CONSOLE, GATEWAY, SERVICES
from his.cli.supervisor.console import console
from his.cli.supervisor.datadir import pki_dir
from his.cli.supervisor.stack import Stack
from his.infra import acl, users
from his.infra.procs import ServerStartError

#: The processes that run as users of their own: the services, the console and the gateway.
SEPARATE = (*SERVICES, CONSOLE, GATEWAY)
#: The services that deliver e-mail into the local maildir (``his.kernel.mail``), the one that
#: keeps the SMS spool beside it first.
MAILERS = ("notifications", "identity")
RWX = acl.SEARCH | acl.WRITE | 0o4


def separate_users(stack: Stack) -> None:
    """Create (on first start) and hand each process its user and its own key; let the users
    through to their files and to the code they import late. Nothing when not run as root."""
    if os.geteuid() != 0:
        return
    data = stack.settings.data_path
    for name in SEPARATE:
        who = users.ensure(name)
        stack.accounts[name] = who
        key = stack.identities[name].key
        os.chown(key, who.uid, who.gid)
        key.chmod(0o600)
    group = stack.accounts[GATEWAY].gid
    pki = pki_dir(data)
    os.chown(pki, 0, group)
    pki.chmod(0o710)

    def notice(message: str) -> None:
        console.print(f"note: {message}")

    # Modules imported late (inside functions, or by the standard library on first use, as
    # encodings.idna) are read after the fork, as the process's user.
    code = {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    for target in (pki, Path(his.__file__).parent, *sorted(code)):
        users.let_through(stack.accounts[GATEWAY], target, notice)
    try:
        share_the_mail(data / "mail", [stack.accounts[n] for n in MAILERS])
        let_fault_points_fire(stack, notice)
    except OSError as exc:
        raise ServerStartError(
            f"cannot share {data / 'mail'} among the services that deliver e-mail ({exc.strerror}): "
            "run his as an ordinary user, or put HIS_DATA_DIR on a filesystem with ACLs"
        ) from None


def share_the_mail(mail: Path, mailers: list[users.Account]) -> None:
    """The local maildir is written by every service in ``MAILERS``: its directories stay root's
    (0700) with an ACL entry ``rwx`` for each of them alone (``his.kernel.mail`` changes the mode
    only of directories it owns, which would clear the entries); the files left in it belong to
    the first (notifications, which appends to the SMS spool)."""
    maildir = mail / "maildir"
    folders = [maildir, *(maildir / d for d in ("tmp", "new", "cur"))]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    owner = mailers[0]
    for root, dirs, files in os.walk(mail):
        for d in dirs:
            os.chown(Path(root) / d, 0, 0, follow_symlinks=False)
            (Path(root) / d).chmod(0o700)
        for f in files:
            os.chown(Path(root) / f, owner.uid, owner.gid, follow_symlinks=False)
    os.chown(mail, 0, 0)
    for who in mailers:
        acl.grant_search(mail, who.uid, perm=RWX if who is owner else acl.SEARCH)
        for folder in folders:
            acl.grant_search(folder, who.uid, perm=RWX)


def let_fault_points_fire(stack: Stack, notice: users.Notice) -> None:
    """Test-only (``HIS_FAULT_POINTS``, ``his.kernel.faults``): a point fires by removing its
    trigger file, so the user of the service it belongs to may write the trigger's directory."""
    for entry in filter(None, (e.strip() for e in stack.settings.fault_points.split(","))):
        name, _, what = entry.partition("=")
        _, _, trigger = what.partition("@")
        who = stack.accounts.get(name.split(".", 1)[0])
        if trigger and who is not None:
            folder = Path(trigger).parent
            users.let_through(who, folder, notice)
            acl.grant_search(folder, who.uid, perm=acl.SEARCH | acl.WRITE)
