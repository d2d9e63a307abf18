"""`python -m bench [--device cpu|cuda]`: one run, one table, one JSON file rewritten after every phase.

CPU (the default): the issue's small GPT-J (4 layers, d_model 256, 8 heads, vocabulary 50400).
Raw `generate` at batch 1 and batch 16, then the real server with 16 requests one after another and
16 at once; every request makes exactly the same number of new tokens.
CUDA: GPT-J-6B's full shape with random fp16 weights (as fast as the real ones), plus the memory
roofline from a large device copy, batch-1 decode ms/token, time to first token, and throughput at
1/8/32/64/128 concurrent clients next to the naive one-request-at-a-time `generate` baseline.

Each step is a phase (bench/phases.py) with its own time limit: one that fails records its error and
the next one runs, and the JSON (into ``$OUT`` too, when set, with the server's log) is on disk after
each. ``--plan gpu`` runs the CUDA plan on any device (tiny shapes on a CPU: the device call's dry run).
`python -m bench compare [--baseline-tree DIR] [--vllm PYTHON]`: bench/compare.py's side-by-side run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import platform
import sys
import time
from pathlib import Path

from . import phases, raw, report, server
from .workload import model_dir, prompts

CUDA_MAX_LENGTH = 1152  # the GPU server's --max_length_limit: a 1024-token prompt and 128 new tokens
DEFAULTS = {  # shape, prompt tokens, new tokens, concurrency levels
    "cpu": ("small", 16, 64, (16,)),
    "cuda": ("gptj-6b", 128, 128, (1, 8, 32, 64, 128)),
}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--plan", choices=("cpu", "gpu"), help="which phases (default: gpu on cuda, else cpu)")
    parser.add_argument("--shape", choices=("small", "gptj-6b", "tiny"), help="model shape (default per device)")
    parser.add_argument("--prompt-tokens", type=int)
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+", help="concurrent clients to measure")
    parser.add_argument("--requests", type=int, help="requests per load, at least (default 16 on cpu, 8 on gpu)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies every phase's time limit")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="where the JSON and models go")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results"),
        help="GPU plan: where the summary JSON goes (one file per device and day)",
    )
    args = parser.parse_args(argv)
    shape, prompt_tokens, new_tokens, levels = DEFAULTS[args.device]
    args.plan = args.plan or ("gpu" if args.device == "cuda" else "cpu")
    args.shape = args.shape or shape
    args.prompt_tokens = args.prompt_tokens or prompt_tokens
    args.new_tokens = args.new_tokens or new_tokens
    args.concurrency = tuple(args.concurrency or levels)
    return args


class Bench:
    """What the phases share: the model on disk, the prompts, the in-process model, the server."""

    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args, self.stack, self.gpu = args, stack, args.plan == "gpu"
        self.top = max(args.concurrency)
        self.log = (phases.device_out() or args.out) / "server.log"
        self.path = self.workload = self.running = None

    def count(self, level: int) -> int:
        """Requests at ``level`` concurrent clients: 16 at least on a CPU, two each (8 at least) on a GPU."""
        least = self.args.requests or (8 if self.gpu else 16)
        return max(2 * level, least) if self.gpu else max(level, least)

    def model(self) -> dict:
        self.path = model_dir(self.args.shape, self.args.out / "models")
        self.workload = prompts(self.path, self.count(self.top), self.args.prompt_tokens)
        return {}

    def in_process(self):
        from . import gpu

        args = self.args
        copy_gb = 4.0 if args.device == "cuda" else 0.01
        check = min(gpu.CHECK_TOKENS, 4 * args.new_tokens)  # 64 on the GPU; fewer in a dry run's few tokens
        measured = gpu.InProcess(
            self.path, self.workload, args.new_tokens, self.top, CUDA_MAX_LENGTH, args.device, copy_gb, check
        )
        self.stack.callback(measured.close)
        return measured

    def raw_cpu(self) -> dict:
        """Raw `generate` at batch 1 and at the top level; the model is released before the server starts."""
        args, top = self.args, self.top
        model = raw.load(self.path, args.device)
        eos, workload = model.config.eos_token_id, self.workload
        try:
            return {
                "raw_tok_per_s_batch1": raw.tokens_per_second(
                    model, workload[:4], 1, args.new_tokens, eos, args.device
                ),
                f"raw_tok_per_s_batch{top}": raw.tokens_per_second(
                    model, workload[:top], top, args.new_tokens, eos, args.device
                ),
            }
        finally:
            del model
            gc.collect()

    def start_server(self) -> dict:
        # Room for every concurrent client at once (the defaults suit a 24 GB GPU; the benchmark measures
        # the engine, not the memory budget): rows x (prompt + new tokens).
        rows = max(self.top, 32)
        extra = [
            "--max_batch_size",
            str(rows),
            "--max_batch_tokens",
            str(rows * (self.args.prompt_tokens + self.args.new_tokens)),
        ]
        if self.gpu:  # room for the 1024-token prompts of the TTFT row
            extra += ["--max_length_limit", str(CUDA_MAX_LENGTH)]
        self.running = server.Server(self.path, self.args.out / "models", extra, log=self.log)
        self.stack.callback(self.running.stop, 30)
        self.running.wait_ready()
        return {"load_seconds": self.running.ready_seconds, "server_ran": server.decode_info(self.running.url)}

    def load(self, key: str, count: int, level: int, **kwargs) -> dict:
        """``count`` requests from ``level`` clients on keep-alive connections, as ``{key: summary}``."""
        load = server.load(self.running.url, self.workload[:count], self.args.new_tokens, level, **kwargs)
        return {key: summary(load)}

    def level(self, level: int) -> dict:
        return {"levels": self.load(level, self.count(level), level)}

    def fresh(self) -> dict:
        load = server.fresh_connections(self.running.url, self.workload[: self.top], self.args.new_tokens)
        return {"fresh_connections": summary(load)}

    def ttft(self, length: int) -> dict:
        url = self.running.url
        ask = self.workload[:5] if length == self.args.prompt_tokens else prompts(self.path, 5, length, seed=1)
        return {f"ttft_ms_{length}": server.load(url, ask, 1, 1).percentile(50) * 1000}

    def gpu_memory(self) -> dict:
        peak = server.gauge(self.running.url, 'gptj_gpu_memory_bytes{kind="peak"}')
        return {"peak_gpu_memory_gb": peak / 1e9}


def plan(run: phases.Phases, bench: Bench) -> None:
    """Every phase, in order, with its time limit in seconds (sized for GPT-J-6B on an H200; a new
    measurement is one more line)."""
    run.run("model", bench.model, 600)
    if bench.gpu:
        measured = bench.in_process()
        run.run("roofline", measured.roofline, 180, needs=["model"])
        run.run("naive baseline", measured.naive, 180, needs=["model"])
        run.run("raw decode", measured.raw_decode, 240, needs=["model"])
        run.run("fast path", measured.fast_path, 240, needs=["model"])
        measured.close()  # the server needs the device's memory
    else:
        run.run("raw decode", bench.raw_cpu, 900, needs=["model"])
    run.run("server start", bench.start_server, 300, needs=["model"])
    on_server = functools.partial(run.run, needs=["server start"])
    one_at_a_time = bench.args.requests or (8 if bench.gpu else bench.top)
    on_server("server one at a time", functools.partial(bench.load, "sequential", one_at_a_time, 1), 300)
    for level in bench.args.concurrency:
        on_server(f"server {level} concurrent", functools.partial(bench.level, level), 300)
    on_server("server new connections", bench.fresh, 300)
    # the top level's load, each request asking for logprobs 5 (the most): their cost
    on_server(
        "server logprobs 5",
        functools.partial(bench.load, "logprobs5", bench.count(bench.top), bench.top, logprobs=5),
        300,
    )
    if bench.gpu:
        on_server(
            f"server ttft {bench.args.prompt_tokens}", functools.partial(bench.ttft, bench.args.prompt_tokens), 120
        )
        on_server("server ttft 1024", functools.partial(bench.ttft, 1024), 120)
    if bench.args.device == "cuda":
        on_server("server gpu memory", bench.gpu_memory, 30)


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
    results = {
        "device": device_name(args.device),
        "plan": args.plan,
        "shape": args.shape,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "concurrency": list(args.concurrency),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
    }
    out, top = phases.device_out(), max(args.concurrency)
    files = [args.out / f"bench-{args.device}.json"] + ([out / f"bench-{args.device}.json"] if out else [])
    folders = [args.results] + ([out] if out else [])
    run = phases.Phases(results, files, functools.partial(_derived, args.plan, top, folders), args.timeout_scale)
    with contextlib.ExitStack() as stack:  # stops the server and releases the model, whatever happens
        plan(run, Bench(args, stack))
    run.write()
    print(report.table(results, top))
    print("\n" + report.phases_table(results))
    print(f"\nwritten to {', '.join(map(str, files))}")
    return 1 if run.failed() else 0


def _derived(plan_name: str, top: int, folders: list[Path], results: dict) -> dict[Path, dict]:
    """After each phase: the ratios into the results; on the GPU plan, the summary in bench/results/'s form."""
    results.update(report.ratios(results, top))
    if plan_name != "gpu":
        return {}
    results["targets"] = report.targets(results)
    summary = report.summary_for_results(results)
    return {folder / report.summary_name(results): summary for folder in folders}


def versions() -> dict:
    import importlib.metadata

    import torch
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    found["transformers"] = transformers.__version__
    for name in ("kserve", "tokenizers", "protobuf", "psutil", "pandas", "grpcio"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    model = report.cpu_model()
    return f"{model}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    raise SystemExit(main())
