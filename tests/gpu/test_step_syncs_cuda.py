"""On a CUDA machine: a steady decode step of the continuous batch makes no synchronizing call but its
one wait for the step's copy to the host (tests/unit/test_step_syncs.py counts the same on CPU)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]

MIXES = ["greedy", "sampled", "seeded", "penalties", "logprobs5", "mix"]
ROWS = 10


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    from predictor.loading.loader import load
    from predictor.settings import parse_settings

    return load(parse_settings(["--model", str(tiny_dir)], {}))


def batch_of(loaded, path: str, mix: str):
    from bench import hoststep
    from predictor.core import GenerationRequest, Sampling
    from predictor.generation.continuous import ContinuousBatch
    from predictor.generation.static import StaticDecoder

    model, eos = loaded.model, loaded.eos_token_id
    decoder = StaticDecoder(model, eos, 16, 256) if path == "static" else None  # graphs on: the GPU path
    if decoder is not None:
        assert decoder.warm_up() > 0  # every shape captured now: a capture's syncs are not a step's
    batch = ContinuousBatch(model, eos, decoder=decoder)
    entries = []
    for i in range(ROWS):
        ids = tuple(range(100, 105 + 2 * i))
        entries.append((i, GenerationRequest("x", ids, Sampling(max_length=200, **hoststep.mix_fields(mix, i)))))
    with torch.inference_mode():
        batch.join(entries)
        for _ in range(2):  # the rows' device state and the pinned buffer: before the steady steps
            batch.advance()
    return batch


@pytest.mark.parametrize("path", ["static", "dynamic"])
@pytest.mark.parametrize("mix", MIXES)
def test_a_steady_step_never_syncs_but_for_its_one_copy(loaded, path, mix):
    batch = batch_of(loaded, path, mix)
    torch.cuda.set_sync_debug_mode("error")  # the pinned copy's event wait is not one of its syncs
    try:
        with torch.inference_mode():
            for _ in range(3):
                assert batch.advance() == []
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert batch.io.latest.device.type == "cuda" and len(batch.rows) == ROWS
