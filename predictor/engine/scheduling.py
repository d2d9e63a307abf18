"""The scheduling policy: what shares an engine iteration, and who starts next. Pure functions, no model.

One iteration of the engine thread (worker.py) does, in this order:
1. **the prefill slot**: at most one start, for the oldest waiting request (first come, first served
   across kinds): either requests joining the continuous batch (``admit``; their prefill, which a
   chunked prefill bounds to one chunk of --max_prefill_tokens per iteration) or one beam search's
   prefill (``select_beams``). ``next_start`` says which;
2. **one step of every running beam search**: one token for each of its rows (diverse.BeamSearch.step);
3. **one decode step** of the continuous batch: one token for each of its rows.

What bounds an iteration's cost: its rows. Decode rows and beam rows together never exceed
--max_batch_size (``Load.rows``), and the beam searches' caches together never exceed
--max_batch_tokens, so an iteration is at most one prefill plus forwards over --max_batch_size rows.
Why nothing starves: every running row advances at every iteration (a beam search never waits for the
batch, nor the batch for a search), each row is bounded by its max_length, and a waiting request that
does not fit blocks every later one, of either kind, until rows free up (a lone request always starts).

The continuous batch (continuous.py) gives each row its own settings and bounds; a beam search runs its
prompts left-padded in one search (generation/diverse.py), which needs everything that shapes the search
to be equal (``beam_key``): those that arrive together share one forward per step. A seeded search draws
from its own generator for all its rows, so it runs alone. ``repetition_penalty`` batches only with
prompts of the same length: it would penalize the padding token, which is EOS, in the shorter rows (and
``encoder_no_repeat_ngram_size`` would ban it after the prompt's n-grams that contain padding).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from predictor.core import SEARCH_SHAPE, GenerationRequest, new_tokens
from predictor.settings import BatchPolicy

JOIN, BEAMS = "join", "beams"


@dataclass(frozen=True)
class Load:
    """What runs now: the continuous batch's rows and longest row, the beam searches' rows and cache."""

    decode_rows: int = 0
    decode_longest: int = 0
    beam_rows: int = 0
    beam_tokens: int = 0  # the searches' rows x the length each row may reach

    @property
    def rows(self) -> int:
        """Rows the next iteration advances: what --max_batch_size bounds."""
        return self.decode_rows + self.beam_rows


def continuous(request: GenerationRequest) -> bool:
    """Whether the request runs in the continuous batch (no beams) or as a beam search."""
    return request.sampling.num_beams == 1


def rows(request: GenerationRequest) -> int:
    """Sequences the request occupies in a batch."""
    return max(request.sampling.num_return_sequences, request.sampling.num_beams)


def longest(request: GenerationRequest) -> int:
    """Tokens a row of this request may reach: prompt + new tokens."""
    return request.sampling.max_length


def admit(
    running_rows: int,
    running_longest: int,
    waiting: Sequence[GenerationRequest],
    policy: BatchPolicy,
    beam_rows: int = 0,
) -> int:
    """How many of the oldest waiting requests may join the continuous batch now.

    The batch's cache holds rows x its longest row: both stay within the policy, and ``beam_rows``
    (the running beam searches') count against the batch size too. First come, first served: a
    request that does not fit blocks those behind it (no starvation of long requests). A lone
    request always runs (validation bounds it already).
    """
    count, total, length = 0, running_rows, running_longest
    for request in waiting:
        total, length = total + rows(request), max(length, longest(request))
        fits = total + beam_rows <= policy.max_batch_size and (
            policy.preallocated or total * length <= policy.max_batch_tokens
        )
        if not fits and (count or running_rows or beam_rows):
            break
        count += 1
    return count


def next_start(waiting: Sequence[GenerationRequest], load: Load, policy: BatchPolicy) -> tuple[str | None, list[int]]:
    """The iteration's prefill slot: ``(JOIN, indices)`` of requests joining the continuous batch,
    ``(BEAMS, indices)`` of one beam search's requests, or ``(None, [])``. ``waiting``: in arrival order.

    The oldest waiting request decides the kind, so neither kind can hold the other back for longer
    than the rows running now take to finish.
    """
    if not waiting:
        return None, []
    if continuous(waiting[0]):
        leading = list(itertools.takewhile(continuous, waiting))
        count = admit(load.decode_rows, load.decode_longest, leading, policy, load.beam_rows)
        return (JOIN, list(range(count))) if count else (None, [])
    chosen = select_beams(waiting, policy, load)
    return (BEAMS, chosen) if chosen else (None, [])


def beam_key(request: GenerationRequest) -> Hashable | None:
    """Beam searches with equal keys may share one search; None means it runs alone."""
    s = request.sampling
    if s.seed is not None:  # a seed seeds the whole search's generator
        return None
    key: tuple = (*(getattr(s, name) for name in SEARCH_SHAPE), *new_tokens(request))
    if s.repetition_penalty not in (None, 1.0) or s.encoder_no_repeat_ngram_size:
        key += (len(request.input_ids),)
    return key


def select_beams(pending: Sequence[GenerationRequest], policy: BatchPolicy, load: Load = Load()) -> list[int]:
    """Indices of the next beam search: the oldest request, then every later compatible one that fits
    beside ``load`` (the oldest alone always starts when nothing runs); [] when the oldest must wait."""
    if not pending:
        return []

    def fits(indices: Sequence[int]) -> bool:
        total = sum(rows(pending[i]) for i in indices)
        width = max(len(pending[i].input_ids) for i in indices) + new_tokens(pending[indices[0]])[0]
        return (
            load.rows + total <= policy.max_batch_size and load.beam_tokens + total * width <= policy.max_batch_tokens
        )

    if load.rows and not fits([0]):
        return []
    key, chosen = beam_key(pending[0]), [0]
    if key is None:
        return chosen
    for index in range(1, len(pending)):
        if beam_key(pending[index]) != key:
            continue
        if not fits([*chosen, index]):
            break
        chosen.append(index)
    return chosen
