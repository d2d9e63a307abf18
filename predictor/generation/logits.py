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
        generated = input_ids[:, self.prompt_length :]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


FLOOR = -9999.0  # the logprob reported for a token that cannot be drawn

#: A token, its logprob, and the likeliest alternatives as (token, logprob), likeliest first.
Scored = tuple[int, float, tuple[tuple[int, float], ...]]


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
    # Sampling.logprobs set: per generated token (id, logprob, ((id, logprob), ...) alternatives);
    # None computes nothing, so a step without logprobs costs what it did before.
    scored: list[Scored] | None = None
    prompt_scored: list[Scored] | None = None  # score_prompt: per prompt token after the first

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_length


def row_choice(sampling: Sampling, prompt: Sequence[int], min_new: int, index: int = 0) -> RowChoice:
    """Build the per-row processors once, when the row joins the batch (``index``: which sequence)."""
    history = LogitsProcessorList()
    if sampling.repetition_penalty not in (None, 1.0):
        history.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.encoder_no_repeat_ngram_size:
        history.append(
            EncoderNoRepeatNGramLogitsProcessor(sampling.encoder_no_repeat_ngram_size, torch.tensor([list(prompt)]))
        )
    if sampling.presence_penalty or sampling.frequency_penalty:
        history.append(
            PresenceFrequencyPenalty(sampling.presence_penalty or 0.0, sampling.frequency_penalty or 0.0, len(prompt))
        )
    key = None
    if sampling.do_sample:
        key = (
            _or(sampling.temperature, DEFAULT_TEMPERATURE),
            _or(sampling.top_k, DEFAULT_TOP_K),
            _or(sampling.top_p, DEFAULT_TOP_P),
        )
    seed = None if sampling.seed is None else sampling.seed + index  # each sequence its own stream
    scored = None if sampling.logprobs is None else []
    return RowChoice(sampling, list(prompt), len(prompt), min_new, history, key, seed, scored=scored)


def _or(value, default):
    return default if value is None else value


def choose(rows: Sequence[RowChoice], logits: torch.Tensor, eos: int) -> torch.Tensor:
    """The next token of every row (``logits``: [rows, vocabulary], any float dtype)."""
    scores = logits.float()
    for index, row in enumerate(rows):
        if row.history:
            ids = torch.tensor([row.tokens], device=scores.device)
            scores[index : index + 1] = row.history(ids, scores[index : index + 1])
    banned = torch.tensor([row.generated < row.min_new for row in rows], device=scores.device)
    if banned.any():
        scores[banned, eos] = -float("inf")
    invalid = [i for i, row in enumerate(rows) if row.sampling.remove_invalid_values]
    if invalid:
        scores[invalid] = InfNanRemoveLogitsProcessor()(None, scores[invalid])
    chosen = scores.argmax(dim=-1)
    # The distribution each row drew from, for rows that report logprobs (greedy: ``scores``).
    drawn = scores.clone() if any(row.scored is not None for row in rows) else None
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if row.warp_key is not None and row.seed is None:
            groups[row.warp_key].append(index)
        elif row.warp_key is not None:  # seeded: drawn alone, from its own generator
            if row.generator is None:
                row.generator = torch.Generator(device=scores.device).manual_seed(row.seed)
            token, warped = _sample(scores[index : index + 1], *row.warp_key, generator=row.generator)
            chosen[index] = token[0]
            if drawn is not None and row.scored is not None:
                drawn[index : index + 1] = warped
    for (temperature, top_k, top_p), indices in groups.items():
        chosen[indices], warped = _sample(scores[indices], temperature, top_k, top_p)
        if drawn is not None:
            drawn[indices] = warped
    if drawn is not None:
        _score(rows, drawn, chosen)
    return chosen


def _score(rows: Sequence[RowChoice], drawn: torch.Tensor, chosen: torch.Tensor) -> None:
    """Append each reporting row's token, logprob and alternatives: one log-softmax and one top-k for
    all of them, and one copy to the host. After the warpers, as vLLM's default "processed_logprobs"
    (https://docs.vllm.ai/en/latest/usage/v1_guide.html#semantic-changes-to-logprobs)."""
    wanted = [i for i, row in enumerate(rows) if row.scored is not None]
    top = max(rows[i].sampling.logprobs for i in wanted)
    for index, scored in zip(wanted, scores_of(drawn[wanted], chosen[wanted], top), strict=True):
        rows[index].scored.append(_top(scored, rows[index].sampling.logprobs))


def scores_of(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> list[Scored]:
    """For each row of ``logits`` [rows, vocabulary]: its token, the token's logprob, and the ``top``
    likeliest tokens with theirs."""
    # Tokens a warper removed have -inf, which JSON cannot carry: vLLM reports -9999.0 for them too
    # (vllm/entrypoints/openai/serving_completion.py, _create_completion_logprobs).
    logprobs = torch.log_softmax(logits.float(), dim=-1).clamp(min=FLOOR)
    chosen = logprobs.gather(1, tokens[:, None].to(logprobs.device))[:, 0].tolist()
    alternatives = logprobs.topk(top, dim=-1) if top else None
    result = []
    for row, (token, logprob) in enumerate(zip(tokens.tolist(), chosen, strict=True)):
        pairs = (
            ()
            if alternatives is None
            else tuple(zip(alternatives.indices[row].tolist(), alternatives.values[row].tolist(), strict=True))
        )
        result.append((token, logprob, pairs))
    return result


def _top(scored: Scored, n: int) -> Scored:
    return scored[0], scored[1], scored[2][:n]


def prompt_scores(prompt: Sequence[int], logits: torch.Tensor, top: int) -> list[Scored]:
    """The prompt's tokens after the first, scored by the prefill's ``logits`` [len(prompt), vocabulary]
    (position i predicts token i + 1). The model's own distribution: no processor applies to a prompt."""
    return scores_of(logits[:-1], torch.tensor(prompt[1:], device=logits.device), top)


def _sample(
    scores: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a token per row; returns the tokens and the warped scores they were drawn from."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    warped = warpers(None, scores)
    probs = torch.softmax(warped, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1), warped
