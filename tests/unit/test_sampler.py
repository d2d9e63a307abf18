"""OpenAI's presence and frequency penalties, as the API reference defines them."""

from __future__ import annotations

from dataclasses import replace

import torch

from predictor.core import GenerationRequest
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.logits import PresenceFrequencyPenalty
from predictor.loading.loader import load
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits, parse_settings


def test_penalties_count_generated_tokens_only():
    # mu[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty, c counting generated tokens
    penalty = PresenceFrequencyPenalty(presence=0.5, frequency=1.0, prompt_length=2)
    scores = penalty(torch.tensor([[5, 7, 7, 7, 8], [1, 2, 3, 3, 5]]), torch.zeros(2, 10))
    assert scores[0].tolist() == [0, 0, 0, 0, 0, 0, 0, -2.5, -1.5, 0]  # token 7 in the prompt is not counted
    assert scores[1].tolist() == [0, 0, 0, -2.5, 0, -1.5, 0, 0, 0, 0]


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
