"""Throughput over OpenAI's completions route, per option mix: the rows every peer can run.

``concurrency`` clients on keep-alive connections, each sending its share of the prompts one after
another, non-streamed; every request asks for exactly ``new_tokens`` (the bench's models never end
early) and the answer's ``usage`` must say so, so tok/s counts tokens really made on both servers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

import httpx

from .peers import MODEL, Peer
from .server import Load
from .workload import Prompt

# Issue 22's option mixes. Sampled mixes use OpenAI's default temperature 1.
MIXES: dict[str, dict] = {
    "greedy": {"temperature": 0},
    "sampling": {"temperature": 1.0},
    "seeded": {"temperature": 1.0},  # plus a seed of its own per request (body below)
    "logprobs5": {"temperature": 0, "logprobs": 5},
    "top_p": {"temperature": 1.0, "top_p": 0.9},
    "penalties": {"temperature": 0, "presence_penalty": 0.5, "frequency_penalty": 0.5},
}


def body(mix: str, prompt: Prompt, new_tokens: int, index: int) -> dict:
    extra = {"seed": 1000 + index} if mix == "seeded" else {}
    return {"model": MODEL, "prompt": prompt.text, "max_tokens": new_tokens, **MIXES[mix], **extra}


async def _client(client, path: str, jobs: list, new_tokens: int, latencies: list[float]) -> None:
    for payload in jobs:
        started = time.perf_counter()
        response = await client.post(path, json=payload)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")
        made = response.json()["usage"]["completion_tokens"]
        if made != new_tokens:
            raise RuntimeError(f"asked for {new_tokens} tokens, got {made}: the figures would not compare")


async def _load(peer: Peer, mix: str, prompts: Sequence[Prompt], new_tokens: int, concurrency: int) -> Load:
    path = f"{peer.openai}/completions"
    payloads = [body(mix, p, new_tokens, i) for i, p in enumerate(prompts)]
    shares = [payloads[i::concurrency] for i in range(concurrency)]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=peer.url, timeout=600, limits=limits) as client:
        await _client(client, path, payloads[:1], new_tokens, [])  # warm the connection and the mix's path
        started = time.perf_counter()
        await asyncio.gather(*(_client(client, path, share, new_tokens, latencies) for share in shares))
        seconds = time.perf_counter() - started
    return Load(len(payloads), seconds, new_tokens, tuple(latencies))


def load(peer: Peer, mix: str, prompts: Sequence[Prompt], new_tokens: int, concurrency: int) -> Load:
    return asyncio.run(_load(peer, mix, prompts, new_tokens, concurrency))
