"""Chunked prefill: prompts waiting to join the continuous batch, and the chunks they are run in.

A prompt longer than ``--max_prefill_tokens`` is prefilled a chunk at a time, one chunk per engine
step, between the decode steps of the running rows (continuous.py), so a long prompt stalls the
streams beside it for one chunk, not for its whole prefill. Its partial cache (one row, however many
sequences the request asks for) lives here until the last chunk; the request's rows then join the
batch with copies of it. Prompts that fit the budget together are prefilled in one left-padded
forward, as before chunking. vLLM's scheduler works the same way (a token budget per step that the
running rows' decodes take first and prefill chunks share, vllm/v1/core/sched/scheduler.py), except
that its chunk runs in the same forward as the decode rows; ours is a forward of its own (the
decoders' caches hold one token per row per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from predictor.generation import dynamic
from predictor.generation.logits import Scored, prompt_scores, scores_of


@dataclass(eq=False)
class Pending:
    """One request waiting for (the rest of) its prefill."""

    owner: Hashable
    rows: list  # continuous.Row: the request's sequences, which share the prompt
    prompt: Sequence[int]
    top: int | None  # echo scoring: top-N alternatives per prompt token (None: the prompt is not scored)
    done: int = 0  # prompt tokens in ``state``
    state: dynamic.DecodeState | None = None  # the partial cache, one row
    scored: list[Scored] = field(default_factory=list)  # the prompt's scores so far (echo)

    @property
    def started(self) -> bool:
        return self.done > 0


def next_group(pending: Sequence[Pending], budget: int | None) -> list[Pending]:
    """What the next prefill runs: the oldest requests whose left-padded prompts fit ``budget`` together
    (in one forward, as without chunking), or the oldest alone when it is too long (one chunk of it).

    First come, first served: a long prompt is not overtaken by the short ones behind it.
    """
    if budget is None:
        return list(pending)
    head = pending[0]
    if head.started or not fits([head], budget):
        return [head]
    group = [head]
    for entry in pending[1:]:
        if entry.started or not fits([*group, entry], budget):
            break
        group.append(entry)
    return group


def fits(group: Sequence[Pending], budget: int | None) -> bool:
    """Whether ``group`` is prefilled in one piece: rows x longest prompt within ``budget`` tokens."""
    if budget is None:
        return True
    return not group[0].started and max(len(e.prompt) for e in group) * sum(len(e.rows) for e in group) <= budget


def chunk(model, entry: Pending, budget: int) -> torch.Tensor | None:
    """Prefill the next ``budget`` tokens of ``entry``'s prompt; its next-token logits [vocabulary] once
    the prompt is done, else None."""
    start = entry.done
    end = min(len(entry.prompt), start + budget)
    state, logits = dynamic.extend(model, entry.state, entry.prompt[start:end], every=entry.top is not None)
    if entry.top is not None:
        # Position i predicts token i + 1 (logits.prompt_scores, for a prompt in one piece); the last
        # position of the prompt predicts the first new token, which is not the prompt's.
        scored = min(end, len(entry.prompt) - 1) - start
        if scored > 0:
            targets = torch.tensor(entry.prompt[start + 1 : start + 1 + scored], device=logits.device)
            entry.scored += scores_of(logits[:scored], targets, entry.top)
    entry.state, entry.done = state, end
    return logits[-1] if end == len(entry.prompt) else None


def scorers(rows: Sequence) -> dict[int, dynamic.Score]:
    """Prefill callbacks for the rows that score their prompt (echo): a request's first row scores it,
    and its other sequences share the result."""
    scorers = {}
    for position, row in enumerate(rows):
        if row.choice.sampling.score_prompt and row.index == 0:
            siblings = [r for r in rows if r.owner is row.owner]

            def score(logits: torch.Tensor, siblings=siblings, choice=row.choice) -> None:
                scored = prompt_scores(choice.tokens, logits, choice.sampling.logprobs or 0)
                for sibling in siblings:
                    sibling.choice.prompt_scored = scored

            scorers[position] = score
    return scorers
