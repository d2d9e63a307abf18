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
from transformers import (
    EncoderNoRepeatNGramLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from predictor.core import Sampling

# transformers' defaults for unset sampling values (GenerationConfig's documented defaults).
DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P = 1.0, 50, 1.0


class PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI's penalties: each token's logit drops by frequency_penalty times the number of times it
    was generated so far, and by presence_penalty once it was generated at all (prompt not counted).
    https://platform.openai.com/docs/advanced-usage#frequency-and-presence-penalties"""

    def __init__(self, presence: float, frequency: float, prompt_length: int) -> None:
        self.presence, self.frequency, self.prompt_length = presence, frequency, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


@dataclass
class RowChoice:
    """How one row picks its next token, and the tokens it has so far."""

    sampling: Sampling
    tokens: list[int]  # prompt + generated so far
    prompt_length: int
    min_new: int
    history: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    warp_key: tuple | None = None  # rows with equal keys are warped together; None: greedy
    seed: int | None = None  # its own generator: the same draws whatever else is in the batch
    generator: torch.Generator | None = None

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_length


def row_choice(sampling: Sampling, prompt: Sequence[int], min_new: int, index: int = 0) -> RowChoice:
    """Build the per-row processors once, when the row joins the batch (``index``: which sequence)."""
    history = LogitsProcessorList()
    if sampling.repetition_penalty not in (None, 1.0):
        history.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.encoder_no_repeat_ngram_size:
        history.append(EncoderNoRepeatNGramLogitsProcessor(sampling.encoder_no_repeat_ngram_size,
                                                           torch.tensor([list(prompt)])))
    if sampling.presence_penalty or sampling.frequency_penalty:
        history.append(PresenceFrequencyPenalty(sampling.presence_penalty or 0.0, sampling.frequency_penalty or 0.0,
                                                len(prompt)))
    key = None
    if sampling.do_sample:
        key = (_or(sampling.temperature, DEFAULT_TEMPERATURE), _or(sampling.top_k, DEFAULT_TOP_K),
               _or(sampling.top_p, DEFAULT_TOP_P))
    seed = None if sampling.seed is None else sampling.seed + index  # each sequence its own stream
    return RowChoice(sampling, list(prompt), len(prompt), min_new, history, key, seed)


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
        if row.warp_key is not None and row.seed is None:
            groups[row.warp_key].append(index)
        elif row.warp_key is not None:  # seeded: drawn alone, from its own generator
            if row.generator is None:
                row.generator = torch.Generator(device=scores.device).manual_seed(row.seed)
            chosen[index] = _sample(scores[index:index + 1], *row.warp_key, generator=row.generator)[0]
    for (temperature, top_k, top_p), indices in groups.items():
        chosen[indices] = _sample(scores[indices], temperature, top_k, top_p)
    return chosen


def _sample(scores: torch.Tensor, temperature: float, top_k: int, top_p: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    probs = torch.softmax(warpers(None, scores), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
