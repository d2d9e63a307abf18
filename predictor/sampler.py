"""Next-token choice for the rows of a continuous batch.

Each row has its own settings, history and length, so it cannot go through ``generate``'s single
logits-processor list. This applies transformers' own processor classes, in the order ``generate``
applies them (repetition penalty, prompt n-gram ban, minimum length, NaN/inf removal, then for
sampling temperature, top-k, top-p), row by row only where a processor needs the row's history,
batched across rows elsewhere. A greedy or sampled row therefore gets exactly what ``generate`` would
give it alone (tests compare both, seeds included).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import (EncoderNoRepeatNGramLogitsProcessor, InfNanRemoveLogitsProcessor, LogitsProcessorList,
                          RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)

from .sampling import Sampling

# transformers' defaults for unset sampling values (GenerationConfig's documented defaults).
DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P = 1.0, 50, 1.0


@dataclass
class RowChoice:
    """How one row picks its next token, and the tokens it has so far."""

    sampling: Sampling
    tokens: list[int]  # prompt + generated so far
    prompt_length: int
    min_new: int
    history: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    warp_key: tuple | None = None  # rows with equal keys are warped together; None: greedy

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_length


def row_choice(sampling: Sampling, prompt: Sequence[int], min_new: int) -> RowChoice:
    """Build the per-row processors once, when the row joins the batch."""
    history = LogitsProcessorList()
    if sampling.repetition_penalty not in (None, 1.0):
        history.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.encoder_no_repeat_ngram_size:
        history.append(EncoderNoRepeatNGramLogitsProcessor(sampling.encoder_no_repeat_ngram_size,
                                                           torch.tensor([list(prompt)])))
    key = None
    if sampling.do_sample:
        key = (_or(sampling.temperature, DEFAULT_TEMPERATURE), _or(sampling.top_k, DEFAULT_TOP_K),
               _or(sampling.top_p, DEFAULT_TOP_P))
    return RowChoice(sampling, list(prompt), len(prompt), min_new, history, key)


def _or(value, default):
    return default if value is None else value


def choose(rows: Sequence[RowChoice], logits: torch.Tensor, eos: int) -> torch.Tensor:
    """The next token of every row (``logits``: [rows, vocabulary], any float dtype)."""
    scores = logits.float()
    for index, row in enumerate(rows):
        if row.history:
            ids = torch.tensor([row.tokens], device=scores.device)
            scores[index:index + 1] = row.history(ids, scores[index:index + 1])
    banned = torch.tensor([row.generated < row.min_new for row in rows], device=scores.device)
    if banned.any():
        scores[banned, eos] = -float("inf")
    invalid = [i for i, row in enumerate(rows) if row.sampling.remove_invalid_values]
    if invalid:
        scores[invalid] = InfNanRemoveLogitsProcessor()(None, scores[invalid])
    chosen = scores.argmax(dim=-1)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if row.warp_key is not None:
            groups[row.warp_key].append(index)
    for (temperature, top_k, top_p), indices in groups.items():
        chosen[indices] = _sample(scores[indices], temperature, top_k, top_p)
    return chosen


def _sample(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    probs = torch.softmax(warpers(None, scores), dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)
