"""The golden fixtures (tests/fixtures/golden.json): what transformers 4.x `generate` returned for a table
of requests on a tiny GPT-J, written by scripts/golden-fixtures.sh. Shared by that script and the tests."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

FIXTURE = Path(__file__).with_name("fixtures") / "golden.json"


@cache
def load() -> dict:
    return json.loads(FIXTURE.read_text())


def weights_digest(model_dir: Path) -> str:
    """sha256 of the weights' names, shapes and bytes (not of the file, whose header may change)."""
    import torch
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(Path(model_dir) / "model.safetensors").items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_dir(cache_dir: Path) -> Path:
    """The fixture's tiny model, built here from its spec; the very weights the reference ran."""
    from predictor.loading import tiny

    fixture = load()
    path = tiny.ensure(cache_dir, tiny.TinySpec(**fixture["model"]["spec"]))
    assert weights_digest(path) == fixture["model"]["weights_sha256"], (
        "the tiny model's weights changed since the golden fixtures were written: "
        "rerun scripts/golden-fixtures.sh and commit tests/fixtures/golden.json"
    )
    return path


def finish_reason(tokens: list[int], eos: int) -> str:
    return "eos" if eos in tokens else "length"
