"""`python -m bench.prefill`: what a prefill chunk costs next to a decode step (sizes --max_prefill_tokens).

In process, on the continuous batch's own tensor functions (predictor/generation/dynamic.py): the
decode step of a full batch (``--rows`` rows of ``--length`` cached tokens) and, for each chunk size,
the first chunk of a ``--prompt``-token prompt and its last (which attends over the whole prompt).
The default chunk is the largest whose last chunk costs no more than the decode step
(docs/performance.md, "Chunked prefill"). One table, one JSON file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import raw
from .workload import model_dir

CHUNKS = (64, 128, 256, 512, 1024)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.prefill", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("small", "gptj-6b", "tiny"), default="small")
    parser.add_argument("--rows", type=int, default=32, help="rows of the full batch (--max_batch_size)")
    parser.add_argument("--length", type=int, default=300, help="tokens cached per decoding row")
    parser.add_argument("--prompt", type=int, default=1428, help="the long prompt's tokens")
    parser.add_argument("--chunks", type=int, nargs="+", default=CHUNKS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    return parser.parse_args(argv)


def measure(model, args) -> dict:
    from predictor.generation import dynamic

    pad = model.config.eos_token_id or 0
    with torch.inference_mode():
        batch, _ = dynamic.prefill(model, [[7] * args.length] * args.rows, pad)
        step = raw.timed(lambda: dynamic.step(model, batch, [7] * args.rows), "cpu", args.repeats)
        seconds = {size: _chunk(model, args.prompt, size, args.repeats) for size in args.chunks if size <= args.prompt}
        whole = raw.timed(lambda: dynamic.extend(model, None, [7] * args.prompt), "cpu", args.repeats)
    fitting = [size for size, cost in seconds.items() if cost["last_ms"] <= 1000 * step]
    return {
        "shape": args.shape,
        "rows": args.rows,
        "length": args.length,
        "prompt": args.prompt,
        "threads": torch.get_num_threads(),
        "decode_step_ms": 1000 * step,
        "whole_prompt_ms": 1000 * whole,
        "chunks": seconds,
        "largest_chunk_within_one_step": max(fitting, default=None),
    }


def _chunk(model, prompt: int, size: int, repeats: int) -> dict:
    """Milliseconds of a prompt's first chunk of ``size`` tokens, and of its last (after the rest)."""
    from predictor.generation import dynamic

    before, _ = dynamic.prefill(model, [[7] * (prompt - size)], model.config.eos_token_id or 0)
    return {
        "first_ms": 1000 * raw.timed(lambda: dynamic.extend(model, None, [7] * size), "cpu", repeats),
        "last_ms": 1000 * raw.timed(lambda: dynamic.extend(model, before, [7] * size), "cpu", repeats),
    }


def table(result: dict) -> str:
    lines = [
        f"decode step, {result['rows']} rows of {result['length']} tokens: {result['decode_step_ms']:.1f} ms",
        f"prefill of the whole {result['prompt']}-token prompt: {result['whole_prompt_ms']:.1f} ms",
        f"{'chunk':>6} {'first ms':>9} {'last ms':>8} {'last / step':>12}",
    ]
    for size, cost in result["chunks"].items():
        ratio = cost["last_ms"] / result["decode_step_ms"]
        lines.append(f"{size:>6} {cost['first_ms']:>9.1f} {cost['last_ms']:>8.1f} {ratio:>11.2f}x")
    lines.append(f"largest chunk within one decode step: {result['largest_chunk_within_one_step']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    model = raw.load(model_dir(args.shape, args.out / "models"), "cpu")
    result = measure(model, args)
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"prefill-{args.shape}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
