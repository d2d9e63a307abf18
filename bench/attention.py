"""The static step's attention kernels side by side (generation/attention.py), in process.

``python -m bench.attention`` builds the bench's small GPT-J (bench/workload.py "small": 4 layers, d 256,
8 heads of 32) into a StaticDecoder of 16 rows x 2,048 tokens, eager, and times decode steps for row
mixes: every row short, one long row among short ones, half long. Each kernel (``full_span``: every row
over the longest row's span, the old way; ``row_spans``; ``varlen`` on CUDA) runs the same rows in
alternating rounds of one run; the attention calls alone are timed too (synchronized on CUDA).
Table on stdout, JSON in bench/out/attention.json; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROWS, MAX_LEN = 16, 2048
MIXES = {  # prompt tokens of the 16 rows
    "16 short (40)": [40] * 16,
    "15 short + 1 long (1900)": [1900] + [40] * 15,
    "8 short + 8 long, mixed": [1900, 40] * 8,
}


class _Timed:
    """Wraps a kernel: its calls' seconds add up in ``spent``."""

    def __init__(self, kernel, sync) -> None:
        self.kernel, self.sync, self.spent = kernel, sync, 0.0
        self.name, self.any_span, self.prepare = kernel.name, kernel.any_span, kernel.prepare

    def __call__(self, *args):
        self.sync()
        started = time.perf_counter()
        out = self.kernel(*args)
        self.sync()
        self.spent += time.perf_counter() - started
        return out


def _decoder(model, kernel: str, prompts: list[int], device):
    import torch

    from predictor.generation.static import StaticDecoder

    decoder = StaticDecoder(model, 0, ROWS, MAX_LEN, graphs=False, attention=kernel)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        decoder.join([torch.randint(1, 50000, (n,), generator=generator).tolist() for n in prompts])
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    decoder.attention = _Timed(decoder.attention, sync)
    return decoder, sync


def _step_ms(decoder, sync, steps: int) -> tuple[float, float]:
    """Median ms of a whole step and the attention's share of it (the rows' lengths kept the same)."""
    import torch

    whole, attention = [], []
    tokens = [5] * decoder.rows
    with torch.inference_mode():
        for _ in range(steps + 1):
            decoder.attention.spent = 0.0
            sync()
            started = time.perf_counter()
            decoder.step(tokens)
            sync()
            whole.append((time.perf_counter() - started) * 1e3)
            attention.append(decoder.attention.spent * 1e3)
            decoder.undo_step()
    return statistics.median(whole[1:]), statistics.median(attention[1:])


def measure(model_dir: Path, device: str, steps: int, rounds: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    kernels = ["full_span", "row_spans"] + (["varlen"] if device.type == "cuda" else [])
    results = {}
    for mix, prompts in MIXES.items():
        decoders = {kernel: _decoder(model, kernel, prompts, device) for kernel in kernels}
        times = {kernel: ([], []) for kernel in kernels}
        for _ in range(rounds):  # alternate, so a load spike on the machine hits every kernel
            for kernel, (decoder, sync) in decoders.items():
                whole, attention = _step_ms(decoder, sync, steps)
                times[kernel][0].append(whole)
                times[kernel][1].append(attention)
        ms = {k: (statistics.median(w), statistics.median(a)) for k, (w, a) in times.items()}
        results[mix] = {f"{k}_step_ms": w for k, (w, _) in ms.items()} | {
            f"{k}_attention_ms": a for k, (_, a) in ms.items()
        }
        for kernel in kernels[1:]:
            results[mix][f"attention full_span/{kernel}"] = ms["full_span"][1] / ms[kernel][1]
            results[mix][f"step full_span/{kernel}"] = ms["full_span"][0] / ms[kernel][0]
        del decoders
    return {"device": str(device), "threads": threads, "rows": ROWS, "max_len": MAX_LEN, "mixes": results}


def main(argv: list[str] | None = None) -> None:
    from bench import workload

    parser = argparse.ArgumentParser(prog="python -m bench.attention", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="small", choices=sorted(workload.SHAPES))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: steadier on a shared machine")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--models", type=Path, help="where the model is built (default: OUT/models)")
    args = parser.parse_args(argv)
    path = workload.model_dir(args.shape, args.models or args.out / "models")
    result = measure(path, args.device, args.steps, args.rounds, args.threads)
    print(f"static step attention, shape {args.shape}, {ROWS} rows x {MAX_LEN} tokens, {result['device']}")
    for mix, r in result["mixes"].items():
        print(f"{mix}: " + ", ".join(f"{k} {v:.3f}" if "ms" in k else f"{k} {v:.2f}x" for k, v in r.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention.json").write_text(json.dumps({"shape": args.shape, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
