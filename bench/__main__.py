"""`python -m bench [--device cpu|cuda]`: one run, one table, one JSON file.

CPU (the default): the issue's small GPT-J (4 layers, d_model 256, 8 heads, vocabulary 50400).
Raw `generate` at batch 1 and batch 16, then the real server with 16 requests one after another and
16 at once; every request makes exactly the same number of new tokens.
CUDA: GPT-J-6B's full shape with random fp16 weights (as fast as the real ones), plus the memory
roofline from a large device copy, batch-1 decode ms/token, time to first token, and throughput at
1/8/32/64 concurrent clients next to the same server taking one request at a time.
`python -m bench compare [--baseline-tree DIR] [--vllm PYTHON]`: bench/compare.py's side-by-side run.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

from . import raw, server
from .workload import model_dir, prompts

CUDA_MAX_LENGTH = 1152  # the GPU server's --max_length_limit: a 1024-token prompt and 128 new tokens
DEFAULTS = {  # shape, prompt tokens, new tokens, concurrency levels
    "cpu": ("small", 16, 64, (16,)),
    "cuda": ("gptj-6b", 128, 128, (1, 8, 32, 64)),
}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", choices=("small", "gptj-6b", "tiny"), help="model shape (default per device)")
    parser.add_argument("--prompt-tokens", type=int)
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrent clients to measure")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="where the JSON and models go")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results"),
        help="GPU runs: where the summary JSON goes (one file per device and day)",
    )
    args = parser.parse_args(argv)
    shape, prompt_tokens, new_tokens, levels = DEFAULTS[args.device]
    args.shape = args.shape or shape
    args.prompt_tokens = args.prompt_tokens or prompt_tokens
    args.new_tokens = args.new_tokens or new_tokens
    args.concurrency = tuple(args.concurrency or levels)
    return args


def measure_raw(args, path: Path, workload) -> dict:
    """In-process figures; the model is released before the server starts."""
    top = max(args.concurrency)
    if args.device == "cuda":
        from . import gpu

        return gpu.measure(path, workload, args.new_tokens, top, CUDA_MAX_LENGTH)
    model = raw.load(path, args.device)
    eos = model.config.eos_token_id
    figures = {
        "raw_tok_per_s_batch1": raw.tokens_per_second(model, workload[:4], 1, args.new_tokens, eos, args.device),
        f"raw_tok_per_s_batch{top}": raw.tokens_per_second(
            model, workload[:top], top, args.new_tokens, eos, args.device
        ),
    }
    del model
    gc.collect()
    return figures


def measure_server(args, path: Path, workload) -> dict:
    figures: dict = {"levels": {}}
    top = max(args.concurrency)
    # Room for every concurrent client at once (the defaults suit a 24 GB GPU; the benchmark measures
    # the engine, not the memory budget): rows x (prompt + new tokens).
    extra = [
        "--max_batch_size",
        str(max(top, 32)),
        "--max_batch_tokens",
        str(max(top, 32) * (args.prompt_tokens + args.new_tokens)),
    ]
    if args.device == "cuda":  # room for the 1024-token prompts of the TTFT row
        extra += ["--max_length_limit", str(CUDA_MAX_LENGTH)]
    with server.Server(path, args.out / "models", extra) as running:
        figures["load_seconds"] = running.ready_seconds
        # One at a time: 16 requests on a CPU (the comparison), 8 on a GPU (a per-request figure).
        sequential = server.load(running.url, workload[: top if args.device == "cpu" else 8], args.new_tokens, 1)
        figures["sequential"] = summary(sequential)
        for level in args.concurrency:
            count = max(level, 16) if args.device == "cpu" else max(2 * level, 8)
            figures["levels"][level] = summary(server.load(running.url, workload[:count], args.new_tokens, level))
        figures["fresh_connections"] = summary(server.fresh_connections(running.url, workload[:top], args.new_tokens))
        # The same load as the top level's, each request asking for logprobs 5 (the most): their cost
        count = max(top, 16) if args.device == "cpu" else max(2 * top, 8)
        figures["logprobs5"] = summary(server.load(running.url, workload[:count], args.new_tokens, top, logprobs=5))
        if args.device == "cuda":
            figures["ttft_ms_128"] = server.load(running.url, workload[:5], 1, 1).percentile(50) * 1000
            long = prompts(path, 5, 1024, seed=1)
            figures["ttft_ms_1024"] = server.load(running.url, long, 1, 1).percentile(50) * 1000
            figures["peak_gpu_memory_gb"] = server.gauge(running.url, 'gptj_gpu_memory_bytes{kind="peak"}') / 1e9
    return figures


def summary(load: server.Load) -> dict:
    return {
        "requests": load.requests,
        "seconds": load.seconds,
        "req_per_s": load.req_per_s,
        "tok_per_s": load.tok_per_s,
        "p50_s": load.percentile(50),
        "p95_s": load.percentile(95),
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # `python -m bench compare ...`: side by side with peers (bench/compare.py)
        from . import compare

        return compare.main(argv[1:])
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = model_dir(args.shape, args.out / "models")
    top = max(args.concurrency)
    workload = prompts(path, max(top, 16) if args.device == "cpu" else max(2 * top, 8), args.prompt_tokens)
    results = {
        "device": device_name(args.device),
        "shape": args.shape,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
    }
    results.update(measure_raw(args, path, workload))
    results.update(measure_server(args, path, workload))
    results.update(ratios(results, top))
    out = args.out / f"bench-{args.device}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, top))
    print(f"\nwritten to {out}")
    if args.device == "cuda":
        args.results.mkdir(parents=True, exist_ok=True)
        name = f"{results['device'].lower().replace(' ', '-')}-{time.strftime('%Y-%m-%d')}.json"
        (args.results / name).write_text(json.dumps(summary_for_results(results), indent=2) + "\n")
        print(f"summary written to {args.results / name}")
    return 0


def summary_for_results(results: dict) -> dict:
    """bench/results/: the figures docs/performance.md quotes, under stable keys."""
    levels = results["levels"]
    keys = (
        "device",
        "roofline_ms_per_token",
        "batch1_ms_per_token",
        "ttft_ms_128",
        "ttft_ms_1024",
        "load_seconds",
        "peak_gpu_memory_gb",
        "copy_bandwidth_gb_s",
        "hf_generate_batch1_ms_per_token",
        "greedy_matches_eager_reference",
        "greedy_first_mismatch",
        "fed_argmax_agreement",
        "fed_max_logit_error",
        "fed_disagreement_max_margin",
        "decode_path",
        "cuda_graphs",
        "hf_attention",
        "versions",
        "when",
    )
    return {
        **{key: results.get(key) for key in keys},
        "tok_per_s": {str(level): load["tok_per_s"] for level, load in levels.items()},
        # the old service took one request at a time: the same throughput at any number of clients
        "naive_tok_per_s": {str(level): results["naive_tok_per_s"] for level in levels},
        "speedup_vs_naive": {
            str(level): load["tok_per_s"] / results["naive_tok_per_s"] for level, load in levels.items()
        },
    }


def ratios(results: dict, top: int) -> dict:
    concurrent, sequential = results["levels"][top], results["sequential"]
    per_request = sequential["seconds"] / sequential["requests"]
    return {
        "speedup_concurrent_vs_sequential": per_request * concurrent["requests"] / concurrent["seconds"],
        "speedup_fresh_connections_vs_sequential": per_request
        * results["fresh_connections"]["requests"]
        / results["fresh_connections"]["seconds"],
        "server_vs_raw_batched": concurrent["tok_per_s"] / results[f"raw_tok_per_s_batch{top}"],
        "raw_batched_vs_batch1": results[f"raw_tok_per_s_batch{top}"] / results["raw_tok_per_s_batch1"],
        "logprobs5_vs_off": results["logprobs5"]["tok_per_s"] / concurrent["tok_per_s"],
    }


def table(results: dict, top: int) -> str:
    rows = [
        ("device", results["device"]),
        (
            "model",
            f"{results['shape']}, {results['prompt_tokens']} prompt + {results['new_tokens']} new tokens per request",
        ),
    ]
    rows += [(f"raw generate, batch {b}", f"{results[f'raw_tok_per_s_batch{b}']:.0f} tok/s") for b in (1, top)]
    for name, load in (
        [("server, one at a time", results["sequential"])]
        + [(f"server, {level} concurrent", load) for level, load in results["levels"].items()]
        + [
            (f"server, {top} at once, new connections", results["fresh_connections"]),
            (f"server, {top} concurrent, logprobs 5", results["logprobs5"]),
        ]
    ):
        rows.append(
            (
                name,
                f"{load['req_per_s']:.2f} req/s  {load['tok_per_s']:.0f} tok/s  "
                f"p50 {load['p50_s'] * 1000:.0f} ms  p95 {load['p95_s'] * 1000:.0f} ms",
            )
        )
    rows += [
        (f"{top} concurrent vs one at a time", f"{results['speedup_concurrent_vs_sequential']:.2f}x faster"),
        ("  ... with new connections", f"{results['speedup_fresh_connections_vs_sequential']:.2f}x faster"),
        (f"server / raw generate at batch {top}", f"{results['server_vs_raw_batched']:.0%}"),
        (f"logprobs 5 / off, {top} concurrent", f"{results['logprobs5_vs_off']:.0%} of the throughput"),
        (f"raw batch {top} / raw batch 1", f"{results['raw_batched_vs_batch1']:.2f}x"),
    ]
    for key, label in (
        ("roofline_ms_per_token", "memory roofline, batch 1"),
        ("batch1_ms_per_token", "decode, batch 1 (server's path)"),
        ("hf_generate_batch1_ms_per_token", "decode, batch 1 (generate)"),
        ("ttft_ms_128", "TTFT, 128 tokens"),
        ("ttft_ms_1024", "TTFT, 1024 tokens"),
    ):
        if key in results:
            rows.append((label, f"{results[key]:.2f} ms" + ("/token" if "per_token" in key else "")))
    if "naive_tok_per_s" in results:
        rows.append(("naive (generate, eager, one at a time)", f"{results['naive_tok_per_s']:.0f} tok/s"))
        rows += [
            (f"server, {level} concurrent / naive", f"{load['tok_per_s'] / results['naive_tok_per_s']:.1f}x")
            for level, load in results["levels"].items()
        ]
        rows.append(
            (
                "greedy tokens = eager reference",
                "yes"
                if results["greedy_matches_eager_reference"]
                else f"no, from token {results['greedy_first_mismatch']}",
            )
        )
        rows.append(
            (
                "  ... fed the reference's tokens",
                f"{results['fed_argmax_agreement']:.1%} same argmax, max logit "
                f"error {results['fed_max_logit_error']:.3f}, widest top-2 gap where they differ "
                f"{results['fed_disagreement_max_margin']:.3f}",
            )
        )
        rows.append(("peak GPU memory (server)", f"{results['peak_gpu_memory_gb']:.1f} GB"))
    rows.append(("server start to ready", f"{results['load_seconds']:.1f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def versions() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
    }


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    raise SystemExit(main())
