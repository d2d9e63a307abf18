"""One request's outputs, made off the engine thread: its Deltas become stream Pieces and Completions.

The engine thread hands over token ids and raw logprobs only (core.Delta); everything textual happens
here, on the event loop (jobs.Job.receive calls ``feed``): each sequence is decoded incrementally
(text.TextStream), cut at stop strings, and its tokens' logprobs get their texts. A stop string ends
its sequence here: ``feed`` names it, the job tells the engine to drop that row at its next step, and
whatever the row generated meanwhile is dropped, not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from predictor.core import Completion, Delta, GenerationRequest, Piece, Scored, TokenLogprob
from predictor.engine import text


@dataclass(frozen=True)
class Tokenizer:
    """What text needs from the tokenizer (generation's Runner has both): safe to call off the engine thread."""

    decode: Callable[[Sequence[int]], str]  # new tokens -> text, without special tokens
    texts: Callable[[Sequence[int]], list[str]]  # each id's own text, special tokens included


@dataclass
class Fed:
    """What one ``feed`` gave: pieces for a stream, tokens kept, sequences a stop string ended, and
    every Completion once the last sequence is done."""

    pieces: list[Piece] = field(default_factory=list)
    tokens: int = 0
    stopped: list[int] = field(default_factory=list)
    completions: list[Completion] | None = None


@dataclass
class _Sequence:
    tokens: list[int] = field(default_factory=list)
    scored: list[Scored] | None = None
    stream: text.TextStream | None = None  # streaming or stop strings: the text, as it grows
    streamed: int = 0  # how many of its tokens' logprobs went out in pieces
    done: bool = False


class Outputs:
    """The consumer of one request's Deltas (event loop only)."""

    def __init__(self, request: GenerationRequest, tokenizer: Tokenizer, streaming: bool) -> None:
        self.request, self.tokenizer, self.streaming = request, tokenizer, streaming
        s = request.sampling
        follow = streaming or bool(s.stop)  # the text is needed as it grows
        self.sequences = [
            _Sequence(
                scored=[] if s.logprobs is not None else None,
                stream=text.TextStream(tokenizer.decode, s.stop) if follow else None,
            )
            for _ in range(s.num_return_sequences)
        ]
        self.results: list[Completion | None] = [None] * s.num_return_sequences
        self.prompt_scored: tuple[Scored, ...] | None = None

    def feed(self, deltas: Sequence[Delta]) -> Fed:
        """Take one step's Deltas of this request (in row order)."""
        fed = Fed()
        for delta in deltas:
            if delta.prompt_logprobs is not None:  # before any text: echo scoring streams it first
                self.prompt_scored = delta.prompt_logprobs
                if self.streaming:
                    entries = text.prompt_token_logprobs(
                        self.tokenizer.texts, self.request.input_ids, self.prompt_scored
                    )
                    fed.pieces.append(Piece(0, prompt_logprobs=entries))
        for delta in deltas:
            self._take(delta, fed)
        if all(result is not None for result in self.results):
            fed.completions = list(self.results)
        return fed

    def _take(self, delta: Delta, fed: Fed) -> None:
        sequence = self.sequences[delta.index]
        if sequence.done:  # generated after its stop string, before the engine dropped the row
            return
        sequence.tokens += delta.token_ids
        if sequence.scored is not None and delta.logprobs is not None:
            sequence.scored += delta.logprobs
        fed.tokens += len(delta.token_ids)
        piece, stopped = "", False
        if sequence.stream is not None:  # a stop string cuts the piece, which then ends the sequence
            piece, stopped = sequence.stream.piece(sequence.tokens, final=delta.finished), sequence.stream.stopped
        if not (delta.finished or stopped):
            if piece and self.streaming:
                fed.pieces.append(
                    Piece(delta.index, piece, self._streamed_logprobs(sequence), generated=len(sequence.tokens))
                )
            return
        sequence.done = True
        if not delta.finished:
            fed.stopped.append(delta.index)
        self._complete(delta.index, sequence, delta.finish_reason or "stop", piece, fed)

    def _streamed_logprobs(self, sequence: _Sequence) -> tuple[TokenLogprob, ...] | None:
        """The logprobs of the tokens generated since the last piece, which the piece's text came from."""
        if sequence.scored is None:
            return None
        new, sequence.streamed = sequence.scored[sequence.streamed :], len(sequence.scored)
        return text.token_logprobs(self.tokenizer.texts, new) if new else ()

    def _complete(self, index: int, sequence: _Sequence, reason: str, last: str, fed: Fed) -> None:
        # The whole continuation decoded once, as the contract has always computed it; the pieces
        # streamed before are cut from the same text.
        completion = text.completion(
            self.tokenizer.decode,
            self.tokenizer.texts,
            self.request,
            sequence.tokens,
            reason,
            sequence.scored,
            self.prompt_scored if self.request.sampling.score_prompt else None,
        )
        self.results[index] = completion
        if self.streaming and last:
            # Only the tokens whose text the completion keeps; with no text left, the protocol puts
            # them in its final chunk.
            kept = None if completion.logprobs is None else completion.logprobs[sequence.streamed :]
            sequence.streamed += len(kept or ())
            fed.pieces.append(Piece(index, last, kept, generated=completion.generated_tokens))
