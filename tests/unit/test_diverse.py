"""Diverse (group) beam search: diverse beams, batching, max_time, stop, and the hypotheses' rules.

Exactness against transformers 4.x, token for token, is test_golden_diverse.py's.
"""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from predictor.generation import diverse
from predictor.generation.scorer import Hypotheses as _Hypotheses

EOS = 0


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def search(model, penalty, *, beams=4, groups=4, n=4, max_length=16, prompts=((5, 6, 7),), stop=None, **extra):
    ids = torch.tensor(prompts)
    config = GenerationConfig(
        max_length=max_length, num_beams=beams, num_return_sequences=n, pad_token_id=EOS, eos_token_id=EOS, **extra
    )
    with torch.inference_mode():
        return diverse.generate(model, ids, torch.ones_like(ids), config, groups, penalty, stop)


def test_without_penalty_groups_agree(model):
    (beams,) = search(model, 0.0)
    assert len(beams) == 4 and len({tuple(b) for b in beams}) == 1  # every group found the same beam


def test_penalty_makes_every_beam_different(model):
    (beams,) = search(model, 10.0)
    assert len({tuple(b) for b in beams}) == 4
    assert len({b[0] for b in beams}) == 4  # even the first new token differs between groups


def test_groups_of_several_beams(model):
    (beams,) = search(model, 10.0, beams=4, groups=2, n=4)
    assert len({tuple(b) for b in beams}) == 4


def test_batch_of_prompts_keeps_prompts_apart(model):
    together = search(model, 5.0, prompts=((5, 6, 7), (9, 10, 11)))
    alone = [search(model, 5.0, prompts=(p,))[0] for p in ((5, 6, 7), (9, 10, 11))]
    assert together == alone


def test_num_return_sequences_picks_the_best(model):
    (all_four,) = search(model, 10.0, n=4)
    (best_two,) = search(model, 10.0, n=2)
    assert best_two == all_four[:2]


def test_max_time_bounds_the_whole_search(model):
    started = time.monotonic()
    (beams,) = search(model, 1.0, max_length=2000, max_time=0.2)
    assert time.monotonic() - started < 5  # four groups, one budget (not 4 x max_time of 2000 tokens)
    assert all(0 < len(b) < 1997 for b in beams)


def test_one_group_is_plain_beam_search(model):
    (beams,) = search(model, 0.0, beams=3, groups=1, n=3)
    assert len({tuple(b) for b in beams}) == 3


def test_stop_ends_the_search_after_the_step_in_flight(model):
    (beams,) = search(model, 1.0, max_length=200, stop=lambda: True)
    assert [len(b) for b in beams] == [1, 1, 1, 1]


def test_hypotheses_keep_the_best_and_drop_the_earliest_of_the_worst():
    hyps = _Hypotheses(size=2, length_penalty=1.0, early_stopping=False, max_new=10)
    hyps.add([1], -2.0, 1)
    hyps.add([2, 2], -2.0, 2)  # -1.0 per token
    hyps.add([3], -1.0, 1)  # ties with [2, 2]; [1] (-2.0) goes
    assert hyps.beams == [(-1.0, [2, 2]), (-1.0, [3])] and hyps.worst == -1.0
    hyps.add([4], -1.0, 1)  # not better than the worst: not kept
    assert [tokens for _, tokens in hyps.beams] == [[2, 2], [3]]
    hyps.add([5], -0.5, 1)  # better: the earlier of the two equal worst goes
    assert [tokens for _, tokens in hyps.beams] == [[3], [5]] and hyps.worst == -1.0


@pytest.mark.parametrize(
    "early_stopping, length_penalty, best, length, done",
    [
        (True, 1.0, 0.0, 1, True),  # full: done at once
        (False, 1.0, -2.0, 2, True),  # the best candidate reaches -1.0 per token: not better than the worst
        (False, 1.0, -1.8, 2, False),
        (False, 0.0, -0.5, 5, False),  # no length penalty: sums compare
        ("never", 2.0, -10.0, 2, False),  # -10 / 10**2 at the longest length would still beat -1.0
        ("never", -1.0, -0.6, 2, True),  # a negative penalty favours short: the current length is the best
    ],
)
def test_a_group_is_done_when_no_candidate_can_get_in(early_stopping, length_penalty, best, length, done):
    hyps = _Hypotheses(size=2, length_penalty=length_penalty, early_stopping=early_stopping, max_new=10)
    assert not hyps.done(-100.0, 1)  # fewer hypotheses than beams: never done
    hyps.add([1], -1.0 * 1**length_penalty, 1)
    hyps.add([2], -1.0 * 1**length_penalty, 1)
    assert hyps.worst == -1.0
    assert hyps.done(best, length) is done
