"""Host time of a decode step with the model stubbed out: what a GPU would sit waiting for.

``python -m bench.hoststep`` runs ``ContinuousBatch.advance`` with a decoder that returns constant
logits over a 1,000-token vocabulary (so the tensor arithmetic is negligible), at 1, 16 and 64 rows,
for each option mix, and reports per step: host time, ATen ops dispatched, and host syncs (``.item``,
``.tolist``, ``.cpu``, ``nonzero``, ``__bool__``/``__int__``/``__float__``, and host-to-device copies:
tensors made from host data, CPU tensors moved to a device). ``--before DIR`` runs the same measurement
on another checkout (its own .venv) in the same invocation, for a before/after table. Table on stdout, JSON in
bench/out/hoststep.json. Timing on a loaded machine is noise: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

VOCAB, PROMPT, EOS = 1000, 8, 999
MIXES = {
    "greedy": {},
    "sampled": {"do_sample": True},
    "seeded": {"do_sample": True, "seed": 1},
    "penalties": {"repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.5},
    "logprobs5": {"logprobs": 5},
}
SYNCS = {"item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"}
UPLOADS = {"tensor", "as_tensor", "from_numpy"}  # host data into a tensor: a host-to-device copy on a GPU
MOVES = {"to", "copy_", "cuda"}  # counted when they carry a CPU tensor's data onto another device


def counting_modes():
    """(syncs, ops) counters and the two modes that fill them; enter both around the code to count.

    A sync is a call that waits for the device's results (SYNCS) or that copies host data to the device:
    a tensor made from host data (UPLOADS; empty ones copy nothing) or a CPU tensor moved to a device
    (MOVES). On CPU nothing waits, but each of these would on a GPU: the count is what a GPU step pays.
    """
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    syncs, ops = Counter(), Counter()

    def uploads(name, args, result) -> bool:
        if name in UPLOADS:
            return not isinstance(result, torch.Tensor) or result.numel() > 0
        if name in MOVES and isinstance(result, torch.Tensor) and result.device.type != "cpu":
            sources = [a for a in args if isinstance(a, torch.Tensor)]
            source = sources[-1] if name == "copy_" else sources[0]
            return source.device.type == "cpu" and source.numel() > 0
        return False

    class Syncs(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            result = func(*args, **(kwargs or {}))
            if name in SYNCS or uploads(name, args, result):
                syncs[name] += 1
            return result

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    return syncs, ops, Syncs(), Ops()


class StubDecoder:
    """decoder protocol of generation/continuous.py: constant logits, no model."""

    def __init__(self) -> None:
        import torch

        generator = torch.Generator().manual_seed(0)
        self.logits = torch.randn(256, VOCAB, generator=generator) * 3
        self.logits[:, EOS] = -1e9  # EOS never wins: every row keeps its place
        self.count = 0

    @property
    def rows(self) -> int:
        return self.count

    def join(self, prompts, score=None):
        self.count += len(prompts)
        return self.logits[: len(prompts)].clone()

    def step(self, tokens, rows=None):
        return self.logits[: len(tokens)].clone()

    def undo_step(self) -> None:
        pass

    def keep(self, survivors):
        self.count = len(survivors)
        return list(survivors)

    def clear(self) -> None:
        self.count = 0


def mix_fields(mix: str, index: int) -> dict:
    fields = dict(MIXES[mix]) if mix != "mix" else dict(list(MIXES.values())[index % len(MIXES)])
    if "seed" in fields:
        fields["seed"] = 1000 + index
    return fields


def batch_of(rows: int, mix: str, steps: int):
    from predictor.core import GenerationRequest, Sampling
    from predictor.generation.continuous import ContinuousBatch

    batch = ContinuousBatch(None, EOS, decoder=StubDecoder())  # by name: older trees (--before) take decode_text third
    ids = tuple(range(1, PROMPT + 1))
    entries = []
    for i in range(rows):
        sampling = Sampling(max_length=PROMPT + steps + 8, **mix_fields(mix, i))
        entries.append((i, GenerationRequest("x", ids, sampling)))
    batch.join(entries)
    return batch


def measure(rows: int, mix: str, steps: int) -> dict:
    import torch

    batch = batch_of(rows, mix, 2 * steps + 4)
    for _ in range(3):
        batch.advance()
    started = time.perf_counter()
    for _ in range(steps):
        batch.advance()
    host_us = (time.perf_counter() - started) / steps * 1e6
    syncs, ops, sync_mode, op_mode = counting_modes()
    with torch.inference_mode(), sync_mode, op_mode:
        batch.advance()
    assert len(batch.rows) == rows, "a row left during the measurement"
    return {"host_us": round(host_us, 1), "ops": sum(ops.values()), "syncs": sum(syncs.values()), "by": dict(syncs)}


def run_here(sizes: list[int], steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    return {f"{mix}/{rows}": measure(rows, mix, steps) for mix in [*MIXES, "mix"] for rows in sizes}


def run_tree(tree: Path, sizes: list[int], steps: int) -> dict:
    """The same measurement in another checkout, with its own .venv, its predictor, and this file."""
    code = (
        "import sys, json, runpy; sys.path.insert(0, sys.argv[1]); "
        "m = runpy.run_path(sys.argv[2]); print(json.dumps(m['run_here'](json.loads(sys.argv[3]), int(sys.argv[4]))))"
    )
    out = subprocess.run(
        [str(tree / ".venv/bin/python"), "-c", code, str(tree), __file__, json.dumps(sizes), str(steps)],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(after: dict, before: dict | None) -> str:
    head = "| mix/rows | host µs/step | ops/step | syncs/step |"
    lines = [head if before is None else head + " before µs | before ops | before syncs | time after/before |"]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for key, a in after.items():
        line = f"| {key} | {a['host_us']:.0f} | {a['ops']} | {a['syncs']} |"
        if before is not None:
            b = before[key]
            line += f" {b['host_us']:.0f} | {b['ops']} | {b['syncs']} | {a['host_us'] / b['host_us']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hoststep", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,64", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per case")
    parser.add_argument("--before", type=Path, help="another checkout to measure too (its .venv)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/hoststep.json"))
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    before = run_tree(args.before, sizes, args.steps) if args.before else None
    after = run_here(sizes, args.steps)
    print(table(after, before))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"after": after, "before": before, "vocabulary": VOCAB}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
