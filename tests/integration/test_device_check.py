"""The device call's dry run: scripts/device-check.sh end to end on this CPU, tiny shapes.

A lent GPU's minutes are few and the first call on a new stack is the likeliest to break late, so the
very script that call runs (device-python.sh, tests/gpu, every phase of the benchmark's GPU plan, the
files it leaves in $OUT) runs here first, in every `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .server import ROOT

PHASES = [
    "model",
    "roofline",
    "naive baseline",
    "raw decode",
    "fast path",
    "server start",
    "server one at a time",
    "server 1 concurrent",
    "server 2 concurrent",
    "server new connections",
    "server logprobs 5",
    "server ttft 8",
    "server ttft 1024",
]


@pytest.mark.timeout(900)  # about 40 s on an idle machine; minutes when it is shared
def test_the_device_script_runs_to_the_end_on_a_cpu_and_leaves_every_file_in_out(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this python3, with KServe
        "DEVICE": "cpu",
        "OUT": str(out),
        "BENCH_OUT": str(tmp_path / "bench"),
        "DEVICE_SITE": str(tmp_path / "site"),  # where carried wheels would go, if .whl/ holds any
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "device-check.sh")], env=env, capture_output=True, text=True, timeout=880
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary_name = next(p.name for p in out.glob("*.json") if p.name not in ("bench-cpu.json", "attention.json"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["attention.json", "attention.txt", "bench-cpu.json", "bench.txt", "server.log", "tests-gpu.txt", summary_name]
    )
    results = json.loads((out / "bench-cpu.json").read_text())
    assert list(results["phases"]) == PHASES
    assert {phase["status"] for phase in results["phases"].values()} == {"ok"}
    # what the server ran, from its /metrics: on a CPU the dynamic path
    assert results["server_ran"]["path"] == "dynamic" and results["server_ran"]["kv_reserved_bytes"] == 0
    assert results["decode_path"] == "static"  # the in-process fast path, forced (no graphs on a CPU)
    assert results["greedy_matches_eager_reference"] is True
    summary = json.loads((out / summary_name).read_text())
    assert summary["targets"]["fed_argmax_agreement"]["met"] is True
    assert "ttft_ms_1024" in results and set(summary["tok_per_s"]) == {"1", "2"}
    assert "the engine runs: path dynamic" in (out / "server.log").read_text()
    tests_gpu = (out / "tests-gpu.txt").read_text()
    assert "skipped" in tests_gpu and "failed" not in tests_gpu  # no CUDA here: skipped, with the reason
    assert "server ttft 1024" in (out / "bench.txt").read_text()
    attention = json.loads((out / "attention.json").read_text())  # the kernels side by side, on a CPU eager
    assert set(attention["mixes"]["15 short + 1 long (1900)"]) >= {"attention full_span/row_spans"}
