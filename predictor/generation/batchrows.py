"""The continuous batch's parts (continuous.py): the decoder protocol its tensors follow, a row, a finished row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Protocol, Sequence

import torch

from predictor.generation import dynamic
from predictor.generation.logits import RowChoice, Scored


class Decoder(Protocol):
    """The batch's tensors: dynamic.DynamicDecoder (CPU) or static.StaticDecoder (GPU fast path)."""

    @property
    def rows(self) -> int: ...

    def join(
        self, prompts: Sequence[Sequence[int]], score: Mapping[int, dynamic.Score] | None = None
    ) -> torch.Tensor: ...

    def add(self, state: dynamic.DecodeState) -> None: ...

    def step(self, tokens: torch.Tensor | Sequence[int], rows: Sequence[int] | None = None) -> torch.Tensor: ...

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
    """A finished row: its request, which sequence, the new tokens (not the EOS or stop id that ended it), and why."""

    owner: Hashable
    index: int
    tokens: list[int]
    reason: str  # core.FINISH_REASONS
    scored: list[Scored] | None = None  # with Sampling.logprobs: one per token in ``tokens``
    prompt_scored: list[Scored] | None = None  # with Sampling.score_prompt
