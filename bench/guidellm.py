"""`python -m bench.guidellm --guidellm PATH`: GuideLLM (PyPI ``guidellm``) against this tree's server, as a user runs it.

It starts ``python -m predictor`` (bench/server.py) on a free port of 127.0.0.1 with one of the
benchmark's models (``--shape``, built once under ``--out``) or a checkpoint (``--model DIR``), and
runs GuideLLM's plain command against ``/openai``:

    guidellm run --backend kind=openai_http,target=URL/openai,request_format=/v1/completions
                 --profile kind=synchronous --constraint kind=max_requests,count=N
                 --data kind=synthetic_text,prompt_tokens=P,output_tokens=O
                 --tokenizer kind=huggingface_auto,model=MODEL_DIR --output kind=json,path=...

``request_format`` picks the completions API (GuideLLM's default is chat, which GPT-J has no template
for) and ``--tokenizer`` hands GuideLLM the served model's tokenizer files (it cannot reach a hub
here); nothing else: no ``validate_backend=false`` for a missing ``/openai/health``, no ``extras``
taking out ``ignore_eos`` or ``stream_options.continuous_usage_stats``. GuideLLM exits 0 even when
every request failed (a table of zeros), so its JSON is read: the run fails unless every request
succeeded with its tokens, and the figures printed are GuideLLM's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .server import Server
from .workload import model_dir


@dataclass(frozen=True)
class Summary:
    """What GuideLLM measured (its JSON report's first benchmark)."""

    successful: int
    errored: int
    incomplete: int
    output_tokens: float  # over the successful requests
    output_tokens_per_s: float
    ttft_ms: float  # medians
    itl_ms: float
    errors: tuple[str, ...]  # the first few, as GuideLLM recorded them

    def real(self, requests: int, output_tokens: int) -> bool:
        """Numbers from a run where every request came back whole, not a table of zeros."""
        complete = self.successful == requests and not self.errored and not self.incomplete
        return complete and self.output_tokens == requests * output_tokens and self.output_tokens_per_s > 0


def command(guidellm: str, url: str, tokenizer: Path, requests: int, prompt: int, output: int, out: Path) -> list[str]:
    return [
        guidellm,
        "run",
        "--backend",
        f"kind=openai_http,target={url}/openai,request_format=/v1/completions",
        "--profile",
        "kind=synchronous",
        "--constraint",
        f"kind=max_requests,count={requests}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={prompt},output_tokens={output}",
        "--tokenizer",
        f"kind=huggingface_auto,model={tokenizer}",
        "--output",
        f"kind=json,path={out}",
        "--disable-console-interactive",
    ]


def summary(report: dict) -> Summary:
    benchmark = report["benchmarks"][0]
    made, metrics = benchmark["scheduler_metrics"]["requests_made"], benchmark["metrics"]

    def median(name: str) -> float:
        return metrics[name]["successful"]["median"]

    output = metrics["output_token_count"]["successful"]["total_sum"]
    errors = tuple(str(r["info"].get("error"))[:300] for r in benchmark["requests"]["errored"][:3])
    return Summary(
        made["successful"],
        made["errored"],
        made["incomplete"],
        output,
        metrics["output_tokens_per_second"]["successful"]["mean"],
        median("time_to_first_token_ms"),
        median("inter_token_latency_ms"),
        errors,
    )


def run(guidellm: str, model: Path, out: Path, requests: int, prompt: int, output: int, timeout: float) -> Summary:
    """Start the server on ``model``, run GuideLLM's plain command against it, read its report."""
    out.mkdir(parents=True, exist_ok=True)
    report, log = out / "guidellm.json", out / "guidellm.log"
    report.unlink(missing_ok=True)
    with Server(model, out, log=out / "guidellm-server.log") as server:
        argv = command(guidellm, server.url, model, requests, prompt, output, report)
        with open(log, "wb") as sink:
            subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if not report.is_file():
        raise RuntimeError(f"GuideLLM wrote no report; its output is in {log}")
    return summary(json.loads(report.read_text()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guidellm", description=__doc__.splitlines()[0])
    parser.add_argument("--guidellm", required=True, help="the guidellm executable (make guidellm-venv)")
    parser.add_argument("--model", type=Path, help="a checkpoint directory (default: the --shape model)")
    parser.add_argument("--shape", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600, help="seconds GuideLLM may take")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    model = args.model or model_dir(args.shape, args.out / "models")
    result = run(args.guidellm, model, args.out, args.requests, args.prompt_tokens, args.output_tokens, args.timeout)
    print(
        f"GuideLLM: {result.successful} successful, {result.errored} errored, {result.incomplete} incomplete; "
        f"{result.output_tokens:.0f} output tokens, {result.output_tokens_per_s:.1f} tok/s, "
        f"TTFT median {result.ttft_ms:.0f} ms, ITL median {result.itl_ms:.1f} ms"
    )
    for error in result.errors:
        print(f"  error: {error}")
    if not result.real(args.requests, args.output_tokens):
        print(f"not real numbers: see {args.out / 'guidellm.log'} and {args.out / 'guidellm-server.log'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
