"""Beam search on the loaded model, left-padded; and turning tokens into text.

Deterministic beam search (diverse or not) is diverse.py's, which computes what transformers 4.x did;
beam sampling is transformers' ``generate``.

Beam batches share every setting and length bound (scheduling.beam_key), so one GenerationConfig fits
all rows. Engine thread only.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Callable, Iterator, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from predictor.core import Completion, GenerationRequest, Sampling, new_tokens
from predictor.generation import diverse
from predictor.generation.continuous import ContinuousBatch, Decoder
from predictor.generation.logits import Scored, scores_of
from predictor.generation.retry import together_or_alone
from predictor.generation.text import cut_at_stop, prompt_token_logprobs, token_logprobs
from predictor.loading.loader import Loaded

log = logging.getLogger("predictor")

Result = list[Completion] | Exception


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from ``seed`` inside, then restore the global generator: a seeded request runs alone
    (scheduling.beam_key), and unseeded requests after it stay random."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class _Abandoned(StoppingCriteria):
    """End a search that nobody waits for any more (its clients left or their deadlines passed)."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stop(), dtype=torch.bool, device=input_ids.device)


class Runner:
    """Runs batches on one loaded model."""

    def __init__(self, loaded: Loaded, decoder: Decoder | None = None) -> None:
        self.loaded, self.decoder = loaded, decoder  # decoder: the continuous batch's (None: dynamic)

    def continuous(self) -> ContinuousBatch:
        """A continuous batch on this model, for every request without beams."""
        return ContinuousBatch(self.loaded.model, self.loaded.eos_token_id, self.decode, self.decoder)

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        stop: Callable[[], bool] | None = None,
        check: Callable[[Sequence[GenerationRequest]], None] | None = None,
    ) -> list[Result]:
        """Texts for every request, in order; a request that fails gets its exception instead.

        If a batch fails, its requests run again one by one (retry.py), so only the culprit fails.
        ``stop`` ends the search early when it returns True; ``check`` runs before each model call
        (the engine's fault injection).
        """

        def run(batch: Sequence[GenerationRequest]) -> list[list[Completion]]:
            if check is not None:
                check(batch)
            return self._generate(batch, stop)

        results: list[Result] = []
        for _, outcome in together_or_alone(
            requests, run, "a batch of %d failed (%s); running its requests one by one"
        ):
            results += [outcome] if isinstance(outcome, Exception) else outcome
        return results

    def _generate(
        self, requests: Sequence[GenerationRequest], stop: Callable[[], bool] | None
    ) -> list[list[Completion]]:
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
        if first.num_beams > 1 and not first.do_sample:  # deterministic beams, diverse or not: see diverse.py
            with torch.inference_mode():
                found = diverse.generate(
                    model,
                    input_ids,
                    attention_mask.long(),
                    config,
                    first.num_beam_groups,
                    first.diversity_penalty or 0.0,
                    stop,
                )
            return [
                self._beams(r, sequences, self._rescored(r, sequences) if r.sampling.logprobs is not None else None)
                for r, sequences in zip(requests, found, strict=True)
            ]
        criteria = StoppingCriteriaList([_Abandoned(stop)] if stop is not None else [])
        top = max((r.sampling.logprobs for r in requests if r.sampling.logprobs is not None), default=None)
        if top is not None:  # the scores of every step, kept only when asked: they cost memory
            config.output_scores = config.return_dict_in_generate = True
        with torch.inference_mode(), _seeded(first.seed, model.device):
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask.long(),
                generation_config=config,
                stopping_criteria=criteria,
            )
            scored = _beam_scores(out, width, top) if top is not None else None
        sequences, n = (out if top is None else out.sequences), first.num_return_sequences
        return [
            self._beams(
                r,
                [row[width:].tolist() for row in sequences[i * n : (i + 1) * n]],
                scored[i * n : (i + 1) * n] if scored and r.sampling.logprobs is not None else None,
            )
            for i, r in enumerate(requests)
        ]

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
    ) -> list[Completion]:
        eos, completions = self.loaded.eos_token_id, []
        for index, sequence in enumerate(sequences):
            tokens = [t for t in sequence if t != eos]  # EOS and the padding after it
            kept = (
                None
                if scored is None
                else [(t, lp, top[: request.sampling.logprobs]) for t, lp, top in scored[index][: len(tokens)]]
            )
            completions.append(self.completion(request, tokens, "eos" if eos in sequence else "length", kept))
        return completions

    def decode(self, tokens: Sequence[int]) -> str:
        """New tokens as text, without special tokens."""
        return self.loaded.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def completion(
        self,
        request: GenerationRequest,
        tokens: Sequence[int],
        reason: str,
        scored: Sequence[Scored] | None = None,
        prompt_scored: Sequence[Scored] | None = None,
    ) -> Completion:
        """The prompt exactly as sent, then the continuation, cut before the first stop string.

        Decoding only the new tokens keeps the prompt byte-for-byte (even text that tokenizes to a
        special token, such as a literal ``<|endoftext|>``). ``scored``/``prompt_scored``: the
        tokens' logprobs (logits.Scored), reported only for tokens whose text is kept.
        """
        continuation, stopped = cut_at_stop(self.decode(tokens), request.sampling.stop)
        logprobs = prompt_logprobs = None
        if scored is not None:
            logprobs = token_logprobs(self.token_texts, scored, len(continuation))
        if prompt_scored is not None:
            prompt_logprobs = prompt_token_logprobs(self.token_texts, request.input_ids, prompt_scored)
        return Completion(
            request.prompt + continuation,
            continuation,
            "stop" if stopped else reason,
            len(request.input_ids),
            len(tokens),
            logprobs,
            prompt_logprobs,
        )

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text, special tokens included (an alternative may be EOS)."""
        return self.loaded.tokenizer.batch_decode(
            [[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )


def _beam_scores(out, width: int, top: int) -> list[list[Scored]]:
    """Per returned sequence, each new token scored from the step's processed log-probs of the beam it
    extended (``beam_indices`` names that beam at every step; -1 after the sequence ended)."""
    beams, result = out.beam_indices, []
    for row in range(out.sequences.shape[0]):
        steps = [t for t in range(min(beams.shape[1], len(out.scores))) if beams[row, t] >= 0]
        if not steps:
            result.append([])
            continue
        logits = torch.stack([out.scores[t][beams[row, t]] for t in steps])
        result.append(scores_of(logits, out.sequences[row, [width + t for t in steps]], top))
    return result


def generation_config(s: Sampling, eos_token_id: int) -> GenerationConfig:
    """The transformers GenerationConfig for these settings (diverse beams: see diverse.py).

    Unset values take transformers' own defaults, as in the service this replaces; the loader
    resets the model's generation_config so a checkpoint's file cannot change them.
    """
    options = {
        name: getattr(s, name)
        for name in (
            "max_length",
            "min_length",
            "do_sample",
            "num_beams",
            "num_return_sequences",
            "temperature",
            "top_k",
            "top_p",
            "repetition_penalty",
            "early_stopping",
            "length_penalty",
            "encoder_no_repeat_ngram_size",
            "max_time",
            "remove_invalid_values",
        )
    }
    return GenerationConfig(
        **{k: v for k, v in options.items() if v is not None},
        pad_token_id=eos_token_id,  # GPT-J has no pad token: EOS pads (on the left)
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id,
    )
