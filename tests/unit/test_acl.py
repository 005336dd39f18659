"""The ACL entry that lets PostgreSQL's user alone through a private directory: what it adds,
and what it leaves as it was. Pure: encoding and merging, no filesystem."""

from __future__ import annotations

from his.infra.acl import (
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    SEARCH,
    UNDEFINED_ID,
    USER,
    USER_OBJ,
    Entry,
    decode,
    encode,
    from_mode,
    with_search,
)

SERVER = 999


def test_a_private_directory_gains_search_for_one_user_and_nothing_for_others() -> None:
    got = with_search(from_mode(0o700), SERVER)
    assert sorted(got) == sorted(
        [
            Entry(USER_OBJ, UNDEFINED_ID, 0o7),
            Entry(USER, SERVER, SEARCH),
            Entry(GROUP_OBJ, UNDEFINED_ID, 0),
            Entry(MASK, UNDEFINED_ID, SEARCH),
            Entry(OTHER, UNDEFINED_ID, 0),
        ]
    )


def test_entries_already_there_are_kept_and_the_mask_covers_them_as_setfacl_computes_it() -> None:
    before = [*from_mode(0o750), Entry(GROUP, 1, 0o5), Entry(USER, SERVER, 0o4), Entry(MASK, UNDEFINED_ID, 0o4)]
    got = with_search(before, SERVER)
    assert Entry(USER, SERVER, 0o4 | SEARCH) in got and Entry(GROUP, 1, 0o5) in got
    assert [e.perm for e in got if e.tag == MASK] == [0o5]  # union of the group class: r-x
    assert with_search(got, SERVER) == got  # a second grant changes nothing


def test_the_attribute_round_trips_in_the_kernels_order() -> None:
    entries = with_search(from_mode(0o700), SERVER)
    blob = encode(entries)
    assert blob[:4] == b"\x02\x00\x00\x00" and len(blob) == 4 + 8 * len(entries)
    assert decode(blob) == sorted(entries)


def test_a_group_may_be_let_through_and_a_user_given_more_than_search() -> None:
    """The services' group passes through a private directory; a mailer may write the maildir."""
    through = with_search(from_mode(0o700), 990, tag=GROUP)
    assert Entry(GROUP, 990, SEARCH) in through and Entry(MASK, UNDEFINED_ID, SEARCH) in through
    assert not [e for e in through if e.tag == USER]
    writes = with_search(from_mode(0o700), SERVER, perm=0o7)
    assert Entry(USER, SERVER, 0o7) in writes and Entry(MASK, UNDEFINED_ID, 0o7) in writes
    assert [e.perm for e in writes if e.tag in (GROUP_OBJ, OTHER)] == [0, 0]
