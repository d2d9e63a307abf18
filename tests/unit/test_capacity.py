"""The static cache's rows and tokens per row, sized from the GPU's free memory (generation/capacity.py).

No GPU here: torch.cuda.mem_get_info is faked, and the model is GPT-J-6B's shape (28 layers, 4096 wide,
float16: 448 KiB of keys and values a token; a 50,400-token vocabulary) on an H200 (140 GiB, of which
about 128 GiB are free once 11.3 GiB of weights and the CUDA context are in).
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.generation import capacity, paths
from predictor.generation.static import cache_bytes_per_token
from predictor.loading.loader import load
from predictor.settings import parse_settings
from predictor.telemetry.metrics import Metrics

GIB = 2**30
H200_FREE = int((140 - 11.3 - 0.5) * GIB)  # total, less GPT-J-6B's fp16 weights and the CUDA context
GPTJ_6B = SimpleNamespace(n_layer=28, n_embd=4096)


class _GptJ6BOnAGpu:
    """What the sizing reads of a model: its device and its vocabulary."""

    device = torch.device("cuda", 0)
    lm_head = torch.nn.Linear(1, 50400, bias=False, device="meta")


def _sized(monkeypatch, argv: list[str], free: int = H200_FREE) -> capacity.Capacity:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 140 * GIB))
    per_token = cache_bytes_per_token(GPTJ_6B, torch.float16)
    return paths._capacity(_GptJ6BOnAGpu(), parse_settings(argv, {}), per_token)


def test_the_batch_bound_is_auto_unless_set():
    assert (parse_settings([], {}).batch.auto_batch_size, parse_settings([], {}).batch.max_batch_size) == (True, 32)
    assert parse_settings([], {"GPTJ_MAX_BATCH_SIZE": "auto"}).batch.auto_batch_size
    given = parse_settings(["--max_batch_size", "7"], {"GPTJ_MAX_BATCH_SIZE": "auto"}).batch  # the flag wins
    assert (given.auto_batch_size, given.max_batch_size) == (False, 7)


def test_gptj_6b_on_an_h200_gets_about_120_rows_of_2048_tokens_using_most_of_the_memory(monkeypatch, caplog):
    room = _sized(monkeypatch, ["--max_length_limit", "2048"])
    assert room.bytes_per_token == 448 * 2**10
    assert (room.tokens_per_row, 120 <= room.rows <= 135) == (2048, True), room.rows
    assert room.reserved_bytes >= 0.85 * H200_FREE  # what the weights leave, less prefill and headroom
    assert room.reserved_bytes + capacity.working_bytes(room.rows, 448 * 2**10, 50400, 4096) <= 0.92 * H200_FREE
    assert "128 rows x 2048 tokens (112.0 GiB, 87% of the 128.2 GiB free after the weights)" in room.describe()
    assert "beam search" not in caplog.text  # its 16,384 tokens (7 GiB) fit the 10.9 GiB left


def test_the_default_512_token_rows_get_the_same_token_budget_up_to_the_auto_row_bound(monkeypatch):
    room = _sized(monkeypatch, [])
    assert (room.rows, room.tokens_per_row) == (capacity.AUTO_MAX_ROWS, 512)  # 514 would fit
    assert room.tokens == 512 * 512 and room.reserved_bytes >= 0.85 * H200_FREE


@pytest.mark.parametrize("free_gib, rows", [(80, 64), (12, 26)])
def test_a_batch_bound_set_by_the_user_bounds_the_cache_and_one_too_large_is_warned_of(
    monkeypatch, caplog, free_gib, rows
):
    """12 GiB free: 92% is 11.04 GiB, less 5.25 GiB for prefill, over 224.2 MiB a row (keys, values and a
    row of logits) -> 26 rows."""
    room = _sized(monkeypatch, ["--max_batch_size", "64"], free=free_gib * GIB)
    assert room.rows == rows
    assert ("fits 26 rows of 512 tokens, not --max_batch_size 64" in caplog.text) == (rows < 64)
    # on 12 GiB the cache and prefill take nearly all: beam search's 7 GiB would not fit beside them
    assert ("beam search's --max_batch_tokens 16384 (7.0 GiB of cache) may not fit" in caplog.text) == (rows < 64)


def test_too_little_memory_for_a_lone_request_stops_the_start_with_what_to_change(monkeypatch):
    with pytest.raises(ValueError, match=r"holds a KV cache of only 0 rows of 512 tokens, fewer than "):
        _sized(monkeypatch, [], free=int(4.5 * GIB))
    with pytest.raises(ValueError, match=r"only 5 rows of 2048 tokens, fewer than --max_return_sequences 8"):
        _sized(monkeypatch, ["--max_length_limit", "2048"], free=11 * GIB)
    assert _sized(monkeypatch, ["--max_return_sequences", "2", "--max_length_limit", "2048"], free=11 * GIB).rows == 5


def test_without_a_gpu_the_bound_is_what_it_was(tiny_dir, caplog):
    """The dynamic path (the CPU default) admits 32 rows; the static path on a CPU holds 32 rows, or the
    number given (at least --max_return_sequences); both say so in the log and on /metrics."""
    caplog.set_level(logging.INFO, logger="predictor")
    settings = parse_settings(["--model", str(tiny_dir), "--max_length_limit", "64"], {})
    loaded = load(settings)
    dynamic = paths.choose(loaded, settings)
    assert (dynamic.info.kv_rows, dynamic.policy.max_batch_size, dynamic.info.decode_attention) == (32, 32, "-")
    static_settings = parse_settings(
        ["--model", str(tiny_dir), "--max_length_limit", "64", "--decode_path", "static"], {}
    )
    static = paths.choose(loaded, static_settings)
    assert (static.decoder.capacity, static.policy.max_batch_size, static.info.kv_tokens_per_row) == (32, 32, 64)
    assert static.info.decode_attention == "row_spans"  # eager, on a CPU: each run of rows its own span
    assert "decode path: static, KV cache 32 rows x 64 tokens (0.0 GiB), attention row_spans" in caplog.text
    registry = CollectorRegistry()
    Metrics(registry).decode_path(**dataclasses.asdict(static.info))
    assert registry.get_sample_value("gptj_kv_cache_tokens") == 32 * 64
    assert registry.get_sample_value("gptj_kv_cache_reserved_bytes") == 32 * 64 * 2 * 2 * 64 * 4
    labels = {"path": "static", "kv_rows": "32", "kv_tokens_per_row": "64", "decode_attention": "row_spans"}
    sample = next(s for m in registry.collect() if m.name == "gptj_decode_info" for s in m.samples)
    assert labels.items() <= sample.labels.items()
