"""Which decode path the continuous batch takes, and how many rows its cache holds.

On one CUDA device the default is the static path (slots.py): a KV cache allocated once, for as many
rows as ``--max_batch_size`` asks and ``--kv_cache_memory_fraction`` of the free memory allows, each
row up to ``--max_length_limit`` tokens, with every decode shape captured as a CUDA graph before the
model reports ready. Elsewhere (CPU, a model spread over several GPUs, or ``--decode_path dynamic``)
the dynamic path (decode.py) grows its cache as rows need it, bounded by ``--max_batch_tokens``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .loading import Loaded
from .settings import BatchPolicy, Settings
from .slots import StaticDecoder, cache_bytes_per_token

log = logging.getLogger("predictor")


def decoder_for(loaded: Loaded, settings: Settings) -> tuple[StaticDecoder | None, BatchPolicy]:
    """The static decoder (None: the dynamic path) and the batch policy that fits it."""
    import torch

    model, speed, policy = loaded.model, settings.speed, settings.batch
    one_device = len(set(map(str, (getattr(model, "hf_device_map", None) or {"": model.device}).values()))) == 1
    path = speed.decode_path
    if path == "auto":
        path = "static" if model.device.type == "cuda" and one_device else "dynamic"
    if path == "dynamic":
        log.info("decode path: dynamic (cache grows per step, at most %d rows, %d tokens)",
                 policy.max_batch_size, policy.max_batch_tokens)
        return None, policy
    if not one_device:
        raise ValueError("--decode_path static needs the model on one device; use dynamic")
    max_len, capacity = settings.limits.max_length, policy.max_batch_size
    per_row = max_len * cache_bytes_per_token(model.config, model.dtype)
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        fits = int(free * speed.kv_cache_memory_fraction) // per_row
        if fits < 1:
            raise ValueError(f"no GPU memory for even one row of {max_len} tokens ({per_row / 2**20:.0f} MiB); "
                             f"lower --max_length_limit or use --decode_path dynamic")
        if fits < capacity:
            log.warning("the KV cache fits %d rows of %d tokens, not --max_batch_size %d", fits, max_len, capacity)
        capacity = min(capacity, fits)
    started = time.monotonic()
    decoder = StaticDecoder(model, loaded.eos_token_id, capacity, max_len, graphs=speed.cuda_graphs)
    try:
        graphs = decoder.warm_up()
    except Exception as exc:  # noqa: BLE001 - a failed capture costs speed, not service
        log.warning("CUDA graph capture failed, so the static path runs without graphs: %s", exc)
        graphs = decoder.drop_graphs()
    log.info("decode path: static, %d rows x %d tokens (%.1f GiB), %d CUDA graphs captured in %.1f s",
             capacity, max_len, capacity * per_row / 2**30, graphs, time.monotonic() - started)
    # The cache is already allocated: the token bound of the dynamic path no longer applies.
    return decoder, replace(policy, max_batch_size=capacity, max_batch_tokens=capacity * max_len)
