"""Which decode path the continuous batch takes, and how many rows its cache holds.

On one CUDA device the default is the static path (static.py): a KV cache allocated once, its rows and
tokens per row sized from the memory the weights leave free (capacity.py: ``--kv_cache_memory_fraction``,
``--max_batch_size auto`` or a number, ``--max_length_limit`` tokens a row), with every decode shape
captured as a CUDA graph before the model reports ready. Elsewhere (CPU, a model spread over several GPUs, or ``--decode_path dynamic``)
the dynamic path (dynamic.py) grows its cache as rows need it, bounded by ``--max_batch_tokens``.

``choose`` also says what was chosen (``DecodeInfo``: /metrics' gptj_decode_info and the benchmark
report it), so that a silent fallback, e.g. a failed graph capture, shows where people look.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace

from predictor.generation import capacity
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
    # the static step's attention (attention.py): how each row reads its cache; "-" on the dynamic path
    decode_attention: str = "-"


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
    model, policy = loaded.model, settings.batch
    room = _capacity(model, settings, per_token)
    started = time.monotonic()
    decoder = StaticDecoder(
        model, loaded.eos_token_id, room.rows, room.tokens_per_row, graphs=settings.speed.cuda_graphs
    )
    try:
        graphs = decoder.warm_up()
    except Exception as exc:  # noqa: BLE001 - a failed capture costs speed, not service
        log.warning("CUDA graph capture failed, so the static path runs without graphs: %s", exc)
        graphs = decoder.drop_graphs()
    log.info(
        "decode path: static, KV cache %s, attention %s, %d CUDA graphs captured in %.1f s",
        room.describe(),
        decoder.attention.name,
        graphs,
        time.monotonic() - started,
    )
    rows = room.rows if policy.auto_batch_size else min(policy.max_batch_size, room.rows)
    return Choice(
        decoder,
        replace(policy, max_batch_size=rows, preallocated=True),
        info(
            path="graphs" if graphs else "static",
            cuda_graphs=graphs,
            kv_rows=room.rows,
            kv_reserved_bytes=room.reserved_bytes,
            decode_attention=decoder.attention.name,
        ),
    )


def _capacity(model, settings: Settings, per_token: int) -> capacity.Capacity:
    """The static cache's shape: from the GPU's free memory on CUDA, else the batch bound (capacity.py)."""
    policy, limits = settings.batch, settings.limits
    if model.device.type != "cuda":
        # A lone request joins whatever its sequences (scheduling.admit): room for it even if the batch
        # bound is lower.
        return capacity.Capacity(max(policy.max_batch_size, limits.max_return_sequences), limits.max_length, per_token)
    import torch

    torch.cuda.empty_cache()  # what the loader's warm-up left cached counts as free: the cache may take it
    free, _ = torch.cuda.mem_get_info(model.device)
    return capacity.from_gpu(
        free,
        settings.speed.kv_cache_memory_fraction,
        per_token,
        limits.max_length,
        model.lm_head.out_features,
        PREFILL_TOKENS,
        wanted=None if policy.auto_batch_size else policy.max_batch_size,
        needed=limits.max_return_sequences,
        beam_tokens=policy.max_batch_tokens,
    )
