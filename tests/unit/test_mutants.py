"""The mutation list fits the code: every mutant's text occurs once where it says, changes
something, and names tests that exist (so a stale mutant fails here, not an hour into a run)."""

from __future__ import annotations

import pytest

from tests.mutation.catalogue import REPO, CatalogueError, Edit, Mutant, load, problems
from tests.mutation.run import ERROR, KILLED, SURVIVED, judge

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


def test_only_failed_tests_kill_a_mutant() -> None:
    m = MUTANTS[0]
    summary = "FAILED tests/x.py::test_y[a b] - AssertionError: lost 2\nFAILED tests/x.py::test_z\n1 failed"
    killed = judge(m, 1, summary, 1.0)
    assert (killed.result, killed.failed, killed.how) == (
        KILLED,
        ["tests/x.py::test_y[a b]", "tests/x.py::test_z"],
        "AssertionError: lost 2",
    )
    assert judge(m, 0, "1 passed", 1.0).result == SURVIVED
    for code, out in ((2, "ERROR tests/x.py - ImportError"), (5, "no tests ran"), (None, ""), (1, "no summary")):
        assert judge(m, code, out, 1.0).result == ERROR
