"""Beam search on the loaded model, as left-padded ``generate`` calls; and turning tokens into text.

Beam batches share every setting and length bound (batching.beam_key), so one GenerationConfig fits
all rows. Engine thread only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from . import diverse
from .batching import new_tokens
from .continuous import ContinuousBatch
from .loading import Loaded
from .sampling import GenerationRequest, generation_config

log = logging.getLogger("predictor")


@dataclass(frozen=True)
class Generated:
    """A beam search's texts, and how many new tokens they hold."""

    texts: list[str]
    tokens: int


Result = Generated | Exception


class _Abandoned(StoppingCriteria):
    """End a search that nobody waits for any more (its clients left or their deadlines passed)."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stop(), dtype=torch.bool, device=input_ids.device)


class Runner:
    """Runs batches on one loaded model."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded

    def continuous(self) -> ContinuousBatch:
        """A continuous batch on this model, for every request without beams."""
        return ContinuousBatch(self.loaded.model, self.loaded.eos_token_id)

    def run_batch(self, requests: Sequence[GenerationRequest], stop: Callable[[], bool] | None = None) -> list[Result]:
        """Texts for every request, in order; a request that fails gets its exception instead.

        If a batch fails, its requests run again one by one, so only the culprit fails. ``stop``
        ends the search early when it returns True.
        """
        try:
            return list(self._generate(requests, stop))
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
            log.warning("a batch of %d failed (%s); running its requests one by one", len(requests), exc)
        return [self.run_batch([request], stop)[0] for request in requests]

    def _generate(self, requests: Sequence[GenerationRequest], stop: Callable[[], bool] | None) -> list[Generated]:
        model, first = self.loaded.model, requests[0].sampling
        if first.num_beam_groups > 1:  # alone, see batching.beam_key
            return [self._diverse(requests[0])]
        eos, width = self.loaded.eos_token_id, max(len(r.input_ids) for r in requests)
        input_ids = torch.tensor([[eos] * (width - len(r.input_ids)) + list(r.input_ids) for r in requests],
                                 dtype=torch.long, device=model.device)
        attention_mask = (torch.arange(width, device=model.device)[None, :]
                          >= torch.tensor([width - len(r.input_ids) for r in requests], device=model.device)[:, None])
        (most, least), = {new_tokens(r) for r in requests}  # equal by batching.beam_key
        config = generation_config(replace(first, max_length=width + most, min_length=width + least), eos)
        criteria = StoppingCriteriaList([_Abandoned(stop)] if stop is not None else [])
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask.long(), generation_config=config,
                                 stopping_criteria=criteria)
        n = first.num_return_sequences
        return [self._generated(r.prompt, [row[width:].tolist() for row in out[i * n:(i + 1) * n]])
                for i, r in enumerate(requests)]

    def _generated(self, prompt: str, continuations: list[list[int]]) -> Generated:
        eos = self.loaded.eos_token_id
        tokens = [[t for t in sequence if t != eos] for sequence in continuations]
        return Generated(self.texts(prompt, tokens), sum(len(t) for t in tokens))

    def _diverse(self, request: GenerationRequest) -> Generated:
        model, s = self.loaded.model, request.sampling
        input_ids = torch.tensor([request.input_ids], dtype=torch.long, device=model.device)
        with torch.inference_mode():
            new = diverse.generate(model, input_ids, torch.ones_like(input_ids),
                                   generation_config(s, self.loaded.eos_token_id), s.num_beam_groups,
                                   s.diversity_penalty or 0.0)[0]
        return self._generated(request.prompt, new)

    def texts(self, prompt: str, continuations: Sequence[Sequence[int]]) -> list[str]:
        """Full texts: the prompt exactly as sent, then each continuation without special tokens.

        Decoding only the new tokens keeps the prompt byte-for-byte (even text that tokenizes to a
        special token, such as a literal ``<|endoftext|>``).
        """
        tokenizer = self.loaded.tokenizer
        return [prompt + tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                for tokens in continuations]
