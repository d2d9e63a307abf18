"""Completions out of a Runner's token ids, made as the engine's event-loop side makes them (outputs.py)."""

from __future__ import annotations

from typing import Sequence

from predictor.core import Completion, Delta, GenerationRequest
from predictor.engine.outputs import Outputs, Tokenizer


def tokenizer(runner) -> Tokenizer:
    return Tokenizer(runner.decode, runner.token_texts)


def completions(runner, request: GenerationRequest, deltas: Sequence[Delta]) -> list[Completion]:
    """A request's Completions from its finished Deltas (a beam search's, or one per row)."""
    fed = Outputs(request, tokenizer(runner), streaming=False).feed(deltas)
    assert fed.completions is not None, "a sequence has no finished Delta"
    return fed.completions


def searched(runner, requests: Sequence[GenerationRequest], **options) -> list:
    """``runner.run_batch`` with each request's Deltas made into Completions (exceptions kept)."""
    results = runner.run_batch(requests, **options)
    return [
        r if isinstance(r, Exception) else completions(runner, q, r) for q, r in zip(requests, results, strict=True)
    ]


def done_row(row) -> Delta:
    """A continuous batch's finished row (continuous.Done) as the engine hands it over, in one Delta."""
    logprobs = None if row.scored is None else tuple(row.scored)
    prompt = None if row.prompt_scored is None else tuple(row.prompt_scored)
    return Delta(row.index, tuple(row.tokens), logprobs, prompt, True, row.reason)
