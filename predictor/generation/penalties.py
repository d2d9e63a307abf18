"""The repetition, presence and frequency penalties of a batch's rows, on the device (rowstate.py).

Each row's tokens (prompt and generated) are one row of ``history`` [rows, capacity], padded with the
row's first token. A step gathers the scores at those ids, penalizes them and scatters them back, as
transformers' ``RepetitionPenaltyLogitsProcessor`` does over ``input_ids`` (a token seen twice is
gathered twice and written back twice with the same value): the step costs the rows' lengths, not the
vocabulary, and makes no [rows, vocabulary] temporaries. ``counts`` [rows, vocabulary] holds how often
each token was generated (OpenAI's presence and frequency penalties count generated tokens only),
updated by index from each step's tokens. A row without a penalty carries neutral settings, which
leave its scores bit for bit as they were (x * 1, x / 1 and x - 0 * 0 - 0 * 0 are x), so one pass
serves every row.
"""

from __future__ import annotations

import torch

_MIN_CAPACITY = 64  # history columns at least; doubled whenever a row's tokens reach the end


class Penalties:
    """``repetition``, ``presence``, ``frequency``: [rows, 1] float settings (neutral: 1, 0, 0);
    ``first``/``length``: [rows] long, each row's first token and how many tokens it has (0 for a row
    without a penalty: it writes its tokens over column 0, which changes none of its scores)."""

    def __init__(self, repetition, presence, frequency, first, length, longest: int, vocabulary: int) -> None:
        n, device = len(first), first.device
        self.repetition, self.presence, self.frequency = repetition, presence, frequency
        self.length, self.longest = length, longest  # longest: on the host, so growing never syncs
        self.tracks = (length > 0).long()
        self.counted = ((presence != 0) | (frequency != 0))[:, 0].float()  # rows whose counts grow
        capacity = max(_MIN_CAPACITY, 1 << longest.bit_length())
        self.history = first[:, None].expand(n, capacity).clone()
        self.counts = torch.zeros(n, vocabulary, device=device)
        self.arange = torch.arange(n, device=device)

    def fill(self, owners, columns, tokens, generated) -> None:
        """Tokens of rows new to the device: ``tokens[i]`` is row ``owners[i]``'s ``columns[i]``-th."""
        self.history[owners, columns] = tokens
        self.counts.index_put_((owners, tokens), generated.float() * self.counted[owners], accumulate=True)

    def carry(self, old: Penalties, now: torch.Tensor, before: torch.Tensor) -> None:
        """The tokens and counts that ``old`` holds for its rows ``before``, as this state's rows ``now``."""
        width = min(old.history.shape[1], self.history.shape[1])  # past a row's length: padding only
        self.history[now, :width] = old.history[before, :width]
        self.counts[now] = old.counts[before]

    def apply(self, scores: torch.Tensor, repetition: bool, penalties: bool) -> torch.Tensor:
        """The penalties in ``generate``'s order (repetition first), as a new tensor."""
        ids = self.history
        gathered = scores.gather(1, ids)
        if repetition:  # RepetitionPenaltyLogitsProcessor, each row's own penalty
            gathered = torch.where(gathered < 0, gathered * self.repetition, gathered / self.repetition)
        if penalties:  # logits.py's presence/frequency definition: count * frequency, then presence
            counts = self.counts.gather(1, ids)
            gathered = gathered - counts * self.frequency - (counts > 0).to(gathered.dtype) * self.presence
        return scores.scatter(1, ids, gathered)

    def advance(self, chosen: torch.Tensor) -> None:
        """Append the step's tokens (capacity doubled first, from the host's count: no sync)."""
        if self.longest >= self.history.shape[1]:
            self.history = torch.cat([self.history, self.history[:, :1].expand_as(self.history)], dim=1)
        self.history[self.arange, self.length] = chosen
        self.length += self.tracks
        self.longest += 1
        self.counts.index_put_((self.arange, chosen), self.counted, accumulate=True)  # one op, not three
