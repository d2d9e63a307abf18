"""Runner: beam searches (left-padded, stepped to their end) equal plain transformers; texts keep the prompt."""

from __future__ import annotations

import pytest
import torch

from predictor.core import Delta, GenerationRequest
from predictor.generation import diverse
from predictor.generation.runner import Runner
from predictor.loading.loader import load
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits, parse_settings
from tests.texts import completions, searched

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
    return [[c.text for c in r] if not isinstance(r, Exception) else r for r in results]


def tokens(result) -> int:
    return sum(completion.generated_tokens for completion in result)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_length": 30, "num_beams": 3},
        {"max_length": 30, "num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5, "early_stopping": True},
        {"max_length": 30, "num_beams": 2, "repetition_penalty": 1.5, "min_length": 20},
        {"max_length": 30, "num_beams": 2, "encoder_no_repeat_ngram_size": 1},
    ],
)
def test_beam_search_matches_transformers(runner, reference, fields):
    (result,) = searched(runner, [prepared(runner, **fields)])
    assert [c.text for c in result] == reference.generate(PROMPT, **fields)
    # this model never ends on EOS: every returned beam holds max_length - prompt new tokens
    prompt_tokens = len(runner.loaded.tokenizer(PROMPT).input_ids)
    assert tokens(result) == len(result) * (fields["max_length"] - prompt_tokens)
    assert {c.finish_reason for c in result} == {"length"}


def test_beams_in_a_batch_match_alone(runner):
    requests = [
        prepared(
            runner, p, num_beams=3, num_return_sequences=2, max_length=len(runner.loaded.tokenizer(p).input_ids) + 12
        )
        for p in PROMPTS
    ]
    assert texts(searched(runner, requests)) == [texts(searched(runner, [r]))[0] for r in requests]


def test_a_failing_batch_fails_only_the_culprit(runner, monkeypatch):
    class Fragile(diverse.BeamSearch):  # every beam search
        def __init__(self, model, input_ids, *args):
            if input_ids.shape[0] > 1 and (input_ids == 99).any():
                raise RuntimeError("poisoned")
            if (input_ids == 99).any():
                raise RuntimeError("still poisoned")
            super().__init__(model, input_ids, *args)

    monkeypatch.setattr(diverse, "BeamSearch", Fragile)
    good = prepared(runner, "The weather", max_length=20, num_beams=2)
    bad = prepared(runner, "The rain", max_length=20, num_beams=2)
    bad = GenerationRequest(bad.prompt, (*bad.input_ids[:-1], 99), bad.sampling)
    results = texts(searched(runner, [good, bad, good]))
    assert results[0] == results[2] == texts(searched(runner, [good]))[0]
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "still poisoned"


def test_an_abandoned_beam_search_stops_early(runner):
    long = prepared(runner, "The weather", max_length=400, num_beams=2)
    (finished,) = searched(runner, [long])
    (stopped,) = searched(runner, [long], stop=lambda: True)
    assert tokens(stopped) < tokens(finished) and tokens(stopped) <= 2


def test_texts_keep_the_prompt_verbatim(runner):
    prompt = "a literal <|endoftext|> stays, and so do   spaces ."
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    request = GenerationRequest(prompt, ids, plan(PromptRequest(prompt=prompt), len(ids), Limits())[0])
    more = (*runner.loaded.tokenizer(" and more").input_ids, runner.loaded.eos_token_id)
    (completion,) = completions(runner, request, [Delta(0, more, finished=True, finish_reason="eos")])
    assert completion.text == prompt + " and more"  # special tokens (EOS) are dropped from the continuation
    assert completion.continuation == " and more" and completion.prompt_tokens == len(ids)


def test_seeded_beam_sampling_repeats_and_leaves_the_global_generator_alone(runner):
    seeded = prepared(runner, max_length=30, num_beams=2, do_sample=True, seed=11)
    torch.manual_seed(0)
    untouched = torch.rand(1)
    torch.manual_seed(0)
    first = texts(searched(runner, [seeded]))
    assert torch.rand(1) == untouched  # the global generator is as it was: unseeded requests stay random
    second = texts(searched(runner, [seeded]))
    assert first == second
    other = prepared(runner, max_length=30, num_beams=2, do_sample=True, seed=12)
    assert texts(searched(runner, [other])) != first


def test_beam_search_texts_end_before_a_stop_string(runner):
    (plain,) = searched(runner, [prepared(runner, max_length=30, num_beams=2)])
    continuation = plain[0].continuation
    stop = continuation[len(continuation) // 2 : len(continuation) // 2 + 2]
    (stopped,) = searched(runner, [prepared(runner, max_length=30, num_beams=2, stop=stop)])
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].continuation == continuation[: continuation.index(stop)]
