"""A continuous batch: requests join and leave between decode steps (dynamic.py holds the tensors).

Every ``num_beams == 1`` request (greedy or sampled, any number of sequences) runs here: each of its
sequences is a row with its own settings (logits.py), length bounds and ``max_time`` deadline. A
request that arrives while others generate joins at the next step instead of waiting for them.
A prompt longer than ``max_prefill_tokens`` joins in chunks (prefill.py), one per step: the rows
already generating keep getting a token at every step meanwhile.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Sequence

import torch

from predictor.core import GenerationRequest, new_tokens
from predictor.generation import dynamic, grammar, prefill, steps
from predictor.generation.batchrows import Decoder, Done, Row
from predictor.generation.logits import choose, row_choice
from predictor.generation.retry import Fatal, each_alone, together_or_alone


class ContinuousBatch:
    """The rows generating now, those still prefilling, and the model they run on. Engine thread only.

    ``max_prefill_tokens`` bounds a step's prefill (None: every prompt in one piece). ``check_prefill``
    (owners) runs before each prefill (fault injection) and ``fatal`` names the errors that must not
    be narrowed down (engine/faults.py): the engine sets them.
    """

    def __init__(self, model, eos: int, decoder: Decoder | None = None, max_prefill_tokens: int | None = None) -> None:
        self.model, self.eos = model, eos
        self.decoder = decoder or dynamic.DynamicDecoder(model, eos)
        self.rows: list[Row] = []
        self.pending: list[prefill.Pending] = []  # oldest first; only the first may be part-way through
        self.max_prefill_tokens = max_prefill_tokens
        self.check_prefill: Callable[[Sequence[Hashable]], None] | None = None
        self.fatal: Fatal | None = None
        self.tokens_generated = 0  # every token a row has kept, ever (for the counter metric)
        self._prefilled: list[Hashable] = []  # requests whose first token came since take_prefilled()
        self._failed: dict[Hashable, Exception] = {}  # requests whose prefill failed in advance()
        self._prefill_ran = False  # join() ran this step's prefill already
        self.io = steps.StepIO()  # the rows' latest tokens on the device; each step's one copy back

    @property
    def longest(self) -> int:
        """Longest a live row may grow (prompt + new tokens): the cache never exceeds it."""
        return max((row.longest for row in self._all_rows()), default=0)

    @property
    def occupied(self) -> int:
        """Rows generating or prefilling: both hold (or will hold) a row of the cache."""
        return len(self.rows) + sum(len(entry.rows) for entry in self.pending)

    def join(self, entries: Sequence[tuple[Hashable, GenerationRequest]]) -> list[Done]:
        """Queue new requests' prefill; if none was waiting, run it (or a long prompt's first chunk) now.

        Returns rows already done after one token. When it raises, none of ``entries`` joined.
        """
        now, joining = time.monotonic(), []
        for owner, request in entries:
            s, (max_new, min_new) = request.sampling, new_tokens(request)
            deadline = now + s.max_time if s.max_time is not None else None
            rows = [
                Row(owner, i, row_choice(s, request.input_ids, min_new, i), max_new, deadline)
                for i in range(s.num_return_sequences)
            ]
            grammar.attach([row.choice for row in rows], request.grammar)
            top = (s.logprobs or 0) if s.score_prompt else None
            joining.append(prefill.Pending(owner, rows, request.input_ids, top))
        if self.pending:  # behind a prompt still prefilling: advance() gets to these in turn
            self.pending += joining
            return []
        self.pending = joining
        try:
            done = self._prefill(prefill.next_group(self.pending, self.max_prefill_tokens))
        except BaseException:
            grammar.release(row.choice for entry in joining for row in entry.rows)
            self.pending = []
            raise
        self._prefill_ran = True
        return done

    def advance(self) -> list[Done]:
        """One decode step for every row, then (unless join() just ran one) one prefill chunk.

        A failed prefill fails only its request (see take_failed); a failed decode step raises.
        """
        ran, self._prefill_ran = self._prefill_ran, False
        done = self._step() if self.rows else []
        if self.pending and not ran:
            done += self._prefill_narrowed()
        return done

    def take_prefilled(self) -> list[Hashable]:
        """The requests whose prefill finished (their first token chosen) since the last call."""
        owners, self._prefilled = self._prefilled, []
        return owners

    def take_failed(self) -> dict[Hashable, Exception]:
        """The requests whose prefill failed in advance() since the last call, with their errors."""
        failed, self._failed = self._failed, {}
        return failed

    def _step(self) -> list[Done]:
        with torch.inference_mode():
            logits = self.decoder.step(self.io.inputs(self.rows))
            try:
                tokens = self.io.choose(self.rows, logits, self.eos)
            except BaseException:
                self.decoder.undo_step()  # no row kept a token: a retry (advance_each) feeds them again
                raise
        return self._record(dict(enumerate(tokens)))

    def _prefill_narrowed(self) -> list[Done]:
        """The next prefill; if it fails, each request in it alone (retry.py), and the culprits leave."""
        done = []
        group = prefill.next_group(self.pending, self.max_prefill_tokens)
        for entries, outcome in together_or_alone(
            group, self._prefill, "%d requests failed to prefill together (%s); one by one", fatal=self.fatal
        ):
            if isinstance(outcome, Exception):
                grammar.release(row.choice for row in entries[0].rows)
                self.pending = [entry for entry in self.pending if entry is not entries[0]]
                self._failed[entries[0].owner] = outcome
            else:
                done += outcome
        return done

    def _prefill(self, group: Sequence[prefill.Pending]) -> list[Done]:
        """Prefill ``group`` (in one piece) or the next chunk of its one request; the rows done at once."""
        if self.check_prefill is not None:
            self.check_prefill([entry.owner for entry in group])
        with torch.inference_mode():
            if prefill.fits(group, self.max_prefill_tokens):
                rows = [row for entry in group for row in entry.rows]
                logits = self.decoder.join([row.choice.tokens for row in rows], prefill.scorers(rows))
            else:
                (entry,) = group
                last = prefill.chunk(self.model, entry, self.max_prefill_tokens)
                if last is None:
                    return []
                rows = entry.rows
                for row in rows:
                    row.choice.prompt_scored = entry.scored if entry.top is not None else None
                self.decoder.add(dynamic.repeat(entry.state, len(rows)))
                logits = last[None].repeat(len(rows), 1)  # choose() writes into its rows' scores
            try:
                tokens = self.io.choose(rows, logits, self.eos, joined=True)
            except BaseException:
                self.decoder.keep(list(range(len(self.rows))))  # the cache must hold exactly the batch's rows
                raise
        self.pending = [entry for entry in self.pending if entry not in group]
        self._prefilled += [entry.owner for entry in group]
        self.rows += rows
        return self._record(dict(zip(range(len(self.rows) - len(rows), len(self.rows)), tokens, strict=True)))

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
        self.io.reset([tokens.get(i, row.choice.tokens[-1]) for i, row in enumerate(self.rows)])
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
        grammar.release(row.choice for entry in self.pending if entry.owner in owners for row in entry.rows)
        self.pending = [entry for entry in self.pending if entry.owner not in owners]  # partial caches freed
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
        """Drop every generating row (after a failed step); returns their requests. Requests still
        prefilling took no part in the step, and stay."""
        owners = list(dict.fromkeys(row.owner for row in self.rows))
        self.decoder.clear()
        grammar.release(row.choice for row in self.rows)
        self.rows, self.io.latest = [], None
        return owners

    def _record(self, tokens: dict[int, int], drop: set[int] = frozenset()) -> list[Done]:
        """Append each row's new token; rows that finish leave, with those in ``drop``."""
        now, finished = time.monotonic(), {}
        for index, token in tokens.items():
            row = self.rows[index]
            s = row.choice.sampling
            ends = (token == self.eos and not s.ignore_eos) or row.max_new == 0  # max_new 0: echo scoring
            stop = not ends and token in s.stop_token_ids  # on the host, from the step's token list
            if ends or (stop and not s.include_stop_str_in_output):  # EOS (or a stop id) is not kept
                finished[index] = "stop" if stop else "eos" if row.max_new else "length"
                if row.choice.scored:
                    row.choice.scored.pop()
                continue
            row.choice.tokens.append(token)
            self.tokens_generated += 1
            # structured output: the grammar takes the token; a complete grammar ends the row
            complete = grammar.advance(row.choice.grammar, token) if row.choice.grammar is not None else None
            reason = "stop" if stop else complete or self._ended(row, now)
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

    def _all_rows(self) -> list[Row]:
        return self.rows + [row for entry in self.pending for row in entry.rows]

    @staticmethod
    def _new(row: Row) -> list[int]:
        return row.choice.tokens[row.choice.prompt_length :]

    def _drop(self, indices: set[int]) -> None:
        if indices:
            grammar.release(self.rows[i].choice for i in indices)
            survivors = [i for i in range(len(self.rows)) if i not in indices]
            self.rows = [self.rows[i] for i in self.io.keep(self.decoder.keep(survivors))]
