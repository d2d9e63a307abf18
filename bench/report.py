"""The benchmark's results as people read them: ratios, the printed table, bench/results/'s summary.

Every function here takes whatever the phases produced: a phase that failed leaves its rows out (its
error is in the phases table), it does not cost the others theirs.
"""

from __future__ import annotations

import operator
import platform
import re


def ratios(results: dict, top: int) -> dict:
    """Ratios taken within this run, those whose figures are all there."""
    levels, found = results.get("levels", {}), {}
    concurrent, sequential = levels.get(top), results.get("sequential")
    raw_top, raw_one = results.get(f"raw_tok_per_s_batch{top}"), results.get("raw_tok_per_s_batch1")
    if concurrent and sequential:
        per_request = sequential["seconds"] / sequential["requests"]
        found["speedup_concurrent_vs_sequential"] = per_request * concurrent["requests"] / concurrent["seconds"]
        if fresh := results.get("fresh_connections"):
            found["speedup_fresh_connections_vs_sequential"] = per_request * fresh["requests"] / fresh["seconds"]
    if concurrent and raw_top:
        found["server_vs_raw_batched"] = concurrent["tok_per_s"] / raw_top
    if raw_top and raw_one:
        found["raw_batched_vs_batch1"] = raw_top / raw_one
    if concurrent and results.get("logprobs5"):
        found["logprobs5_vs_off"] = results["logprobs5"]["tok_per_s"] / concurrent["tok_per_s"]
    return found


# Issue 19's targets on the H200: name, what, the measured value from the results, how it compares, the bound
TARGETS = (
    (
        "decode_vs_roofline",
        "batch-1 decode (server's path) <= 1.25x the roofline",
        lambda r: r["batch1_ms_per_token"] / r["roofline_ms_per_token"],
        operator.le,
        1.25,
    ),
    ("ttft_ms_128", "TTFT at 128 prompt tokens < 15 ms (median)", lambda r: r["ttft_ms_128"], operator.lt, 15.0),
    (
        "tok_per_s_64",
        "64 clients >= 9,000 generated tok/s",
        lambda r: r["levels"][64]["tok_per_s"],
        operator.ge,
        9000.0,
    ),
    (
        "speedup_vs_naive_64",
        "64 clients >= 20x the naive baseline",
        lambda r: r["levels"][64]["tok_per_s"] / r["naive_tok_per_s"],
        operator.ge,
        20.0,
    ),
    ("load_seconds", "start to ready < 30 s", lambda r: r["load_seconds"], operator.lt, 30.0),
    (
        "fed_argmax_agreement",
        "teacher-forced argmax agreement >= 99%",
        lambda r: r["fed_argmax_agreement"],
        operator.ge,
        0.99,
    ),
)


def targets(results: dict) -> dict:
    """Each target whose figures were measured: the value, whether it is met, and by how much (value / bound)."""
    found = {}
    for name, what, measure, compare, bound in TARGETS:
        try:
            value = measure(results)
        except (KeyError, TypeError, ZeroDivisionError):
            continue  # not measured in this run (a phase failed, or another plan)
        found[name] = {"target": what, "value": value, "met": compare(value, bound), "value_over_bound": value / bound}
    return found


def _load_row(load: dict) -> str:
    return (
        f"{load['req_per_s']:.2f} req/s  {load['tok_per_s']:.0f} tok/s  "
        f"p50 {load['p50_s'] * 1000:.0f} ms  p95 {load['p95_s'] * 1000:.0f} ms"
    )


def table(results: dict, top: int) -> str:
    """The figures that are there, one row each."""
    get = results.get
    rows = [
        ("device", get("device")),
        ("model", f"{get('shape')}, {get('prompt_tokens')} prompt + {get('new_tokens')} new tokens per request"),
    ]
    rows += [
        (f"raw generate, batch {b}", f"{get(f'raw_tok_per_s_batch{b}'):.0f} tok/s")
        for b in (1, top)
        if get(f"raw_tok_per_s_batch{b}")
    ]
    loads = [("server, one at a time", get("sequential"))]
    loads += [(f"server, {level} concurrent", load) for level, load in get("levels", {}).items()]
    loads += [(f"server, {top} at once, new connections", get("fresh_connections"))]
    loads += [(f"server, {top} concurrent, logprobs 5", get("logprobs5"))]
    rows += [(name, _load_row(load)) for name, load in loads if load]
    for key, label, unit in (
        ("speedup_concurrent_vs_sequential", f"{top} concurrent vs one at a time", "{:.2f}x faster"),
        ("speedup_fresh_connections_vs_sequential", "  ... with new connections", "{:.2f}x faster"),
        ("server_vs_raw_batched", f"server / raw generate at batch {top}", "{:.0%}"),
        ("logprobs5_vs_off", f"logprobs 5 / off, {top} concurrent", "{:.0%} of the throughput"),
        ("raw_batched_vs_batch1", f"raw batch {top} / raw batch 1", "{:.2f}x"),
        ("roofline_ms_per_token", "memory roofline, batch 1", "{:.2f} ms/token"),
        ("batch1_ms_per_token", "decode, batch 1 (server's path)", "{:.2f} ms/token"),
        ("hf_generate_batch1_ms_per_token", "decode, batch 1 (generate)", "{:.2f} ms/token"),
        ("ttft_ms_128", "TTFT, 128 tokens", "{:.2f} ms"),
        ("ttft_ms_1024", "TTFT, 1024 tokens", "{:.2f} ms"),
        ("naive_tok_per_s", "naive (generate, eager, one at a time)", "{:.0f} tok/s"),
    ):
        if get(key) is not None:
            rows.append((label, unit.format(get(key))))
    rows += _gpu_rows(results)
    if get("load_seconds") is not None:
        rows.append(("server start to ready", f"{get('load_seconds'):.1f} s"))
    if ran := get("server_ran"):
        rows.append(("the server ran", ", ".join(f"{k} {v}" for k, v in ran.items())))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _gpu_rows(results: dict) -> list[tuple[str, str]]:
    get, rows = results.get, []
    if get("naive_tok_per_s"):
        rows += [
            (f"server, {level} concurrent / naive", f"{load['tok_per_s'] / get('naive_tok_per_s'):.1f}x")
            for level, load in get("levels", {}).items()
        ]
    if get("greedy_matches_eager_reference") is not None:
        same = get("greedy_matches_eager_reference")
        rows.append(
            ("greedy tokens = eager reference", "yes" if same else f"no, from token {get('greedy_first_mismatch')}")
        )
        rows.append(
            (
                "  ... fed the reference's tokens",
                f"{get('fed_argmax_agreement'):.1%} same argmax, max logit error {get('fed_max_logit_error'):.3f}, "
                f"widest top-2 gap where they differ {get('fed_disagreement_max_margin'):.3f}",
            )
        )
    if get("peak_gpu_memory_gb") is not None:
        rows.append(("peak GPU memory (server)", f"{get('peak_gpu_memory_gb'):.1f} GB"))
    return rows


def phases_table(results: dict) -> str:
    rows = [
        f"{name:<28}  {phase['status']:<8} {phase['seconds']:8.1f} s  {phase.get('error', '').splitlines()[0][:120] if phase.get('error') else ''}"
        for name, phase in results.get("phases", {}).items()
    ]
    return "\n".join(["phase                         status    seconds", *rows])


SUMMARY_KEYS = (
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
    "server_ran",
    "targets",
    "versions",
    "when",
    "phases",
)


def summary_for_results(results: dict) -> dict:
    """bench/results/: the figures docs/performance.md quotes, under stable keys (None: not measured)."""
    levels, naive = results.get("levels", {}), results.get("naive_tok_per_s")
    return {
        **{key: results.get(key) for key in SUMMARY_KEYS},
        "tok_per_s": {str(level): load["tok_per_s"] for level, load in levels.items()},
        # the old service took one request at a time: the same throughput at any number of clients
        "naive_tok_per_s": {str(level): naive for level in levels} if naive else {},
        "speedup_vs_naive": {str(level): load["tok_per_s"] / naive for level, load in levels.items()} if naive else {},
    }


def summary_name(results: dict) -> str:
    """<device>-<date>.json, in the letters, digits, '.', '-' that the device tool brings back."""
    device = re.sub(r"[^a-z0-9.]+", "-", str(results.get("device", "unknown")).lower()).strip("-")
    return f"{device}-{str(results.get('when', ''))[:10]}.json"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine type where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()
