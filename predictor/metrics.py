"""Prometheus metrics, served on KServe's /metrics (the default registry) next to KServe's own.

Created in main(), not at import: tests build their own on a private registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram


class Metrics:
    """The predictor's metrics; names are part of the product (dashboards and alerts rely on them)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.queue_size = Gauge("gptj_queue_size", "Requests waiting for the engine.", registry=registry)
        self.requests_running = Gauge("gptj_requests_running", "Requests in the batch being generated.",
                                      registry=registry)
        self.batch_size = Histogram("gptj_batch_size", "Requests per generate call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
