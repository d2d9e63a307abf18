"""One prompt on its way through the engine: its future, its request's record, its times, its outputs.

The accounting lives here, so the engine's loop reads as scheduling: a job is admitted (queue time,
prompt tokens), gets its first token (time to first token), and finishes (time per output token,
generated tokens) or fails. Metrics and the request's record are updated at each of these points.

Two threads touch a job. The engine thread admits it and hands over each step's Deltas (``deliver``,
one wake-up of the event loop per step whatever the batch holds); the event loop turns them into text
(``receive``, outputs.py), counts the tokens it keeps, feeds a stream, settles the future, and asks the
engine (``finish_row``, thread-safe) to drop a row whose stop string ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from predictor.core import Delta, GenerationRequest
from predictor.engine.outputs import Outputs
from predictor.errors import GenerationFailed
from predictor.telemetry.metrics import Metrics
from predictor.telemetry.records import RequestRecord

log = logging.getLogger("predictor")

#: The last item of a job's stream queue, after every Piece (the future holds the outcome).
END = None


@dataclass(eq=False)  # identity: jobs are keys of the engine's running table
class Job:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    record: RequestRecord | None = None
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    stream: asyncio.Queue | None = None  # streaming: core.Pieces, then END
    outputs: Outputs | None = None  # the consumer of its Deltas (event loop)
    metrics: Metrics | None = None  # for the tokens it keeps (counted on the event loop)
    finish_row: Callable[[Job, int], None] | None = None  # thread-safe: the engine drops that row
    sent: dict = field(default_factory=dict)  # engine thread: per sequence, tokens handed over in Deltas
    prompt_sent: bool = False  # engine thread: the prompt's logprobs went out (echo scoring)

    @property
    def cancelled(self) -> bool:
        """The caller stopped waiting: the client went away, or the request's deadline passed."""
        return self.future.cancelled()

    def admitted(self, metrics: Metrics | None) -> None:
        waited, prompt = time.monotonic() - self.arrived, len(self.request.input_ids)
        if metrics is not None:
            metrics.queue_duration.observe(waited)
            metrics.prompt_tokens.inc(prompt)
        if self.record is not None:
            self.record.waited(waited)
            self.record.prompt_tokens += prompt

    def first_token(self, metrics: Metrics | None) -> None:
        self.first_token_at = time.monotonic()
        if metrics is not None:
            metrics.time_to_first_token.observe(self.first_token_at - self.arrived)
        if self.record is not None:
            self.record.first_token(self.first_token_at - self.arrived)

    def finished(self, tokens: int, sequences: int, metrics: Metrics | None) -> None:
        """Its last sequence ended with ``tokens`` generated over ``sequences``: time per output token."""
        per_sequence = tokens / max(1, sequences)  # sequences generate side by side
        if metrics is not None and self.first_token_at is not None and per_sequence > 1:
            metrics.time_per_output_token.observe((time.monotonic() - self.first_token_at) / (per_sequence - 1))

    def receive(self, deltas: Sequence[Delta]) -> None:
        """One step's Deltas for this job (event loop): text, stream pieces, counts, and maybe the answer."""
        if self.future.done():  # cancelled: count what it generated until it left; answered: drop the rest
            if self.future.cancelled():
                self._kept(sum(len(delta.token_ids) for delta in deltas))
            return
        try:
            fed = self.outputs.feed(deltas)
        except Exception as exc:  # a bug in making text must fail this request, not hang it
            log.error("making text of generated tokens failed", exc_info=exc)
            for index in range(self.request.sampling.num_return_sequences):
                self.finish_row(self, index)
            self._apply(None, GenerationFailed("generation failed; see the server log"))
            return
        self._kept(fed.tokens)
        for index in fed.stopped:
            self.finish_row(self, index)
        if self.stream is not None:
            for piece in fed.pieces:
                self.stream.put_nowait(piece)
        if fed.completions is not None:
            self.finished(sum(c.generated_tokens for c in fed.completions), len(fed.completions), self.metrics)
            self._apply(fed.completions, None)

    def _kept(self, tokens: int) -> None:
        if tokens:
            if self.metrics is not None:
                self.metrics.generated_tokens.inc(tokens)
            if self.record is not None:
                self.record.generated_tokens += tokens

    def settle(self, *, result: list | None = None, exception: BaseException | None = None) -> None:
        """Hand the outcome to the waiting event loop (from the engine or the watchdog thread)."""
        self._call(self._apply, result, exception)

    def _apply(self, result: list | None, exception: BaseException | None) -> None:
        if not self.future.done():  # not cancelled or answered meanwhile
            if exception is not None:
                self.future.set_exception(exception)
            else:
                self.future.set_result(result)
        if self.stream is not None:  # after every piece: the loop runs callbacks in order
            self.stream.put_nowait(END)

    def _call(self, function, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(function, *args)


def deliver(outputs: Mapping[Job, list[Delta]]) -> None:
    """Hand one step's Deltas to their jobs' event loops (from the engine thread): one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, list[Delta]]]] = {}
    for job, deltas in outputs.items():
        by_loop.setdefault(job.loop, []).append((job, deltas))
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_receive, batch)


def _receive(batch: list[tuple[Job, list[Delta]]]) -> None:
    for job, deltas in batch:
        job.receive(deltas)


def new_delta(
    job: Job,
    index: int,
    tokens: Sequence[int],
    start: int,
    scored: Sequence | None,
    prompt_scored: Sequence | None,
    reason: str | None = None,
) -> Delta | None:
    """Sequence ``index``'s tokens after ``start`` that ``job`` has not been handed yet (None: nothing new
    on a live row); ``reason`` ends the sequence. Engine thread (it keeps ``job.sent``)."""
    sent = job.sent.get(index, 0)
    new = tuple(tokens[start + sent :])
    job.sent[index] = sent + len(new)
    prompt = None
    if prompt_scored is not None and index == 0 and not job.prompt_sent:
        job.prompt_sent, prompt = True, tuple(prompt_scored)
    if not new and prompt is None and reason is None:
        return None
    logprobs = None if scored is None else tuple(scored[sent : sent + len(new)])
    return Delta(index, new, logprobs, prompt, reason is not None, reason)
