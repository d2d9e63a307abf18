"""The engine: one worker thread owns the model; the event loop hands it work and awaits futures.

Generation never runs on the event loop, so health probes and /metrics answer while the GPU works.
Every request without beams joins the continuous batch (continuous.py) and leaves it when done:
a request that arrives while others generate joins at the next step. Beam searches run between
steps as left-padded ``generate`` calls (runner.py). Measured on our CPUs (docs/performance.md):
16 requests that arrive over 100 ms (16 threads opening connections) would split a batch that waits
for its members; joining at the next step keeps them together.

Bounds: at most ``max_queued`` prompts wait (more get 429 at once); a request's deadline cancels its
futures, and a cancelled job leaves the batch at the next step, so its generation really stops.
Failures: an out-of-memory step fails the requests in it with 503 and frees cached memory; any other
failure is narrowed down to the requests that cause it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Protocol, Sequence

from . import faults as fault
from .batching import admit, continuous, rows, select_beams
from .continuous import Done
from .errors import DeadlineExceeded, GenerationFailed, NotReady, Overloaded, ResourceExhausted
from .jobs import Job
from .metrics import Metrics
from .observe import RequestRecord
from .sampling import GenerationRequest
from .settings import BatchPolicy

log = logging.getLogger("predictor")


class Backend(Protocol):
    """What the engine needs from the model side (runner.Runner)."""

    def continuous(self): ...

    def run_batch(self, requests: Sequence[GenerationRequest], stop=None) -> list: ...

    def texts(self, prompt: str, continuations: Sequence[Sequence[int]]) -> list[str]: ...


class Engine:
    """A bounded queue in front of a single worker thread that runs the batches."""

    def __init__(self, backend: Backend, policy: BatchPolicy = BatchPolicy(), metrics: Metrics | None = None,
                 max_queued: int = 1 << 30, faults: fault.Faults | None = None) -> None:
        self._backend, self._policy, self._metrics = backend, policy, metrics
        self._batch = backend.continuous()
        self._max_queued, self._queued, self._lock = max_queued, 0, threading.Lock()
        self._faults = faults or fault.Faults()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="engine", daemon=True)
        self._running: dict[Job, int] = {}  # job -> sequences still generating
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
        return self._queued == 0 and not self._running

    async def run(self, requests: Sequence[GenerationRequest], record: RequestRecord | None = None,
                  timeout: float | None = None) -> list[list[str]]:
        """Generate for every request; their texts in order. Cancelling this stops their generation."""
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

    def _reserve(self, count: int) -> None:
        with self._lock:
            if self._queued + count > self._max_queued:
                raise Overloaded(f"the queue is full ({self._queued} prompts waiting, at most "
                                 f"{self._max_queued}); retry later")
            self._queued += count
        self._gauge("queue_size", self._queued)

    def _release(self, count: int) -> None:
        if count:
            with self._lock:
                self._queued -= count
            self._gauge("queue_size", self._queued)

    def _work(self) -> None:
        waiting: list[Job] = []  # for the continuous batch
        beams: list[Job] = []
        closing = False
        while True:
            idle = not (waiting or beams or self._running)
            if idle and closing:
                return
            closing = self._collect(waiting, beams, wait=idle) or closing
            self._forget_cancelled(waiting, beams)
            if beams:
                self._run_beams(beams)
            self._join(waiting)
            if self._running:
                self._advance()

    def _collect(self, waiting: list[Job], beams: list[Job], wait: bool) -> bool:
        """Move arrivals into the lists; when idle, wait for a burst to gather. True once stopping."""
        policy, first, last = self._policy, None, None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                if not wait:
                    return False
                if first is None:
                    job = self._queue.get()
                else:
                    deadline = min(last + policy.batch_wait_s, first + policy.max_batch_wait_s)
                    try:
                        job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        return False
            if job is None:
                return True
            (waiting if continuous(job.request) else beams).append(job)
            first, last = first or job.arrived, job.arrived
            if wait and sum(rows(j.request) for j in waiting) >= policy.max_batch_size:
                wait = False

    def _forget_cancelled(self, waiting: list[Job], beams: list[Job]) -> None:
        """Requests whose client went away or whose deadline passed: never start, or stop, them."""
        for jobs in (waiting, beams):
            gone = [job for job in jobs if job.cancelled]
            jobs[:] = [job for job in jobs if not job.cancelled]
            self._release(len(gone))
        gone = {job for job in self._running if job.cancelled}
        if gone:
            for job, tokens in self._batch.leave(gone).items():
                job.generated(tokens, self._metrics, finished=False)
            for job in gone:
                del self._running[job]
            self._running_changed()

    def _join(self, waiting: list[Job]) -> None:
        count = admit(len(self._batch.rows), self._batch.longest, [job.request for job in waiting], self._policy)
        if count:
            joining, waiting[:] = waiting[:count], waiting[count:]
            self._release(count)
            for job in joining:
                job.admitted(self._metrics)
            self._enter(joining)

    def _enter(self, joining: list[Job]) -> None:
        """Prefill and add ``joining``; if that fails, each one alone, so only the culprit fails."""
        before = self._batch.tokens_generated
        try:
            done = self._batch.join([(job, job.request) for job in joining])
        except Exception as exc:  # the running rows are untouched: join changes nothing until it succeeds
            if len(joining) == 1:
                self._fail(joining[0], exc)
            else:
                log.warning("%d requests failed to join together (%s); joining them one by one", len(joining), exc)
                for job in joining:
                    self._enter([job])
            return
        for job in joining:
            self._running[job] = job.request.sampling.num_return_sequences
            job.results = [None] * self._running[job]
            job.first_token(self._metrics)
        self._count_tokens(before)
        self._finish(done)

    def _advance(self) -> None:
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(self._batch.rows))
        before = self._batch.tokens_generated
        try:
            self._faults.check(job.request for job in self._running)
            done = self._batch.advance()
        except Exception as exc:
            if fault.is_out_of_memory(exc):  # the step as a whole did not fit: its requests fail
                self._out_of_memory(exc)
                return
            log.warning("a decode step failed (%s); stepping each request alone", exc)
            done, failed = self._batch.advance_each(lambda job: self._faults.check([job.request]))
            for job, error in failed.items():
                del self._running[job]
                self._fail(job, error)
        self._count_tokens(before)
        self._finish(done)

    def _out_of_memory(self, exc: BaseException) -> None:
        for job in self._batch.clear():
            self._running.pop(job, None)
            self._fail(job, exc)
        fault.free_cached_memory()
        self._running_changed()

    def _finish(self, done: list[Done]) -> None:
        for row in done:
            job = row.owner
            job.results[row.index] = row.tokens
            self._running[job] -= 1
            if not self._running[job]:
                del self._running[job]
                job.generated(sum(len(tokens) for tokens in job.results), self._metrics, finished=True)
                job.settle(result=self._backend.texts(job.request.prompt, job.results))
        self._running_changed()

    def _run_beams(self, beams: list[Job]) -> None:
        chosen = set(select_beams([job.request for job in beams], self._policy))
        batch = [job for i, job in enumerate(beams) if i in chosen]
        beams[:] = [job for i, job in enumerate(beams) if i not in chosen]
        self._release(len(batch))
        for job in batch:
            job.admitted(self._metrics)
        if self._metrics is not None:
            self._metrics.batch_size.observe(sum(rows(job.request) for job in batch))
        self._gauge("requests_running", len(self._running) + len(batch))
        results = self._beam_results(batch)
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._fail(job, result)
            else:
                job.generated(result.tokens, self._metrics, finished=False)
                if self._metrics is not None:
                    self._metrics.generated_tokens.inc(result.tokens)
                job.settle(result=result.texts)
        self._running_changed()

    def _beam_results(self, batch: list[Job]) -> list:
        stop = lambda: all(job.cancelled for job in batch)  # noqa: E731 - stop a search nobody awaits
        try:
            self._faults.check(job.request for job in batch)
            return self._backend.run_batch([job.request for job in batch], stop)
        except Exception as exc:  # injected faults: narrow down like run_batch does
            if len(batch) == 1:
                return [exc]
            return [self._beam_results([job])[0] for job in batch]

    def _fail(self, job: Job, exc: BaseException) -> None:
        if fault.is_out_of_memory(exc):
            log.error("out of GPU memory; the batch's requests get 503 (%s)", exc)
            job.settle(exception=ResourceExhausted("the server ran out of GPU memory for this batch; retry later"))
        else:
            log.error("generation failed", exc_info=exc)
            job.settle(exception=GenerationFailed("generation failed; see the server log"))

    def _count_tokens(self, before: int) -> None:
        if self._metrics is not None and self._batch.tokens_generated > before:
            self._metrics.generated_tokens.inc(self._batch.tokens_generated - before)

    def _running_changed(self) -> None:
        self._gauge("requests_running", len(self._running))

    def _gauge(self, name: str, value: int) -> None:
        if self._metrics is not None:
            getattr(self._metrics, name).set(value)
