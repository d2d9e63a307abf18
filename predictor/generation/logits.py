"""Next-token choice for the rows of a continuous batch.

Each row has its own settings, history and length, so it cannot go through ``generate``'s single
logits-processor list. This computes what transformers' processors compute, in the order ``generate``
applies them (repetition penalty, prompt n-gram ban, minimum length, NaN/inf removal, then for
sampling temperature, top-k, top-p, min-p), batched across all rows from settings kept on the device
(rowstate.py); only the prompt n-gram ban runs row by row, for the rows that ask for it. A greedy row
therefore gets exactly what ``generate`` would give it alone, and a sampled row draws from exactly the
distribution ``generate`` draws from, but not its draws (docs/api.md): an unseeded row with one uniform
from the global generator, a seeded row with one hashed from (seed, position), the same whatever else is
in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import EncoderNoRepeatNGramLogitsProcessor, LogitsProcessorList

from predictor.core import Sampling
from predictor.generation import grammar
from predictor.generation.rowstate import BatchState

# transformers' defaults for unset sampling values (GenerationConfig's documented defaults).
DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P = 1.0, 50, 1.0


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
    seed: int | None = None  # hashed with the position: the same draws whatever else is in the batch
    # Sampling.logprobs set: per generated token (id, logprob, ((id, logprob), ...) alternatives);
    # None computes nothing, so a step without logprobs costs what it did before.
    scored: list[Scored] | None = None
    prompt_scored: list[Scored] | None = None  # score_prompt: per prompt token after the first
    # The device tensors of the batch it was last chosen in (rowstate.py), reused while the rows stay.
    state: BatchState | None = field(default=None, repr=False, compare=False)
    grammar: grammar.RowGrammar | None = field(default=None, repr=False, compare=False)  # structured output

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_length


def row_choice(sampling: Sampling, prompt: Sequence[int], min_new: int, index: int = 0) -> RowChoice:
    """Build the per-row processors once, when the row joins the batch (``index``: which sequence)."""
    history = LogitsProcessorList()  # what needs the row's own tokens on the host: the prompt n-gram ban
    if sampling.encoder_no_repeat_ngram_size:
        history.append(
            EncoderNoRepeatNGramLogitsProcessor(sampling.encoder_no_repeat_ngram_size, torch.tensor([list(prompt)]))
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


def choose(
    rows: Sequence[RowChoice], logits: torch.Tensor, eos: int, tables: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """The next token of every row (``logits``: [rows, vocabulary], any float dtype), on the device.

    ``tables``: the logprob rows' scores are appended to it as a device table (``score_table``) for the
    caller's one copy of the step to the host (steps.py), instead of copied here (None).

    The rows' settings live on the device (rowstate.BatchState), built when the rows change and reused
    while they stay: a step is a fixed number of batched ops and syncs nothing (one copy to the host
    for the rows that report logprobs). The device counts the returned tokens as the rows' next ones:
    a caller appends exactly those to ``row.tokens`` (or drops the row); one that gives a row other
    tokens (a beam reordered) sets ``row.state = None`` so that its counts are rebuilt."""
    scores = logits.float()
    state = rows[0].state if rows else None
    if state is None or not state.matches(rows):
        state = BatchState(rows, scores.shape[-1], scores.device)
        for row in rows:
            row.state = state
    scores = state.penalize(scores)
    for index, row in enumerate(rows):
        if row.history:  # the prompt n-gram ban: host-side, and only for the rows that ask for it
            ids = torch.tensor([row.tokens], device=scores.device)
            scores[index : index + 1] = row.history(ids, scores[index : index + 1])
    scores = state.ban(scores, eos)
    scores = grammar.mask(rows, scores)  # structured output: the constrained rows' tokens (no-op without)
    flags = state.flags
    chosen = None if flags.all_sampled else scores.argmax(dim=-1)  # greedy rows' tokens
    drawn = scores  # the distribution each row drew from, for the rows that report logprobs
    if flags.sampled:
        subset = scores if flags.all_sampled else scores[state.sampled]
        warped = state.warp(subset)
        if flags.all_sampled:
            chosen, drawn = state.draw(warped), warped
        else:
            chosen[state.sampled] = state.draw(warped)
            if state.scores_sampled:  # a sampled row reports logprobs: of its warped scores
                drawn = scores.index_copy(0, state.sampled, warped)
    if flags.logprobs >= 0:
        _score(rows, state, drawn, chosen, tables)
    state.advance(chosen)
    return chosen


def _score(
    rows: Sequence[RowChoice], state: BatchState, drawn: torch.Tensor, chosen: torch.Tensor, tables: list | None
) -> None:
    """Append each reporting row's token, logprob and alternatives: one log-softmax and one top-k for
    all of them, and one copy to the host (here, or the caller's: ``tables``). After the warpers, as
    vLLM's default "processed_logprobs"
    (https://docs.vllm.ai/en/latest/usage/v1_guide.html#semantic-changes-to-logprobs)."""
    wanted = [row for row in rows if row.scored is not None]
    every = len(wanted) == len(rows)
    picked = drawn if every else drawn[state.wanted]
    tokens = chosen if every else chosen[state.wanted]
    table = score_table(picked, tokens, state.flags.logprobs)
    if tables is None:
        append_scores(rows, table.tolist())
    else:
        tables.append(table)


def append_scores(rows: Sequence[RowChoice], table: list[list[float]]) -> None:
    """The host copy of a step's ``score_table`` (its reporting rows, in order) into their ``scored``."""
    wanted = [row for row in rows if row.scored is not None]
    for row, scored in zip(wanted, unpack_scores(table), strict=True):
        row.scored.append(_top(scored, row.sampling.logprobs))


def scores_of(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> list[Scored]:
    """For each row of ``logits`` [rows, vocabulary]: its token, the token's logprob, and the ``top``
    likeliest tokens with theirs."""
    return unpack_scores(score_table(logits, tokens, top).tolist())


def score_table(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> torch.Tensor:
    """scores_of's numbers on the device, float64 [rows, 2 + 2 * top]: token, logprob, the ``top``
    alternatives' ids, their logprobs (float64 holds the ids and the float32 logprobs exactly)."""
    # Tokens a warper removed have -inf, which JSON cannot carry: vLLM reports -9999.0 for them too
    # (vllm/entrypoints/openai/serving_completion.py, _create_completion_logprobs).
    logprobs = torch.log_softmax(logits.float(), dim=-1).clamp(min=FLOOR)
    tokens = tokens[:, None].to(logprobs.device)
    columns = [tokens.double(), logprobs.gather(1, tokens).double()]
    if top:
        alternatives = logprobs.topk(top, dim=-1)
        columns += [alternatives.indices.double(), alternatives.values.double()]
    return torch.cat(columns, dim=1)


def unpack_scores(table: list[list[float]]) -> list[Scored]:
    """score_table's rows, copied to the host, as Scored."""
    top = (len(table[0]) - 2) // 2 if table else 0
    return [(int(r[0]), r[1], tuple(zip(map(int, r[2 : 2 + top]), r[2 + top :], strict=True))) for r in table]


def _top(scored: Scored, n: int) -> Scored:
    return scored[0], scored[1], scored[2][:n]


def prompt_scores(prompt: Sequence[int], logits: torch.Tensor, top: int) -> list[Scored]:
    """The prompt's tokens after the first, scored by the prefill's ``logits`` [len(prompt), vocabulary]
    (position i predicts token i + 1). The model's own distribution: no processor applies to a prompt."""
    return scores_of(logits[:-1], torch.tensor(prompt[1:], device=logits.device), top)
