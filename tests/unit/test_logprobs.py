"""Logprobs on every decode path: generated tokens score as the step's log-softmax (after the processors
that chose them), prompt tokens as a plain forward pass of the model, and off means nothing is computed."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from predictor.core import GenerationRequest, Sampling
from predictor.generation.runner import Runner
from predictor.generation.static import StaticDecoder
from tests.texts import completions, done_row, searched

PROMPT = "Kubernetes runs containers on a cluster of machines and"


def request(loaded, prompt=PROMPT, new=8, **sampling) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    return GenerationRequest(prompt, ids, Sampling(max_length=len(ids) + new, **sampling))


def finish(loaded, req: GenerationRequest, decoder=None):
    """Run one request through a continuous batch; its completions (Runner builds them)."""
    runner = Runner(loaded, decoder)
    batch, done = runner.continuous(), []
    done += batch.join([("only", req)])
    while batch.rows:
        done += batch.advance()
    done.sort(key=lambda row: row.index)
    return completions(runner, req, [done_row(row) for row in done]), done


def forward_logprobs(loaded, tokens) -> torch.Tensor:
    """A plain forward pass over the whole sequence: log-softmax at every position."""
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([list(tokens)])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_greedy_logprobs_are_the_steps_log_softmax_and_echo_matches_a_forward_pass(loaded, static):
    req = request(loaded, logprobs=5, score_prompt=True)
    decoder = StaticDecoder(loaded.model, loaded.eos_token_id, 4, 128, graphs=False) if static else None
    (completion,), (row,) = finish(loaded, req, decoder)
    tokens = list(req.input_ids) + row.tokens
    reference = forward_logprobs(loaded, tokens)
    assert len(completion.logprobs) == completion.generated_tokens == 8
    for step, entry in enumerate(row.scored):
        position = len(req.input_ids) - 1 + step
        assert entry[0] == tokens[position + 1]
        assert entry[1] == pytest.approx(reference[position, entry[0]].item(), abs=1e-4)
        top = reference[position].topk(5)
        assert [t for t, _ in entry[2]] == top.indices.tolist()
        assert entry[2][0][0] == entry[0]  # greedy: the chosen token is the likeliest
    prompt = completion.prompt_logprobs
    assert len(prompt) == len(req.input_ids) and prompt[0].logprob is None and prompt[0].top == ()
    for position, entry in enumerate(prompt[1:]):
        assert entry.logprob == pytest.approx(reference[position, req.input_ids[position + 1]].item(), abs=1e-4)
        assert len(entry.top) == 5
    assert "".join(e.text for e in prompt) == PROMPT
    assert "".join(e.text for e in completion.logprobs) == completion.continuation


def test_sampled_logprobs_are_of_the_warped_distribution(loaded):
    req = request(loaded, logprobs=3, do_sample=True, temperature=0.7, top_k=10, seed=7)
    (completion,), (row,) = finish(loaded, req)
    reference = forward_logprobs(loaded, list(req.input_ids) + row.tokens)
    for step, (token, logprob, top) in enumerate(row.scored):
        logits = reference[len(req.input_ids) - 1 + step] / 0.7
        kept = logits.topk(10)
        warped = torch.full_like(logits, -math.inf).scatter(0, kept.indices, kept.values)
        expected = torch.log_softmax(warped, dim=-1)
        assert logprob == pytest.approx(expected[token].item(), abs=1e-4)
        assert [value for _, value in top] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-4)


def test_echo_with_no_new_tokens_scores_the_prompt_and_generates_nothing(loaded):
    req = request(loaded, new=0, logprobs=1, score_prompt=True)
    (completion,), (row,) = finish(loaded, req)
    assert row.tokens == [] and completion.continuation == "" and completion.finish_reason == "length"
    assert completion.logprobs == () and len(completion.prompt_logprobs) == len(req.input_ids)


def test_off_computes_nothing(loaded, monkeypatch):
    """Without logprobs a step does no extra work: no log-softmax, and prefill keeps only the last logits."""
    from predictor.generation import logits, prefill

    def unexpected(*args, **kwargs):
        raise AssertionError("logprobs were computed for a request that did not ask")

    monkeypatch.setattr(logits, "scores_of", unexpected)
    monkeypatch.setattr(logits, "score_table", unexpected)  # a decode step's (copied with its tokens)
    monkeypatch.setattr(prefill, "prompt_scores", unexpected)  # echo scoring in one piece
    monkeypatch.setattr(prefill, "scores_of", unexpected)  # in chunks
    kept = []
    model_call = type(loaded.model).__call__

    def spy(self, *args, **kwargs):
        kept.append(kwargs.get("logits_to_keep"))
        return model_call(self, *args, **kwargs)

    monkeypatch.setattr(type(loaded.model), "__call__", spy)
    (completion,), (row,) = finish(loaded, request(loaded, do_sample=True, num_return_sequences=1, seed=2))
    assert row.scored is None and completion.logprobs is None and completion.prompt_logprobs is None
    assert kept[0] == 1  # the prefill asked for the last position's logits only


def test_beam_search_reports_the_chosen_beams_tokens(loaded):
    """Deterministic beams (diverse.py): each chosen beam's tokens, scored by the model's log-softmax."""
    req = request(loaded, num_beams=3, num_return_sequences=2, logprobs=2)
    ((first, second),) = searched(Runner(loaded), [req])
    for completion in (first, second):
        assert len(completion.logprobs) == completion.generated_tokens
        tokens = loaded.tokenizer(completion.continuation).input_ids
        reference = forward_logprobs(loaded, list(req.input_ids) + tokens)
        start = len(req.input_ids) - 1
        expected = [reference[start + i, t].item() for i, t in enumerate(tokens)]
        assert [e.logprob for e in completion.logprobs] == pytest.approx(expected, abs=1e-4)
        assert all(len(e.top) == 2 for e in completion.logprobs)


def test_beam_sampling_reports_the_steps_processed_logprobs(loaded):
    req = request(loaded, num_beams=2, num_return_sequences=2, logprobs=1, do_sample=True, seed=5)
    ((first, second),) = searched(Runner(loaded), [req])
    for completion in (first, second):
        assert len(completion.logprobs) == completion.generated_tokens
        assert all(e.logprob <= 0 and len(e.top) == 1 for e in completion.logprobs)


def test_sequences_of_one_request_share_the_prompt_scores(loaded):
    req = request(loaded, logprobs=0, score_prompt=True, do_sample=True, num_return_sequences=2, seed=1)
    completions, _ = finish(loaded, req)
    assert completions[0].prompt_logprobs == completions[1].prompt_logprobs
    assert all(entry.top == () for c in completions for entry in c.logprobs)


def test_a_stop_string_cuts_the_logprobs_with_the_text(loaded):
    base = request(loaded, new=12, logprobs=0)
    (full,), _ = finish(loaded, base)
    stop = full.continuation[len(full.logprobs[0].text) :][:3]  # text that begins in a later token
    req = replace(base, sampling=replace(base.sampling, stop=(stop,)))
    (cut,), _ = finish(loaded, req)
    assert cut.finish_reason == "stop"
    assert len(cut.logprobs) < len(full.logprobs)
    assert "".join(e.text for e in cut.logprobs).startswith(cut.continuation)
