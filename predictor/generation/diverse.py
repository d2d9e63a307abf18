"""Diverse (group) beam search, offline.

transformers 5 moved group beam search out of its core into a hub repository that must be
downloaded and run with ``trust_remote_code`` (https://hf.co/transformers-community/group-beam-search);
we do neither. The algorithm (Vijayakumar et al. 2016, https://arxiv.org/abs/1610.02424) splits
``num_beams`` into ``num_beam_groups`` groups; at each step, group ``g`` is penalized by
``diversity_penalty`` times the number of times each token was chosen at that same step by groups
``0..g-1`` (Hamming diversity). Group ``g`` depends only on earlier groups, never on later ones, so
running the groups one after another -- each a plain transformers beam search over
``num_beams / num_beam_groups`` beams, with a logits processor that replays the earlier groups'
choices step by step -- computes the same thing as the step-interleaved loop, reusing transformers'
beam search (length penalty, early stopping, every other processor) instead of a copy of it.

One difference: transformers calls processors before each step's choice, so a group's choice at its
very last step is never seen and later groups are not penalized for that one step.
The cost: ``num_beam_groups`` smaller beam searches instead of one.
"""

from __future__ import annotations

import copy
import time

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
)


class _HammingDiversity(LogitsProcessor):
    """Penalize tokens that earlier groups chose at the same step; record this group's choices."""

    def __init__(self, penalty: float, prompt_len: int, sub_beams: int,
                 earlier: list[dict[int, torch.Tensor]], own: dict[int, torch.Tensor]) -> None:
        self.penalty = penalty
        self.prompt_len = prompt_len
        self.sub_beams = sub_beams
        self.earlier = earlier
        self.own = own

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        batch = input_ids.shape[0] // self.sub_beams
        if step > 0:  # the last column holds the tokens this group chose at the previous step
            self.own[step - 1] = input_ids[:, -1].reshape(batch, self.sub_beams)
        counts = torch.zeros(batch, scores.shape[-1], device=scores.device, dtype=scores.dtype)
        for group in self.earlier:
            chosen = group.get(step)
            if chosen is not None:
                counts.scatter_add_(1, chosen.to(scores.device), torch.ones_like(chosen, dtype=scores.dtype))
        if self.penalty and counts.any():
            scores = scores - self.penalty * counts.repeat_interleave(self.sub_beams, dim=0)
        return scores


def generate(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             config: GenerationConfig, num_beam_groups: int, diversity_penalty: float) -> list[list[list[int]]]:
    """Diverse beam search for a batch of prompts.

    Returns, per prompt, ``config.num_return_sequences`` lists of new token ids, best first.
    """
    sub_beams = config.num_beams // num_beam_groups
    prompt_len = input_ids.shape[1]
    deadline = time.monotonic() + config.max_time if config.max_time else None
    history: list[dict[int, torch.Tensor]] = []
    hypotheses: list[list[tuple[float, list[int]]]] = [[] for _ in range(input_ids.shape[0])]
    for _ in range(num_beam_groups):
        own: dict[int, torch.Tensor] = {}
        processor = _HammingDiversity(diversity_penalty, prompt_len, sub_beams, list(history), own)
        group_config = replace_config(config, num_beams=sub_beams, num_return_sequences=sub_beams,
                                      max_time=_remaining(deadline), return_dict_in_generate=True,
                                      output_logits=True)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=group_config,
                             logits_processor=LogitsProcessorList([processor]))
        history.append(own)
        for row, (score, tokens) in enumerate(_scored(model, out, prompt_len, config)):
            hypotheses[row // sub_beams].append((score, tokens))
    return [[tokens for _, tokens in sorted(hyps, key=lambda h: -h[0])[: config.num_return_sequences]]
            for hyps in hypotheses]


def _scored(model: PreTrainedModel, out, prompt_len: int, config: GenerationConfig) -> list[tuple[float, list[int]]]:
    """Each sequence's new tokens (up to and including EOS) and its length-normalized log-likelihood.

    Groups of one beam run as greedy search, which reports no beam scores, so every group is ranked
    the same way: the model's own log-probabilities (from the raw logits), sum / length ** length_penalty.
    """
    steps = model.compute_transition_scores(out.sequences, out.logits, getattr(out, "beam_indices", None),
                                            normalize_logits=True)
    eos = config.eos_token_id
    length_penalty = config.length_penalty if config.length_penalty is not None else 1.0
    scored = []
    for sequence, step_scores in zip(out.sequences[:, prompt_len:].tolist(), steps):
        length = next((i + 1 for i, token in enumerate(sequence) if token == eos), len(sequence))
        total = float(step_scores[:length].sum())
        scored.append((total / max(length, 1) ** length_penalty, sequence[:length]))
    return scored


def replace_config(config: GenerationConfig, **changes: object) -> GenerationConfig:
    """A copy of ``config`` with ``changes`` (GenerationConfig is mutable; never edit the caller's)."""
    changed = copy.deepcopy(config)
    changed.update(**{k: v for k, v in changes.items() if v is not None})
    return changed


def _remaining(deadline: float | None) -> float | None:
    # max_time bounds the whole search, not each group: later groups get what is left (at least one
    # step each, so every group still returns its beams).
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 1e-3)

