"""A continuous batch: requests join and leave between decode steps (dynamic.py holds the tensors).

Every ``num_beams == 1`` request (greedy or sampled, any number of sequences) runs here: each of its
sequences is a row with its own settings (logits.py), length bounds and ``max_time`` deadline. A
request that arrives while others generate joins at the next step instead of waiting for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Protocol, Sequence

import torch

from predictor.core import GenerationRequest, new_tokens
from predictor.generation import dynamic
from predictor.generation.logits import RowChoice, Scored, choose, prompt_scores, row_choice
from predictor.generation.retry import each_alone


class Decoder(Protocol):
    """The batch's tensors: dynamic.DynamicDecoder (CPU) or static.StaticDecoder (GPU fast path)."""

    @property
    def rows(self) -> int: ...

    def join(
        self, prompts: Sequence[Sequence[int]], score: Mapping[int, dynamic.Score] | None = None
    ) -> torch.Tensor: ...

    def step(self, tokens: Sequence[int], rows: Sequence[int] | None = None) -> torch.Tensor: ...

    def undo_step(self) -> None: ...

    def keep(self, survivors: Sequence[int]) -> list[int]: ...

    def clear(self) -> None: ...


@dataclass
class Row:
    owner: Hashable  # the engine's handle for the request; a request owns one row per sequence
    index: int  # which of the request's sequences
    choice: RowChoice
    max_new: int
    deadline: float | None  # max_time: stop and return what was generated

    @property
    def longest(self) -> int:
        return self.choice.prompt_length + self.max_new


@dataclass(frozen=True)
class Done:
    """A finished row: its request, which sequence, the new tokens (without EOS), and why it ended."""

    owner: Hashable
    index: int
    tokens: list[int]
    reason: str  # core.FINISH_REASONS
    scored: list[Scored] | None = None  # with Sampling.logprobs: one per token in ``tokens``
    prompt_scored: list[Scored] | None = None  # with Sampling.score_prompt


class ContinuousBatch:
    """The rows generating now, and the model they run on. Used from the engine thread only."""

    def __init__(self, model, eos: int, decoder: Decoder | None = None) -> None:
        self.model, self.eos = model, eos
        self.decoder = decoder or dynamic.DynamicDecoder(model, eos)
        self.rows: list[Row] = []
        self.tokens_generated = 0  # every token a row has kept, ever (for the counter metric)

    @property
    def longest(self) -> int:
        """Longest a live row may grow (prompt + new tokens): the cache never exceeds it."""
        return max((row.longest for row in self.rows), default=0)

    def join(self, entries: Sequence[tuple[Hashable, GenerationRequest]]) -> list[Done]:
        """Prefill new requests and add their rows; returns rows already done after one token."""
        now, rows = time.monotonic(), []
        for owner, request in entries:
            s, (max_new, min_new) = request.sampling, new_tokens(request)
            deadline = now + s.max_time if s.max_time is not None else None
            rows += [
                Row(owner, i, row_choice(s, request.input_ids, min_new, i), max_new, deadline)
                for i in range(s.num_return_sequences)
            ]
        with torch.inference_mode():
            logits = self.decoder.join([row.choice.tokens for row in rows], _prompt_scorers(rows))
            try:
                tokens = choose([row.choice for row in rows], logits, self.eos).tolist()
            except BaseException:
                self.decoder.keep(list(range(len(self.rows))))  # the cache must hold exactly the batch's rows
                raise
        self.rows += rows
        return self._record(dict(zip(range(len(self.rows) - len(rows), len(self.rows)), tokens, strict=True)))

    def advance(self) -> list[Done]:
        """One decode step for every row."""
        with torch.inference_mode():
            logits = self.decoder.step([row.choice.tokens[-1] for row in self.rows])
            try:
                tokens = choose([row.choice for row in self.rows], logits, self.eos).tolist()
            except BaseException:
                self.decoder.undo_step()  # no row kept a token: a retry (advance_each) feeds them again
                raise
        return self._record(dict(enumerate(tokens)))

    def advance_each(self, check: Callable[[Hashable], None]) -> tuple[list[Done], dict[Hashable, Exception]]:
        """One step with each request's rows on their own, after a step for all of them failed.

        ``check(owner)`` runs first for each request (fault injection). A request whose step fails
        leaves with its exception; the others get their token, exactly as in a shared step.
        """
        groups: dict[Hashable, list[int]] = {}
        for index, row in enumerate(self.rows):
            groups.setdefault(row.owner, []).append(index)

        def step(owner: Hashable) -> list[int]:
            check(owner)
            indices = groups[owner]
            with torch.inference_mode():
                logits = self.decoder.step([self.rows[i].choice.tokens[-1] for i in indices], rows=indices)
                return choose([self.rows[i].choice for i in indices], logits, self.eos).tolist()

        tokens, failed = {}, {}
        for owner, outcome in zip(groups, each_alone(list(groups), step), strict=True):
            if isinstance(outcome, Exception):
                failed[owner] = outcome
            else:
                tokens.update(zip(groups[owner], outcome, strict=True))
        return self._record(tokens, drop={i for i, row in enumerate(self.rows) if row.owner in failed}), failed

    def leave(self, owners: set[Hashable]) -> dict[Hashable, int]:
        """Drop every row of these requests (cancelled, failed): their slots are free at once.

        Returns how many tokens each had generated by then.
        """
        generated = {owner: 0 for owner in owners}
        for row in self.rows:
            if row.owner in owners:
                generated[row.owner] += row.choice.generated
        self._drop({i for i, row in enumerate(self.rows) if row.owner in owners})
        return generated

    def finish(self, rows: set[tuple[Hashable, int]]) -> list[tuple[Hashable, int]]:
        """Drop these (owner, index) rows: a stop string, found off the engine thread, ended them.

        Returns those that were still here (a row may have ended meanwhile, or left with its owner).
        """
        found = [i for i, row in enumerate(self.rows) if (row.owner, row.index) in rows]
        dropped = [(self.rows[i].owner, self.rows[i].index) for i in found]
        self._drop(set(found))
        return dropped

    def clear(self) -> list[Hashable]:
        """Drop everything (after a failed step); returns the requests that were running."""
        owners = list(dict.fromkeys(row.owner for row in self.rows))
        self.decoder.clear()
        self.rows = []
        return owners

    def _record(self, tokens: dict[int, int], drop: set[int] = frozenset()) -> list[Done]:
        """Append each row's new token; rows that finish leave, with those in ``drop``."""
        now, finished = time.monotonic(), {}
        for index, token in tokens.items():
            row = self.rows[index]
            if token == self.eos or row.max_new == 0:  # EOS is not kept; max_new 0: echo scoring only
                finished[index] = "eos" if row.max_new else "length"
                if row.choice.scored:
                    row.choice.scored.pop()
                continue
            row.choice.tokens.append(token)
            self.tokens_generated += 1
            reason = self._ended(row, now)
            if reason:
                finished[index] = reason
        done = [
            Done(
                self.rows[i].owner,
                self.rows[i].index,
                self._new(self.rows[i]),
                reason,
                self.rows[i].choice.scored,
                self.rows[i].choice.prompt_scored,
            )
            for i, reason in sorted(finished.items())
        ]
        self._drop(set(finished) | drop)
        return done

    def _ended(self, row: Row, now: float) -> str | None:
        # Stop strings are text: the event loop finds them (engine/outputs.py) and calls finish().
        if row.choice.generated >= row.max_new:
            return "length"
        if row.deadline is not None and now >= row.deadline:
            return "time"
        return None

    @staticmethod
    def _new(row: Row) -> list[int]:
        return row.choice.tokens[row.choice.prompt_length :]

    def _drop(self, indices: set[int]) -> None:
        if indices:
            survivors = [i for i in range(len(self.rows)) if i not in indices]
            self.rows = [self.rows[i] for i in self.decoder.keep(survivors)]


def _prompt_scorers(rows: Sequence[Row]) -> dict[int, dynamic.Score]:
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
