"""Beam search (diverse, plain and sampled) one token at a time, computing exactly what transformers 4.x computed.

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
ties and rounding come out the same (scorer.py holds 4.x's scorer).

Beam sampling (``do_sample`` with one group) is 4.x's ``_beam_search`` with sampling too: the same
processors followed by the warpers (temperature, top-k, top-p, min-p keeping at least 2 tokens), then
``2 * num_beams`` candidates drawn without replacement from the softmax of the running sums and sorted,
instead of the top ones; transformers 5 draws the same way, so a seed gives the same draws, and only
its different stopping rule can change a text.

A search is an object (``BeamSearch``): creating it runs the prefill, and each ``step()`` chooses one
token for every row and runs the forward for the next, so the engine interleaves it with the
continuous batch's decode steps (engine/scheduling.py). ``generate`` runs one to its end.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import (
    DynamicCache,
    EncoderNoRepeatNGramLogitsProcessor,
    GenerationConfig,
    InfNanRemoveLogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinPLogitsWarper,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from predictor.generation.logits import Scored, scores_of
from predictor.generation.scorer import Scorer, finalize, process

#: A sampled beam's logprobs so far: (the earlier tokens' node, this token's Scored), shared between the
#: beams that continue one row, so a step costs one node per row, not a copy of each history.
_Node = tuple | None


class BeamSearch:
    """One beam search over left-padded prompts that share their settings, advanced one token per step().

    ``config`` holds lengths counted on the padded rows, as ``generate`` would. ``generator`` draws a
    sampled search's candidates (None: the global generator). ``top``: with sampling, keep each chosen
    token's logprob and its ``top`` alternatives (from the step's processed log-probabilities, what
    transformers' ``compute_transition_scores`` reports). Creating it runs the prefill.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        config: GenerationConfig,
        num_beam_groups: int = 1,
        diversity_penalty: float = 0.0,
        generator: torch.Generator | None = None,
        top: int | None = None,
    ) -> None:
        self.started = time.monotonic()  # max_time counts from here, as generate's MaxTimeCriteria did
        self.model, self.generator, self.steps, self.done = model, generator, 0, False
        processors = _processors(config, input_ids)
        self.scorer = Scorer.create(input_ids, config, num_beam_groups, diversity_penalty, processors)
        self.top = top if config.do_sample else None
        self.ids = input_ids.repeat_interleave(config.num_beams, dim=0)
        self.mask = attention_mask.long().repeat_interleave(config.num_beams, dim=0)
        self.history: list[_Node] | None = None if self.top is None else [None] * self.ids.shape[0]
        self.cache: DynamicCache | None = DynamicCache(config=model.config)
        with torch.inference_mode():
            self.logits: torch.Tensor | None = _forward(model, self.ids, self.mask, self.cache)

    @property
    def rows(self) -> int:
        """Sequences this search advances at each step (prompts x beams)."""
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        """Tokens each row reaches at most (the padded prompt and the new tokens)."""
        return self.scorer.config.max_length

    def step(self, stop: Callable[[], bool] | None = None) -> bool:
        """Choose every row's next token, then run the forward for the one after. True once the search
        ended (every group done, max_length, max_time, or ``stop()`` after this step's choice)."""
        with torch.inference_mode():
            self.ids, order = _step(self, self.ids, self.logits)
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
            self.steps += 1
            if self._finished() or (stop is not None and stop()):
                self.done, self.cache, self.logits = True, None, None  # its memory goes at once
                return True
            self.cache.reorder_cache(order)
            self.logits = _forward(self.model, self.ids, self.mask, self.cache)
        return False

    def results(self) -> list[list[tuple[list[int], list[Scored] | None]]]:
        """Per prompt, ``num_return_sequences`` answers best first: new token ids (a hypothesis that ended
        with EOS keeps it as its last token), and with ``top`` their tokens' Scored (EOS not included)."""
        answers = finalize(self.scorer, self.ids, self.history)
        return [[(tokens, _scored(node)) for tokens, node in prompt] for prompt in answers]

    def _finished(self) -> bool:
        max_time = self.scorer.config.max_time
        return (
            self.scorer.all_done()
            or self.ids.shape[1] >= self.scorer.config.max_length
            or (max_time is not None and time.monotonic() - self.started > max_time)
        )


def generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    num_beam_groups: int,
    diversity_penalty: float,
    stop: Callable[[], bool] | None = None,
) -> list[list[list[int]]]:
    """A whole deterministic beam search (diverse, or plain with one group) for a batch of left-padded
    prompts: per prompt, ``config.num_return_sequences`` lists of new token ids, best first."""
    search = BeamSearch(model, input_ids, attention_mask, config, num_beam_groups, diversity_penalty)
    while not search.step(stop):
        pass
    return [[tokens for tokens, _ in answers] for answers in search.results()]


def _scored(node: _Node) -> list[Scored] | None:
    if node is None:
        return None
    entries = []
    while node is not None:
        node, entry = node
        entries.append(entry)
    return entries[::-1]


def _processors(config: GenerationConfig, input_ids: torch.Tensor) -> LogitsProcessorList:
    """transformers' own processors, in the order transformers 4.x applied them after the diversity
    penalty (GenerationMixin._get_logits_processor, 4.46.3): the rest of this request's settings, and
    when sampling the warpers after them (at least 2 tokens kept: one may be EOS)."""
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
    if config.do_sample:
        top_k = 50 if config.top_k is None else config.top_k  # generate's default when unset
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if top_k != 0:
            processors.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=2))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=2))
        if config.min_p is not None:  # after top_p, as 4.x's _get_logits_processor (4.39 on)
            processors.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=2))
    return processors


def _forward(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    """Logits for the next token of every row (the whole prompt first, then one token per step)."""
    new = ids.shape[1] - cache.get_seq_length()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -new:]
    # The cache goes second, by position: transformers 5.0-5.17 name it past_key_values, later 5.x cache.
    out = model(ids[:, -new:], cache, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :]


def _hamming(search: Scorer, scores: torch.Tensor, chosen: torch.Tensor, group: int) -> torch.Tensor:
    """Subtract the penalty times how often earlier groups of the same prompt chose each token now."""
    if group == 0 or not search.penalty:
        return scores
    earlier = chosen.view(search.batch, -1)[:, : group * search.size]
    counts = torch.zeros((search.batch, scores.shape[-1]), dtype=torch.long, device=scores.device)
    counts.scatter_add_(1, earlier, torch.ones_like(earlier))
    penalty = search.penalty * counts  # float32, computed as 4.x did (float times integer counts)
    return (scores.view(search.batch, search.size, -1) - penalty[:, None, :]).view(scores.shape)


def _candidates(search: BeamSearch, total: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's ``count`` candidates, best first: the top ones, or (sampling) drawn from the softmax
    of the running sums without replacement, then sorted (4.46.3's _beam_search, do_sample)."""
    if not search.scorer.config.do_sample:
        return torch.topk(total, count, dim=1, largest=True, sorted=True)
    index = torch.multinomial(torch.softmax(total, dim=-1), num_samples=count, generator=search.generator)
    top, order = torch.sort(torch.gather(total, -1, index), descending=True, dim=1)
    return top, torch.gather(index, -1, order)


def _step(search: BeamSearch, ids: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance every group by one token, in group order. Returns the new rows and, for each new row,
    the old row it continues (to reorder the cache)."""
    scorer, device, vocab = search.scorer, ids.device, logits.shape[-1]
    chosen = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
    order = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
    ids, history = ids.clone(), search.history
    if history is not None:
        search.history = list(history)
    for group in range(scorer.groups):
        rows = scorer.rows(group, device)
        group_ids = ids[rows]
        scores = torch.log_softmax(logits[rows].float(), dim=-1)
        scores = scorer.processors(group_ids, _hamming(scorer, scores, chosen, group))
        total = (scores + scorer.scores[rows, None]).view(scorer.batch, scorer.size * vocab)
        top, index = _candidates(search, total, 2 * scorer.size)
        listed = rows.tolist()
        extra = None if history is None else (lambda row, listed=listed: history[listed[row]])
        new_scores, tokens, sources = process(scorer, group, group_ids, top.tolist(), index.tolist(), vocab, extra)
        sources = torch.tensor(sources, dtype=torch.long, device=device)
        scorer.scores[rows] = torch.tensor(new_scores, dtype=scorer.scores.dtype, device=device)
        chosen[rows] = torch.tensor(tokens, dtype=torch.long, device=device)
        ids[rows] = group_ids[sources]
        order[rows] = rows[sources]
        if history is not None:  # each new row: its source row's history and this token's scores
            entries = scores_of(scores[sources], chosen[rows], search.top)
            for row, source, entry in zip(listed, order[rows].tolist(), entries, strict=True):
                search.history[row] = (history[source], entry)
    return torch.cat([ids, chosen[:, None]], dim=1), order
