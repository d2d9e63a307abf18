"""On a CUDA machine: structured output's mask is the same on the GPU as on the CPU, and free rows
beside constrained ones are untouched."""

from __future__ import annotations

import pytest
import torch

from predictor.core import Constraint
from predictor.generation import grammar

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]


class Row:
    def __init__(self, state=None):
        self.grammar = state


def test_the_mask_on_the_gpu_matches_the_cpu(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    compiler = grammar.Compiler(tokenizer, 50400, tokenizer.eos_token_id)
    template = compiler.compile(Constraint("regex", "[a-z]{2,6}"))
    rows = [Row(template.start()), Row(), Row(template.start())]
    logits = torch.randn(3, 50400)
    on_cpu = grammar.mask(rows, logits.clone())
    on_gpu = grammar.mask(rows, logits.cuda()).cpu()
    assert torch.equal(on_cpu, on_gpu)
    assert torch.equal(on_gpu[1], logits[1])  # the free row
    assert torch.isinf(on_gpu[0, len(tokenizer) :]).all()  # ids past the tokenizer are never allowed
    grammar.release(rows)
