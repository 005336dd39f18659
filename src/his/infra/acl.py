"""POSIX access control lists, just enough to let one user search (pass through) a directory.

When ``his`` runs as root, PostgreSQL runs as a system user that must pass through every
directory above its binaries and its data. Opening such a directory to everyone (``chmod o+x``)
would silently widen a private (0700) home or checkout; an ACL entry ``user:<server>:--x`` lets
that one user through and nobody else, and lists nothing. It is written as the
``system.posix_acl_access`` extended attribute (what ``setfacl`` writes), so no tool is needed.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
SEARCH, WRITE = 0o1, 0o2
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


@dataclass(frozen=True, order=True)
class Entry:
    tag: int
    id: int
    perm: int


def from_mode(mode: int) -> list[Entry]:
    """The ACL a plain mode stands for (owner, group, others)."""
    return [
        Entry(USER_OBJ, UNDEFINED_ID, (mode >> 6) & 0o7),
        Entry(GROUP_OBJ, UNDEFINED_ID, (mode >> 3) & 0o7),
        Entry(OTHER, UNDEFINED_ID, mode & 0o7),
    ]


def decode(blob: bytes) -> list[Entry]:
    (version,) = _HEADER.unpack_from(blob)
    if version != VERSION or (len(blob) - _HEADER.size) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    return [Entry(tag, ident, perm) for tag, perm, ident in _ENTRY.iter_unpack(blob[_HEADER.size :])]


def encode(entries: list[Entry]) -> bytes:
    """The extended attribute's value; the kernel wants entries ordered by tag, then id."""
    body = b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in sorted(entries))
    return _HEADER.pack(VERSION) + body


def with_search(entries: list[Entry], uid: int, *, tag: int = USER, perm: int = SEARCH) -> list[Entry]:
    """``entries`` plus search permission (or ``perm``) for ``uid`` (a group's id with
    ``tag=GROUP``); the mask is recomputed as ``setfacl`` does (the union of the group-class
    entries), so the new entry takes effect."""
    mine = next((e for e in entries if e.tag == tag and e.id == uid), None)
    kept = [e for e in entries if e is not mine and e.tag != MASK]
    kept.append(Entry(tag, uid, (mine.perm if mine else 0) | perm))
    group_class = [e.perm for e in kept if e.tag in (USER, GROUP_OBJ, GROUP)]
    mask = 0
    for bits in group_class:
        mask |= bits
    return [*kept, Entry(MASK, UNDEFINED_ID, mask)]


def current(path: Path) -> list[Entry]:
    """The directory's ACL (its mode's, if it has no extended one)."""
    try:
        return decode(os.getxattr(path, XATTR, follow_symlinks=False))
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
    return from_mode(stat.S_IMODE(path.lstat().st_mode))


def grant_search(path: Path, uid: int, *, group: bool = False, perm: int = SEARCH) -> None:
    """Let ``uid`` (the group ``uid`` with ``group``) search ``path`` (a directory; or ``perm``,
    e.g. ``SEARCH | WRITE``); raise ``OSError`` (``EOPNOTSUPP`` where the filesystem has no ACLs)
    if it cannot be done."""
    entries = with_search(current(path), uid, tag=GROUP if group else USER, perm=perm)
    os.setxattr(path, XATTR, encode(entries), follow_symlinks=False)


#: Run as a user: the first path it cannot pass (search a directory, run a program).
_PROBE = 'for p do [ -x "$p" ] || { printf %s "$p"; exit 1; }; done'


def first_blocked(uid: int, gid: int, chain: list[Path]) -> Path | None:
    """The first path of ``chain`` (from / down) that the user ``uid`` (group ``gid``, none of
    root's other groups) cannot pass, or None. ``OSError`` if the probe itself fails."""
    probe = subprocess.run(
        ["/bin/sh", "-c", _PROBE, "sh", *map(str, chain)],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        return None
    if probe.returncode != 1 or not probe.stdout:
        raise OSError(f"the probe of uid {uid} failed: {probe.stderr.strip()}")
    return Path(probe.stdout)
