"""min-p (transformers' MinPLogitsWarper, batched per row) and stop token ids (a row ends at one;
banned with EOS below the row's minimum), vLLM's ignore_eos, on the device state and in the batch."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from predictor.core import GenerationRequest, Sampling
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.logits import choose, row_choice
from predictor.generation.rowstate import BatchState

from .test_rowstate import count_syncs

VOCAB, EOS = 300, 299
PROMPT = [5, 6, 7, 8, 7]

WARPED = [
    {"do_sample": True, "top_k": 0, "min_p": 0.05},
    {"do_sample": True, "temperature": 0.6, "top_k": 0, "min_p": 0.3},
    {"do_sample": True, "top_k": 20, "top_p": 0.9, "min_p": 0.1},  # all four warpers, in generate's order
    {"do_sample": True, "top_k": 0},  # sampled, no min_p: untouched by it
    {},  # greedy: never warped
    {"do_sample": True, "temperature": 1.4, "min_p": 1.0},  # only the likeliest token survives
    {"do_sample": True, "top_k": 0, "min_p": 0.0},  # 0: off
]


def rows_of(fields_list, prompt=PROMPT):
    rows = []
    for fields in fields_list:
        sampling = Sampling(max_length=100, **fields)
        rows.append(row_choice(sampling, prompt, max(0, sampling.min_length - len(prompt))))
    return rows


def transformers_warpers(row) -> LogitsProcessorList:
    """generate's warpers for this row alone (utils.py _get_logits_processor: temperature, top-k, top-p, min-p)."""
    s, (temperature, top_k, top_p) = row.sampling, row.warp_key
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if s.min_p is not None:
        warpers.append(MinPLogitsWarper(s.min_p))
    return warpers


@pytest.mark.parametrize("seed", range(5))
def test_min_p_per_row_is_transformers_min_p_bit_for_bit(seed):
    logits = torch.randn(len(WARPED), VOCAB, generator=torch.Generator().manual_seed(seed)) * (1 + seed)
    rows = rows_of(WARPED)
    state = BatchState(rows, VOCAB, torch.device("cpu"))
    sampled = [i for i, row in enumerate(rows) if row.warp_key]
    warped = state.warp(logits[sampled].clone())
    for position, index in enumerate(sampled):
        row = rows[index]
        expected = transformers_warpers(row)(torch.tensor([row.tokens]), logits[index : index + 1].clone())[0]
        assert torch.equal(warped[position], expected), row.sampling
    kept = (warped > -float("inf")).sum(dim=-1).tolist()
    assert kept[sampled.index(5)] == 1  # min_p 1: the likeliest only
    assert kept[sampled.index(3)] == VOCAB and kept[sampled.index(6)] == VOCAB  # no min_p, min_p 0: all
    assert kept[sampled.index(0)] > kept[sampled.index(1)] >= 1  # a row's own min_p, not the batch's


def test_min_p_one_samples_the_argmax_every_time():
    logits = torch.randn(64, VOCAB, generator=torch.Generator().manual_seed(7))
    rows = rows_of([{"do_sample": True, "top_k": 0, "min_p": 1.0, **({"seed": i} if i % 2 else {})} for i in range(64)])
    assert torch.equal(choose(rows, logits, EOS), logits.argmax(dim=-1))


def test_stop_ids_are_banned_with_eos_below_the_minimum_and_only_for_their_row():
    rows = rows_of(
        [
            {"min_length": len(PROMPT) + 2, "stop_token_ids": (3, 9)},
            {"stop_token_ids": (3,)},  # no minimum: nothing banned
            {"min_length": len(PROMPT) + 2},  # a minimum without stop ids: EOS only
        ]
    )
    logits = torch.zeros(3, VOCAB)
    state = BatchState(rows, VOCAB, torch.device("cpu"))
    banned = state.ban(logits.clone(), EOS) == -float("inf")
    assert banned[0].nonzero().flatten().tolist() == [3, 9, EOS]
    assert banned[1].nonzero().flatten().tolist() == []
    assert banned[2].nonzero().flatten().tolist() == [EOS]
    for _ in range(2):  # two tokens later the first row has its minimum: nothing is banned
        chosen = choose(rows, logits.clone(), EOS)  # (choose bans in place)
        for row, token in zip(rows, chosen.tolist(), strict=True):
            row.tokens.append(token)
    assert not (rows[0].state.ban(logits.clone(), EOS) == -float("inf")).any()


def test_stop_ids_and_min_p_cost_no_sync_in_a_steady_step():
    rows = rows_of([{"min_length": 40, "stop_token_ids": (3, 9)}, {"do_sample": True, "min_p": 0.2}] * 8)
    logits = torch.randn(len(rows), VOCAB, generator=torch.Generator().manual_seed(8))
    joined, chosen = count_syncs(lambda: choose(rows, logits, EOS))
    assert joined <= 1  # the one upload of the rows' settings (stop ids included)
    for row, token in zip(rows, chosen.tolist(), strict=True):
        row.tokens.append(token)
    assert count_syncs(lambda: choose(rows, logits, EOS))[0] == 0


def finish(loaded, requests: dict) -> dict:
    """Run requests to the end in one batch: each one's first Done."""
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    done, finished = batch.join(list(requests.items())), {}
    while True:
        finished.update({row.owner: row for row in done})
        if not batch.rows:
            return finished
        done = batch.advance()


def request(loaded, prompt, **fields) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    return GenerationRequest(prompt, ids, Sampling(**{"max_length": len(ids) + 12, **fields}))


def test_a_row_ends_at_its_stop_id_and_keeps_it_only_when_asked(loaded):
    plain = request(loaded, "If I was a billionaire, I would")
    greedy = finish(loaded, {"plain": plain})["plain"].tokens
    stop = greedy[3]
    assert stop not in greedy[:3]
    done = finish(
        loaded,
        {
            "stop": request(loaded, plain.prompt, stop_token_ids=(stop,)),
            "kept": request(loaded, plain.prompt, stop_token_ids=(stop, 1), include_stop_str_in_output=True),
            "other": plain,  # beside them, without stop ids: unchanged
        },
    )
    assert (done["stop"].tokens, done["stop"].reason) == (greedy[:3], "stop")
    assert (done["kept"].tokens, done["kept"].reason) == (greedy[:4], "stop")
    assert (done["other"].tokens, done["other"].reason) == (greedy, "length")


def test_a_minimum_holds_off_a_stop_id(loaded):
    prompt = "If I was a billionaire, I would"
    ids = len(loaded.tokenizer(prompt).input_ids)
    stop = finish(loaded, {"plain": request(loaded, prompt)})["plain"].tokens[0]  # ends at once without a minimum
    done = finish(
        loaded, {"min": request(loaded, prompt, max_length=ids + 30, min_length=ids + 4, stop_token_ids=(stop,))}
    )
    assert len(done["min"].tokens) >= 4 and stop not in done["min"].tokens[:4]
    assert done["min"].reason == ("stop" if len(done["min"].tokens) < 30 else "length")


def test_ignore_eos_generates_past_eos(eos_loaded):
    eos = eos_loaded.eos_token_id
    done = finish(
        eos_loaded,
        {
            "ignore": request(eos_loaded, "A", ignore_eos=True),
            "plain": request(eos_loaded, "A"),
            "min": request(eos_loaded, "A", min_length=5),
        },
    )
    assert (done["ignore"].tokens, done["ignore"].reason) == ([eos] * 12, "length")  # all 12 new tokens
    assert (done["plain"].tokens, done["plain"].reason) == ([], "eos")
    prompt = len(eos_loaded.tokenizer("A").input_ids)
    assert len(done["min"].tokens) == 5 - prompt and eos not in done["min"].tokens and done["min"].reason == "eos"
