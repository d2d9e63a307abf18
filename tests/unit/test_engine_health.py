"""An engine that fails for good says so, and answers every request it holds with 503 at once."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.core import Finished, GenerationRequest, Piece
from predictor.engine import faults
from predictor.engine.engine import Engine
from predictor.engine.faults import Faults
from predictor.engine.health import Health
from predictor.errors import EngineUnhealthy, ResourceExhausted
from predictor.generation.runner import Runner
from predictor.loading.loader import load
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import BatchPolicy, Limits, parse_settings
from predictor.telemetry.metrics import Metrics

LONG = 2048  # the tiny model's whole context: a request that is still generating seconds later


@pytest.fixture(scope="module")
def runner(tiny_dir):
    return Runner(load(parse_settings(["--model", str(tiny_dir)], {})))


def request(runner, prompt: str, **fields) -> GenerationRequest:
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits(max_length=LONG))
    return GenerationRequest(prompt, ids, sampling)


def run(engine: Engine, coroutine_factory):
    engine.start()
    try:
        return asyncio.run(coroutine_factory(engine))
    finally:
        engine.stop(timeout=30)


async def outcome(awaitable):
    try:
        return await awaitable
    except Exception as exc:  # noqa: BLE001 - the test looks at which
        return exc


async def collect(stream):
    async for item in stream:
        if isinstance(item, Finished):
            return list(item.completions)


async def failing_all(engine: Engine, runner, culprit: GenerationRequest) -> tuple[list, float]:
    """A long stream that is generating, then ``culprit`` and one more request (queued behind a full
    batch of two): what each gets, and how long after the culprit arrived the last answer came."""
    streaming = engine.stream(request(runner, "in flight", max_length=LONG))
    first = await anext(streaming)
    assert isinstance(first, Piece)  # generating
    started = time.monotonic()
    results = await asyncio.gather(
        outcome(collect(streaming)),
        outcome(engine.run([culprit])),
        outcome(engine.run([request(runner, "queued", max_length=LONG)])),
    )
    return list(results), time.monotonic() - started


def assert_all_unhealthy(results, reason: str) -> None:
    for result in results:
        assert isinstance(result, EngineUnhealthy), result
        assert result.status == 503 and reason in result.message


def test_a_killed_engine_thread_fails_running_and_queued_requests_at_once(runner):
    registry = CollectorRegistry()
    engine = Engine(runner, BatchPolicy(max_batch_size=2), Metrics(registry), faults=Faults(True))

    async def go(engine):
        results, took = await failing_all(engine, runner, request(runner, "die [[fault:fatal]]", max_length=LONG))
        with pytest.raises(EngineUnhealthy):  # and new requests too
            await engine.run([request(runner, "after", max_length=10)])
        return results, took

    results, took = run(engine, go)
    assert_all_unhealthy(results, "the engine thread died")
    assert took < 2 and engine.failure == "the engine thread died"
    assert registry.get_sample_value("gptj_engine_healthy") == 0


def test_a_stalled_step_fails_the_engine_after_the_stall_bound(runner):
    engine = Engine(runner, BatchPolicy(max_batch_size=2), faults=Faults(True), stall_s=1)
    culprit = request(runner, "hang [[fault:stall]]", max_length=LONG)
    results, took = run(engine, lambda e: failing_all(e, runner, culprit))
    assert_all_unhealthy(results, "a generation step has run for more than --engine_stall_seconds (1 s)")
    assert 0.9 < took < 3


def test_an_idle_engine_is_not_stalled(runner):
    engine = Engine(runner, stall_s=1)

    async def go(engine):
        await asyncio.sleep(1.5)  # waiting for work, longer than the stall bound
        assert engine.failure is None
        return await engine.run([request(runner, "still here", max_length=10)])

    ((completion,),) = run(engine, go)
    assert completion.text.startswith("still here") and engine.failure is None


@pytest.mark.parametrize("where", ["advance", "join", "beams"])
def test_a_sticky_cuda_error_fails_the_engine_instead_of_each_request(runner, monkeypatch, where):
    """After a device-side assert every later CUDA call fails too: no per-request retries, no 500s."""
    engine = Engine(runner, BatchPolicy(max_batch_size=2))
    batch, narrowed = engine._worker.batch, []
    sticky = RuntimeError("CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` ...")

    def broken(*args, **kwargs):
        raise sticky

    monkeypatch.setattr(batch, "advance_each", lambda check: narrowed.append(1))
    if where == "advance":
        monkeypatch.setattr(batch, "advance", broken)
    elif where == "join":
        monkeypatch.setattr(batch, "join", broken)
    else:
        monkeypatch.setattr(runner, "start_beams", broken)  # the worker narrows starts down, and must not here

    async def go(engine):
        culprit = (
            request(runner, "beams", max_length=20, num_beams=2)
            if where == "beams"
            else request(runner, "step", max_length=20)
        )
        bystander = request(runner, "b", max_length=20)
        return await asyncio.gather(outcome(engine.run([culprit])), outcome(engine.run([bystander])))

    results = run(engine, go)
    assert_all_unhealthy(results, "an unrecoverable device error")
    assert narrowed == []


def test_an_injected_device_error_is_unrecoverable(runner):
    engine = Engine(runner, faults=Faults(True))
    results = run(engine, lambda e: outcome(e.run([request(runner, "x [[fault:device]]", max_length=20)])))
    assert_all_unhealthy([results], "an unrecoverable device error")


def test_out_of_memory_stays_recoverable(runner):
    engine = Engine(runner, faults=Faults(True))

    async def go(engine):
        oom = await outcome(engine.run([request(runner, "x [[fault:oom]]", max_length=20)]))
        return oom, await engine.run([request(runner, "fine", max_length=10)])

    oom, ((fine,),) = run(engine, go)
    assert isinstance(oom, ResourceExhausted) and fine.text.startswith("fine") and engine.failure is None


@pytest.mark.parametrize(
    "exc, unrecoverable",
    [
        (torch.AcceleratorError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("CUDA error: misaligned address"), True),
        (torch.AcceleratorError("CUDA error: unspecified launch failure"), True),
        (torch.AcceleratorError("CUDA error: invalid configuration argument"), False),  # the device still works
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (RuntimeError("CUDA error: out of memory"), False),
        (RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"), False),
        (ValueError("bad value"), False),
    ],
)
def test_which_errors_are_unrecoverable(exc, unrecoverable):
    assert faults.is_unrecoverable(exc) is unrecoverable


def test_another_cuda_error_is_unrecoverable_when_the_device_no_longer_works(monkeypatch):
    error = torch.AcceleratorError("CUDA error: invalid argument")
    monkeypatch.setattr(faults, "device_works", lambda: False)
    assert faults.is_unrecoverable(error)
    monkeypatch.setattr(faults, "device_works", lambda: True)
    assert not faults.is_unrecoverable(error)


def test_a_wrapped_device_error_is_still_unrecoverable():
    try:
        try:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as inner:
            raise RuntimeError("generation failed") from inner
    except RuntimeError as outer:
        assert faults.is_unrecoverable(outer)


def test_health_latches_the_first_failure():
    health = Health(stall_s=100)
    assert health.failure(thread_alive=True) is None
    health.beat()
    assert health.failure(thread_alive=True) is None  # busy, within the bound
    assert health.failure(thread_alive=False) == "the engine thread died"
    assert not health.fail("something else")
    assert health.failure(thread_alive=True) == "the engine thread died"
