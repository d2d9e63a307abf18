"""The continuous batch: every row gets exactly what `generate` gives it alone, whenever it joins."""

from __future__ import annotations

import time

import pytest
import torch

from predictor.core import GenerationRequest
from predictor.generation.continuous import ContinuousBatch
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits

from .schedule import run

PROMPTS = [
    "The weather",
    "Kubernetes runs containers on a cluster of machines and",
    "A",
    "If I was a billionaire, I would",
    "Numbers such as 1, 2, 3",
    "She opened the book, read the first page twice, and smiled at",
]


def request(loaded, prompt, **fields) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())
    return GenerationRequest(prompt, ids, sampling)


def generate(loaded, req: GenerationRequest, **extra) -> list[list[int]]:
    """Plain transformers generate for one request, new tokens without EOS and padding."""
    from predictor.generation.runner import generation_config

    ids = torch.tensor([req.input_ids])
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=generation_config(req.sampling, loaded.eos_token_id),
            **extra,
        )
    eos = loaded.eos_token_id
    return [[t for t in row[ids.shape[1] :].tolist() if t != eos] for row in out]


GREEDY = [
    {"max_length": 40},
    {"max_length": 30, "repetition_penalty": 1.5},
    {"max_length": 35, "encoder_no_repeat_ngram_size": 1},
    {"max_length": 25, "remove_invalid_values": True},
    {"max_length": 60, "min_length": 20},
    {"max_length": 20},
]


def test_greedy_rows_joining_at_different_steps_match_generate(loaded):
    reqs = [request(loaded, p, **f) for p, f in zip(PROMPTS, GREEDY, strict=False)]
    results = run(loaded, {0: reqs[:2], 3: reqs[2:4], 9: [reqs[4]], 15: [reqs[5]]})
    for owner, req in enumerate(reqs):
        assert results[owner] == generate(loaded, req), req.sampling


@pytest.mark.parametrize(
    "fields",
    [
        {"do_sample": True},  # transformers' defaults: top_k 50
        {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 0.9},
        {"do_sample": True, "temperature": 1.3, "top_k": 7, "repetition_penalty": 1.2},
        {"do_sample": True, "num_return_sequences": 3},
    ],
)
def test_sampled_rows_repeat_under_the_same_global_seed_and_differ_under_another(loaded, fields):
    # Unseeded rows draw from the global generator (one uniform per row, rowstate.py): not generate's
    # draws, but the same distribution (tests/unit/test_rowstate.py checks both against transformers).
    req = request(loaded, "If I was a billionaire, I would", max_length=40, **fields)
    torch.manual_seed(1234)
    ours = run(loaded, {0: [req]})[0]
    torch.manual_seed(1234)
    assert run(loaded, {0: [req]})[0] == ours
    torch.manual_seed(4321)
    assert run(loaded, {0: [req]})[0] != ours
    assert all(len(tokens) == 40 - len(req.input_ids) for tokens in ours)


def test_min_length_and_eos_per_row(eos_loaded):
    # EOS wins every step on this model: each row stops exactly at its own minimum, EOS left out.
    reqs = [
        request(eos_loaded, p, max_length=60, min_length=m)
        for p, m in (("If I was", 0), ("The weather was cold", 20), ("A", 12))
    ]
    results = run(eos_loaded, {0: reqs[:2], 2: [reqs[2]]})
    assert [len(results[i][0]) for i in range(3)] == [0, 20 - len(reqs[1].input_ids), 12 - 1]
    assert all(eos_loaded.eos_token_id not in results[i][0] for i in range(3))


def test_max_time_stops_only_its_row(loaded):
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    quick = request(loaded, "The weather", max_length=512, max_time=0.05)
    steady = request(loaded, "A", max_length=200)
    done = batch.join([("quick", quick), ("steady", steady)])
    finished = {}
    while batch.rows:
        for row in done:
            finished[row.owner] = (row.tokens, time.monotonic())
        done = batch.advance()
    for row in done:
        finished[row.owner] = (row.tokens, time.monotonic())
    assert len(finished["steady"][0]) == 199 and len(finished["quick"][0]) < 199
    assert finished["quick"][1] < finished["steady"][1]


def test_leaving_frees_rows_and_trims_the_cache(loaded):
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    long_prompt = request(loaded, PROMPTS[5], max_length=100)
    short = request(loaded, "A", max_length=100)
    batch.join([("long", long_prompt), ("short", short)])
    batch.advance()
    before = batch.decoder.state.length
    batch.leave({"long"})
    assert [row.owner for row in batch.rows] == ["short"] and batch.decoder.state.rows == 1
    assert (
        batch.decoder.state.length == len(short.input_ids) + 1 < before
    )  # the long row's padding is gone (the latest token is not fed yet)
    alone = run(loaded, {0: [short]})[0]
    while batch.rows:
        done = batch.advance()
    assert done[0].tokens == alone[0]


def test_longest_tracks_the_rows(loaded):
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    assert batch.longest == 0
    batch.join([("a", request(loaded, "A", max_length=30)), ("b", request(loaded, "The weather", max_length=70))])
    assert batch.longest == 70


def test_a_seeded_row_draws_the_same_text_alone_or_batched(loaded):
    # The contract (docs/api.md): the same seed, prompt and settings give the same text whatever else
    # is in the batch; not generate's draws (a seeded row hashes (seed, position) instead).
    seeded = request(loaded, "If I was a billionaire, I would", max_length=40, do_sample=True, seed=77)
    noise = [
        request(loaded, p, max_length=45, **{"do_sample": True, **f}) for p, f in zip(PROMPTS[:3], MIXED, strict=True)
    ]
    torch.manual_seed(1)
    crowded = run(loaded, {0: noise[:2], 2: [seeded], 4: [noise[2]]})[2]
    torch.manual_seed(2)  # the global generator does not matter to a seeded row
    alone = run(loaded, {0: [seeded]})[0]
    assert crowded == alone and len(alone[0]) == 40 - len(seeded.input_ids)
    other_seed = request(loaded, seeded.prompt, max_length=40, do_sample=True, seed=78)
    assert run(loaded, {0: [other_seed]})[0] != alone


# Company for a seeded row: other seeds, penalties, logprobs, greedy.
MIXED = [{"seed": 3, "top_p": 0.8}, {"repetition_penalty": 1.3, "logprobs": 2}, {"do_sample": False, "min_length": 9}]


def test_seeded_sequences_differ_from_each_other(loaded):
    req = request(loaded, "The weather", max_length=30, do_sample=True, num_return_sequences=3, seed=5)
    first, second = run(loaded, {0: [req]})[0], run(loaded, {0: [req]})[0]
    assert first == second and len({tuple(tokens) for tokens in first}) == 3


def finished(loaded, req) -> dict:
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    done, rows = batch.join([("only", req)]), {}
    while True:
        rows.update({row.index: row for row in done})
        if not batch.rows:
            return rows
        done = batch.advance()


def test_finish_drops_only_the_rows_named(loaded):
    """A stop string (found off the engine thread) ends one sequence: its row leaves, its siblings stay."""
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    req = request(loaded, "The weather", max_length=60, do_sample=True, num_return_sequences=2, seed=4)
    batch.join([("a", req), ("b", request(loaded, "A", max_length=60))])
    assert batch.finish({("a", 1), ("a", 7), ("gone", 0)}) == [("a", 1)]
    assert [(row.owner, row.index) for row in batch.rows] == [("a", 0), ("b", 0)]
    assert batch.decoder.state.rows == 2
    while batch.rows:
        done = batch.advance()
    assert len(done[-1].tokens) == 60 - 1


def test_finish_reasons(loaded, eos_loaded):
    assert finished(loaded, request(loaded, "A", max_length=10))[0].reason == "length"
    assert finished(loaded, request(loaded, "A", max_length=500, max_time=0.01))[0].reason == "time"
    assert finished(eos_loaded, request(eos_loaded, "A", max_length=10))[0].reason == "eos"
