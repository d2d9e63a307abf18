"""The engine's worker thread: it owns the model and runs every step (engine.py hands it jobs).

Each pass of its loop takes the arrivals, forgets cancelled jobs, starts what scheduling.next_start
picks (requests joining the continuous batch, or a beam search), advances every running beam search one
token and the continuous batch one token (the policy: scheduling.py). Failures are narrowed down to the
requests that cause them; an out-of-memory step fails its requests and frees cached memory.
A long prompt advances by one prefill chunk per pass (generation/prefill.py): its request is running
from its join on, and gets its first token when its last chunk is done.
An unrecoverable device error, or anything that escapes the loop, ends the thread with the failure
latched in its Health (health.py): the engine then fails every request with 503.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Callable, Protocol, Sequence

from predictor.core import Completion, GenerationRequest
from predictor.engine import faults as fault
from predictor.engine.health import Health
from predictor.engine.jobs import Job
from predictor.engine.scheduling import BEAMS, JOIN, Load, next_start, rows
from predictor.engine.searches import Searches
from predictor.errors import GenerationFailed, ResourceExhausted
from predictor.generation.continuous import Done
from predictor.generation.retry import together_or_alone
from predictor.generation.text import TextStream, prompt_token_logprobs, token_logprobs
from predictor.settings import BatchPolicy
from predictor.telemetry.metrics import Metrics, set_gauge

log = logging.getLogger("predictor")


class Backend(Protocol):
    """What the engine needs from the model side (generation/runner.Runner)."""

    def continuous(self): ...

    def start_beams(self, requests: Sequence[GenerationRequest]): ...  # a search: rows, length, step(), done

    def beam_completions(self, requests: Sequence[GenerationRequest], search) -> list[list[Completion]]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def token_texts(self, ids: Sequence[int]) -> list[str]: ...

    def completion(
        self, request: GenerationRequest, tokens: Sequence[int], reason: str, scored=None, prompt_scored=None
    ) -> Completion: ...


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
        for search in self.searches.abandoned():
            for job in search.jobs:
                job.generated(search.search.steps * job.request.sampling.num_return_sequences, self._metrics, False)
            self._running_changed()
        gone = {job for job in self.running if job.cancelled}
        if gone:
            for job, tokens in self.batch.leave(gone).items():
                job.generated(tokens, self._metrics, finished=False)
            for job in gone:
                del self.running[job]
            self._running_changed()

    def _enter(self, joining: list[Job]) -> None:
        """Prefill and add ``joining``; if that fails, each one alone (retry.py), so only the culprit fails."""
        # A failed join leaves the running rows untouched: join changes nothing until it succeeds.
        before, done = self.batch.tokens_generated, []
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
                job.results = [None] * self.running[job]
        self._running_changed()  # before a streaming client hears of its first token
        self._count_tokens(before)
        self._prefilled(done)
        self._stream_pieces()
        self._finish(done)

    def _join_batch(self, jobs: Sequence[Job]) -> list[Done]:
        return self.batch.join([(job, job.request) for job in jobs])  # batch.check_prefill: faults

    def _prefilled(self, done: list[Done]) -> None:
        """The requests whose prefill finished (in join or advance): first-token time, prompt logprobs."""
        started = self.batch.take_prefilled()
        for job in started:
            job.first_token(self._metrics)
        self._stream_prompt_logprobs(started, done)

    def _advance(self) -> None:
        before = self.batch.tokens_generated
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
        self._count_tokens(before)
        self._prefilled(done)
        self._stream_pieces()
        self._finish(done)

    def _out_of_memory(self, exc: BaseException) -> None:
        for job in self.batch.clear():
            self.running.pop(job, None)
            self._fail(job, exc)
        fault.free_cached_memory()
        self._running_changed()

    def _stream_pieces(self) -> None:
        """Send streaming clients the text their live rows have grown since the last step (with logprobs:
        first the tokens generated since the last piece, so each text piece follows its tokens' logprobs)."""
        for row in self.batch.rows:
            job = row.owner
            if job.stream is not None:
                new = row.choice.tokens[row.choice.prompt_length :]
                piece = self._text_stream(job, row.index).piece(new)
                if piece and row.choice.scored is not None:
                    self._emit_logprobs(job, row.index, row.choice.scored)
                job.emit(row.index, piece)

    def _emit_logprobs(self, job: Job, index: int, scored: Sequence) -> None:
        sent = job.logprobs_sent.get(index, 0)
        if len(scored) > sent:
            job.logprobs_sent[index] = len(scored)
            job.emit(index, token_logprobs(self._backend.token_texts, scored[sent:]), kind="logprobs")

    def _stream_prompt_logprobs(self, started: list[Job], done: list[Done]) -> None:
        """Echo scoring in a stream: each request's prompt logprobs, as soon as its prefill has them."""
        scored = {row.owner: row.prompt_scored for row in done if row.index == 0}
        scored.update({row.owner: row.choice.prompt_scored for row in self.batch.rows if row.index == 0})
        for job in started:
            if job.stream is not None and scored.get(job) is not None:
                entries = prompt_token_logprobs(self._backend.token_texts, job.request.input_ids, scored[job])
                job.emit(0, entries, kind="prompt_logprobs")

    def _text_stream(self, job: Job, index: int) -> TextStream:
        if index not in job.pieces:
            job.pieces[index] = TextStream(self._backend.decode, job.request.sampling.stop)
        return job.pieces[index]

    def _finish(self, done: list[Done]) -> None:
        for row in done:
            job = row.owner
            completion = self._backend.completion(job.request, row.tokens, row.reason, row.scored, row.prompt_scored)
            job.results[row.index] = completion
            if job.stream is not None:
                if completion.logprobs is not None:  # only the tokens whose text the completion keeps
                    sent = job.logprobs_sent.get(row.index, 0)
                    if len(completion.logprobs) > sent:
                        job.emit(row.index, completion.logprobs[sent:], kind="logprobs")
                job.emit(row.index, self._text_stream(job, row.index).piece(row.tokens, final=True))
            self.running[job] -= 1
            if not self.running[job]:
                del self.running[job]
                job.generated(sum(c.generated_tokens for c in job.results), self._metrics, finished=True)
                job.settle(result=list(job.results))
        self._running_changed()

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

    def _settle_beams(self, jobs: list[Job], results: list[list[Completion]]) -> None:
        """The one place a finished beam search hands its answers to its jobs."""
        for job, result in zip(jobs, results, strict=True):
            tokens = sum(completion.generated_tokens for completion in result)
            job.generated(tokens, self._metrics, finished=False)
            if self._metrics is not None:
                self._metrics.generated_tokens.inc(tokens)
            job.settle(result=result)
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

    def _count_tokens(self, before: int) -> None:
        if self._metrics is not None and self.batch.tokens_generated > before:
            self._metrics.generated_tokens.inc(self.batch.tokens_generated - before)

    def _running_changed(self) -> None:
        self._gauge("requests_running", len(self.running) + self.searches.jobs)

    def _gauge(self, name: str, value: int) -> None:
        set_gauge(self._metrics, name, value)
