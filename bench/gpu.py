"""In-process GPU figures, on the predictor's own loading and decode path (GPT-J-6B's shape).

- the memory roofline: the weights' bytes over the bandwidth of a large device-to-device copy;
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

import gc
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from . import raw
from .workload import Prompt

CHECK_TOKENS = 64  # greedy tokens compared with the eager reference


def measure(
    path: Path,
    workload: Sequence[Prompt],
    new_tokens: int,
    top: int,
    max_len: int,
    device: str = "cuda",
    copy_gb: float = 4.0,
) -> dict:
    """Every figure above; ``device`` "cpu" (with a small ``copy_gb``) only to try the code without a GPU."""
    from predictor.generation import paths
    from predictor.loading import loader
    from predictor.settings import parse_settings

    settings = parse_settings(
        ["--model", str(path), "--max_batch_size", "1", "--max_length_limit", str(max_len), "--decode_path", "static"],
        {},
    )  # the fast path, also when tried on a CPU
    loaded = loader.load(settings)
    model, eos = loaded.model, loaded.eos_token_id
    bandwidth, weights = raw.copy_bandwidth(device, copy_gb), raw.weight_bytes(model)
    figures = {
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "weight_gb": weights / 1e9,
        "roofline_ms_per_token": weights / bandwidth * 1000,
    }
    default = model.config._attn_implementation
    _attention(model, "eager")
    reference = raw.generate(model, [workload[0]], CHECK_TOKENS, eos)[0, -CHECK_TOKENS:].tolist()
    expected = _reference_logits(model, workload[0], reference)
    figures["naive_tok_per_s"] = raw.tokens_per_second(model, workload[:2], 1, new_tokens, eos, device, repeats=1)
    _attention(model, default)  # sdpa where transformers has it for GPT-J (5.24), else eager (5.17)
    figures["hf_attention"] = default
    figures["hf_generate_batch1_ms_per_token"] = raw.decode_ms_per_token(model, workload[0], new_tokens, eos, device)[0]
    figures[f"raw_tok_per_s_batch{top}"] = raw.tokens_per_second(
        model, workload[:top], top, new_tokens, eos, device, repeats=1
    )
    figures["raw_tok_per_s_batch1"] = 1000 / figures["hf_generate_batch1_ms_per_token"]
    decoder, _ = paths.decoder_for(loaded, settings)
    figures["decode_path"] = "static" if decoder is not None else "dynamic"
    figures["cuda_graphs"] = bool(decoder is not None and decoder.graphs)
    ours = _greedy(loaded, decoder, workload[0], CHECK_TOKENS)[0]
    mismatch = next((i for i, (a, b) in enumerate(zip(ours, reference, strict=False)) if a != b), None)
    figures.update(greedy_matches_eager_reference=mismatch is None, greedy_first_mismatch=mismatch)
    figures.update(_agreement(expected, _fed_logits(decoder, workload[0], reference)))
    figures.update(_decode_timings(loaded, decoder, workload[0], new_tokens))
    del decoder, model, loaded
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return figures


def _attention(model, implementation: str) -> None:
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
