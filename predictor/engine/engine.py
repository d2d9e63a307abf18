"""The engine: one worker thread owns the model; the event loop hands it work and awaits futures.

Generation never runs on the event loop, so health probes and /metrics answer while the GPU works;
text does not run on the engine thread: the thread hands over token ids (core.Delta) and the event
loop makes the text (outputs.py), streamed or not, and ends a sequence at its stop string.
Every request without beams joins the continuous batch (continuous.py) and leaves it when done:
a request that arrives while others generate joins at the next step. Beam searches advance one
token per iteration beside it (generation/diverse.py; the policy: scheduling.py). Measured on our
CPUs (docs/performance.md): 16 requests that arrive over 100 ms (16 threads opening connections)
would split a batch that waits for its members; joining at the next step keeps them together.

Bounds: at most ``max_queued`` prompts wait (more get 429 at once); a request's deadline cancels its
futures, and a cancelled job leaves the batch at the next step, so its generation really stops.
The thread's loop, and how failures are narrowed down, are in worker.py.

Health (health.py): a watchdog thread checks that the worker lives and that no step runs past
``stall_s``. Once the engine failed, every request it holds, queued or generating, gets 503 at once
(not at its deadline), new ones get 503, and ``failure`` says why (liveness and readiness read it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import AsyncIterator, Sequence

from predictor.core import Completion, Finished, GenerationRequest, Piece
from predictor.engine.faults import Faults
from predictor.engine.health import Health
from predictor.engine.jobs import END, Job
from predictor.engine.outputs import Outputs, Tokenizer
from predictor.engine.worker import Backend, Worker
from predictor.errors import DeadlineExceeded, EngineUnhealthy, NotReady, Overloaded
from predictor.settings import BatchPolicy, Operations
from predictor.telemetry.metrics import Metrics, set_gauge
from predictor.telemetry.records import RequestRecord

log = logging.getLogger("predictor")


class Engine:
    """A bounded queue in front of a single worker thread that runs the batches."""

    def __init__(
        self,
        backend: Backend,
        policy: BatchPolicy = BatchPolicy(),
        metrics: Metrics | None = None,
        max_queued: int = 1 << 30,
        faults: Faults | None = None,
        stall_s: float = Operations.engine_stall_s,
    ) -> None:
        self._metrics = metrics
        self._max_queued, self._queued, self._lock = max_queued, 0, threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._faults, self._health = faults or Faults(), Health(stall_s)
        self._worker = Worker(backend, policy, metrics, self._faults, self._queue, self._release, self._health)
        self._tokenizer = Tokenizer(backend.decode, backend.token_texts)
        self._thread = threading.Thread(target=self._worker.work, name="engine", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="engine-watchdog", daemon=True)
        self._jobs: set[Job] = set()  # every job not yet answered: what a failure must fail
        self._started = self._stopped = False

    def start(self) -> None:
        self._started = True
        self._thread.start()
        self._watchdog.start()
        set_gauge(self._metrics, "engine_healthy", 1)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued and running work, then end the worker thread."""
        self._stopped = True
        self._queue.put(None)
        self._faults.release()
        self._health.changed.set()
        self._thread.join(timeout)

    @property
    def failure(self) -> str | None:
        """Why the engine can no longer serve (it stays so), or None while it is healthy."""
        alive = not self._started or self._stopped or self._thread.is_alive()
        return self._health.failure(thread_alive=alive)

    def _watch(self) -> None:
        """Until stop(): notice a failure within a fraction of the stall bound, then fail every job."""
        tick = min(1.0, self._health.stall_s / 10)
        while not self._stopped:
            if self.failure is not None:
                self._fail_all(self.failure)
                return
            self._health.changed.wait(tick)

    def _fail_all(self, reason: str) -> None:
        set_gauge(self._metrics, "engine_healthy", 0)
        with self._lock:  # after the failure latched: no new job joins the set (_admit checks it)
            jobs = list(self._jobs)
        log.error(
            "engine unhealthy: %s; %d request(s) in flight or queued get 503, and so will new ones; "
            "liveness answers 503 until the pod is restarted",
            reason,
            len(jobs),
        )
        for job in jobs:
            job.settle(exception=EngineUnhealthy.because(reason))

    def _admit(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            failure = self.failure
            if failure is not None:
                raise EngineUnhealthy.because(failure)
            self._jobs.update(jobs)

    def _forget(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            self._jobs.difference_update(jobs)

    @property
    def idle(self) -> bool:
        return self._queued == 0 and not (self._worker.running or self._worker.searches.running)

    async def run(
        self, requests: Sequence[GenerationRequest], record: RequestRecord | None = None, timeout: float | None = None
    ) -> list[list[Completion]]:
        """Generate for every request; their completions in order. Cancelling this stops their generation."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        jobs = [self._job(request, record, streaming=False) for request in requests]
        self._admit(jobs)
        try:
            self._reserve(len(requests))
            for job in jobs:
                self._queue.put(job)
            return list(await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), timeout))
        except TimeoutError:
            raise DeadlineExceeded(
                "the request was not finished within the server's request timeout; its generation was stopped"
            ) from None
        finally:
            self._forget(jobs)
            for job in jobs:  # a failed or abandoned request takes its other prompts with it
                if not job.future.done():
                    job.future.cancel()

    async def stream(
        self, request: GenerationRequest, record: RequestRecord | None = None, timeout: float | None = None
    ) -> AsyncIterator[Piece | Finished]:
        """Generate for one request, yielding a core.Piece as each sequence's text (or, first, the
        prompt's logprobs) grows, then core.Finished. Closing the iterator stops the generation."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = self._job(request, record, streaming=True)
        self._admit([job])
        deadline = None if timeout is None else loop.time() + timeout
        try:
            self._reserve(1)
            self._queue.put(job)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    piece = await asyncio.wait_for(job.stream.get(), remaining)
                except TimeoutError:
                    raise DeadlineExceeded(
                        "the request was not finished within the server's request timeout; its generation was stopped"
                    ) from None
                if piece is END:
                    break
                yield piece
            yield Finished(tuple(job.future.result()))
        finally:
            self._forget([job])
            if not job.future.done():
                job.future.cancel()

    def _job(self, request: GenerationRequest, record: RequestRecord | None, streaming: bool) -> Job:
        loop = asyncio.get_running_loop()
        return Job(
            request,
            loop.create_future(),
            loop,
            record,
            stream=asyncio.Queue() if streaming else None,
            outputs=Outputs(request, self._tokenizer, streaming),
            metrics=self._metrics,
            finish_row=self._worker.finish,
        )

    def _reserve(self, count: int) -> None:
        with self._lock:
            if self._queued + count > self._max_queued:
                raise Overloaded(
                    f"the queue is full ({self._queued} prompts waiting, at most {self._max_queued}); retry later"
                )
            self._queued += count
        set_gauge(self._metrics, "queue_size", self._queued)

    def _release(self, count: int) -> None:
        if count:
            with self._lock:
                self._queued -= count
            set_gauge(self._metrics, "queue_size", self._queued)
