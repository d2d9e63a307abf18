"""transformers 4.x's beam scorer, for diverse.py's searches: hypotheses, one step's choice, the answers.

``BeamHypotheses`` and ``BeamSearchScorer.process``/``finalize`` of transformers 4.46.3
(generation/beam_search.py), per group of a group beam search (one group: plain beam search, which
used the same scorer; beam sampling too, on its sampled candidates). Scores are Python floats exactly
where 4.x called ``.item()``, so ties and rounding come out the same. diverse.py's docstring says why
we keep 4.x's rules rather than transformers 5's vectorized search.

Each hypothesis may carry an ``extra`` (diverse.py keeps the logprobs of a sampled beam's tokens in it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessorList


@dataclass
class Hypotheses:
    """One group's finished hypotheses for one prompt: the best ``size`` by length-normalized score."""

    size: int
    length_penalty: float
    early_stopping: bool | str
    max_new: int  # new tokens allowed: the best length early_stopping="never" can hope for
    beams: list[tuple[float, list[int]]] = field(default_factory=list)
    worst: float = 1e9
    extras: list = field(default_factory=list)  # beside beams, one each

    def add(self, tokens: list[int], sum_logprobs: float, length: int, extra=None) -> None:
        score = sum_logprobs / length**self.length_penalty
        if len(self.beams) < self.size or score > self.worst:
            self.beams.append((score, tokens))
            self.extras.append(extra)
            if len(self.beams) > self.size:  # drop the worst (the earliest of equals)
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]], self.extras[ranked[0][1]]
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
class Scorer:
    """The state of one group beam search over ``batch`` prompts."""

    config: GenerationConfig
    groups: int
    penalty: float
    batch: int
    prompt_len: int
    processors: LogitsProcessorList
    hyps: list[list[Hypotheses]]  # [prompt][group]
    scores: torch.Tensor  # (batch * num_beams,) running sums of log-probabilities, float32
    done: list[list[bool]] = field(init=False)  # [prompt][group]: no running beam can get in any more

    def __post_init__(self) -> None:
        self.done = [[False] * self.groups for _ in range(self.batch)]

    @classmethod
    def create(
        cls, input_ids: torch.Tensor, config: GenerationConfig, groups: int, penalty: float, processors
    ) -> Scorer:
        batch, prompt_len = input_ids.shape
        size = config.num_beams // groups
        length_penalty = 1.0 if config.length_penalty is None else config.length_penalty
        early_stopping = False if config.early_stopping is None else config.early_stopping
        hyps = [
            [Hypotheses(size, length_penalty, early_stopping, config.max_length - prompt_len) for _ in range(groups)]
            for _ in range(batch)
        ]
        scores = torch.full((batch, config.num_beams), -1e9, dtype=torch.float, device=input_ids.device)
        scores[:, ::size] = 0.0  # only the first beam of each group is live at the first step
        return cls(config, groups, penalty, batch, prompt_len, processors, hyps, scores.view(-1))

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


def process(
    search: Scorer,
    group: int,
    group_ids: torch.Tensor,
    top: list[list[float]],
    index: list[list[int]],
    vocab: int,
    extra: Callable[[int], object] | None = None,
) -> tuple[list[float], list[int], list[int]]:
    """BeamSearchScorer.process for one group: finished hypotheses, then the beams that go on.

    ``top`` and ``index``: each prompt's best candidates (beam * vocab + token), best first. Returns the
    group's next scores, tokens and source rows (indices into the group's rows). ``extra(row)``: what a
    hypothesis that ends on that row (an index into the group's rows) carries."""
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
                    row = b * size + source
                    hypothesis = group_ids[row, search.prompt_len :].tolist() + [eos]
                    search.hyps[b][group].add(hypothesis, score, length, None if extra is None else extra(row))
                continue
            scores.append(score)
            tokens.append(tok)
            sources.append(b * size + source)
            going += 1
            if going == size:
                break
        search.done[b][group] = search.hyps[b][group].done(max(row_top), length)
    return scores, tokens, sources


def finalize(search: Scorer, ids: torch.Tensor, extras: list | None = None) -> list[list[tuple[list[int], object]]]:
    """BeamSearchScorer.finalize: open groups add their running beams; the best of all groups win.

    Returns per prompt its ``num_return_sequences`` answers, best first, each with its extra
    (``extras[row]`` for a running beam)."""
    length = ids.shape[1] - search.prompt_len
    new_tokens, scores = ids[:, search.prompt_len :].tolist(), search.scores.tolist()
    answers = []
    for b in range(search.batch):
        for group in range(search.groups):
            if not search.done[b][group]:
                for row in search.rows(group, ids.device).view(search.batch, -1)[b].tolist():
                    extra = None if extras is None else extras[row]
                    search.hyps[b][group].add(new_tokens[row], scores[row], length, extra)
        candidates = [beam for group in search.hyps[b] for beam in zip(group.beams, group.extras, strict=True)]
        ranked = sorted(candidates, key=lambda beam: beam[0][0])[::-1]  # ties: the later candidate first
        answers.append([(tokens, extra) for (_, tokens), extra in ranked[: search.config.num_return_sequences or 1]])
    return answers
