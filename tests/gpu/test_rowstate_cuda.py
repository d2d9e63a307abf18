"""On a CUDA machine: choose() keeps its settings on the GPU and syncs nothing in a steady step."""

from __future__ import annotations

import pytest
import torch

from predictor.core import Sampling
from predictor.generation.logits import choose, row_choice

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]

MIX = [
    {},
    {"do_sample": True},
    {"do_sample": True, "seed": 5, "top_p": 0.9},
    {"repetition_penalty": 1.3, "presence_penalty": 0.4},
    {"min_length": 30},
]


def rows(fields_list):
    return [
        row_choice(Sampling(max_length=100, **f), [5, 6, 7], max(0, f.get("min_length", 0) - 3)) for f in fields_list
    ]


def test_a_steady_step_syncs_nothing_on_the_gpu():
    batch = rows(MIX * 13)
    logits = torch.randn(len(batch), 50400, device="cuda")
    tokens = choose(batch, logits, 50256)  # builds the device state: one upload
    for row, token in zip(batch, tokens.tolist(), strict=True):
        row.tokens.append(token)
    torch.cuda.set_sync_debug_mode("error")
    try:
        choose(batch, logits, 50256)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_seeded_row_draws_alike_alone_and_batched_on_the_gpu():
    logits = torch.randn(3, 50400, device="cuda")
    seeded = {"do_sample": True, "seed": 9, "top_k": 0}
    alone = rows([seeded])
    crowded = rows([{}, {"do_sample": True}, seeded])
    for _ in range(5):
        a = choose(alone, logits[2:], 50256).item()
        c = choose(crowded, logits, 50256)[2].item()
        assert a == c
        for row in (*alone, *crowded):
            row.tokens.append(a)
