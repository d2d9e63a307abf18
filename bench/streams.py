"""Streaming clients over OpenAI's completions route (server-sent events), timing every token.

The same bodies go to our server (``/openai/v1``) and to vLLM's (``/v1``), so the two are measured
through one protocol. Each client sends greedy streamed completions one after another until told to
stop, and keeps every response's token arrival times (``time.perf_counter``) apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Sequence

import httpx

from .workload import Prompt


def stream_body(model: str, prompt: Prompt, max_tokens: int) -> dict:
    return {"model": model, "prompt": prompt.text, "max_tokens": max_tokens, "temperature": 0, "stream": True}


def tokens_in(line: str) -> int:
    """How many tokens one SSE line carries: 1 for a chunk with text, 0 for anything else.

    Both servers send one chunk per engine step and stream (vLLM's default stream interval is 1);
    a chunk whose text is empty (a piece held back mid-character, a finish chunk) is not a token arrival.
    """
    if not line.startswith("data: ") or line == "data: [DONE]":
        return 0
    event = json.loads(line[len("data: ") :])
    if "error" in event:
        raise RuntimeError(f"stream failed: {event['error']}")
    return int(any(choice.get("text") for choice in event.get("choices", ())))


class Streams:
    """``len(prompts)`` clients on one connection pool, each streaming its prompt over and over."""

    def __init__(self, client: httpx.AsyncClient, base: str, model: str, prompts: Sequence[Prompt], max_tokens: int):
        self.client, self.path = client, f"{base}/completions"
        self.bodies = [stream_body(model, p, max_tokens) for p in prompts]
        self.responses: list[list[float]] = []  # one list of arrival times per response
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(body)) for body in self.bodies]

    async def stop(self) -> None:
        """Stop after the responses in flight (each is short), so no stream is cut mid-response."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def tokens(self) -> int:
        return sum(len(r) for r in self.responses)

    async def _client(self, body: dict) -> None:
        while not self._stop.is_set():
            arrivals: list[float] = []
            self.responses.append(arrivals)
            async with self.client.stream("POST", self.path, json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"stream refused: {response.status_code} {(await response.aread())[:200]!r}")
                async for line in response.aiter_lines():
                    if tokens_in(line):
                        arrivals.append(time.perf_counter())
