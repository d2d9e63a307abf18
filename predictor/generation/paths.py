"""Which decode path the continuous batch takes, and how many rows its cache holds.

On one CUDA device the default is the static path (static.py): a KV cache allocated once, for as many
rows as ``--max_batch_size`` asks (at least ``--max_return_sequences``, so a lone request always fits)
and ``--kv_cache_memory_fraction`` of the free memory allows after room for prefill, each
row up to ``--max_length_limit`` tokens, with every decode shape captured as a CUDA graph before the
model reports ready. Elsewhere (CPU, a model spread over several GPUs, or ``--decode_path dynamic``)
the dynamic path (dynamic.py) grows its cache as rows need it, bounded by ``--max_batch_tokens``.

``choose`` also says what was chosen (``DecodeInfo``: /metrics' gptj_decode_info and the benchmark
report it), so that a silent fallback, e.g. a failed graph capture, shows where people look.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace

from predictor.generation.static import (
    PREFILL_TOKENS,
    StaticDecoder,
    cache_bytes_per_token,
)
from predictor.loading.loader import Loaded
from predictor.settings import BatchPolicy, Settings

log = logging.getLogger("predictor")


@dataclass(frozen=True)
class DecodeInfo:
    """What the engine actually runs."""

    path: str  # "graphs" (static, CUDA graphs replayed), "static" (preallocated cache, eager) or "dynamic"
    cuda_graphs: int  # graphs captured
    attention: str  # transformers' attention implementation (prefill, the dynamic path, beam search)
    dtype: str
    kv_rows: int  # rows the cache holds (static) or the batch admits (dynamic)
    kv_tokens_per_row: int
    kv_reserved_bytes: int  # allocated up front (static); the dynamic cache grows per step instead


@dataclass(frozen=True)
class Choice:
    decoder: StaticDecoder | None
    policy: BatchPolicy
    info: DecodeInfo


def decoder_for(loaded: Loaded, settings: Settings) -> tuple[StaticDecoder | None, BatchPolicy]:
    """The static decoder (None: the dynamic path) and the batch policy that fits it."""
    choice = choose(loaded, settings)
    return choice.decoder, choice.policy


def choose(loaded: Loaded, settings: Settings) -> Choice:
    """The decode path for this model and settings, its batch policy and what it is (DecodeInfo)."""
    model, speed, policy = loaded.model, settings.speed, settings.batch
    max_len, per_token = settings.limits.max_length, cache_bytes_per_token(model.config, model.dtype)
    info = functools.partial(
        DecodeInfo,
        attention=str(model.config._attn_implementation),
        dtype=str(model.dtype).removeprefix("torch."),
        kv_tokens_per_row=max_len,
    )
    one_device = len(set(map(str, (getattr(model, "hf_device_map", None) or {"": model.device}).values()))) == 1
    path = speed.decode_path
    if path == "auto":
        path = "static" if model.device.type == "cuda" and one_device else "dynamic"
    if path == "dynamic":
        log.info(
            "decode path: dynamic (cache grows per step, at most %d rows, %d tokens)",
            policy.max_batch_size,
            policy.max_batch_tokens,
        )
        return Choice(
            None, policy, info(path="dynamic", cuda_graphs=0, kv_rows=policy.max_batch_size, kv_reserved_bytes=0)
        )
    if not one_device:
        raise ValueError("--decode_path static needs the model on one device; use dynamic")
    return _static(loaded, settings, per_token, info)


def _static(loaded: Loaded, settings: Settings, per_token: int, info: functools.partial) -> Choice:
    """The static decoder, its graphs captured now (before ready), and the policy that fits its rows."""
    model, policy, max_len = loaded.model, settings.batch, settings.limits.max_length
    # A lone request joins whatever its sequences (scheduling.admit): give it room even if the batch
    # bound is lower.
    capacity = max(policy.max_batch_size, settings.limits.max_return_sequences)
    if model.device.type == "cuda":
        capacity = _rows_that_fit(model, settings, capacity, per_token)
    started = time.monotonic()
    decoder = StaticDecoder(model, loaded.eos_token_id, capacity, max_len, graphs=settings.speed.cuda_graphs)
    try:
        graphs = decoder.warm_up()
    except Exception as exc:  # noqa: BLE001 - a failed capture costs speed, not service
        log.warning("CUDA graph capture failed, so the static path runs without graphs: %s", exc)
        graphs = decoder.drop_graphs()
    log.info(
        "decode path: static, %d rows x %d tokens (%.1f GiB), %d CUDA graphs captured in %.1f s",
        capacity,
        max_len,
        capacity * max_len * per_token / 2**30,
        graphs,
        time.monotonic() - started,
    )
    return Choice(
        decoder,
        replace(policy, max_batch_size=min(policy.max_batch_size, capacity), preallocated=True),
        info(
            path="graphs" if graphs else "static",
            cuda_graphs=graphs,
            kv_rows=capacity,
            kv_reserved_bytes=capacity * max_len * per_token,
        ),
    )


def _rows_that_fit(model, settings: Settings, wanted: int, per_token: int) -> int:
    """Rows of the static cache that fit the GPU's free memory, after what prefill and graphs need."""
    import torch

    max_len, needed = settings.limits.max_length, settings.limits.max_return_sequences
    free, _ = torch.cuda.mem_get_info(model.device)
    # prefill: its temporary cache, the copy of it made while filling the slots, and activations;
    # graphs: one float32 logits buffer of [rows, vocabulary]
    reserve = 3 * PREFILL_TOKENS * per_token + wanted * model.lm_head.out_features * 4
    fits = max(0, int(free * settings.speed.kv_cache_memory_fraction) - reserve) // (max_len * per_token)
    if fits < needed:
        raise ValueError(
            f"the GPU's free memory ({free / 2**30:.1f} GiB) holds a KV cache of only {fits} rows of "
            f"{max_len} tokens, fewer than --max_return_sequences {needed}: lower --max_length_limit "
            f"or --max_return_sequences, or use --decode_path dynamic"
        )
    if fits < wanted:
        log.warning("the KV cache fits %d rows of %d tokens, not --max_batch_size %d", fits, max_len, wanted)
    return min(wanted, fits)
