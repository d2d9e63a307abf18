"""What the engine runs (paths.choose's DecodeInfo) and its gauges, in process on the tiny model."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from predictor.generation import paths
from predictor.loading.loader import load
from predictor.settings import parse_settings
from predictor.telemetry.metrics import Metrics


def test_choose_says_which_path_and_what_it_holds_and_the_gauges_keep_one_sample(tiny_dir):
    settings = parse_settings(["--model", str(tiny_dir), "--max_batch_size", "4", "--max_length_limit", "64"], {})
    loaded = load(settings)
    dynamic = paths.choose(loaded, settings)
    assert dynamic.decoder is None
    assert dynamic.info == paths.DecodeInfo("dynamic", 0, "sdpa", "float32", 4, 64, 0)
    static_settings = parse_settings(
        ["--model", str(tiny_dir), "--max_batch_size", "4", "--max_return_sequences", "2"]
        + ["--max_length_limit", "64", "--decode_path", "static"],
        {},
    )
    static = paths.choose(loaded, static_settings)
    # no CUDA here, so no graphs: "static", the path a failed capture falls back to, not "graphs"
    assert (static.info.path, static.info.cuda_graphs, static.info.kv_rows) == ("static", 0, 4)
    assert static.info.kv_reserved_bytes == 4 * 64 * 2 * 2 * 64 * 4  # rows x tokens x (K+V, 2 layers, 64 wide, fp32)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.decode_path(**dataclasses.asdict(dynamic.info))
    metrics.decode_path(**dataclasses.asdict(static.info))  # a second choice replaces the first
    samples = [s for m in registry.collect() if m.name == "gptj_decode_info" for s in m.samples]
    assert [(s.labels["path"], s.labels["kv_rows"], s.value) for s in samples] == [("static", "4", 1.0)]
    assert registry.get_sample_value("gptj_kv_cache_reserved_bytes") == static.info.kv_reserved_bytes
