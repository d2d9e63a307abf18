"""Diverse (group) beam search: diverse beams, the Hamming penalty, ranking, max_time."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from predictor.generation import diverse
from predictor.generation.diverse import _HammingDiversity

EOS = 0


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def search(model, penalty, *, beams=4, groups=4, n=4, max_length=16, prompts=((5, 6, 7),), **extra):
    ids = torch.tensor(prompts)
    config = GenerationConfig(max_length=max_length, num_beams=beams, num_return_sequences=n,
                              pad_token_id=EOS, eos_token_id=EOS, **extra)
    with torch.inference_mode():
        return diverse.generate(model, ids, torch.ones_like(ids), config, groups, penalty)


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


def test_results_are_ranked_best_first(model):
    (beams,) = search(model, 10.0, n=4)
    scores = []
    for tokens in beams:
        ids = torch.tensor([[5, 6, 7, *tokens]])
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(ids).logits[0, 2:-1], dim=-1)
        scores.append(float(logprobs.gather(1, torch.tensor(tokens)[:, None]).sum()) / len(tokens))
    assert scores == sorted(scores, reverse=True)


def test_num_return_sequences_picks_the_best(model):
    (all_four,) = search(model, 10.0, n=4)
    (best_two,) = search(model, 10.0, n=2)
    assert best_two == all_four[:2]


def test_max_time_bounds_the_whole_search(model):
    started = time.monotonic()
    (beams,) = search(model, 1.0, max_length=2000, max_time=0.2)
    assert time.monotonic() - started < 5  # four groups, one budget (not 4 x max_time of 2000 tokens)
    assert all(0 < len(b) < 1997 for b in beams)


def test_processor_penalizes_tokens_earlier_groups_chose_at_this_step():
    earlier = [{0: torch.tensor([[3, 3]]), 1: torch.tensor([[4, 5]])}]
    own: dict = {}
    processor = _HammingDiversity(2.0, prompt_len=2, sub_beams=2, earlier=earlier, own=own)
    scores = processor(torch.tensor([[1, 2], [1, 2]]), torch.zeros(2, 8))  # step 0
    assert scores[:, 3].tolist() == [-4.0, -4.0] and scores.sum() == -8.0
    scores = processor(torch.tensor([[1, 2, 6], [1, 2, 7]]), torch.zeros(2, 8))  # step 1
    assert scores[:, 4].tolist() == [-2.0, -2.0] and scores[:, 5].tolist() == [-2.0, -2.0]
    assert own[0].tolist() == [[6, 7]]  # it recorded what this group chose at step 0
