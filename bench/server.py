"""The HTTP server as clients see it: a real `python -m predictor` process, driven over loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import httpx

from .process import ServerProcess
from .workload import Prompt


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    new_tokens: int
    latencies: tuple[float, ...]

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def tok_per_s(self) -> float:
        return self.requests * self.new_tokens / self.seconds

    def percentile(self, q: int) -> float:
        return (
            statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]
            if len(self.latencies) > 1
            else self.latencies[0]
        )


class Server(ServerProcess):
    """Start the predictor on a free port with ``model``; stop it on exit. Its output goes to ``log``
    (by default a file named after the port in ``cache``)."""

    def __init__(self, model: Path, cache: Path, extra: Sequence[str] = (), log: Path | None = None) -> None:
        # extra: more predictor flags, e.g. a batch large enough for the most concurrent clients
        super().__init__(
            ["--model", str(model), "--cache_dir", str(cache), "--enable_latency_logging", "false", *extra],
            log or (lambda port: cache / f"server-{port}.log"),
        )
        self.started = time.monotonic()
        self.ready_seconds = float("nan")

    def wait_ready(self, timeout: float = 1800) -> Server:
        self.poll("/v2/models/gptj/ready", timeout=timeout, interval=0.2)  # GPT-J-6B from local disk takes a while
        self.ready_seconds = time.monotonic() - self.started
        return self

    def __enter__(self) -> Server:
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop(timeout=30)


def body(prompt: Prompt, new_tokens: int, logprobs: int | None = None) -> list[dict]:
    # max_length counts the prompt: prompt + new tokens, and the model never ends early (see workload).
    extra = {} if logprobs is None else {"logprobs": logprobs}  # each token's logprob and top-N (details)
    return [{"prompt": prompt.text, "max_length": len(prompt.ids) + new_tokens, **extra}]


async def _client(
    client: httpx.AsyncClient,
    prompts: list[Prompt],
    new_tokens: int,
    latencies: list[float],
    logprobs: int | None = None,
) -> None:
    for prompt in prompts:
        started = time.perf_counter()
        response = await client.post("/v1/models/gptj:predict", json=body(prompt, new_tokens, logprobs))
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200 or response.json()["status"] != "success":
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")


async def _load(
    url: str, prompts: Sequence[Prompt], new_tokens: int, concurrency: int, logprobs: int | None = None
) -> Load:
    """``concurrency`` clients, each sending its share of ``prompts`` one after another."""
    shares = [list(prompts[i::concurrency]) for i in range(concurrency)]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        await _client(client, [prompts[0]], new_tokens, [], logprobs)  # warm the connection and the server
        started = time.perf_counter()
        await asyncio.gather(*(_client(client, share, new_tokens, latencies, logprobs) for share in shares))
        seconds = time.perf_counter() - started
    return Load(len(prompts), seconds, new_tokens, tuple(latencies))


def load(url: str, prompts: Sequence[Prompt], new_tokens: int, concurrency: int, logprobs: int | None = None) -> Load:
    return asyncio.run(_load(url, prompts, new_tokens, concurrency, logprobs))


def fresh_connections(url: str, prompts: Sequence[Prompt], new_tokens: int) -> Load:
    """Every prompt from its own thread on a new connection, all at once (how many scripts send a
    burst); their arrivals spread over tens of milliseconds. The standard library's client keeps the
    client's own start-up cost (an httpx.Client builds an SSL context: ~20 ms of CPU) out of it."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []

    def one(prompt: Prompt) -> None:
        started = time.perf_counter()
        connection = http.client.HTTPConnection(host, int(port), timeout=3600)
        try:
            connection.request(
                "POST",
                "/v1/models/gptj:predict",
                body=json.dumps(body(prompt, new_tokens)),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
        finally:
            connection.close()
        latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=one, args=(prompt,)) for prompt in prompts]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"requests failed: {errors[:3]}")
    return Load(len(prompts), time.perf_counter() - started, new_tokens, tuple(latencies))


def decode_info(url: str) -> dict:
    """What the server says its engine runs (gptj_decode_info's labels, the KV cache's bytes)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    info = next((m.group(1) for m in re.finditer(r"^gptj_decode_info\{(.*)\} 1\.0$", text, re.M)), None)
    if info is None:
        raise KeyError("gptj_decode_info is not on /metrics")
    labels: dict = dict(re.findall(r'(\w+)="([^"]*)"', info))
    for key in ("cuda_graphs", "kv_rows", "kv_tokens_per_row"):
        labels[key] = int(labels[key])
    return {**labels, "kv_reserved_bytes": int(gauge(url, "gptj_kv_cache_reserved_bytes"))}


def gauge(url: str, sample: str) -> float:
    """One sample's value from the server's /metrics."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise KeyError(f"{sample} is not on /metrics")
