"""Raw `generate` in this process: the ceiling the server is measured against."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .workload import Prompt


def load(path: Path, device: str):
    from transformers import AutoModelForCausalLM

    dtype = torch.float16 if device == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` runs after one warm-up run (1 for the slow GPU baselines)."""
    fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def generate(model, prompts: Sequence[Prompt], new_tokens: int, eos: int) -> torch.Tensor:
    """One left-padded generate call that makes exactly ``new_tokens`` for every prompt."""
    from transformers import GenerationConfig

    width = max(len(p.ids) for p in prompts)
    ids = torch.tensor([[eos] * (width - len(p.ids)) + list(p.ids) for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p.ids)) + [1] * len(p.ids) for p in prompts], device=model.device)
    config = GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=eos, eos_token_id=eos
    )
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert out.shape[1] == width + new_tokens
    return out


def tokens_per_second(
    model, prompts: Sequence[Prompt], batch: int, new_tokens: int, eos: int, device: str, repeats: int = 3
) -> float:
    """Generated tokens per second at ``batch`` prompts per generate call."""
    chunks = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    seconds = timed(lambda: [generate(model, chunk, new_tokens, eos) for chunk in chunks], device, repeats)
    return sum(len(c) for c in chunks) * new_tokens / seconds


def decode_ms_per_token(model, prompt: Prompt, new_tokens: int, eos: int, device: str) -> tuple[float, float]:
    """(batch-1 decode ms per token, prefill + first token ms): the difference of two runs."""
    first = timed(lambda: generate(model, [prompt], 1, eos), device)
    full = timed(lambda: generate(model, [prompt], new_tokens, eos), device)
    return (full - first) / (new_tokens - 1) * 1000, first * 1000


def copy_bandwidth(device: str, gigabytes: float = 4.0) -> float:
    """Bytes per second a large device-to-device copy moves (read + write): the memory roofline."""
    count = int(gigabytes * 2**30) // 2
    source = torch.empty(count, dtype=torch.float16, device=device).normal_()  # never time zeros
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device, repeats=10)
    return 2 * count * 2 / seconds


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weight_bytes_read(model) -> int:
    """The bytes a decode step reads: every weight but the input embedding table, of which a token
    reads one row (GPT-J's lm_head is its own matrix, not tied to the table, so it is counted)."""
    table = model.get_input_embeddings().weight
    return weight_bytes(model) - table.numel() * table.element_size()
