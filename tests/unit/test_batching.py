"""Admission to the continuous batch, and which beam searches share a generate call: one row per rule."""

from __future__ import annotations

import pytest

from predictor.core import GenerationRequest, Sampling, new_tokens
from predictor.engine.scheduling import admit, beam_key, continuous, rows, select_beams
from predictor.settings import BatchPolicy


def req(prompt_tokens: int = 5, **sampling) -> GenerationRequest:
    sampling.setdefault("max_length", prompt_tokens + 10)
    return GenerationRequest("p", tuple(range(1, prompt_tokens + 1)), Sampling(**sampling))


@pytest.mark.parametrize(
    "request_, joins",
    [
        (req(), True),
        (req(do_sample=True, num_return_sequences=3), True),
        (req(max_time=1.0), True),
        (req(encoder_no_repeat_ngram_size=2, repetition_penalty=1.2), True),
        (req(num_beams=2), False),
        (req(num_beams=4, num_beam_groups=2), False),
    ],
)
def test_what_joins_the_continuous_batch(request_, joins):
    assert continuous(request_) is joins


def test_rows_and_new_tokens():
    assert rows(req(do_sample=True, num_return_sequences=3)) == 3
    assert rows(req(num_beams=4, num_return_sequences=2)) == 4
    assert new_tokens(req(5, max_length=20, min_length=8)) == (15, 3)
    assert new_tokens(req(5, max_length=20, min_length=3)) == (15, 0)


@pytest.mark.parametrize(
    "running_rows, running_longest, waiting, policy, count",
    [
        (0, 0, [req(), req(), req()], BatchPolicy(), 3),
        (0, 0, [req() for _ in range(5)], BatchPolicy(max_batch_size=3), 3),
        (2, 15, [req(), req()], BatchPolicy(max_batch_size=3), 1),
        (3, 15, [req()], BatchPolicy(max_batch_size=3), 0),  # full: wait for a row to finish
        (0, 0, [req(do_sample=True, num_return_sequences=3), req()], BatchPolicy(max_batch_size=3), 1),
        (1, 100, [req(10, max_length=110), req(10, max_length=110)], BatchPolicy(max_batch_tokens=300), 1),
        (0, 0, [req(10, max_length=500)], BatchPolicy(max_batch_tokens=100), 1),  # a lone request always runs
        (1, 10, [req(10, max_length=500)], BatchPolicy(max_batch_tokens=100), 0),  # ... but waits for company to go
        (0, 0, [req(10, max_length=500), req()], BatchPolicy(max_batch_tokens=600), 1),  # first come, first served
        # a preallocated cache (the static path) holds every row at full length: only rows count
        (1, 10, [req(10, max_length=500)], BatchPolicy(max_batch_tokens=100, preallocated=True), 1),
        (2, 15, [req(), req()], BatchPolicy(max_batch_size=3, max_batch_tokens=10, preallocated=True), 1),
    ],
)
def test_admission(running_rows, running_longest, waiting, policy, count):
    assert admit(running_rows, running_longest, waiting, policy) == count


@pytest.mark.parametrize(
    "a, b, together",
    [
        (req(num_beams=2), req(num_beams=2), True),
        (req(5, num_beams=2, max_length=20), req(7, num_beams=2, max_length=22), True),  # same new-token bounds
        (req(5, num_beams=2, max_length=20), req(5, num_beams=2, max_length=21), False),
        (req(5, num_beams=2, min_length=12), req(5, num_beams=2), False),
        (req(num_beams=2), req(num_beams=3), False),
        (req(num_beams=2, length_penalty=2.0), req(num_beams=2), False),
        (
            req(5, num_beams=2, repetition_penalty=1.3),
            req(6, num_beams=2, repetition_penalty=1.3, max_length=16),
            False,
        ),
        (req(5, num_beams=2, repetition_penalty=1.3), req(5, num_beams=2, repetition_penalty=1.3), True),
        (req(num_beams=2, max_time=1.0), req(num_beams=2, max_time=1.0), True),
        (req(num_beams=2, max_time=1.0), req(num_beams=2, max_time=2.0), False),
        (
            req(5, num_beams=2, encoder_no_repeat_ngram_size=1),
            req(6, num_beams=2, encoder_no_repeat_ngram_size=1, max_length=16),
            False,
        ),  # it would ban the padding
        (
            req(5, num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
            req(7, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_length=17),
            True,
        ),
        (
            req(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
            req(num_beams=4, num_beam_groups=4, diversity_penalty=1.0),
            False,
        ),
        (
            req(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
            req(num_beams=4, num_beam_groups=2, diversity_penalty=2.0),
            False,
        ),
        (req(num_beams=4, num_beam_groups=2), req(num_beams=4), False),
    ],
)
def test_which_beam_searches_share_a_call(a, b, together):
    assert (beam_key(a) == beam_key(b) and beam_key(a) is not None) is together


def test_select_beams_takes_the_oldest_and_compatible_later_ones_that_fit():
    pending = [req(num_beams=2), req(num_beams=3), req(num_beams=2), req(num_beams=2)]
    assert select_beams(pending, BatchPolicy()) == [0, 2, 3]
    assert select_beams(pending, BatchPolicy(max_batch_size=4)) == [0, 2]
    assert select_beams(pending, BatchPolicy(max_batch_tokens=60)) == [0, 2]  # 2 requests x 2 rows x 15 tokens
    assert select_beams([], BatchPolicy()) == []
