"""The engine thread on the tiny model: joining, leaving, failures, beams, shutdown, metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from predictor.core import GenerationRequest, Piece
from predictor.engine.engine import Engine
from predictor.engine.faults import Faults
from predictor.engine.scheduling import beam_key
from predictor.errors import (
    DeadlineExceeded,
    GenerationFailed,
    NotReady,
    Overloaded,
    ResourceExhausted,
)
from predictor.generation.runner import Runner
from predictor.loading.loader import load
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import BatchPolicy, Limits, parse_settings
from predictor.telemetry.metrics import Metrics
from tests.texts import searched


@pytest.fixture(scope="module")
def runner(tiny_dir):
    return Runner(load(parse_settings(["--model", str(tiny_dir)], {})))


def request(runner, prompt: str, **fields) -> GenerationRequest:
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())
    return GenerationRequest(prompt, ids, sampling)


async def one(engine: Engine, req: GenerationRequest) -> list[str]:
    (completions,) = await engine.run([req])
    return [completion.text for completion in completions]


def run(engine: Engine, coroutine_factory):
    engine.start()
    try:
        return asyncio.run(coroutine_factory(engine))
    finally:
        engine.stop(timeout=30)


def alone(runner, req):
    return run(Engine(runner), lambda engine: one(engine, req))


def test_concurrent_requests_answer_each_caller_as_if_alone(runner):
    reqs = [request(runner, f"Request {i} says", max_length=10 + 3 * i) for i in range(12)]

    async def go(engine):
        return await asyncio.gather(*(one(engine, r) for r in reqs))

    assert run(Engine(runner), go) == [alone(runner, r) for r in reqs]


def test_a_late_request_joins_instead_of_waiting(runner):
    async def go(engine):
        long = asyncio.ensure_future(one(engine, request(runner, "A long one", max_length=400)))
        await asyncio.sleep(0.2)  # the long request is generating
        started = time.monotonic()
        await one(engine, request(runner, "A short one", max_length=12))
        short_done = time.monotonic() - started
        assert not long.done()  # the short one finished while the long one kept going
        await long
        return short_done

    assert run(Engine(runner), go) < 1.0


def test_a_cancelled_request_leaves_the_batch_at_once(runner):
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    async def go(engine):
        doomed = asyncio.ensure_future(one(engine, request(runner, "Never mind", max_length=512)))
        await asyncio.sleep(0.3)
        assert registry.get_sample_value("gptj_requests_running") == 1
        doomed.cancel()
        deadline = time.monotonic() + 2
        while registry.get_sample_value("gptj_requests_running") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return registry.get_sample_value("gptj_requests_running")

    assert run(Engine(runner, metrics=metrics), go) == 0


def test_a_request_that_fails_to_join_fails_alone(runner, monkeypatch):
    engine = Engine(runner)
    join = engine._worker.batch.join

    def fragile(entries):
        if any("poison" in r.prompt for _, r in entries):
            raise RuntimeError("poisoned")
        return join(entries)

    monkeypatch.setattr(engine._worker.batch, "join", fragile)

    async def go(engine):
        return await asyncio.gather(
            *(one(engine, request(runner, p, max_length=15)) for p in ("fine", "poison", "also fine")),
            return_exceptions=True,
        )

    fine, poisoned, also_fine = run(engine, go)
    assert isinstance(poisoned, GenerationFailed) and "poisoned" not in poisoned.message
    assert fine[0].startswith("fine") and also_fine[0].startswith("also fine")


def test_a_step_that_fails_once_is_retried_per_request(runner, monkeypatch):
    engine = Engine(runner)
    advance, calls = engine._worker.batch.advance, []

    def flaky():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("transient")
        return advance()

    monkeypatch.setattr(engine._worker.batch, "advance", flaky)

    async def go(engine):
        return await asyncio.gather(
            one(engine, request(runner, "one", max_length=20)), one(engine, request(runner, "two", max_length=20))
        )

    assert run(engine, go) == [
        alone(runner, request(runner, "one", max_length=20)),
        alone(runner, request(runner, "two", max_length=20)),
    ]


def test_a_request_whose_generation_fails_fails_alone(runner):
    async def go(engine):
        steady = asyncio.ensure_future(one(engine, request(runner, "steady", max_length=120)))
        await asyncio.sleep(0.1)
        failing = await asyncio.gather(
            one(engine, request(runner, "boom [[fault:error]]", max_length=60)), return_exceptions=True
        )
        later = await one(engine, request(runner, "later", max_length=20))
        return await steady, failing[0], later

    steady, failing, later = run(Engine(runner, faults=Faults(True)), go)
    assert isinstance(failing, GenerationFailed)
    assert steady == alone(runner, request(runner, "steady", max_length=120))
    assert later[0].startswith("later")


def test_out_of_memory_fails_the_step_with_503_and_the_engine_serves_on(runner):
    async def go(engine):
        bystander = asyncio.ensure_future(one(engine, request(runner, "bystander", max_length=200)))
        await asyncio.sleep(0.1)
        culprit = asyncio.ensure_future(one(engine, request(runner, "big [[fault:oom]]", max_length=60)))
        results = await asyncio.gather(bystander, culprit, return_exceptions=True)
        return results, await one(engine, request(runner, "after", max_length=20))

    (bystander, culprit), after = run(Engine(runner, faults=Faults(True)), go)
    assert isinstance(culprit, ResourceExhausted) and culprit.headers == {"Retry-After": "1"}
    assert isinstance(bystander, ResourceExhausted)  # it shared the step that ran out of memory
    assert after[0].startswith("after")


def test_markers_are_plain_text_without_fault_injection(runner):
    req = request(runner, "harmless [[fault:oom]]", max_length=60)
    assert run(Engine(runner), lambda engine: one(engine, req))[0].startswith("harmless [[fault:oom]]")


def test_the_queue_is_bounded(runner):
    async def go(engine):
        with pytest.raises(Overloaded) as caught:
            await engine.run([request(runner, f"p{i}", max_length=20) for i in range(3)])
        assert caught.value.headers == {"Retry-After": "1"}
        return await engine.run([request(runner, f"p{i}", max_length=20) for i in range(2)])

    assert len(run(Engine(runner, max_queued=2), go)) == 2


def test_a_deadline_stops_the_generation(runner):
    registry = CollectorRegistry()

    async def go(engine):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await engine.run([request(runner, "too slow", max_length=512)], timeout=0.2)
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.2)
        tokens = registry.get_sample_value("gptj_generated_tokens_total")
        await asyncio.sleep(0.3)
        return tokens, registry.get_sample_value("gptj_generated_tokens_total")

    before, after = run(Engine(runner, metrics=Metrics(registry)), go)
    assert before == after  # nothing generated for it any more
    assert registry.get_sample_value("gptj_requests_running") == 0


def test_token_and_latency_metrics(runner):
    registry = CollectorRegistry()
    reqs = [request(runner, "The weather", max_length=20), request(runner, "A", max_length=30)]

    async def go(engine):
        return await engine.run(reqs)

    run(Engine(runner, metrics=Metrics(registry)), go)
    value = registry.get_sample_value
    assert value("gptj_prompt_tokens_total") == sum(len(r.input_ids) for r in reqs)
    assert value("gptj_generated_tokens_total") == sum(r.sampling.max_length - len(r.input_ids) for r in reqs)
    assert value("gptj_queue_duration_seconds_count") == 2
    assert value("gptj_time_to_first_token_seconds_count") == 2
    assert value("gptj_time_per_output_token_seconds_count") == 2
    assert value("gptj_batch_size_count") > 0


def test_beam_searches_run_between_steps(runner):
    beam = request(runner, "Beams please", max_length=20, num_beams=3, num_return_sequences=2)
    greedy = request(runner, "Greedy meanwhile", max_length=60)

    async def go(engine):
        return await asyncio.gather(one(engine, greedy), one(engine, beam))

    texts = run(Engine(runner), go)
    assert texts == [alone(runner, greedy), [c.text for c in searched(runner, [beam])[0]]]
    assert len(texts[1]) == 2


def test_a_greedy_request_finishes_while_a_longer_beam_search_runs(runner):
    """The search advances one token per iteration beside the batch: it no longer runs to its end first."""
    beam = request(runner, "Beams first", max_length=200, num_beams=3)
    greedy = request(runner, "Greedy after", max_length=40)

    async def go(engine):
        searching = asyncio.ensure_future(one(engine, beam))
        await asyncio.sleep(0.05)  # the search has started
        quick = asyncio.ensure_future(one(engine, greedy))
        done, _ = await asyncio.wait([searching, quick], return_when=asyncio.FIRST_COMPLETED)
        order = [quick in done, searching in done]
        return order, await quick, await searching

    order, quick, searching = run(Engine(runner), go)
    assert order == [True, False]
    assert quick == alone(runner, greedy) and searching == [c.text for c in searched(runner, [beam])[0]]


def test_a_deadline_stops_a_running_beam_search(runner):
    registry = CollectorRegistry()

    async def go(engine):
        with pytest.raises(DeadlineExceeded):
            await engine.run([request(runner, "too slow", max_length=512, num_beams=4)], timeout=0.3)
        await asyncio.sleep(0.3)
        return engine._worker.searches.running, await one(engine, request(runner, "after", max_length=20))

    running, after = run(Engine(runner, metrics=Metrics(registry)), go)
    assert running == []  # dropped at the next iteration: nobody waits for it
    assert after[0].startswith("after") and registry.get_sample_value("gptj_requests_running") == 0


def test_a_failing_beam_request_fails_alone_beside_its_search_mate(runner):
    good = request(runner, "good beams", max_length=20, num_beams=2)
    prompt = "bad beams [[fault:error]]"
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    new = good.sampling.max_length - len(good.input_ids)
    bad = GenerationRequest(prompt, ids, replace(good.sampling, max_length=len(ids) + new))
    assert beam_key(bad) == beam_key(good)  # they share one search, which fails

    async def go(engine):
        return await asyncio.gather(one(engine, good), one(engine, bad), return_exceptions=True)

    results = run(Engine(runner, faults=Faults(True)), go)
    assert results[0] == [c.text for c in searched(runner, [good])[0]] and isinstance(results[1], GenerationFailed)


def test_the_batch_size_bound_makes_requests_queue(runner):
    registry = CollectorRegistry()
    seen = []

    async def go(engine):
        first = asyncio.ensure_future(one(engine, request(runner, "first", max_length=512)))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(one(engine, request(runner, "second", max_length=20)))
        await asyncio.sleep(0.05)
        assert not first.done()  # still generating: the second request must wait for its row
        seen.append(registry.get_sample_value("gptj_queue_size"))
        await asyncio.gather(first, second)
        seen.append(registry.get_sample_value("gptj_queue_size"))

    run(Engine(runner, BatchPolicy(max_batch_size=1), Metrics(registry)), go)
    assert seen == [1.0, 0.0]
    assert registry.get_sample_value("gptj_batch_size_bucket", {"le": "1.0"}) == registry.get_sample_value(
        "gptj_batch_size_count"
    )  # never more than one row per step


def test_stop_finishes_running_work_and_refuses_new(runner):
    engine = Engine(runner)
    engine.start()
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_task(one(engine, request(runner, "finish me", max_length=40)))
        loop.run_until_complete(asyncio.sleep(0.1))
        stopper = threading.Thread(target=engine.stop, kwargs={"timeout": 30})
        stopper.start()
        text = loop.run_until_complete(future)
        stopper.join()
        assert text[0].startswith("finish me")
        with pytest.raises(NotReady):
            loop.run_until_complete(one(engine, request(runner, "too late", max_length=10)))
    finally:
        loop.close()


def test_out_of_memory_frees_the_allocator_cache(runner, monkeypatch):
    import torch

    freed = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))

    async def go(engine):
        return await asyncio.gather(
            one(engine, request(runner, "x [[fault:oom]]", max_length=30)), return_exceptions=True
        )

    (result,) = run(Engine(runner, faults=Faults(True)), go)
    assert isinstance(result, ResourceExhausted) and freed == [1]


def test_a_stream_yields_pieces_that_add_up_to_the_completions(runner):
    req = request(runner, "Stream me", max_length=40, do_sample=True, num_return_sequences=2, seed=3)

    async def go(engine):
        pieces, done = {0: "", 1: ""}, None
        async for item in engine.stream(req):
            if isinstance(item, Piece):
                pieces[item.index] += item.text
            else:
                done = item.completions
        return pieces, done

    pieces, completions = run(Engine(runner), go)
    assert [pieces[0], pieces[1]] == [c.continuation for c in completions]
    assert [c.text for c in completions] == alone(runner, req)  # seeded: the same as without streaming


def test_closing_a_stream_stops_its_generation(runner):
    registry = CollectorRegistry()

    async def go(engine):
        stream = engine.stream(request(runner, "Long story", max_length=512))
        assert isinstance(await anext(stream), Piece)
        await stream.aclose()  # what a disconnect does
        deadline = time.monotonic() + 2
        while registry.get_sample_value("gptj_requests_running") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        tokens = registry.get_sample_value("gptj_generated_tokens_total")
        await asyncio.sleep(0.2)
        return tokens, registry.get_sample_value("gptj_generated_tokens_total")

    before, after = run(Engine(runner, metrics=Metrics(registry)), go)
    assert before == after < 511 and registry.get_sample_value("gptj_requests_running") == 0


def test_a_stream_has_the_same_deadline(runner):
    async def go(engine):
        with pytest.raises(DeadlineExceeded):
            async for _ in engine.stream(request(runner, "Too slow", max_length=512), timeout=0.1):
                pass

    run(Engine(runner), go)
