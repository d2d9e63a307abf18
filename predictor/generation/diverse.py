"""Diverse (group) beam search, offline, computing exactly what transformers 4.x computed.

transformers 5 moved group beam search out of its core into a hub repository that must be
downloaded and run with ``trust_remote_code`` (https://hf.co/transformers-community/group-beam-search);
we do neither. The algorithm is Vijayakumar et al. 2016 (https://arxiv.org/abs/1610.02424); the
service this replaces ran transformers 4.x's version of it (``GenerationMixin._group_beam_search``,
``BeamSearchScorer`` and ``BeamHypotheses`` in generation/beam_search.py, and
``HammingDiversityLogitsProcessor``; 4.46.3 is the last release that has them all), and clients expect
its answers, so this module follows that version step for step:

- ``num_beams`` rows per prompt in ``num_beam_groups`` groups of ``num_beams / num_beam_groups``; the
  first row of each group starts at score 0, the others at -1e9. One forward pass per step for all rows.
- Within a step the groups take turns. A group's scores are the log-softmax of its rows' logits, minus
  ``diversity_penalty`` times how often each token was chosen at this step by the earlier groups of the
  same prompt (a finished group "chooses" the pad token, so it still penalizes), then the usual
  processors in transformers 4.x's order (repetition penalty, prompt n-gram ban, min_length, invalid
  values). The best ``2 * group size`` continuations of the group are taken in score order: EOS among
  the first ``group size`` of them finishes a hypothesis (kept per group, at most ``group size``, scored
  ``sum of log-probs / generated length ** length_penalty``); the first ``group size`` others go on.
- A group is done once it has ``group size`` hypotheses and (early_stopping) or (none of its candidates
  can still beat its worst one); the search ends when every group of every prompt is done, at
  max_length, at max_time, or when nobody waits for the answer. Groups still open then add their
  running beams as hypotheses; a prompt's answers are the best of all its groups' hypotheses (ties:
  the later one first, as 4.x's sort-then-pop returns them).

With one group this is 4.x's plain beam search (``_beam_search`` used the same scorer), and the runner
sends every beam search without sampling here: transformers 5 still has the processors (reused here),
but not ``BeamHypotheses``. Its vectorized beam search decides when a prompt is done by the best
*running* beam, where 4.x took the best candidate of the step, EOS included, so 5.x can stop before
4.x would have found its best hypothesis (one of the 18 plain beam searches of tests/fixtures/golden.json
differs). Scores are float32 tensors turned into Python floats exactly where 4.x called ``.item()``, so
ties and rounding come out the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import (
    DynamicCache,
    EncoderNoRepeatNGramLogitsProcessor,
    GenerationConfig,
    InfNanRemoveLogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
)


@dataclass
class _Hypotheses:
    """One group's finished hypotheses for one prompt: the best ``size`` by length-normalized score."""

    size: int
    length_penalty: float
    early_stopping: bool | str
    max_new: int  # new tokens allowed: the best length early_stopping="never" can hope for
    beams: list[tuple[float, list[int]]] = field(default_factory=list)
    worst: float = 1e9

    def add(self, tokens: list[int], sum_logprobs: float, length: int) -> None:
        score = sum_logprobs / length**self.length_penalty
        if len(self.beams) < self.size or score > self.worst:
            self.beams.append((score, tokens))
            if len(self.beams) > self.size:  # drop the worst (the earliest of equals)
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def done(self, best_sum_logprobs: float, length: int) -> bool:
        """Whether no running beam can still get in (``length``: new tokens after this step)."""
        if len(self.beams) < self.size:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            length = self.max_new
        return self.worst >= best_sum_logprobs / length**self.length_penalty


@dataclass
class _Search:
    """The state of one group beam search over ``batch`` prompts."""

    config: GenerationConfig
    groups: int
    penalty: float
    batch: int
    prompt_len: int
    processors: LogitsProcessorList
    hyps: list[list[_Hypotheses]]  # [prompt][group]
    scores: torch.Tensor  # (batch * num_beams,) running sums of log-probabilities, float32
    done: list[list[bool]] = field(init=False)  # [prompt][group]: no running beam can get in any more

    def __post_init__(self) -> None:
        self.done = [[False] * self.groups for _ in range(self.batch)]

    @property
    def size(self) -> int:
        return self.config.num_beams // self.groups

    def rows(self, group: int, device: torch.device) -> torch.Tensor:
        """The rows of ``group`` for every prompt, prompt by prompt."""
        beams = self.config.num_beams
        starts = torch.arange(self.batch, device=device)[:, None] * beams + group * self.size
        return (starts + torch.arange(self.size, device=device)[None, :]).reshape(-1)

    def all_done(self) -> bool:
        return all(all(per_prompt) for per_prompt in self.done)


def generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    num_beam_groups: int,
    diversity_penalty: float,
    stop: Callable[[], bool] | None = None,
) -> list[list[list[int]]]:
    """Diverse beam search (plain beam search with one group) for a batch of left-padded prompts.

    ``config`` holds lengths counted on the padded rows, as ``generate`` would. Returns, per prompt,
    ``config.num_return_sequences`` lists of new token ids, best first; a hypothesis that ended with
    EOS keeps it as its last token. ``stop`` ends the search early when it returns True.
    """
    started = time.monotonic()
    search = _start(input_ids, config, num_beam_groups, diversity_penalty)
    ids = input_ids.repeat_interleave(config.num_beams, dim=0)
    mask = attention_mask.long().repeat_interleave(config.num_beams, dim=0)
    cache = DynamicCache(config=model.config)
    logits = _forward(model, ids, mask, cache)
    while True:
        ids, order = _step(search, ids, logits)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        if _finished(search, ids, started, stop):
            break
        cache.reorder_cache(order)
        logits = _forward(model, ids, mask, cache)
    return _best(search, ids)


def _start(input_ids: torch.Tensor, config: GenerationConfig, groups: int, penalty: float) -> _Search:
    batch, prompt_len = input_ids.shape
    size = config.num_beams // groups
    length_penalty = 1.0 if config.length_penalty is None else config.length_penalty
    early_stopping = False if config.early_stopping is None else config.early_stopping
    hyps = [
        [_Hypotheses(size, length_penalty, early_stopping, config.max_length - prompt_len) for _ in range(groups)]
        for _ in range(batch)
    ]
    scores = torch.full((batch, config.num_beams), -1e9, dtype=torch.float, device=input_ids.device)
    scores[:, ::size] = 0.0  # only the first beam of each group is live at the first step
    return _Search(config, groups, penalty, batch, prompt_len, _processors(config, input_ids), hyps, scores.view(-1))


def _processors(config: GenerationConfig, input_ids: torch.Tensor) -> LogitsProcessorList:
    """transformers' own processors, in the order transformers 4.x applied them after the diversity
    penalty (GenerationMixin._get_logits_processor, 4.46.3): the rest of this request's settings."""
    eos = config.eos_token_id
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.encoder_no_repeat_ngram_size:
        processors.append(EncoderNoRepeatNGramLogitsProcessor(config.encoder_no_repeat_ngram_size, input_ids))
    if config.min_length:
        processors.append(MinLengthLogitsProcessor(config.min_length, eos, device=input_ids.device))
    if config.remove_invalid_values:
        processors.append(InfNanRemoveLogitsProcessor())
    return processors


def _forward(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    """Logits for the next token of every row (the whole prompt first, then one token per step)."""
    new = ids.shape[1] - cache.get_seq_length()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -new:]
    # The cache goes second, by position: transformers 5.0-5.17 name it past_key_values, later 5.x cache.
    out = model(ids[:, -new:], cache, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :]


def _hamming(search: _Search, scores: torch.Tensor, chosen: torch.Tensor, group: int) -> torch.Tensor:
    """Subtract the penalty times how often earlier groups of the same prompt chose each token now."""
    if group == 0 or not search.penalty:
        return scores
    earlier = chosen.view(search.batch, -1)[:, : group * search.size]
    counts = torch.zeros((search.batch, scores.shape[-1]), dtype=torch.long, device=scores.device)
    counts.scatter_add_(1, earlier, torch.ones_like(earlier))
    penalty = search.penalty * counts  # float32, computed as 4.x did (float times integer counts)
    return (scores.view(search.batch, search.size, -1) - penalty[:, None, :]).view(scores.shape)


def _step(search: _Search, ids: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance every group by one token, in group order. Returns the new rows and, for each new row,
    the old row it continues (to reorder the cache)."""
    device, vocab = ids.device, logits.shape[-1]
    chosen = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
    order = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
    ids = ids.clone()
    for group in range(search.groups):
        rows = search.rows(group, device)
        group_ids = ids[rows]
        scores = torch.log_softmax(logits[rows].float(), dim=-1)
        scores = search.processors(group_ids, _hamming(search, scores, chosen, group))
        total = (scores + search.scores[rows, None]).view(search.batch, search.size * vocab)
        top, index = torch.topk(total, 2 * search.size, dim=1, largest=True, sorted=True)
        new_scores, tokens, sources = _choose(search, group, group_ids, top.tolist(), index.tolist(), vocab)
        sources = torch.tensor(sources, dtype=torch.long, device=device)
        search.scores[rows] = torch.tensor(new_scores, dtype=search.scores.dtype, device=device)
        chosen[rows] = torch.tensor(tokens, dtype=torch.long, device=device)
        ids[rows] = group_ids[sources]
        order[rows] = rows[sources]
    return torch.cat([ids, chosen[:, None]], dim=1), order


def _choose(
    search: _Search, group: int, group_ids: torch.Tensor, top: list[list[float]], index: list[list[int]], vocab: int
) -> tuple[list[float], list[int], list[int]]:
    """BeamSearchScorer.process for one group: finished hypotheses, then the beams that go on.

    ``top`` and ``index``: each prompt's best candidates (beam * vocab + token), best first. Returns the
    group's next scores, tokens and source rows (indices into the group's rows)."""
    eos, pad, size = search.config.eos_token_id, search.config.pad_token_id, search.size
    length = group_ids.shape[1] + 1 - search.prompt_len  # new tokens once this step's token is in
    scores, tokens, sources = [], [], []
    for b, (row_top, row_index) in enumerate(zip(top, index, strict=False)):
        if search.done[b][group]:  # finished groups mark time with padding
            scores += [0.0] * size
            tokens += [pad] * size
            sources += [b * size] * size
            continue
        going = 0
        for rank, (score, (source, tok)) in enumerate(
            zip(row_top, (divmod(i, vocab) for i in row_index), strict=False)
        ):
            if tok == eos:
                if rank < size:
                    hypothesis = group_ids[b * size + source, search.prompt_len :].tolist() + [eos]
                    search.hyps[b][group].add(hypothesis, score, length)
                continue
            scores.append(score)
            tokens.append(tok)
            sources.append(b * size + source)
            going += 1
            if going == size:
                break
        search.done[b][group] = search.hyps[b][group].done(max(row_top), length)
    return scores, tokens, sources


def _finished(search: _Search, ids: torch.Tensor, started: float, stop: Callable[[], bool] | None) -> bool:
    max_time = search.config.max_time
    return (
        search.all_done()
        or ids.shape[1] >= search.config.max_length
        or (max_time is not None and time.monotonic() - started > max_time)
        or (stop is not None and stop())
    )


def _best(search: _Search, ids: torch.Tensor) -> list[list[list[int]]]:
    """BeamSearchScorer.finalize: open groups add their running beams; the best of all groups win."""
    length = ids.shape[1] - search.prompt_len
    new_tokens, scores = ids[:, search.prompt_len :].tolist(), search.scores.tolist()
    answers = []
    for b in range(search.batch):
        for group in range(search.groups):
            if not search.done[b][group]:
                for row in search.rows(group, ids.device).view(search.batch, -1)[b].tolist():
                    search.hyps[b][group].add(new_tokens[row], scores[row], length)
        candidates = [beam for group in search.hyps[b] for beam in group.beams]
        ranked = sorted(candidates, key=lambda beam: beam[0])[::-1]  # ties: the later candidate first
        answers.append([tokens for _, tokens in ranked[: search.config.num_return_sequences or 1]])
    return answers
