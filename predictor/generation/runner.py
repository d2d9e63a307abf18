"""The engine's backend on one loaded model: the continuous batch, beam searches, the tokenizer's text.

Every beam search (diverse, plain or sampled) is diverse.py's, which computes what transformers 4.x
did, one token per step. Engine thread only, but for ``decode`` and ``token_texts``, which only the
event loop's side calls (engine/outputs.py): the engine thread hands over token ids (core.Delta).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Sequence

import torch
from transformers import GenerationConfig

from predictor.core import GENERATION_CONFIG, Delta, GenerationRequest, Sampling, new_tokens
from predictor.generation import diverse
from predictor.generation.continuous import ContinuousBatch, Decoder
from predictor.generation.logits import Scored, scores_of
from predictor.generation.retry import together_or_alone
from predictor.loading.loader import Loaded

log = logging.getLogger("predictor")

Result = list[Delta] | Exception  # a request's finished Deltas, one per returned sequence


class Runner:
    """Runs batches on one loaded model."""

    def __init__(self, loaded: Loaded, decoder: Decoder | None = None) -> None:
        self.loaded, self.decoder = loaded, decoder  # decoder: the continuous batch's (None: dynamic)

    def continuous(self) -> ContinuousBatch:
        """A continuous batch on this model, for every request without beams."""
        return ContinuousBatch(self.loaded.model, self.loaded.eos_token_id, self.decoder)

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        stop: Callable[[], bool] | None = None,
        check: Callable[[Sequence[GenerationRequest]], None] | None = None,
    ) -> list[Result]:
        """Whole beam searches: finished Deltas for every request, in order; a request that fails gets its
        exception.

        If a batch fails, its requests run again one by one (retry.py), so only the culprit fails.
        ``stop`` ends the search early when it returns True; ``check`` runs before it starts (the
        engine's fault injection). The engine steps its searches itself (start_beams, then step()).
        """

        def run(batch: Sequence[GenerationRequest]) -> list[list[Delta]]:
            if check is not None:
                check(batch)
            search = self.start_beams(batch)
            while not search.step(stop):
                pass
            return self.beam_outputs(batch, search)

        results: list[Result] = []
        for _, outcome in together_or_alone(
            requests, run, "a batch of %d failed (%s); running its requests one by one"
        ):
            results += [outcome] if isinstance(outcome, Exception) else outcome
        return results

    def start_beams(self, requests: Sequence[GenerationRequest]) -> diverse.BeamSearch:
        """A beam search over ``requests``, left-padded, after its prefill; each ``step()`` then adds a token.

        The requests share every setting and length bound (scheduling.beam_key), so one GenerationConfig
        fits all rows. A seeded search draws from its own generator: the same draws whatever runs beside it.
        """
        model, first = self.loaded.model, requests[0].sampling
        eos, width = self.loaded.eos_token_id, max(len(r.input_ids) for r in requests)
        input_ids = torch.tensor(
            [[eos] * (width - len(r.input_ids)) + list(r.input_ids) for r in requests],
            dtype=torch.long,
            device=model.device,
        )
        attention_mask = (
            torch.arange(width, device=model.device)[None, :]
            >= torch.tensor([width - len(r.input_ids) for r in requests], device=model.device)[:, None]
        )
        ((most, least),) = {new_tokens(r) for r in requests}  # equal by scheduling.beam_key
        config = generation_config(replace(first, max_length=width + most, min_length=width + least), eos)
        top = max((r.sampling.logprobs for r in requests if r.sampling.logprobs is not None), default=None)
        generator = None
        if first.seed is not None:  # a seeded search runs alone (scheduling.beam_key)
            generator = torch.Generator(device=model.device).manual_seed(first.seed)
        groups, penalty = first.num_beam_groups or 1, first.diversity_penalty or 0.0
        return diverse.BeamSearch(model, input_ids, attention_mask.long(), config, groups, penalty, generator, top)

    def beam_outputs(self, requests: Sequence[GenerationRequest], search: diverse.BeamSearch) -> list[list[Delta]]:
        """A finished search's answers as each request's finished Deltas, one per returned sequence
        (deterministic beams with logprobs: rescored, see _rescored)."""
        completions = []
        for request, answers in zip(requests, search.results(), strict=True):
            sequences = [tokens for tokens, _ in answers]
            scored = None
            if request.sampling.logprobs is not None:
                sampled = request.sampling.do_sample
                scored = [s or [] for _, s in answers] if sampled else self._rescored(request, sequences)
            completions.append(self._beams(request, sequences, scored))
        return completions

    def _rescored(self, request: GenerationRequest, sequences: list[list[int]]) -> list[list[Scored]]:
        """Logprobs for deterministic beams (diverse.py keeps no per-step scores): one forward pass over
        each chosen beam, the model's log-softmax at each of its tokens (no processor applied)."""
        eos, result = self.loaded.eos_token_id, []
        for sequence in sequences:
            tokens = [t for t in sequence if t != eos]
            if not tokens:
                result.append([])
                continue
            ids = torch.tensor([list(request.input_ids) + tokens], device=self.loaded.model.device)
            with torch.inference_mode():
                logits = self.loaded.model(input_ids=ids).logits[0, len(request.input_ids) - 1 : -1]
            result.append(scores_of(logits, ids[0, len(request.input_ids) :], request.sampling.logprobs))
        return result

    def _beams(
        self, request: GenerationRequest, sequences: list[list[int]], scored: list[list[Scored]] | None = None
    ) -> list[Delta]:
        """The one place a search's sequences become output: a finished Delta each (text comes later,
        off the engine thread, as for every other row)."""
        eos, deltas = self.loaded.eos_token_id, []
        for index, sequence in enumerate(sequences):
            tokens = [t for t in sequence if t != eos]  # EOS and the padding after it
            kept = (
                None
                if scored is None
                else tuple((t, lp, top[: request.sampling.logprobs]) for t, lp, top in scored[index][: len(tokens)])
            )
            deltas.append(Delta(index, tuple(tokens), kept, None, True, "eos" if eos in sequence else "length"))
        return deltas

    def decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        """New tokens as text, without special tokens unless asked (vLLM's skip_special_tokens)."""
        return self.loaded.tokenizer.decode(
            tokens, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text, special tokens included (an alternative may be EOS)."""
        return self.loaded.tokenizer.batch_decode(
            [[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )


def generation_config(s: Sampling, eos_token_id: int) -> GenerationConfig:
    """The transformers GenerationConfig for these settings (diverse beams: see diverse.py).

    Unset values take transformers' own defaults, as in the service this replaces; the loader
    resets the model's generation_config so a checkpoint's file cannot change them.
    """
    options = {name: getattr(s, name) for name in GENERATION_CONFIG}
    return GenerationConfig(
        **{k: v for k, v in options.items() if v is not None},
        pad_token_id=eos_token_id,  # GPT-J has no pad token: EOS pads (on the left)
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id,
    )
