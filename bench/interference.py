"""Issue 20's measurement: what one beam search or one long prompt does to the streams beside it.

Four clients stream greedy completions (bench/streams.py). Once every stream is flowing, their gaps
are recorded alone for a while (``before``); then one disturbing request is sent and answered
(``during``: the gaps that overlap it), and the streams run on briefly so the gap that spans its end
closes. Disturbances:

- ``beam``: one seed-API request with ``num_beams: 4, max_length: 300`` (on vLLM: its OpenAI
  ``use_beam_search`` with ``n: 4``, the same width and the same number of new tokens);
- ``prefill``: one ~1,500-token prompt for one new token, over OpenAI's completions route.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Sequence

import httpx

from . import gaps
from .peers import MODEL, Peer
from .streams import Streams
from .workload import Prompt

DISTURBANCES = ("beam", "prefill")


@dataclass(frozen=True)
class Plan:
    """The sizes of one interference row (the defaults are issue 20's)."""

    stream_tokens: int = 48  # per streamed response; a client sends the next at once
    alone_s: float = 2.0  # how long the streams run alone before the disturbance
    tail_s: float = 0.3  # and after it, so the gap that spans its end is seen
    beam_width: int = 4
    beam_length: int = 300  # max_length of the seed API: prompt + new tokens
    warm_tokens: int = 4  # tokens per stream (on average) before anything is recorded
    alone_gaps: int = 5  # and gaps per stream (on average) in the streams-alone window


def disturbance(peer: Peer, kind: str, prompt: Prompt, plan: Plan) -> tuple[str, dict]:
    """(path, body) of one disturbing request on this peer."""
    if kind == "beam" and peer.seed_api:
        body = [{"prompt": prompt.text, "num_beams": plan.beam_width, "max_length": plan.beam_length}]
        return f"/v1/models/{MODEL}:predict", body
    if kind == "beam":  # vLLM: beam search over its completions route, n = the beam width
        new = plan.beam_length - len(prompt.ids)
        body = {"model": MODEL, "prompt": prompt.text, "max_tokens": new, "n": plan.beam_width}
        return f"{peer.openai}/completions", {**body, "use_beam_search": True, "temperature": 0}
    if kind == "prefill":
        return f"{peer.openai}/completions", {"model": MODEL, "prompt": prompt.text, "max_tokens": 1, "temperature": 0}
    raise ValueError(f"unknown disturbance {kind!r}")


async def _row(peer: Peer, kind: str, streams_prompts: Sequence[Prompt], prompt: Prompt, plan: Plan) -> dict:
    limits = httpx.Limits(max_connections=len(streams_prompts) + 2)
    async with httpx.AsyncClient(base_url=peer.url, timeout=600, limits=limits) as client:
        streams = Streams(client, peer.openai, MODEL, streams_prompts, plan.stream_tokens)
        streams.start()
        try:
            while streams.tokens() < plan.warm_tokens * len(streams_prompts):
                await asyncio.sleep(0.05)
            alone_from = time.perf_counter()
            await asyncio.sleep(plan.alone_s)
            # On a loaded machine the streams can crawl: wait (up to 4 times as long) for a few gaps each.
            waited = time.perf_counter() + 3 * plan.alone_s
            while len(_alone(streams, alone_from)) < plan.alone_gaps * len(streams_prompts):
                if time.perf_counter() > waited:
                    break
                await asyncio.sleep(0.05)
            sent = time.perf_counter()
            path, body = disturbance(peer, kind, prompt, plan)
            response = await client.post(path, json=body)
            answered = time.perf_counter()
            await asyncio.sleep(plan.tail_s)
        finally:
            await streams.stop()
    if response.status_code != 200:
        raise RuntimeError(f"{peer.name} {kind}: {response.status_code} {response.text[:300]}")
    found = [gap for arrivals in streams.responses for gap in gaps.gaps(arrivals)]
    row = gaps.row(gaps.inside(found, alone_from, sent), gaps.overlapping(found, sent, answered), answered - sent)
    return {**row, "prompt_tokens": len(prompt.ids), "streams": len(streams_prompts)}


def _alone(streams: Streams, since: float) -> list[gaps.Gap]:
    now = time.perf_counter()
    return gaps.inside((gap for arrivals in streams.responses for gap in gaps.gaps(arrivals)), since, now)


def measure(peer: Peer, kind: str, streams_prompts: Sequence[Prompt], prompt: Prompt, plan: Plan = Plan()) -> dict:
    """One interference row on one peer: gap statistics before and during (gaps.row's keys)."""
    return asyncio.run(_row(peer, kind, streams_prompts, prompt, plan))
