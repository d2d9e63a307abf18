"""Batching as a client sees it: concurrent requests share generate calls, answers are unchanged."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

PROMPTS = [f"Request number {i} says" for i in range(12)]


def metric(server, name: str) -> float:
    text = server.client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def concurrently(url: str, bodies: list) -> list[httpx.Response]:
    def post(body):
        with httpx.Client(base_url=url, timeout=120) as client:
            return client.post("/v1/models/gptj:predict", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


class RowsPerStep:
    """Average rows per decode step over a block, from the gptj_batch_size histogram."""

    def __init__(self, server) -> None:
        self.server = server

    def __enter__(self):
        self.sum, self.count = (metric(self.server, f"gptj_batch_size_{k}") for k in ("sum", "count"))
        return self

    def __exit__(self, *exc) -> None:
        steps = metric(self.server, "gptj_batch_size_count") - self.count
        self.average = (metric(self.server, "gptj_batch_size_sum") - self.sum) / steps


def test_concurrent_requests_are_batched_and_answer_as_if_alone(server):
    bodies = [{"prompt": p, "max_length": 40 + 3 * i} for i, p in enumerate(PROMPTS)]
    with RowsPerStep(server) as alone:
        sequential = [server.predict(body).json()["data"] for body in bodies]
    with RowsPerStep(server) as together:
        responses = concurrently(server.url, bodies)
    assert [r.json()["data"] for r in responses] == sequential  # greedy: same text alone or batched
    assert alone.average == 1.0
    assert together.average > 4  # the requests generated side by side, not one after another


def test_engine_gauges_are_on_metrics_and_idle_after_work(server):
    assert metric(server, "gptj_queue_size") == 0
    assert metric(server, "gptj_requests_running") == 0


def test_one_failing_request_leaves_its_batch_mates_alone(start_server, tiny_dir, cache_dir):
    s = start_server(
        [
            "--model",
            str(tiny_dir),
            "--cache_dir",
            str(cache_dir),
            "--batch_wait_ms",
            "300",
            "--max_batch_wait_ms",
            "1000",
            "--fault_injection",
            "true",
        ]
    )
    bodies = [
        {"prompt": "calm one", "max_length": 20},
        {"prompt": "please [[fault:prefill]]", "max_length": 60},
        {"prompt": "calm two", "max_length": 20},
    ]
    calm1, exploded, calm2 = concurrently(s.url, bodies)
    assert calm1.status_code == calm2.status_code == 200
    assert exploded.status_code == 500 and exploded.json()["status"] == "failed"
    assert "joining them one by one" in s.log()  # they really joined together first


def test_the_static_decode_path_answers_the_same(server, start_server, tiny_dir, cache_dir):
    """The GPU default (a preallocated cache), forced on a CPU: same texts, alone or batched, and a
    batch larger than its rows waits for free slots."""
    fast = start_server(
        ["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--decode_path", "static", "--max_batch_size", "4"]
    )
    bodies = [{"prompt": p, "max_length": 40 + 3 * i} for i, p in enumerate(PROMPTS)]
    bodies.append({"prompt": "Sampled", "max_length": 30, "do_sample": True, "seed": 5, "num_return_sequences": 3})
    expected = [server.predict(body).json()["data"] for body in bodies]
    assert [r.json()["data"] for r in concurrently(fast.url, bodies)] == expected
    assert "decode path: static, KV cache 8 rows x 512 tokens" in fast.log()
