"""Runner: beam searches as padded generate calls equal plain transformers; texts keep the prompt."""

from __future__ import annotations

import pytest

from predictor.api import PromptRequest
from predictor.loading import load
from predictor.runner import Runner
from predictor.sampling import GenerationRequest, plan
from predictor.settings import Limits, parse_settings

PROMPT = "If I was a billionaire, I would"
PROMPTS = ["The weather", "Kubernetes runs containers on a cluster of machines and", "A", PROMPT]


@pytest.fixture(scope="module")
def runner(tiny_dir):
    return Runner(load(parse_settings(["--model", str(tiny_dir)], {})))


def prepared(runner, prompt=PROMPT, **fields) -> GenerationRequest:
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, notes = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())
    return GenerationRequest(prompt, ids, sampling, notes)


def texts(results):
    return [r.texts if not isinstance(r, Exception) else r for r in results]


@pytest.mark.parametrize("fields", [
    {"max_length": 30, "num_beams": 3},
    {"max_length": 30, "num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5, "early_stopping": True},
    {"max_length": 30, "num_beams": 2, "repetition_penalty": 1.5, "min_length": 20},
    {"max_length": 30, "num_beams": 2, "encoder_no_repeat_ngram_size": 1},
])
def test_beam_search_matches_transformers(runner, reference, fields):
    (result,) = runner.run_batch([prepared(runner, **fields)])
    assert result.texts == reference.generate(PROMPT, **fields)
    # this model never ends on EOS: every returned beam holds max_length - prompt new tokens
    prompt_tokens = len(runner.loaded.tokenizer(PROMPT).input_ids)
    assert result.tokens == len(result.texts) * (fields["max_length"] - prompt_tokens)


def test_beams_in_a_batch_match_alone(runner):
    requests = [prepared(runner, p, num_beams=3, num_return_sequences=2,
                         max_length=len(runner.loaded.tokenizer(p).input_ids) + 12) for p in PROMPTS]
    assert texts(runner.run_batch(requests)) == [runner.run_batch([r])[0].texts for r in requests]


def test_a_failing_batch_fails_only_the_culprit(runner, monkeypatch):
    generate = runner.loaded.model.generate

    def fragile(**kwargs):
        if kwargs["input_ids"].shape[0] > 1 and (kwargs["input_ids"] == 99).any():
            raise RuntimeError("poisoned")
        if (kwargs["input_ids"] == 99).any():
            raise RuntimeError("still poisoned")
        return generate(**kwargs)

    monkeypatch.setattr(runner.loaded.model, "generate", fragile)
    good = prepared(runner, "The weather", max_length=20, num_beams=2)
    bad = prepared(runner, "The rain", max_length=20, num_beams=2)
    bad = GenerationRequest(bad.prompt, (*bad.input_ids[:-1], 99), bad.sampling)
    results = texts(runner.run_batch([good, bad, good]))
    assert results[0] == results[2] == runner.run_batch([good])[0].texts
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "still poisoned"


def test_an_abandoned_beam_search_stops_early(runner):
    long = prepared(runner, "The weather", max_length=400, num_beams=2)
    (finished,) = runner.run_batch([long])
    (stopped,) = runner.run_batch([long], stop=lambda: True)
    assert stopped.tokens < finished.tokens and stopped.tokens <= 2


def test_texts_keep_the_prompt_verbatim(runner):
    prompt = "a literal <|endoftext|> stays, and so do   spaces ."
    (text,) = runner.texts(prompt, [runner.loaded.tokenizer(" and more").input_ids + [runner.loaded.eos_token_id]])
    assert text == prompt + " and more"  # special tokens (EOS) are dropped from the continuation
