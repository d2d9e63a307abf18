"""Model source -> tokenizer + model on its device, ready to generate.

One path for every source: the embedded tiny model is saved with ``save_pretrained`` first, so it
loads exactly like GPT-J-6B from ``/mnt/models``, a local directory or a hub id.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor.loading import device, sources
from predictor.settings import Settings

log = logging.getLogger("predictor")


@dataclass
class Loaded:
    """A model ready to generate, and what the edge needs to know about it."""

    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    eos_token_id: int
    context_window: int
    source: str


def resolve_source(settings: Settings) -> str:
    """The directory or hub id to load, checked (``sources.BadSource`` says what is wrong); builds the
    tiny model on first use."""
    if settings.model == "tiny":
        from predictor.loading import tiny

        return str(tiny.ensure(settings.cache_dir))
    return sources.resolve(settings.model)


def pick_dtype(name: str, cuda: bool):
    """``auto`` is float16 on CUDA (GPT-J's published half-precision weights) and float32 on CPU."""
    import torch

    if name == "auto":
        return torch.float16 if cuda else torch.float32
    return getattr(torch, name)


def load(settings: Settings) -> Loaded:
    """Load tokenizer and weights, check them against the limits, and warm up."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()  # a progress bar only where someone watches it
    started = time.monotonic()
    # Before anything slow: --device cuda without a usable CUDA fails here (BadDevice), in milliseconds.
    cuda = device.use_cuda(settings.device, torch)
    source = resolve_source(settings)
    if not cuda and settings.device == "auto" and torch.version.cuda is not None:
        log.warning("CUDA is not usable (%s): loading on the CPU", device.cuda_status(torch)[1])
    dtype = pick_dtype(settings.dtype, cuda)
    if settings.device == "cuda":
        device.check_fits(source, dtype, settings.device_map, torch)
    log.info("loading tokenizer from %s", source)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    log.info(
        "loading weights from %s (dtype %s, %s)",
        source,
        str(dtype).removeprefix("torch."),
        f"device_map={settings.device_map}" if cuda else "cpu",
    )
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=dtype,
        device_map=settings.device_map if cuda else None,
        trust_remote_code=False,
        **_attention(settings.speed.attn_implementation),
    ).eval()
    if settings.device == "cuda":
        device.check_placement(model)  # accelerate offloads what does not fit unless we refuse it
    if model.device.type == "cpu":
        from predictor.loading import kernels

        log.info("CPU kernels: %s", kernels.choose(model, settings.speed.cpu_kernels))
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    # GPT-J has no pad token: EOS pads, on the left (generation continues from the right end).
    tokenizer.pad_token_id = eos
    tokenizer.padding_side = "left"
    # The contract's defaults are transformers' own; a checkpoint's generation_config.json (sampling
    # on, a temperature...) must not change what a request means.
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos, bos_token_id=eos)
    context = _context_window(model.config)
    if settings.limits.max_length > context:
        raise ValueError(
            f"--max_length_limit {settings.limits.max_length} exceeds the model's context window of {context} tokens"
        )
    log.info("weights on %s in %.1f s", _devices(model), time.monotonic() - started)
    loaded = Loaded(
        model=model,
        tokenizer=tokenizer,
        eos_token_id=eos,
        context_window=context,
        source=str(Path(source)) if Path(source).exists() else source,
    )
    _warm_up(loaded)
    return loaded


def _attention(implementation: str) -> dict[str, str]:
    # "auto" leaves the choice to transformers: sdpa where its GPT-J has it (5.24), eager before (5.17).
    return {} if implementation == "auto" else {"attn_implementation": implementation}


def _context_window(config: Any) -> int:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("the model config does not say its context window (n_positions)")


def _devices(model: Any) -> str:
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        return ", ".join(sorted({str(d) for d in device_map.values()}))
    return str(model.device)


def _warm_up(loaded: Loaded) -> None:
    """One short generation, so the first request does not pay for lazy initialization."""
    import torch
    from transformers import GenerationConfig

    started = time.monotonic()
    ids = torch.tensor([[loaded.eos_token_id]], device=loaded.model.device)
    config = GenerationConfig(
        max_new_tokens=2, do_sample=False, pad_token_id=loaded.eos_token_id, eos_token_id=loaded.eos_token_id
    )
    with torch.inference_mode():
        loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    log.info("warm-up generation took %.2f s", time.monotonic() - started)
