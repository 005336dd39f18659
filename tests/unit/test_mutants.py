"""The mutation list fits the code: every mutant's text occurs once where it says, changes
something, and names tests that exist (so a stale mutant fails here, not an hour into a run)."""

from __future__ import annotations

import pytest

from tests.mutation.catalogue import REPO, CatalogueError, Edit, Mutant, load, problems

MUTANTS = load()


def test_there_are_mutants_with_unique_ids() -> None:
    assert len(MUTANTS) >= 15
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)  # load() also refuses duplicates


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_mutant_fits_the_code(mutant: Mutant) -> None:
    assert problems(mutant, REPO) == []
    for edit in mutant.edits:
        assert edit.find != edit.replace
        assert not edit.file.startswith("tests/"), "a mutant breaks the real code, not a test"


def test_text_that_is_not_there_once_is_a_stale_mutant() -> None:
    edit = Edit("x.py", "a", "b")
    assert edit.apply("xay") == "xby"
    for text in ("xy", "aa"):
        with pytest.raises(CatalogueError, match="stale mutant"):
            edit.apply(text)
