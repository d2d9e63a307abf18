"""The static decode path (a preallocated cache, the GPU default) gives what the dynamic path gives."""

from __future__ import annotations

import pytest
import torch

from predictor.core import GenerationRequest
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.paths import decoder_for
from predictor.generation.static import (
    StaticDecoder,
    _groups,
    cache_bytes_per_token,
    rows_buckets,
)
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits, parse_settings

from .schedule import run

PROMPTS = [
    "The weather",
    "Kubernetes runs containers on a cluster of machines and",
    "A",
    "If I was a billionaire, I would",
    "Numbers such as 1, 2, 3",
]


def request(loaded, prompt, **fields) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    return GenerationRequest(prompt, ids, plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())[0])


def static(loaded, capacity=16, max_len=512, **options) -> StaticDecoder:
    return StaticDecoder(loaded.model, loaded.eos_token_id, capacity, max_len, graphs=False, **options)


def schedule(loaded) -> dict:
    """Rows of different lengths joining at different steps and leaving from the middle of the batch."""
    greedy = [request(loaded, p, max_length=20 + 9 * i) for i, p in enumerate(PROMPTS)]
    return {
        0: greedy[:2],
        3: greedy[2:4] + [request(loaded, "Seeded", max_length=30, do_sample=True, seed=3, num_return_sequences=2)],
        9: [greedy[4], request(loaded, "Penalized", max_length=40, repetition_penalty=1.3)],
    }


def test_static_and_dynamic_paths_generate_the_same_tokens(loaded):
    assert run(loaded, schedule(loaded), static(loaded)) == run(loaded, schedule(loaded))


def test_prompts_joining_together_are_prefilled_in_bounded_groups(loaded):
    assert _groups([5, 3, 8, 2], budget=10) == [[0, 1], [2], [3]]  # 5x2=10 fits; 8x2 does not
    assert _groups([20], budget=10) == [[0]]  # a prompt longer than the budget still runs, alone
    # 8 tokens: every prompt of the schedule prefills alone or with one other
    assert run(loaded, schedule(loaded), static(loaded, prefill_tokens=8)) == run(loaded, schedule(loaded))


def test_the_fused_projection_shares_the_models_weights(loaded):
    decoder = static(loaded)
    attn = loaded.model.transformer.h[0].attn
    assert attn.q_proj.weight.data_ptr() == decoder.qkv[0].data_ptr()  # views: no second copy
    assert torch.equal(decoder.qkv[0][attn.q_proj.weight.shape[0] :][: attn.k_proj.weight.shape[0]], attn.k_proj.weight)


def test_stepping_each_request_alone_changes_nothing(loaded):
    expected = run(loaded, schedule(loaded))
    assert run(loaded, schedule(loaded), static(loaded), fail_at=12) == expected
    assert run(loaded, schedule(loaded), fail_at=12) == expected  # the dynamic path's failure path too


def test_rows_that_leave_free_their_slots_for_others(loaded):
    decoder = static(loaded, capacity=2)
    one, two, three = (request(loaded, p, max_length=n) for p, n in (("One", 10), ("Two", 30), ("Three", 20)))
    results = run(loaded, {0: [one, two], 12: [three]}, decoder)  # "One" has left by step 12
    assert results == run(loaded, {0: [one, two], 12: [three]})
    assert [len(results[i][0]) for i in range(3)] == [
        r.sampling.max_length - len(r.input_ids) for r in (one, two, three)
    ]
    assert decoder.rows == 0 and decoder.lengths.sum() == 0  # every slot free again


def test_the_cache_bounds_are_enforced(loaded):
    decoder = static(loaded, capacity=1, max_len=8)
    with pytest.raises(ValueError, match="do not fit the cache"):
        decoder.join([[1, 2], [3]])
    with pytest.raises(ValueError, match="do not fit the cache"):
        decoder.join([list(range(1, 9))])
    with torch.inference_mode():
        decoder.join([list(range(1, 8))])
        decoder.step([5])  # the eighth token fills the row
        with pytest.raises(ValueError, match="exceed the cache's 8 tokens"):
            decoder.step([6])


def test_buckets_and_sizes(loaded):
    assert rows_buckets(64) == [1, 2, 4, 8, 16, 32, 48, 64]
    assert rows_buckets(5) == [1, 2, 4, 5] and rows_buckets(1) == [1]
    config = loaded.model.config
    assert cache_bytes_per_token(config, torch.float16) == 2 * config.n_layer * config.n_embd * 2


def test_the_path_follows_the_settings(tiny_dir, loaded):
    decoder, policy = decoder_for(loaded, parse_settings(["--model", str(tiny_dir)], {}))
    assert decoder is None and policy.max_batch_size == 32  # auto on a CPU: dynamic
    settings = parse_settings(
        ["--model", str(tiny_dir), "--decode_path", "static", "--max_batch_size", "12", "--max_length_limit", "100"], {}
    )
    decoder, policy = decoder_for(loaded, settings)
    assert (decoder.capacity, decoder.max_len, decoder.graphs) == (12, 100, False)
    # rows alone bound the continuous batch; beam search keeps the token bound for its own cache
    assert (policy.max_batch_size, policy.preallocated, policy.max_batch_tokens) == (12, True, 16384)
    small = parse_settings(["--model", str(tiny_dir), "--decode_path", "static", "--max_batch_size", "2"], {})
    decoder, policy = decoder_for(loaded, small)
    assert decoder.capacity == 8 and policy.max_batch_size == 2  # room for a lone request's 8 sequences


def test_a_failed_graph_capture_leaves_the_static_path_serving(tiny_dir, loaded, monkeypatch, caplog):
    def broken_capture(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StaticDecoder, "warm_up", broken_capture)
    settings = parse_settings(["--model", str(tiny_dir), "--decode_path", "static", "--max_batch_size", "8"], {})
    decoder, policy = decoder_for(loaded, settings)
    assert "CUDA graph capture failed, so the static path runs without graphs" in caplog.text
    assert decoder is not None and not decoder.graphs and policy.max_batch_size == 8
    assert run(loaded, schedule(loaded), decoder) == run(loaded, schedule(loaded))


@pytest.mark.parametrize("path", ["static", "dynamic"])
def test_a_failed_token_choice_leaves_the_cache_matching_the_rows(loaded, monkeypatch, path):
    """choose() failing after the model ran (a join, then a shared step) must not shift any row's cache."""
    import predictor.generation.continuous as continuous
    import predictor.generation.steps as steps

    real, failures = continuous.choose, []

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(continuous, "choose", flaky)  # advance_each's
    monkeypatch.setattr(steps, "choose", flaky)  # a join's and a step's
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id, decoder=static(loaded) if path == "static" else None)
    one, two = request(loaded, PROMPTS[1], max_length=30), request(loaded, PROMPTS[3], max_length=40)
    failures.append(RuntimeError("choice failed"))
    with pytest.raises(RuntimeError):
        batch.join([("lost", request(loaded, PROMPTS[0], max_length=30))])
    done = batch.join([(0, one), (1, two)])
    for step in range(40):
        if not batch.rows:
            break
        if step == 5:
            failures.append(RuntimeError("choice failed"))
            with pytest.raises(RuntimeError):
                batch.advance()
            done += batch.advance_each(lambda owner: None)[0]  # what the engine does next
        else:
            done += batch.advance()
    assert {row.owner: row.tokens for row in done} == {
        0: run(loaded, {0: [one]})[0][0],
        1: run(loaded, {0: [two]})[0][0],
    }
