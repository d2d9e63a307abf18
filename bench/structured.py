"""`python -m bench.structured`: throughput of structured-output rows against free rows, one server.

``clients`` concurrent clients (16 by default) send non-streamed OpenAI completions, sampled at
temperature 1, either free or constrained by a JSON Schema whose strings never force an end (the
row's grammar state, mask and EOS rule all run every step). Free and constrained loads alternate,
``rounds`` times each, on the same server, and the ratio of their tokens per second is reported
(issue 23's target: constrained >= 0.6x free). The schema compiles once (the cache): the first
constrained request, outside the timing, warms it. Tokens are counted from each answer's ``usage``,
since a constrained row may end before ``new_tokens`` when its object closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from .server import Server
from .workload import model_dir, prompts

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "count": {"type": "integer"},
    },
    "required": ["title", "tags", "count"],
}


def body(prompt: str, new_tokens: int, constrained: bool, index: int) -> dict:
    extra = {"structured_outputs": {"json": SCHEMA}} if constrained else {}
    return {
        "model": "gptj",
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 1.0,
        "seed": index,
        **extra,
    }


async def _client(client: httpx.AsyncClient, jobs: list[dict], made: list[int]) -> None:
    for payload in jobs:
        response = await client.post("/openai/v1/completions", json=payload)
        if response.status_code != 200:
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")
        answer = response.json()
        choice = answer["choices"][0]
        if "structured_outputs" in payload and choice["finish_reason"] == "stop":
            json.loads(choice["text"])  # an object that ended must parse: the figure counts valid output only
        made.append(answer["usage"]["completion_tokens"])


async def _load(url: str, texts: list[str], new_tokens: int, clients: int, constrained: bool) -> float:
    """Tokens per second for one load of ``texts``."""
    payloads = [body(t, new_tokens, constrained, i) for i, t in enumerate(texts)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    made: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await _client(client, payloads[:1], [])  # warm the connection (and the schema's cache entry)
        started = time.perf_counter()
        await asyncio.gather(*(_client(client, payloads[i::clients], made) for i in range(clients)))
        return sum(made) / (time.perf_counter() - started)


def run(shape: str, clients: int, requests: int, new_tokens: int, rounds: int, out: Path) -> dict:
    path = model_dir(shape, out / "models")
    texts = [p.text for p in prompts(path, requests, 16)]
    figures: dict[str, list[float]] = {"free": [], "constrained": []}
    with tempfile.TemporaryDirectory() as cache, Server(path, Path(cache), ["--max_batch_size", str(clients)]) as s:
        for _ in range(rounds):  # alternating: the machine's noise falls on both alike
            for kind in ("free", "constrained"):
                figures[kind].append(asyncio.run(_load(s.url, texts, new_tokens, clients, kind == "constrained")))
    free, constrained = sum(figures["free"]), sum(figures["constrained"])
    return {
        "shape": shape,
        "clients": clients,
        "requests": requests,
        "new_tokens": new_tokens,
        "free_tok_s": [round(x, 1) for x in figures["free"]],
        "constrained_tok_s": [round(x, 1) for x in figures["constrained"]],
        "ratio": round(constrained / free, 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.structured", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("small", "tiny", "gptj-6b"), default="small")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    result = run(args.shape, args.clients, args.requests, args.new_tokens, args.rounds, args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
