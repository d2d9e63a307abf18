"""Chunked prefill: a long prompt joins a chunk per step, with what a prefill in one piece gives."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.core import GenerationRequest, Sampling
from predictor.engine.engine import Engine
from predictor.engine.faults import Faults
from predictor.errors import GenerationFailed
from predictor.generation import dynamic, prefill
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.runner import Runner
from predictor.generation.static import StaticDecoder
from predictor.settings import BatchPolicy
from predictor.telemetry.metrics import Metrics

from .schedule import run
from .test_continuous import generate

N = 4  # the chunk in these tests: prompts of 1, N, N + 1 and 3N + 2 tokens cross every kind of boundary
LENGTHS = (1, N, N + 1, 3 * N + 2)
TEXT = "Kubernetes runs containers on a cluster of machines and she opened the book, read the first page twice"


def ids(loaded, length: int) -> tuple[int, ...]:
    tokens = tuple(loaded.tokenizer(TEXT).input_ids)
    assert len(tokens) >= length
    return tokens[:length]


def request(loaded, length: int, new: int = 8, **sampling) -> GenerationRequest:
    prompt = ids(loaded, length)
    return GenerationRequest(loaded.tokenizer.decode(prompt), prompt, Sampling(max_length=length + new, **sampling))


def static(loaded) -> StaticDecoder:
    return StaticDecoder(loaded.model, loaded.eos_token_id, 16, 128, graphs=False)


@pytest.mark.parametrize("length", LENGTHS)
def test_chunks_give_the_logits_and_cache_of_one_piece(loaded, length):
    prompt = ids(loaded, length)
    with torch.inference_mode():
        whole, expected = dynamic.prefill(loaded.model, [prompt], loaded.eos_token_id)
        entry, chunks = prefill.Pending("owner", [], prompt, None), 1
        while (last := prefill.chunk(loaded.model, entry, N)) is None:
            chunks += 1
    assert chunks == -(-length // N)
    torch.testing.assert_close(last, expected[0], atol=1e-5, rtol=0)
    assert entry.state.length == whole.length == length and entry.state.positions.tolist() == [length]
    for (k, v), (wk, wv) in zip(entry.state.kv, whole.kv, strict=True):
        torch.testing.assert_close(k, wk, atol=1e-5, rtol=0)
        torch.testing.assert_close(v, wv, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["dynamic", "static"])
def test_chunked_prompts_generate_what_generate_gives(loaded, path):
    greedy = [request(loaded, length, new=6 + length) for length in LENGTHS]
    seeded = request(loaded, 3 * N + 2, new=10, do_sample=True, seed=5, num_return_sequences=2)
    penalized = request(loaded, N + 1, new=12, repetition_penalty=1.4)
    # joining at different steps, while others generate and while another prompt still prefills
    schedule = {0: greedy[:2], 1: [greedy[3], seeded], 2: [greedy[2]], 6: [penalized]}
    results = run(loaded, schedule, static(loaded) if path == "static" else None, max_prefill_tokens=N)
    for owner, req in enumerate([*greedy[:2], greedy[3], None, greedy[2], penalized]):
        if req is not None:
            assert results[owner] == generate(loaded, req), req
    # a seeded request's sequences draw from generators of their own, whatever else runs
    assert results[3] == run(loaded, {0: [seeded]})[0]


def test_sampled_sequences_of_a_chunked_prompt_draw_what_a_one_piece_prefill_draws(loaded):
    # Unseeded rows draw from the global generator (one uniform per row and step: logits.py), not as
    # generate() does; chunking the prompt must not change which draws its sequences get.
    req = request(loaded, 3 * N + 2, new=12, do_sample=True, num_return_sequences=3)
    torch.manual_seed(1234)
    ours = run(loaded, {0: [req]}, max_prefill_tokens=N)[0]
    torch.manual_seed(1234)
    assert ours == run(loaded, {0: [req]})[0] and len({tuple(tokens) for tokens in ours}) == 3


@pytest.mark.parametrize("length", LENGTHS)
def test_echo_scoring_in_chunks_equals_a_plain_forward(loaded, length):
    req = request(loaded, length, new=0, logprobs=2, score_prompt=True)
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id, max_prefill_tokens=N)
    done = batch.join([("only", req)])
    while batch.pending or batch.rows:
        done += batch.advance()
    (row,) = done
    assert row.reason == "length" and row.tokens == []
    with torch.inference_mode():
        reference = torch.log_softmax(loaded.model(input_ids=torch.tensor([req.input_ids])).logits[0].float(), -1)
    assert [entry[0] for entry in row.prompt_scored] == list(req.input_ids[1:])
    for position, entry in enumerate(row.prompt_scored):
        assert entry[1] == pytest.approx(reference[position, entry[0]].item(), abs=1e-4)
        assert [value for _, value in entry[2]] == pytest.approx(reference[position].topk(2).values.tolist(), abs=1e-4)


def steady_batch(loaded):
    """A batch with one row generating, and a chunk of N tokens."""
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id, max_prefill_tokens=N)
    batch.join([("steady", request(loaded, 2, new=100))])
    assert batch.take_prefilled() == ["steady"]
    return batch, batch.rows[0]


def test_a_running_row_gets_a_token_at_every_step_while_a_long_prompt_prefills(loaded):
    batch, steady = steady_batch(loaded)
    batch.join([("long", request(loaded, 3 * N + 2))])  # its first chunk runs now, in the join
    progress = [batch.pending[0].done]
    while not batch.take_prefilled():
        before = steady.choice.generated
        batch.advance()
        assert steady.choice.generated == before + 1  # one decode step, every step
        progress.append(batch.pending[0].done if batch.pending else "joined")
    # one chunk per step at most: none in the step of the join, which ran one already
    assert progress == [N, N, 2 * N, 3 * N, "joined"]
    assert [row.owner for row in batch.rows] == ["steady", "long"] and batch.occupied == 2


def test_a_request_cancelled_while_prefilling_leaves_and_frees_its_partial_cache(loaded):
    batch, steady = steady_batch(loaded)
    batch.join([("long", request(loaded, 3 * N + 2))])
    batch.advance()
    batch.advance()
    partial = weakref.ref(batch.pending[0].state)
    assert batch.leave({"long"}) == {"long": 0}
    gc.collect()
    assert partial() is None and batch.pending == [] and batch.occupied == 1
    done = []
    while batch.rows:
        done += batch.advance()
    assert not batch.take_prefilled() and [row.owner for row in done] == ["steady"]
    assert done[0].tokens == run(loaded, {0: [request(loaded, 2, new=100)]})[0][0]


def test_a_failed_prefill_fails_only_its_request(loaded):
    batch, _ = steady_batch(loaded)

    def check(owners):
        if "bad" in owners:
            raise RuntimeError("prefill failed")

    batch.check_prefill = check
    long, short = request(loaded, 3 * N + 2), request(loaded, 1)
    # bad-long fails a chunk of its own; bad-short fails a prefill shared with good-short, which is
    # then run again alone
    batch.join([("good-long", long), ("bad", long)])
    batch.join([("good-short", short), ("bad", short)])
    done, failed = [], {}
    while batch.pending:
        done += batch.advance()
        failed.update(batch.take_failed())
    assert list(failed) == ["bad"] and str(failed["bad"]) == "prefill failed"
    assert [row.owner for row in batch.rows] == ["steady", "good-long", "good-short"]
    while len(batch.rows) > 1:
        done += batch.advance()
    finished = {row.owner: row.tokens for row in done}
    assert finished["good-long"] == generate(loaded, long)[0] and finished["good-short"] == generate(loaded, short)[0]


@pytest.fixture(scope="module")
def runner(loaded):
    return Runner(loaded)


def test_the_engine_fails_only_the_request_whose_chunk_fails(runner, loaded):
    long = request(loaded, 3 * N + 2, new=20)
    faulty = GenerationRequest(long.prompt + " [[fault:prefill]]", long.input_ids, long.sampling)
    engine = Engine(runner, BatchPolicy(max_prefill_tokens=N), faults=Faults(True))

    async def go():
        return await asyncio.gather(engine.run([long]), engine.run([faulty]), return_exceptions=True)

    engine.start()
    try:
        (fine,), failed = asyncio.run(go())
    finally:
        engine.stop(timeout=30)
    assert isinstance(failed, GenerationFailed)
    assert fine[0].continuation == loaded.tokenizer.decode(generate(loaded, long)[0])
    assert fine[0].generated_tokens == 20


def test_the_engine_frees_a_request_cancelled_while_it_prefills(runner, loaded):
    registry = CollectorRegistry()
    engine = Engine(runner, BatchPolicy(max_prefill_tokens=1), metrics=Metrics(registry))
    prompt = tuple(loaded.tokenizer(TEXT * 6).input_ids)  # a chunk per token: hundreds of steps
    doomed = GenerationRequest(TEXT * 6, prompt, Sampling(max_length=len(prompt) + 50))
    batch = engine._worker.batch

    async def go():
        task = asyncio.ensure_future(engine.run([doomed]))
        while not (batch.pending and batch.pending[0].done > 1):  # part-way through its prefill
            await asyncio.sleep(0.005)
        task.cancel()
        for _ in range(400):
            if not registry.get_sample_value("gptj_requests_running"):
                break
            await asyncio.sleep(0.005)
        return await engine.run([request(loaded, 2, new=5)])

    engine.start()
    try:
        ((after,),) = asyncio.run(go())
    finally:
        engine.stop(timeout=30)
    assert batch.pending == [] and registry.get_sample_value("gptj_requests_running") == 0
    assert after.generated_tokens == 5
    assert registry.get_sample_value("gptj_generated_tokens_total") == 5  # none for the cancelled one
