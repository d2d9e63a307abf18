"""A decode step's traffic between host and device: the inputs stay on the device, one copy comes back.

In a steady step (no row joined or left) the continuous batch (continuous.py) uploads nothing and syncs
once:

- In: each row's latest token is the previous step's choice, kept on the device (``StepIO``), and the
  decoders keep their positions and lengths there too (dynamic.py, static.py). Rows that join append
  their first tokens (chosen on the device); rows that leave are dropped by indexing on the device (one
  small upload of the survivors' indices, none when they are the first rows).
- Out: ``fetch`` puts the step's tokens and, when a row reports logprobs, its score table
  (logits.score_table) into one float64 vector and brings it to the host in one copy: on CUDA without
  blocking into a reused pinned buffer, then one event wait; on CPU a plain ``tolist``. That is the
  step's one sync, on both decoders (dynamic.attention() spares transformers its look at the mask).

Not done, on purpose: launching step N+1's forward before step N's host bookkeeping. On CPU every op
runs on the calling thread, so there is nothing to overlap. On CUDA, choose() for step N+1 would run
before the rows' host tokens have step N's: rowstate.BatchState keys its device state (and the token
counts the penalties need) on those host counts, so it would be rebuilt and re-uploaded every step.
And rows that finish at step N (EOS, length, deadline, a stop string found off this thread, a
cancellation) would already have run step N+1: the static cache would need a spare column per row,
and every join or leave between two advance() calls would re-index a step in flight. What it would
hide is the bookkeeping after the one sync, per-row Python of tens of µs at 64 rows (bench.hoststep),
against a GPT-J-6B step of 3-5 ms of GPU work whose launch (one graph replay) costs less.
"""

from __future__ import annotations

from typing import Sequence

import torch

from predictor.generation.logits import RowChoice, append_scores, choose


class StepIO:
    """A continuous batch's step inputs, on the device, and its one copy back; rows in the batch's order.

    ``latest`` holds each row's latest token (the next step's input ids). continuous.py calls choose()
    for a step or a join, keep() when rows leave, reset() after a failed step.
    """

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None
        self.device: torch.device | None = None  # where the last tokens were (a reset uploads there)
        self.host = HostCopy()

    def inputs(self, rows: Sequence) -> torch.Tensor:
        """The rows' latest tokens: the device's, or (if they are not one per row) the host's, uploaded."""
        if self.latest is None or self.latest.shape[0] != len(rows):
            self.reset([row.choice.tokens[-1] for row in rows])
        return self.latest

    def choose(self, rows: Sequence, logits: torch.Tensor, eos: int, joined: bool = False) -> list[int]:
        """choose() for ``rows`` (all of them, or ``joined`` after the others); their tokens on the host."""
        chosen, tokens = choose_fetched(self.host, [row.choice for row in rows], logits, eos)
        if joined and self.latest is not None:
            chosen = torch.cat([self.latest, chosen.to(self.latest.device)])
        self.latest, self.device = chosen, chosen.device
        return tokens

    def keep(self, order: Sequence[int]) -> list[int]:
        """Only these rows (old indices), in this order (a slice when they are the first rows); returns it."""
        order = list(order)
        if self.latest is not None:
            first = order == list(range(len(order)))
            self.latest = self.latest[: len(order)] if first else self.latest[torch.tensor(order, device=self.device)]
        return order

    def reset(self, tokens: Sequence[int]) -> None:
        """Start again from the host's tokens (after a failed step, whose rows went on one by one)."""
        self.latest = torch.tensor(list(tokens), dtype=torch.long, device=self.device)


class HostCopy:
    """The step's one copy to the host, through a pinned buffer reused from step to step on CUDA."""

    def __init__(self) -> None:
        self._pinned: dict[torch.dtype, torch.Tensor] = {}
        self._event = None

    def fetch(self, chosen: torch.Tensor, tables: Sequence[torch.Tensor]) -> tuple[list[int], list[list[float]]]:
        """The tokens, and the rows of the score table (if choose() made one), on the host."""
        if not tables:
            return self._host(chosen).tolist(), []
        (table,) = tables
        if table.shape[0] == chosen.shape[0]:  # every row reports: the table's first column is the tokens
            rows = self._host(table).tolist()
            return [int(row[0]) for row in rows], rows
        values = self._host(torch.cat([chosen.double(), table.flatten()])).tolist()
        count, width = chosen.shape[0], table.shape[1]
        return list(map(int, values[:count])), [values[i : i + width] for i in range(count, len(values), width)]

    def _host(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.device.type != "cuda":
            return flat  # tolist() is the copy
        size, pinned = flat.numel(), self._pinned.get(flat.dtype)
        if pinned is None or pinned.numel() < size:
            pinned = self._pinned[flat.dtype] = torch.empty(max(size, 1024), dtype=flat.dtype, pin_memory=True)
        buffer = pinned[:size]
        buffer.copy_(flat, non_blocking=True)
        if self._event is None:
            self._event = torch.cuda.Event()
        self._event.record(torch.cuda.current_stream(flat.device))
        self._event.synchronize()  # the step's one wait: the copy, and every kernel before it, are done
        return buffer


def choose_fetched(
    host: HostCopy, choices: Sequence[RowChoice], logits: torch.Tensor, eos: int
) -> tuple[torch.Tensor, list[int]]:
    """choose() for these rows: the tokens on the device, and on the host (their scores appended) in one copy."""
    tables: list[torch.Tensor] = []
    chosen = choose(choices, logits, eos, tables)
    tokens, table = host.fetch(chosen, tables)
    if tables:
        append_scores(choices, table)
    return chosen, tokens
