"""The engine: one worker thread owns the model; the event loop hands it work and awaits futures.

Generation never runs on the event loop, so health probes and /metrics answer while the GPU works.
Every request without beams joins the continuous batch (continuous.py) and leaves it when done:
a request that arrives while others generate joins at the next step. Beam searches run between
steps as left-padded ``generate`` calls (runner.py). Measured on our CPUs (docs/performance.md):
16 requests that arrive over 100 ms (16 threads opening connections) would split a batch that waits
for its members; joining at the next step keeps them together.

Bounds: at most ``max_queued`` prompts wait (more get 429 at once); a request's deadline cancels its
futures, and a cancelled job leaves the batch at the next step, so its generation really stops.
The thread's loop, and how failures are narrowed down, are in worker.py.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import AsyncIterator, Sequence

from predictor.core import Completion, GenerationRequest
from predictor.engine.faults import Faults
from predictor.engine.jobs import Job
from predictor.engine.worker import Backend, Worker
from predictor.errors import DeadlineExceeded, NotReady, Overloaded
from predictor.settings import BatchPolicy
from predictor.telemetry.metrics import Metrics, set_gauge
from predictor.telemetry.records import RequestRecord


class Engine:
    """A bounded queue in front of a single worker thread that runs the batches."""

    def __init__(self, backend: Backend, policy: BatchPolicy = BatchPolicy(), metrics: Metrics | None = None,
                 max_queued: int = 1 << 30, faults: Faults | None = None) -> None:
        self._metrics = metrics
        self._max_queued, self._queued, self._lock = max_queued, 0, threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = Worker(backend, policy, metrics, faults or Faults(), self._queue, self._release)
        self._thread = threading.Thread(target=self._worker.work, name="engine", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued and running work, then end the worker thread."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        return self._queued == 0 and not self._worker.running

    async def run(self, requests: Sequence[GenerationRequest], record: RequestRecord | None = None,
                  timeout: float | None = None) -> list[list[Completion]]:
        """Generate for every request; their completions in order. Cancelling this stops their generation."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        self._reserve(len(requests))
        loop = asyncio.get_running_loop()
        jobs = [Job(request, loop.create_future(), loop, record) for request in requests]
        for job in jobs:
            self._queue.put(job)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), timeout))
        except TimeoutError:
            raise DeadlineExceeded("the request was not finished within the server's request timeout; "
                                   "its generation was stopped") from None
        finally:
            for job in jobs:  # a failed or abandoned request takes its other prompts with it
                if not job.future.done():
                    job.future.cancel()

    async def stream(self, request: GenerationRequest, record: RequestRecord | None = None,
                     timeout: float | None = None) -> AsyncIterator[tuple]:
        """Generate for one request, yielding ("text", sequence, piece) as the text grows, then
        ("done", None, completions). Closing the iterator stops the generation."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        self._reserve(1)
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), loop, record, stream=asyncio.Queue())
        self._queue.put(job)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    kind, index, piece = await asyncio.wait_for(job.stream.get(), remaining)
                except TimeoutError:
                    raise DeadlineExceeded("the request was not finished within the server's request "
                                           "timeout; its generation was stopped") from None
                if kind == "end":
                    break
                yield kind, index, piece
            yield "done", None, job.future.result()
        finally:
            if not job.future.done():
                job.future.cancel()

    def _reserve(self, count: int) -> None:
        with self._lock:
            if self._queued + count > self._max_queued:
                raise Overloaded(f"the queue is full ({self._queued} prompts waiting, at most "
                                 f"{self._max_queued}); retry later")
            self._queued += count
        set_gauge(self._metrics, "queue_size", self._queued)

    def _release(self, count: int) -> None:
        if count:
            with self._lock:
                self._queued -= count
            set_gauge(self._metrics, "queue_size", self._queued)
