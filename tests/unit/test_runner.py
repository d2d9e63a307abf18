"""Runner: the server's generation equals plain transformers on the same model."""

from __future__ import annotations

import pytest

from predictor.api import PromptRequest
from predictor.loading import load
from predictor.runner import Runner
from predictor.sampling import GenerationRequest, plan
from predictor.settings import Limits, parse_settings

PROMPT = "If I was a billionaire, I would"


@pytest.fixture(scope="module")
def runner(tiny_dir):
    return Runner(load(parse_settings(["--model", str(tiny_dir)], {})))


def prepared(runner, prompt=PROMPT, **fields) -> GenerationRequest:
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, notes = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())
    return GenerationRequest(prompt, ids, sampling, notes)


@pytest.mark.parametrize("fields", [
    {"max_length": 50},
    {"max_length": 30, "num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5, "early_stopping": True},
    {"max_length": 30, "repetition_penalty": 1.5},
    {"max_length": 30, "encoder_no_repeat_ngram_size": 1},
    {"max_length": 30, "remove_invalid_values": True},
])
def test_matches_transformers(runner, reference, fields):
    assert runner.run(prepared(runner, **fields)) == reference.generate(PROMPT, **fields)


def test_full_text_keeps_the_prompt_verbatim(runner):
    prompt = "a literal <|endoftext|> stays, and so do   spaces ."
    (text,) = runner.run(prepared(runner, prompt, max_length=40))
    assert text.startswith(prompt) and len(text) > len(prompt)
