"""The engine: one worker thread owns the model; the event loop hands it work and awaits futures.

Generation never runs on the event loop, so health probes and /metrics answer while the GPU works.
Every request without beams joins the continuous batch (continuous.py) and leaves it when done:
a request that arrives while others generate joins at the next step. Beam searches run between
steps as left-padded ``generate`` calls (runner.py). Measured on our CPUs (docs/performance.md):
16 requests that arrive over 100 ms (16 threads opening connections) would split a batch that waits
for its members; joining at the next step keeps them together.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .batching import admit, continuous, rows, select_beams
from .continuous import Done
from .errors import GenerationFailed, NotReady
from .metrics import Metrics
from .sampling import GenerationRequest
from .settings import BatchPolicy

log = logging.getLogger("predictor")


class Backend(Protocol):
    """What the engine needs from the model side (runner.Runner)."""

    def continuous(self): ...

    def run_batch(self, requests: Sequence[GenerationRequest]) -> list: ...

    def texts(self, prompt: str, continuations: Sequence[Sequence[int]]) -> list[str]: ...


@dataclass(eq=False)  # identity: jobs are keys of the running table
class _Job:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    results: list = field(default_factory=list)  # new tokens per sequence, as rows finish


class Engine:
    """A queue in front of a single worker thread that runs the batches."""

    def __init__(self, backend: Backend, policy: BatchPolicy = BatchPolicy(), metrics: Metrics | None = None) -> None:
        self._backend = backend
        self._batch = backend.continuous()
        self._policy = policy
        self._metrics = metrics
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="engine", daemon=True)
        self._running: dict[_Job, int] = {}  # job -> sequences still generating
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued and running work, then end the worker thread."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    async def submit(self, request: GenerationRequest) -> list[str]:
        """Queue ``request`` and wait for its texts. Cancelling the caller drops it from the batch."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._count("queue_size", +1)
        self._queue.put(_Job(request, future, loop))
        return await future

    def _work(self) -> None:
        waiting: list[_Job] = []  # for the continuous batch
        beams: list[_Job] = []
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

    def _collect(self, waiting: list[_Job], beams: list[_Job], wait: bool) -> bool:
        """Move arrivals into the lists; when idle, wait for a burst to gather. True once stopping."""
        policy = self._policy
        first = last = None
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

    def _forget_cancelled(self, waiting: list[_Job], beams: list[_Job]) -> None:
        """Requests whose client went away: never start them; stop them and free their rows."""
        for jobs in (waiting, beams):
            gone = [job for job in jobs if job.future.cancelled()]
            for job in gone:
                jobs.remove(job)
            self._count("queue_size", -len(gone))
        gone = {job for job in self._running if job.future.cancelled()}
        if gone:
            self._batch.leave(gone)
            for job in gone:
                del self._running[job]
            self._set("requests_running", len(self._running))

    def _join(self, waiting: list[_Job]) -> None:
        running_rows = len(self._batch.rows)
        count = admit(running_rows, self._batch.longest, [job.request for job in waiting], self._policy)
        if not count:
            return
        joining, waiting[:] = waiting[:count], waiting[count:]
        self._count("queue_size", -count)
        self._enter(joining)

    def _enter(self, joining: list[_Job]) -> None:
        """Prefill and add ``joining``; if that fails, each one alone, so only the culprit fails."""
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
        self._set("requests_running", len(self._running))
        self._finish(done)

    def _advance(self) -> None:
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(self._batch.rows))
        try:
            done = self._batch.advance()
        except Exception as exc:  # one step serves every row: all of them fail
            for job in self._batch.clear():
                self._running.pop(job, None)
                self._fail(job, exc)
            self._set("requests_running", len(self._running))
            return
        self._finish(done)

    def _finish(self, done: list[Done]) -> None:
        for row in done:
            job = row.owner
            job.results[row.index] = row.tokens
            self._running[job] -= 1
            if not self._running[job]:
                del self._running[job]
                _settle(job, result=self._backend.texts(job.request.prompt, job.results))
        self._set("requests_running", len(self._running))

    def _run_beams(self, beams: list[_Job]) -> None:
        chosen = set(select_beams([job.request for job in beams], self._policy))
        batch = [job for i, job in enumerate(beams) if i in chosen]
        beams[:] = [job for i, job in enumerate(beams) if i not in chosen]
        self._count("queue_size", -len(batch))
        if self._metrics is not None:
            self._metrics.batch_size.observe(sum(rows(job.request) for job in batch))
        self._set("requests_running", len(self._running) + len(batch))
        results = self._backend.run_batch([job.request for job in batch])
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._fail(job, result)
            else:
                _settle(job, result=result)
        self._set("requests_running", len(self._running))

    def _fail(self, job: _Job, exc: BaseException) -> None:
        log.error("generation failed", exc_info=exc)
        _settle(job, exception=GenerationFailed("generation failed; see the server log"))

    def _count(self, name: str, delta: int) -> None:
        if self._metrics is not None and delta:
            getattr(self._metrics, name).inc(delta)

    def _set(self, name: str, value: int) -> None:
        if self._metrics is not None:
            getattr(self._metrics, name).set(value)


def _settle(job: _Job, *, result: list[str] | None = None, exception: BaseException | None = None) -> None:
    def apply() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if exception is not None:
            job.future.set_exception(exception)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
