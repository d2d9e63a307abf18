"""OpenAI's presence and frequency penalties, as the API reference defines them."""

from __future__ import annotations

from dataclasses import replace

import torch

from predictor.core import GenerationRequest, Sampling
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.logits import RowChoice, choose
from predictor.generation.rowstate import BatchState
from predictor.loading.loader import load
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits, parse_settings


def test_penalties_count_generated_tokens_only():
    # mu[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty, c counting generated tokens
    sampling = Sampling(max_length=20, presence_penalty=0.5, frequency_penalty=1.0)
    rows = [RowChoice(sampling, [5, 7, 7, 7, 8], 2, 0), RowChoice(sampling, [1, 2, 3, 3, 5], 2, 0)]
    scores = BatchState(rows, 10, torch.device("cpu")).penalize(torch.zeros(2, 10))
    assert scores[0].tolist() == [0, 0, 0, 0, 0, 0, 0, -2.5, -1.5, 0]  # token 7 in the prompt is not counted
    assert scores[1].tolist() == [0, 0, 0, -2.5, 0, -1.5, 0, 0, 0, 0]


def test_counts_follow_the_chosen_tokens_on_the_device():
    sampling = Sampling(max_length=20, presence_penalty=0.5, frequency_penalty=1.0)
    row = RowChoice(sampling, [5, 7], 2, 0)
    logits = torch.zeros(1, 10)
    logits[0, 4] = 1.2
    assert choose([row], logits, eos=9).tolist() == [4]
    row.tokens.append(4)
    assert row.state.penalize(torch.zeros(1, 10))[0, 4].item() == -1.5  # counted without a rebuild
    assert choose([row], logits, eos=9).tolist() == [0]  # 4 now scores 1.2 - 1.5


def test_negative_penalties_encourage_repeats(tiny_dir):
    loaded = load(parse_settings(["--model", str(tiny_dir)], {}))
    prompt = "If I was a billionaire, I would"
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    base = GenerationRequest(prompt, ids, plan(PromptRequest(prompt=prompt, max_length=80), len(ids), Limits())[0])

    def distinct(presence: float, frequency: float) -> int:
        request = replace(base, sampling=replace(base.sampling, presence_penalty=presence, frequency_penalty=frequency))
        batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
        done = batch.join([("only", request)])
        while batch.rows:
            done = batch.advance()
        return len(set(done[0].tokens))

    plain, repelled, attracted = distinct(0, 0), distinct(2, 2), distinct(-2, -2)
    assert attracted < plain < repelled
