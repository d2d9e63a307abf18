"""One prompt on its way through the engine: its future, its request's record, and its times.

The accounting lives here, so the engine's loop reads as scheduling: a job is admitted (queue time,
prompt tokens), gets its first token (time to first token), and finishes (time per output token,
generated tokens) or fails. Metrics and the request's record are updated at each of these points.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from predictor.core import GenerationRequest
from predictor.telemetry.metrics import Metrics
from predictor.telemetry.records import RequestRecord


@dataclass(eq=False)  # identity: jobs are keys of the engine's running table
class Job:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    record: RequestRecord | None = None
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    results: list = field(default_factory=list)  # per sequence its Completion, as rows finish
    stream: asyncio.Queue | None = None  # streaming: text pieces, then an end marker
    pieces: dict = field(default_factory=dict)  # per sequence: its generation.text.TextStream
    logprobs_sent: dict = field(default_factory=dict)  # per sequence: how many tokens' logprobs were streamed

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

    def generated(self, tokens: int, metrics: Metrics | None, finished: bool) -> None:
        """Count this job's generated tokens once, when it finishes or leaves."""
        if self.record is not None:
            self.record.generated_tokens += tokens
        per_sequence = tokens / max(1, len(self.results))  # sequences generate side by side
        if finished and metrics is not None and self.first_token_at is not None and per_sequence > 1:
            metrics.time_per_output_token.observe((time.monotonic() - self.first_token_at) / (per_sequence - 1))

    def emit(self, index: int, piece, kind: str = "text") -> None:
        """A new piece of sequence ``index``'s text (or with ``kind`` "logprobs"/"prompt_logprobs", of its
        tokens' logprobs), for a streaming client (from the engine thread)."""
        if self.stream is not None and piece:
            self._call(self.stream.put_nowait, (kind, index, piece))

    def settle(self, *, result: list | None = None, exception: BaseException | None = None) -> None:
        """Hand the outcome to the waiting event loop (from the engine thread)."""

        def apply() -> None:
            if not self.future.done():  # not cancelled meanwhile
                if exception is not None:
                    self.future.set_exception(exception)
                else:
                    self.future.set_result(result)
            if self.stream is not None:  # after every piece: the loop runs callbacks in order
                self.stream.put_nowait(("end", None, None))

        self._call(apply)

    def _call(self, function, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(function, *args)
