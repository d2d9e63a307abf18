"""Prometheus metrics, served on KServe's /metrics (the default registry) next to KServe's own.

The names are part of the product: dashboards and alerts rely on them (README lists them). Created in
main(), not at import: tests build their own on a private registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

OUTCOMES = ("success", "invalid", "unauthorized", "overloaded", "timeout", "cancelled", "error")

# LLM latencies span milliseconds (a token) to minutes (a long generation under load).
_REQUEST = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_QUEUE = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FIRST_TOKEN = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
_PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1)


class Metrics:
    """The predictor's metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter("gptj_requests", "Inference requests by outcome.", ["outcome"], registry=registry)
        for outcome in OUTCOMES:  # every outcome exists from the start, so rates and alerts see zeros
            self.requests.labels(outcome)
        self.request_duration = Histogram(
            "gptj_request_duration_seconds", "Request time, arrival to answer.", buckets=_REQUEST, registry=registry
        )
        self.queue_duration = Histogram(
            "gptj_queue_duration_seconds", "Time from arrival to joining a batch.", buckets=_QUEUE, registry=registry
        )
        self.time_to_first_token = Histogram(
            "gptj_time_to_first_token_seconds",
            "Arrival to the first generated token (requests without beams).",
            buckets=_FIRST_TOKEN,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "gptj_time_per_output_token_seconds",
            "Mean time per generated token after the first.",
            buckets=_PER_TOKEN,
            registry=registry,
        )
        self.prompt_tokens = Counter("gptj_prompt_tokens", "Prompt tokens that entered a batch.", registry=registry)
        self.generated_tokens = Counter("gptj_generated_tokens", "Tokens generated.", registry=registry)
        self.queue_size = Gauge(
            "gptj_queue_size", "Requests (prompts) waiting for a place in the batch.", registry=registry
        )
        self.requests_running = Gauge("gptj_requests_running", "Requests (prompts) generating now.", registry=registry)
        self.batch_size = Histogram(
            "gptj_batch_size",
            "Sequences in each decode step or beam-search call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.engine_healthy = Gauge(
            "gptj_engine_healthy",
            "0 once the engine failed (thread died, step stalled, "
            "device error): liveness answers 503 until the pod restarts; else 1.",
            registry=registry,
        )
        self.engine_healthy.set(1)  # loading is readiness's business, not a failure
        self.model_load = Gauge(
            "gptj_model_load_seconds", "Seconds the model took to load and warm up.", registry=registry
        )
        self._decode_gauges(registry)

    def _decode_gauges(self, registry: CollectorRegistry) -> None:
        # What the engine runs, set once it is chosen: a fallback (graphs that failed to capture, the
        # dynamic path where static was expected, eager attention) shows here, not only in speed.
        self.decode_info = Gauge(
            "gptj_decode_info",
            "1 for the decode path the engine runs (graphs, static or dynamic), with its CUDA graphs "
            "captured, attention implementation, dtype, KV cache rows and tokens per row and the static "
            "step's attention kernel as labels.",
            ["path", "cuda_graphs", "attention", "dtype", "kv_rows", "kv_tokens_per_row", "decode_attention"],
            registry=registry,
        )
        self.kv_cache_reserved = Gauge(
            "gptj_kv_cache_reserved_bytes",
            "KV cache memory allocated up front (the static path); 0 where it grows per step (dynamic).",
            registry=registry,
        )
        self.kv_cache_tokens = Gauge(
            "gptj_kv_cache_tokens",
            "Tokens the KV cache holds: rows x tokens per row (static: allocated; dynamic: what the batch admits).",
            registry=registry,
        )

    def decode_path(self, kv_reserved_bytes: int, **labels: object) -> None:
        """Record what the engine runs (paths.DecodeInfo's fields)."""
        self.decode_info.clear()
        self.decode_info.labels(**{name: str(value) for name, value in labels.items()}).set(1)
        self.kv_cache_reserved.set(kv_reserved_bytes)
        self.kv_cache_tokens.set(int(labels["kv_rows"]) * int(labels["kv_tokens_per_row"]))

    def watch_gpu_memory(self) -> None:
        """Export gptj_gpu_memory_bytes{kind} (allocated, reserved, peak), read at each scrape (CUDA only)."""
        self.registry.register(_GpuMemory())


class _GpuMemory:
    def collect(self):
        import torch

        family = GaugeMetricFamily(
            "gptj_gpu_memory_bytes", "GPU memory held by the predictor's PyTorch.", labels=["kind"]
        )
        family.add_metric(["allocated"], torch.cuda.memory_allocated())
        family.add_metric(["reserved"], torch.cuda.memory_reserved())
        family.add_metric(["peak"], torch.cuda.max_memory_reserved())  # the most reserved since start
        yield family


def set_gauge(metrics: Metrics | None, name: str, value: float) -> None:
    """Set one of ``metrics``' gauges, when there are metrics (tests and benchmarks run without)."""
    if metrics is not None:
        getattr(metrics, name).set(value)
