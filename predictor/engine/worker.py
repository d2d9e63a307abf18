"""The engine's worker thread: it owns the model and runs every step (engine.py hands it jobs).

Each pass of its loop takes the arrivals, forgets cancelled jobs and rows a stop string ended, starts
what scheduling.next_start
picks (requests joining the continuous batch, or a beam search), advances every running beam search one
token and the continuous batch one token (the policy: scheduling.py). Each step's outcome goes to the
event loop as token ids (core.Delta), never text: the thread never calls the tokenizer (jobs.py and
outputs.py make the text). Failures are narrowed down to the
requests that cause them; an out-of-memory step fails its requests and frees cached memory.
A long prompt advances by one prefill chunk per pass (generation/prefill.py): its request is running
from its join on, and gets its first token when its last chunk is done.
An unrecoverable device error, or anything that escapes the loop, ends the thread with the failure
latched in its Health (health.py): the engine then fails every request with 503.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
from typing import Callable, Protocol, Sequence

from predictor.core import Delta, GenerationRequest
from predictor.engine import faults as fault
from predictor.engine.health import Health
from predictor.engine.jobs import Job, deliver, new_delta
from predictor.engine.scheduling import BEAMS, JOIN, Load, next_start, rows
from predictor.engine.searches import Searches
from predictor.errors import GenerationFailed, ResourceExhausted
from predictor.generation.continuous import Done
from predictor.generation.retry import together_or_alone
from predictor.settings import BatchPolicy
from predictor.telemetry.metrics import Metrics, set_gauge

log = logging.getLogger("predictor")


class Backend(Protocol):
    """What the engine needs from the model side (generation/runner.Runner)."""

    def continuous(self): ...

    def start_beams(self, requests: Sequence[GenerationRequest]): ...  # a search: rows, length, step(), done

    def beam_outputs(self, requests: Sequence[GenerationRequest], search) -> list[list[Delta]]: ...

    # Called off the engine thread only (outputs.py): the engine thread makes no text.
    def decode(self, tokens: Sequence[int]) -> str: ...

    def token_texts(self, ids: Sequence[int]) -> list[str]: ...


class Worker:
    """Runs on the engine thread only; ``release(n)`` tells the engine n queued prompts left the queue."""

    def __init__(
        self,
        backend: Backend,
        policy: BatchPolicy,
        metrics: Metrics | None,
        faults: fault.Faults,
        jobs: queue.Queue,
        release: Callable[[int], None],
        health: Health,
    ) -> None:
        self._backend, self._policy, self._metrics, self._faults = backend, policy, metrics, faults
        self._queue, self._release, self._health = jobs, release, health
        self.batch = backend.continuous()
        # A long prompt joins in chunks, one per step (generation/prefill.py); a failed chunk fails its
        # request alone, an unrecoverable error still ends the thread.
        self.batch.max_prefill_tokens = policy.max_prefill_tokens
        self.batch.check_prefill = lambda jobs: faults.check_prefill(job.request for job in jobs)
        self.batch.fatal = fault.is_unrecoverable
        self.running: dict[Job, int] = {}  # job -> sequences still generating (or prefilling) in the batch
        self.searches = Searches(backend, faults.check)
        self._ended: collections.deque[tuple[Job, int]] = collections.deque()  # rows a stop string ended

    def finish(self, job: Job, index: int) -> None:
        """Drop sequence ``index`` of ``job`` at the next step (thread-safe: the event loop calls it)."""
        self._ended.append((job, index))  # deque.append is atomic

    def work(self) -> None:
        """The thread's body: the loop, and the engine's failure if anything ends it early."""
        try:
            self._loop()
        except BaseException as exc:  # whatever it is, the engine must say it failed
            reason = "an unrecoverable device error" if fault.is_unrecoverable(exc) else "the engine thread died"
            log.critical("engine failed: %s", reason, exc_info=exc)
            self._health.fail(reason)

    def _loop(self) -> None:
        """Until stop() and every request is answered, or the engine failed. One pass: scheduling.py."""
        waiting: list[Job] = []  # both kinds, in arrival order
        closing = False
        while not self._health.failed:
            idle = not (waiting or self.running or self.searches.running)
            if idle and closing:
                return
            if idle:
                self._health.idle()
            closing = self._collect(waiting, wait=idle) or closing
            self._health.beat()
            self._forget_cancelled(waiting)
            self._forget_ended()
            self._start(waiting)
            if self._metrics is not None and (self.running or self.searches.running):
                self._metrics.batch_size.observe(len(self.batch.rows) + self.searches.rows)  # not prefilling
            if self.searches.running:
                self._step_beams()
            if self.running:
                self._advance()

    def _collect(self, waiting: list[Job], wait: bool) -> bool:
        """Move arrivals into ``waiting``; when idle, wait for a burst to gather. True once stopping."""
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
            waiting.append(job)
            first, last = first or job.arrived, job.arrived
            if wait and sum(rows(j.request) for j in waiting) >= policy.max_batch_size:
                wait = False

    def _load(self) -> Load:
        # occupied: the rows generating and those still prefilling (their cache is being built)
        return Load(self.batch.occupied, self.batch.longest, self.searches.rows, self.searches.tokens)

    def _start(self, waiting: list[Job]) -> None:
        """The iteration's prefill slot (scheduling.next_start): a join, or one beam search's start."""
        kind, chosen = next_start([job.request for job in waiting], self._load(), self._policy)
        if kind is None:
            return
        jobs, taken = [waiting[i] for i in chosen], set(chosen)
        waiting[:] = [job for i, job in enumerate(waiting) if i not in taken]
        self._release(len(jobs))
        for job in jobs:
            job.admitted(self._metrics)
        if kind == JOIN:
            self._enter(jobs)
        elif kind == BEAMS:
            self._start_beams(jobs)

    def _forget_cancelled(self, waiting: list[Job]) -> None:
        """Requests whose client went away or whose deadline passed: never start, or stop, them."""
        gone = [job for job in waiting if job.cancelled]
        waiting[:] = [job for job in waiting if not job.cancelled]
        self._release(len(gone))
        if self.searches.abandoned():
            self._running_changed()
        gone = {job for job in self.running if job.cancelled}
        if gone:
            self.batch.leave(gone)  # the tokens they had were counted as the event loop received them
            for job in gone:
                del self.running[job]
            self._running_changed()

    def _forget_ended(self) -> None:
        """Rows whose stop string the event loop found: their slots are free for the next step."""
        ended = set()
        while self._ended:
            ended.add(self._ended.popleft())
        if ended:
            for job, _ in self.batch.finish(ended):
                self._sequence_done(job)
            self._running_changed()

    def _enter(self, joining: list[Job]) -> None:
        """Prefill and add ``joining``; if that fails, each one alone (retry.py), so only the culprit fails."""
        # A failed join leaves the running rows untouched: join changes nothing until it succeeds.
        done = []
        for jobs, outcome in together_or_alone(
            joining,
            self._join_batch,
            "%d requests failed to join together (%s); joining them one by one",
            fatal=fault.is_unrecoverable,
        ):
            if isinstance(outcome, Exception):
                self._fail(jobs[0], outcome)
                continue
            done += outcome
            for job in jobs:  # running from now on, though a long prompt's first token comes later
                self.running[job] = job.request.sampling.num_return_sequences
        self._running_changed()  # before a streaming client hears of its first token
        self._prefilled()
        self._hand_over(done)

    def _join_batch(self, jobs: Sequence[Job]) -> list[Done]:
        return self.batch.join([(job, job.request) for job in jobs])  # batch.check_prefill: faults

    def _prefilled(self) -> None:
        """The requests whose prefill finished (in join or advance): their time to first token (their
        prompt logprobs, when asked, go out with their first Delta)."""
        for job in self.batch.take_prefilled():
            job.first_token(self._metrics)

    def _advance(self) -> None:
        try:
            self._faults.check(row.owner.request for row in self.batch.rows)  # not the rows still prefilling
            done = self.batch.advance()
        except Exception as exc:
            if fault.is_unrecoverable(exc):  # every later step would fail too: the engine failed
                raise
            if fault.is_out_of_memory(exc):  # the step as a whole did not fit: its requests fail
                self._out_of_memory(exc)
                return
            log.warning("a decode step failed (%s); stepping each request alone", exc)
            done, failed = self.batch.advance_each(lambda job: self._faults.check([job.request]))
            for job, error in failed.items():
                del self.running[job]
                self._fail(job, error)
        for job, error in self.batch.take_failed().items():  # a prefill chunk: only its request fails
            del self.running[job]
            self._fail(job, error)
            if fault.is_out_of_memory(error):
                fault.free_cached_memory()
        self._prefilled()
        self._hand_over(done)

    def _out_of_memory(self, exc: BaseException) -> None:
        for job in self.batch.clear():
            self.running.pop(job, None)
            self._fail(job, exc)
        fault.free_cached_memory()
        self._running_changed()

    def _hand_over(self, done: list[Done]) -> None:
        """The step's Deltas to the event loop: each live row's new tokens, then the rows that ended
        (the order streams heard them in before)."""
        outputs: dict[Job, list[Delta]] = {}
        for row in self.batch.rows:
            choice = row.choice
            delta = new_delta(
                row.owner, row.index, choice.tokens, choice.prompt_length, choice.scored, choice.prompt_scored
            )
            if delta is not None:
                outputs.setdefault(row.owner, []).append(delta)
        for row in done:
            outputs.setdefault(row.owner, []).append(
                new_delta(row.owner, row.index, row.tokens, 0, row.scored, row.prompt_scored, row.reason)
            )
            self._sequence_done(row.owner)
        deliver(outputs)
        if done:
            self._running_changed()

    def _sequence_done(self, job: Job) -> None:
        """One of the job's rows left the batch; the job's answer is the event loop's to give."""
        self.running[job] -= 1
        if not self.running[job]:
            del self.running[job]

    def _start_beams(self, jobs: list[Job]) -> None:
        """A beam search's prefill; if it fails, each request's own (searches.py), so only the culprit fails."""
        for job, exc in self.searches.start(jobs):
            self._fail(job, exc)
        self._running_changed()

    def _step_beams(self) -> None:
        """One token for every running search's rows (searches.py narrows failures down)."""
        finished, failed = self.searches.step()
        for job, exc in failed:
            self._fail(job, exc)
        for jobs, results in finished:
            self._settle_beams(jobs, results)
        if failed:
            self._running_changed()

    def _settle_beams(self, jobs: list[Job], results: list[list[Delta]]) -> None:
        """The one place a finished beam search hands its answers to its jobs: finished Deltas, one per
        returned sequence (runner.Runner.beam_outputs); the event loop makes their text and answers."""
        deliver(dict(zip(jobs, results, strict=True)))
        self._running_changed()

    def _fail(self, job: Job, exc: BaseException) -> None:
        if fault.is_unrecoverable(exc):  # e.g. from searches.py, which narrows failures down itself
            raise exc
        if fault.is_out_of_memory(exc):
            log.error("out of GPU memory; the batch's requests get 503 (%s)", exc)
            job.settle(exception=ResourceExhausted("the server ran out of GPU memory for this batch; retry later"))
        else:
            log.error("generation failed", exc_info=exc)
            job.settle(exception=GenerationFailed("generation failed; see the server log"))

    def _running_changed(self) -> None:
        self._gauge("requests_running", len(self.running) + self.searches.jobs)

    def _gauge(self, name: str, value: int) -> None:
        set_gauge(self._metrics, name, value)
