"""Narrowing a failed batch down: together first, then each alone, so only the culprit fails."""

from __future__ import annotations

import logging

from predictor.generation.retry import each_alone, together_or_alone


def doubled(items):
    if "bad" in items:
        raise ValueError("bad item")
    return [item * 2 for item in items]


def test_a_batch_that_runs_is_one_group():
    assert together_or_alone(["a", "b"], doubled, "%d failed (%s)") == [(["a", "b"], ["aa", "bb"])]


def test_a_failed_batch_runs_each_alone_and_only_the_culprit_fails(caplog):
    with caplog.at_level(logging.WARNING, "predictor"):
        groups = together_or_alone(["a", "bad", "c"], doubled, "%d failed together (%s); one by one")
    assert [(group, outcome if not isinstance(outcome, Exception) else str(outcome)) for group, outcome in groups] == [
        (["a"], ["aa"]),
        (["bad"], "bad item"),
        (["c"], ["cc"]),
    ]
    assert "3 failed together (bad item); one by one" in caplog.text


def test_one_item_that_fails_is_not_run_again():
    calls = []

    def run(items):
        calls.append(list(items))
        raise RuntimeError("no")

    ((group, outcome),) = together_or_alone(["x"], run, "%d %s")
    assert group == ["x"] and isinstance(outcome, RuntimeError) and calls == [["x"]]


def test_each_alone_puts_the_exception_in_its_place():
    outcomes = each_alone([1, 0, 2], lambda n: 10 // n)
    assert outcomes[0] == 10 and isinstance(outcomes[1], ZeroDivisionError) and outcomes[2] == 5
