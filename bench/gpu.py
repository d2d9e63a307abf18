"""In-process GPU figures, on the predictor's own loading and decode path (GPT-J-6B's shape).

- the memory roofline: the bytes a token reads (the weights but the embedding table) over the bandwidth
  of a large device-to-device copy;
- batch-1 decode ms/token and time to first token through the continuous batch the server runs
  (the static path: preallocated cache, CUDA graphs), after its own warm-up;
- the naive baseline, what the old service did: transformers `generate`, eager attention, dynamic
  cache, one request at a time (so its throughput is the same at any number of clients);
- `generate` with transformers' default attention at batch 1 and batched, for comparison;
- correctness: greedy tokens of the fast path against `generate` with eager attention, and the same
  comparison teacher-forced (both fed the reference's tokens), which tells a real difference from a
  near-tie that fp16 rounding tipped the other way (random weights give many of those).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import raw
from .workload import Prompt

CHECK_TOKENS = 64  # greedy tokens compared with the eager reference


class InProcess:
    """The in-process figures as separate phases over one loaded model (loaded by the first phase
    that needs it, released by ``close``); ``device`` "cpu" (with a small ``copy_gb``) only to try
    the code without a GPU."""

    def __init__(
        self,
        path: Path,
        workload: Sequence[Prompt],
        new_tokens: int,
        top: int,
        max_len: int,
        device: str = "cuda",
        copy_gb: float = 4.0,
        check_tokens: int = CHECK_TOKENS,
    ) -> None:
        self.path, self.workload, self.new_tokens, self.top, self.max_len = path, workload, new_tokens, top, max_len
        self.device, self.copy_gb, self.check_tokens = device, copy_gb, check_tokens
        self._loaded = self._settings = None

    @property
    def loaded(self):
        if self._loaded is None:
            from predictor.loading import loader
            from predictor.settings import parse_settings

            self._settings = parse_settings(
                ["--model", str(self.path), "--max_batch_size", "1", "--max_length_limit", str(self.max_len)]
                + ["--decode_path", "static"],
                {},
            )  # the fast path, also when tried on a CPU
            self._loaded = loader.load(self._settings)
        return self._loaded

    def roofline(self) -> dict:
        """The bytes a decode step reads (weights but the embedding table) over a large device copy's bandwidth."""
        model = self.loaded.model
        bandwidth, read = raw.copy_bandwidth(self.device, self.copy_gb), raw.weight_bytes_read(model)
        return {
            "copy_bandwidth_gb_s": bandwidth / 1e9,
            "weight_gb": raw.weight_bytes(model) / 1e9,
            "weights_read_gb": read / 1e9,
            "roofline_ms_per_token": read / bandwidth * 1000,
        }

    def naive(self) -> dict:
        """What the old service did: `generate`, eager attention, dynamic cache, one request at a time."""
        model, eos = self.loaded.model, self.loaded.eos_token_id
        with _attention(model, "eager"):
            tok_per_s = raw.tokens_per_second(model, self.workload[:2], 1, self.new_tokens, eos, self.device, repeats=1)
        return {"naive_tok_per_s": tok_per_s}

    def raw_decode(self) -> dict:
        """`generate` with transformers' default attention (sdpa in 5.24, eager in 5.17), batch 1 and batched."""
        model, eos, top = self.loaded.model, self.loaded.eos_token_id, self.top
        batch1 = raw.decode_ms_per_token(model, self.workload[0], self.new_tokens, eos, self.device)[0]
        return {
            "hf_attention": model.config._attn_implementation,
            "hf_generate_batch1_ms_per_token": batch1,
            "raw_tok_per_s_batch1": 1000 / batch1,
            f"raw_tok_per_s_batch{top}": raw.tokens_per_second(
                model, self.workload[:top], top, self.new_tokens, eos, self.device, repeats=1
            ),
        }

    def fast_path(self) -> dict:
        """The server's decode path: which it is, its greedy tokens against eager `generate`, its timings."""
        from predictor.generation import paths

        loaded, prompt = self.loaded, self.workload[0]
        with _attention(loaded.model, "eager"):
            reference = raw.generate(loaded.model, [prompt], self.check_tokens, loaded.eos_token_id)
            reference = reference[0, -self.check_tokens :]
            expected = _reference_logits(loaded.model, prompt, reference.tolist())
        choice = paths.choose(loaded, self._settings)
        decoder, reference = choice.decoder, reference.tolist()
        figures = {"decode_path": choice.info.path, "cuda_graphs": choice.info.cuda_graphs}
        ours = _greedy(loaded, decoder, prompt, self.check_tokens)[0]
        mismatch = next((i for i, (a, b) in enumerate(zip(ours, reference, strict=False)) if a != b), None)
        figures.update(greedy_matches_eager_reference=mismatch is None, greedy_first_mismatch=mismatch)
        figures.update(_agreement(expected, _fed_logits(decoder, prompt, reference)))
        figures.update(_decode_timings(loaded, decoder, prompt, self.new_tokens))
        return figures

    def close(self) -> None:
        """Release the model before the server takes the device."""
        self._loaded = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def measure(path: Path, workload: Sequence[Prompt], new_tokens: int, top: int, max_len: int, **kwargs) -> dict:
    """Every in-process figure in one go (the benchmark runs them as separate phases)."""
    measured = InProcess(path, workload, new_tokens, top, max_len, **kwargs)
    figures: dict = {}
    try:
        for phase in (measured.roofline, measured.naive, measured.raw_decode, measured.fast_path):
            figures.update(phase())
    finally:
        measured.close()
    return figures


@contextlib.contextmanager
def _attention(model, implementation: str) -> Iterator[None]:
    """The model with this attention implementation for a while, then its default again."""
    default = model.config._attn_implementation
    _set_attention(model, implementation)
    try:
        yield
    finally:
        _set_attention(model, default)


def _set_attention(model, implementation: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    else:  # older transformers read the config at every forward
        model.config._attn_implementation = implementation


def _reference_logits(model, prompt: Prompt, reference: list[int]) -> torch.Tensor:
    """The eager model's next-token logits at each reference token, from one forward over it all."""
    with torch.inference_mode():
        ids = torch.tensor([list(prompt.ids) + reference], device=model.device)
        return model(input_ids=ids).logits[0, len(prompt.ids) - 1 : -1].float()


def _fed_logits(decoder, prompt: Prompt, reference: list[int]) -> torch.Tensor:
    """The fast path's logits at the same positions, fed the reference's tokens (not its own)."""
    with torch.inference_mode():
        logits = [decoder.join([list(prompt.ids)])[0]]
        logits += [decoder.step([token])[0] for token in reference[:-1]]
        decoder.clear()
    return torch.stack(logits)


def _agreement(expected: torch.Tensor, ours: torch.Tensor) -> dict:
    differ = expected.argmax(-1) != ours.argmax(-1)
    top2 = expected.topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1])[differ]
    return {
        "fed_argmax_agreement": 1 - differ.float().mean().item(),
        "fed_max_logit_error": (expected - ours).abs().max().item(),
        # the widest reference top-2 gap where the choices differ: small means near-ties only
        "fed_disagreement_max_margin": margins.max().item() if len(margins) else 0.0,
    }


def _greedy(loaded, decoder, prompt: Prompt, new_tokens: int) -> tuple[list[int], float, list[float]]:
    """Greedy tokens through the server's continuous batch; the first token's and each step's seconds."""
    from predictor.core import GenerationRequest, Sampling
    from predictor.generation.continuous import ContinuousBatch

    request = GenerationRequest(prompt.text, prompt.ids, Sampling(max_length=len(prompt.ids) + new_tokens))
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id, decoder=decoder)
    started = time.perf_counter()
    done = batch.join([("bench", request)])  # choose() reads the token back: the time includes the GPU's
    first, steps = time.perf_counter() - started, []
    while batch.rows:
        started = time.perf_counter()
        done = batch.advance()
        steps.append(time.perf_counter() - started)
    return done[0].tokens, first, steps


def _decode_timings(loaded, decoder, prompt: Prompt, new_tokens: int) -> dict:
    runs = [_greedy(loaded, decoder, prompt, new_tokens) for _ in range(3)]  # the first warms up
    return {
        "batch1_ms_per_token": statistics.median(statistics.median(steps) for _, _, steps in runs[1:]) * 1000,
        "ttft_ms_inprocess_128": statistics.median(first for _, first, _ in runs[1:]) * 1000,
    }
