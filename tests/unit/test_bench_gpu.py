"""The GPU benchmark's in-process figures (bench/gpu.py), tried on a CPU with the smoke shape.

A lent GPU is rare and its minutes are few: this is where the code is proved to run to the end,
and where the fast path's greedy tokens are checked against the eager `generate` reference.
"""

from __future__ import annotations

import json
import re

import pytest

from bench import __main__ as bench
from bench import gpu, report
from bench.workload import model_dir, prompts


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    path = model_dir("tiny", tmp_path_factory.mktemp("models"))
    return gpu.measure(path, prompts(path, 4, 16), new_tokens=8, top=2, max_len=128, device="cpu", copy_gb=0.01)


def test_the_gpu_figures_come_out_and_the_fast_path_matches_the_reference(figures):
    assert figures["decode_path"] == "static"
    assert figures["greedy_matches_eager_reference"] is True and figures["greedy_first_mismatch"] is None
    assert figures["fed_argmax_agreement"] == 1.0 and figures["fed_max_logit_error"] < 1e-3  # float32 here
    assert figures["fed_disagreement_max_margin"] == 0.0
    for key in (
        "copy_bandwidth_gb_s",
        "roofline_ms_per_token",
        "naive_tok_per_s",
        "hf_generate_batch1_ms_per_token",
        "raw_tok_per_s_batch2",
        "batch1_ms_per_token",
        "ttft_ms_inprocess_128",
    ):
        assert figures[key] > 0, key
    # the roofline: the bytes a token reads (all weights but the embedding table) over the copy bandwidth
    assert (
        abs(figures["roofline_ms_per_token"] - figures["weights_read_gb"] / figures["copy_bandwidth_gb_s"] * 1000)
        < 1e-6
    )
    table = 50400 * 64 * 4 / 1e9  # the smoke shape's embedding table, float32
    assert figures["weight_gb"] - figures["weights_read_gb"] == pytest.approx(table)


def test_the_gpu_table_and_results_file_hold_every_figure(figures):
    """The GPU run's last steps, on these figures and a made-up server part (no GPU server here)."""
    load = {"requests": 16, "seconds": 2.0, "req_per_s": 8.0, "tok_per_s": 1024.0, "p50_s": 0.2, "p95_s": 0.3}
    results = {
        "device": "NVIDIA H100 80GB HBM3",
        "shape": "gptj-6b",
        "prompt_tokens": 128,
        "new_tokens": 128,
        "when": "2026-11-25 10:00:00",
        "versions": bench.versions(),
        **figures,
        "load_seconds": 21.5,
        "sequential": {**load, "requests": 8, "seconds": 8.0},
        "levels": {1: load, 2: {**load, "tok_per_s": 2048.0}},
        "fresh_connections": load,
        "logprobs5": {**load, "tok_per_s": 1843.2},
        "ttft_ms_128": 15.0,
        "ttft_ms_1024": 60.0,
        "peak_gpu_memory_gb": 40.0,
    }
    results.update(report.ratios(results, 2))
    rows = dict(re.split(r"(?<=\S)\s{2,}", line.strip(), maxsplit=1) for line in report.table(results, 2).splitlines())
    for row in (
        "memory roofline, batch 1",
        "decode, batch 1 (server's path)",
        "TTFT, 128 tokens",
        "TTFT, 1024 tokens",
        "naive (generate, eager, one at a time)",
        "... fed the reference's tokens",
    ):
        assert row in rows, row
    assert rows["peak GPU memory (server)"] == "40.0 GB" and rows["server start to ready"] == "21.5 s"
    assert rows["TTFT, 128 tokens"] == "15.00 ms"
    assert rows["logprobs 5 / off, 2 concurrent"] == "90% of the throughput"
    assert rows["server, 2 concurrent / naive"] == f"{2048.0 / figures['naive_tok_per_s']:.1f}x"
    summary = json.loads(json.dumps(report.summary_for_results(results)))  # the file bench/results/ gets
    assert {
        "device",
        "roofline_ms_per_token",
        "batch1_ms_per_token",
        "ttft_ms_128",
        "tok_per_s",
        "naive_tok_per_s",
        "load_seconds",
    } <= set(summary)
    assert summary["tok_per_s"] == {"1": 1024.0, "2": 2048.0}
    assert summary["speedup_vs_naive"]["2"] == pytest.approx(2048.0 / figures["naive_tok_per_s"])


def test_the_targets_say_which_are_met_and_by_how_much():
    load = {"requests": 128, "seconds": 1.0, "req_per_s": 128.0, "tok_per_s": 10000.0, "p50_s": 0.2, "p95_s": 0.3}
    results = {"batch1_ms_per_token": 3.0, "roofline_ms_per_token": 2.0, "ttft_ms_128": 15.0, "naive_tok_per_s": 400.0}
    found = report.targets({**results, "levels": {64: load}, "fed_argmax_agreement": 0.995})
    assert {name: t["met"] for name, t in found.items()} == {
        "decode_vs_roofline": False,  # 1.5x the roofline, over 1.25x
        "ttft_ms_128": False,  # 15 ms is not under 15 ms
        "tok_per_s_64": True,
        "speedup_vs_naive_64": True,  # 25x
        "fed_argmax_agreement": True,
    }  # no load_seconds: the server did not start, so that target is not judged
    assert found["decode_vs_roofline"]["value_over_bound"] == pytest.approx(1.5 / 1.25)
