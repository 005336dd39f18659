"""The history checker every fault test and the soak rely on: each kind of breakage is named,
at its stage, with its keys; a clean history has no finding."""

from __future__ import annotations

from his.reliability.history import History


def told(*keys: str) -> History:
    h = History()
    for k in keys:
        h.tell(k)
    return h


def test_a_clean_history_has_no_finding() -> None:
    h = told("a", "b", "c")
    h.observe("stored", ["a", "b", "c"])
    h.observe("published", ["a", "b", "c"])
    h.observe("applied", ["c", "a", "b"])
    verdict = h.check()
    assert verdict.ok, str(verdict)
    assert verdict.sizes == {"told": 3, "stored": 3, "published": 3, "applied": 3}
    assert str(verdict).startswith("ok:")


def test_an_acknowledged_write_missing_from_the_database_is_lost_there() -> None:
    h = told("a", "b", "c")
    h.observe("stored", ["a", "c"])
    h.observe("published", ["a", "c"])
    verdict = h.check()
    assert verdict.keys("lost", "stored") == {"b"}
    assert verdict.keys("lost", "published") == set()
    assert "lost at stored: 1" in str(verdict) and "b" in str(verdict)


def test_a_stored_event_never_published_is_lost_at_the_stream() -> None:
    h = told("a", "b")
    h.observe("stored", ["a", "b"])
    h.observe("published", ["a"])
    assert h.check().keys("lost", "published") == {"b"}


def test_uncertain_writes_may_be_present_or_absent_but_must_then_flow_on() -> None:
    h = told("a")
    h.uncertain("x")  # the client timed out: either outcome is correct
    h.uncertain("y")
    h.observe("stored", ["a", "x"])
    h.observe("published", ["a"])
    verdict = h.check()
    assert verdict.keys("lost", "stored") == set()  # y absent: fine
    assert verdict.keys("lost", "published") == {"x"}  # x stored, so it must be published


def test_a_refused_or_unknown_write_that_shows_up_is_unexpected() -> None:
    h = told("a")
    h.refuse("r")
    h.observe("stored", ["a", "r", "ghost"])
    assert h.check().keys("unexpected", "stored") == {"r", "ghost"}


def test_something_applied_that_was_never_published_is_unexpected() -> None:
    h = told("a")
    h.observe("published", ["a"])
    h.observe("applied", ["a", "b"])
    assert h.check().keys("unexpected", "applied") == {"b"}


def test_repeats_in_a_stage_are_duplicates() -> None:
    h = told("a", "b")
    h.observe("published", ["a", "b"])
    h.observe("applied", ["a", "b", "a"])
    verdict = h.check()
    assert verdict.duplicated == {"a"}
    assert verdict.keys("duplicated", "published") == set()


def test_a_later_version_before_an_earlier_one_in_a_group_is_out_of_order() -> None:
    h = History()
    for key, group, version in [("p1v1", "p1", 1), ("p1v2", "p1", 2), ("p2v1", "p2", 1), ("p2v2", "p2", 2)]:
        h.tell(key, group=group, version=version)
    h.observe("applied", ["p1v1", "p2v2", "p1v2", "p2v1"])  # p2 backwards, p1 interleaved but in order
    verdict = h.check(ordered=["applied"])
    assert verdict.out_of_order == {"p2v1"}
    assert h.check().out_of_order == set()  # only the stages named are held to an order


def test_a_finding_names_at_most_five_keys_and_counts_the_rest() -> None:
    h = told(*(f"k{i}" for i in range(12)))
    h.observe("stored", [])
    text = str(h.check())
    assert "lost at stored: 12" in text and "and 7 more" in text
