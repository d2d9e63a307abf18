"""Host time of a decode step with the model stubbed out: what a GPU would sit waiting for.

``python -m bench.hoststep`` runs ``ContinuousBatch.advance`` with a decoder that returns precomputed
logits over a 1,000-token vocabulary (so the tensor arithmetic is small), at 1, 16 and 64 rows, for
each option mix, and reports per step: host time, ATen ops dispatched, and host syncs (``.item``,
``.tolist``, ``.cpu``, ``nonzero``, ``__bool__``/``__int__``/``__float__``, and host-to-device copies:
tensors made from host data, CPU tensors moved to a device). ``--before DIR`` runs the same measurement
on another checkout (its own .venv) in the same invocation, for a before/after table. Table on stdout, JSON in
bench/out/hoststep.json. Timing on a loaded machine is noise: compare ratios from one run. Each case
reports its least disturbed stretch of 10 steps (a neighbour's load only ever adds time), in wall time
and in this process's CPU time (which the neighbours inflate less), the least over ``--rounds``
rounds that alternate the two trees, each in a fresh process.

The stub cycles through 16 different logit tensors rather than repeating one: with the same scores every
step the CPU's branch predictor learns the data, and a branchy kernel looks several times faster than a
real step makes it (``torch.topk`` over [64, 1,000], k 50, two threads: 80 µs on constant logits, 330 µs
on fresh ones; each thread's 32 rows fit what the predictor remembers).

``--threads`` (default: torch's own default, the count the server runs with, since it never sets one)
runs the whole table at each listed thread count; docs/performance.md states the target at one thread,
the figure that does not depend on the machine's core count or its neighbours' load.

On a CPU even [64, 1,000] scores are not negligible arithmetic (a top-k 50 alone takes about 650 µs of
one thread); ``--vocab 64`` shrinks them to show what is left: Python and op dispatch, the part a GPU
would wait for. The target is stated at 1,000.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

VOCAB, PROMPT, POOL, CHUNK = 1000, 8, 16, 10  # EOS: the vocabulary's last token
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
    """decoder protocol of generation/continuous.py: precomputed logits (POOL tensors in turn), no model."""

    def __init__(self, vocab: int = VOCAB) -> None:
        import torch

        generator = torch.Generator().manual_seed(0)
        pool = torch.randn(POOL, 256, vocab, generator=generator) * 3  # fresh scores each step (above)
        pool[:, :, -1] = -1e9  # EOS never wins: every row keeps its place
        self.pool = [logits.clone() for logits in pool]  # a step's op count: a slice and a copy, as before
        self.count = self.calls = 0

    def _logits(self, rows: int):
        self.calls += 1
        return self.pool[self.calls % POOL][:rows].clone()

    @property
    def rows(self) -> int:
        return self.count

    def join(self, prompts, score=None):
        self.count += len(prompts)
        return self._logits(len(prompts))

    def step(self, tokens, rows=None):
        return self._logits(len(tokens))

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


def batch_of(rows: int, mix: str, steps: int, vocab: int = VOCAB):
    from predictor.core import GenerationRequest, Sampling
    from predictor.generation.continuous import ContinuousBatch

    # decoder by name: older trees (--before) take decode_text third
    batch = ContinuousBatch(None, vocab - 1, decoder=StubDecoder(vocab))
    ids = tuple(range(1, PROMPT + 1))
    entries = []
    for i in range(rows):
        sampling = Sampling(max_length=PROMPT + steps + 8, **mix_fields(mix, i))
        entries.append((i, GenerationRequest("x", ids, sampling)))
    batch.join(entries)
    return batch


def measure(rows: int, mix: str, steps: int, vocab: int = VOCAB) -> dict:
    import torch

    batch = batch_of(rows, mix, 2 * steps + 4, vocab)
    for _ in range(3):
        batch.advance()
    stretches, cpu = [], []  # the least disturbed stretch of CHUNK steps: neighbours' load only adds time
    for _ in range(max(1, steps // CHUNK)):
        started, used = time.perf_counter(), time.process_time()
        for _ in range(CHUNK):
            batch.advance()
        stretches.append((time.perf_counter() - started) / CHUNK * 1e6)
        cpu.append((time.process_time() - used) / CHUNK * 1e6)
    host_us, cpu_us = min(stretches), min(cpu)
    syncs, ops, sync_mode, op_mode = counting_modes()
    with torch.inference_mode(), sync_mode, op_mode:
        batch.advance()
    assert len(batch.rows) == rows, "a row left during the measurement"
    return {
        "host_us": round(host_us, 1),
        "cpu_us": round(cpu_us, 1),
        "ops": sum(ops.values()),
        "syncs": sum(syncs.values()),
        "by": dict(syncs),
    }


def run_here(sizes: list[int], steps: int, threads: int = 1, vocab: int = VOCAB) -> dict:
    import torch

    torch.set_num_threads(threads)
    return {f"{mix}/{rows}": measure(rows, mix, steps, vocab) for mix in [*MIXES, "mix"] for rows in sizes}


def run_tree(tree: Path, sizes: list[int], steps: int, threads: int, vocab: int) -> dict:
    """The same measurement in another checkout, with its own .venv, its predictor, and this file."""
    code = (
        "import sys, json, runpy; sys.path.insert(0, sys.argv[1]); m = runpy.run_path(sys.argv[2]); "
        "print(json.dumps(m['run_here'](json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))))"
    )
    argv = [tree, __file__, json.dumps(sizes), steps, threads, vocab]
    out = subprocess.run(
        [str(tree / ".venv/bin/python"), "-c", code, *map(str, argv)],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(after: dict, before: dict | None, threads: int) -> str:
    """host: wall time; cpu: this process's CPU time (all its threads), which a loaded machine inflates less."""
    head = "| mix/rows | threads | host µs/step | cpu µs/step | ops/step | syncs/step |"
    more = " before host µs | before cpu µs | before ops | before syncs | host after/before | cpu after/before |"
    lines = [head if before is None else head + more]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for key, a in after.items():
        line = f"| {key} | {threads} | {a['host_us']:.0f} | {a['cpu_us']:.0f} | {a['ops']} | {a['syncs']} |"
        if before is not None:
            b = before[key]
            line += f" {b['host_us']:.0f} | {b['cpu_us']:.0f} | {b['ops']} | {b['syncs']} |"
            line += f" {a['host_us'] / b['host_us']:.2f} | {a['cpu_us'] / b['cpu_us']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hoststep", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,64", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per case")
    parser.add_argument("--before", type=Path, help="another checkout to measure too (its .venv)")
    parser.add_argument("--threads", default=str(default_threads()), help="torch threads, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (before, this tree); the least time")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="the stub's vocabulary (the target's: 1,000)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/hoststep.json"))
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    runs = {}
    for threads in [int(n) for n in args.threads.split(",")]:
        trees = (
            {"before": args.before, "after": Path(__file__).resolve().parents[1]} if args.before else {"after": None}
        )
        rounds = {name: [] for name in trees}
        for _ in range(args.rounds):  # alternating, each in a fresh process: a load spike hits both
            for name, tree in trees.items():
                case = (sizes, args.steps, threads, args.vocab)
                run = run_tree(tree, *case) if tree else run_here(*case)
                rounds[name].append(run)
        after, before = least(rounds["after"]), least(rounds["before"]) if args.before else None
        print(table(after, before, threads))
        runs[threads] = {"after": after, "before": before}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": runs, "vocabulary": args.vocab}, indent=1) + "\n")


def least(runs: list[dict]) -> dict:
    """Per case, each time's least over the rounds (ops and syncs are the same in every round)."""
    return {
        key: {**runs[0][key], **{t: min(run[key][t] for run in runs) for t in ("host_us", "cpu_us")}} for key in runs[0]
    }


def default_threads() -> int:
    """The count torch picks by itself (the server never sets one): this process's, before any run."""
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
