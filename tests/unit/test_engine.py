"""The engine thread: results, isolation of failures, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from predictor.engine import Engine
from predictor.errors import GenerationFailed, NotReady
from predictor.sampling import GenerationRequest, Sampling


def request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, input_ids=(1,), sampling=Sampling(max_length=2))


def run_engine(run, coro_factory):
    engine = Engine(run)
    engine.start()
    try:
        return asyncio.run(coro_factory(engine))
    finally:
        engine.stop(timeout=5)


def test_results_come_back_to_their_callers():
    async def go(engine):
        return await asyncio.gather(*(engine.submit(request(p)) for p in "abc"))

    assert run_engine(lambda r: [r.prompt * 2], go) == [["aa"], ["bb"], ["cc"]]


def test_a_failing_request_fails_alone_and_the_worker_lives_on():
    def run(r):
        if r.prompt == "bad":
            raise RuntimeError("boom")
        return [r.prompt]

    async def go(engine):
        return await asyncio.gather(engine.submit(request("bad")), engine.submit(request("good")),
                                    return_exceptions=True)

    bad, good = run_engine(run, go)
    assert isinstance(bad, GenerationFailed) and "boom" not in bad.message
    assert good == ["good"]


def test_generation_runs_on_the_engine_thread_not_the_event_loop():
    threads = []

    async def go(engine):
        return await engine.submit(request("x"))

    run_engine(lambda r: threads.append(threading.current_thread().name) or ["x"], go)
    assert threads == ["engine"]


def test_a_cancelled_request_is_skipped_if_it_has_not_started():
    started, release, ran = threading.Event(), threading.Event(), []

    def run(r):
        ran.append(r.prompt)
        if r.prompt == "first":
            started.set()
            release.wait(5)
        return [r.prompt]

    async def go(engine):
        first = asyncio.ensure_future(engine.submit(request("first")))
        second = asyncio.ensure_future(engine.submit(request("second")))
        await asyncio.to_thread(started.wait, 5)
        second.cancel()
        release.set()
        return await first

    assert run_engine(run, go) == ["first"]
    assert ran == ["first"]


def test_submit_after_stop_is_refused():
    engine = Engine(lambda r: [r.prompt])
    engine.start()
    engine.stop(timeout=5)
    with pytest.raises(NotReady):
        asyncio.run(engine.submit(request("late")))
