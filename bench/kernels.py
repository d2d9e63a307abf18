"""CPU kernels in process: PyTorch's plain linears against the oneDNN-packed ones (loading/kernels.py).

``python -m bench.kernels`` builds the bench's small GPT-J (bench/workload.py "small": 4 layers, d 256,
vocabulary 50,400) and times, plain and packed in alternating rounds of one run, the head's
matrix-vector product (50,400 x 256, one row) and a whole decode step (one token on a cached prompt,
at 1 and 16 rows). Table on stdout, JSON in bench/out/kernels.json; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path


def _timed(call, repeats: int) -> float:
    """Median milliseconds of ``call`` over ``repeats`` calls (after one untimed)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _decode_step(model, rows: int, prompt: int):
    """A callable running one decode step (a token per row on a ``prompt``-token cache)."""
    import torch
    from transformers import DynamicCache

    ids = torch.randint(0, 50000, (rows, prompt), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    token = ids[:, -1:]
    position = torch.full((rows, 1), prompt)

    def step():
        with torch.inference_mode():
            model(input_ids=token, past_key_values=cache, position_ids=position, use_cache=True)
            cache.crop(-1)  # drop the token again: the same length every call

    return step


def measure(model_dir: Path, repeats: int, rounds: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from predictor.loading import kernels

    torch.set_num_threads(threads)
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    models, chosen = {"plain": plain}, {}
    for setting in ("auto", "packed"):  # auto: the large linears (the default); packed: every one
        models[setting] = copy.deepcopy(plain)
        chosen[setting] = kernels.choose(models[setting], setting)
    x = torch.randn(1, plain.config.n_embd)
    cases = {"head matvec 50400x256": lambda m: lambda: _head(m, x)}
    for rows in (1, 16):
        cases[f"decode step, {rows} row(s)"] = lambda m, rows=rows: _decode_step(m, rows, 64)
    results = {}
    for name, make in cases.items():
        calls = {variant: make(model) for variant, model in models.items()}
        times = {variant: [] for variant in calls}
        for _ in range(rounds):  # alternate, so a load spike on the machine hits every variant
            for variant, call in calls.items():
                times[variant].append(_timed(call, repeats))
        ms = {variant: statistics.median(t) for variant, t in times.items()}
        results[name] = {f"{v}_ms": m for v, m in ms.items()} | {
            f"plain/{v}": ms["plain"] / ms[v] for v in ("auto", "packed")
        }
    return {"kernels": chosen, "threads": threads, "cases": results}


def _head(model, x):
    import torch

    with torch.inference_mode():
        return model.lm_head(x)


def main(argv: list[str] | None = None) -> None:
    from bench import workload

    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="small", choices=sorted(workload.SHAPES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: steadier on a shared machine")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    result = measure(workload.model_dir(args.shape, args.out / "models"), args.repeats, args.rounds, args.threads)
    print(f"CPU kernels: {result['kernels']}, {result['threads']} thread(s), shape {args.shape}")
    print("| case | plain ms | auto ms | packed ms | plain/auto | plain/packed |\n|---|---|---|---|---|---|")
    for name, r in result["cases"].items():
        times = " | ".join(f"{r[v + '_ms']:.3f}" for v in ("plain", "auto", "packed"))
        print(f"| {name} | {times} | {r['plain/auto']:.2f}x | {r['plain/packed']:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps({"shape": args.shape, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
