"""Which requests may share a batch, and how many join. Pure functions: no threads, no model.

Two paths (engine.py): every ``num_beams == 1`` request joins the continuous batch (continuous.py),
which gives each row its own settings and bounds; beam searches (diverse or not) run left-padded in one
call (generation/runner.py), which needs everything that shapes the search to be equal. A seeded
beam sampling seeds its generate call, so it runs alone. ``repetition_penalty`` batches only with prompts
of the same length: it would penalize the padding token, which is EOS, in the shorter rows (and
``encoder_no_repeat_ngram_size`` would ban it after the prompt's n-grams that contain padding).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from predictor.core import GenerationRequest, new_tokens
from predictor.settings import BatchPolicy

_SEARCH = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_beams",
    "num_return_sequences",
    "early_stopping",
    "length_penalty",
    "remove_invalid_values",
    "encoder_no_repeat_ngram_size",
    "max_time",
    "num_beam_groups",
    "diversity_penalty",
)


def continuous(request: GenerationRequest) -> bool:
    """Whether the request runs in the continuous batch (no beams) or as a beam search."""
    return request.sampling.num_beams == 1


def rows(request: GenerationRequest) -> int:
    """Sequences the request occupies in a batch."""
    return max(request.sampling.num_return_sequences, request.sampling.num_beams)


def longest(request: GenerationRequest) -> int:
    """Tokens a row of this request may reach: prompt + new tokens."""
    return request.sampling.max_length


def admit(running_rows: int, running_longest: int, waiting: Sequence[GenerationRequest], policy: BatchPolicy) -> int:
    """How many of the oldest waiting requests may join the continuous batch now.

    The batch's cache holds rows x its longest row: both stay within the policy. First come, first
    served: a request that does not fit blocks those behind it (no starvation of long requests). A
    lone request always runs (validation bounds it already).
    """
    count, total, length = 0, running_rows, running_longest
    for request in waiting:
        total, length = total + rows(request), max(length, longest(request))
        fits = total <= policy.max_batch_size and (policy.preallocated or total * length <= policy.max_batch_tokens)
        if not fits and (count or running_rows):
            break
        count += 1
    return count


def beam_key(request: GenerationRequest) -> Hashable | None:
    """Beam searches with equal keys may share a generate call; None means it runs alone."""
    s = request.sampling
    if s.seed is not None:  # a seed seeds the whole generate call
        return None
    key: tuple = (*(getattr(s, name) for name in _SEARCH), *new_tokens(request))
    if s.repetition_penalty not in (None, 1.0) or s.encoder_no_repeat_ngram_size:
        key += (len(request.input_ids),)
    return key


def select_beams(pending: Sequence[GenerationRequest], policy: BatchPolicy) -> list[int]:
    """Indices of the next beam batch: the oldest request, then every later compatible one that fits."""
    if not pending:
        return []
    key, chosen = beam_key(pending[0]), [0]
    if key is None:
        return chosen
    total = rows(pending[0])
    for index in range(1, len(pending)):
        request = pending[index]
        if beam_key(request) != key:
            continue
        width = max(len(pending[i].input_ids) for i in (*chosen, index)) + new_tokens(request)[0]
        if total + rows(request) > policy.max_batch_size or (total + rows(request)) * width > policy.max_batch_tokens:
            break
        chosen.append(index)
        total += rows(request)
    return chosen
