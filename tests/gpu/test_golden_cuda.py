"""On a CUDA machine: beam search, diverse or not, gives transformers 4.x's answers (golden.json) on the GPU.

fp32 with TF32 off, so the arithmetic is the one the fixtures were written with up to summation order;
in fp16 the search runs batched and returns well-formed answers (its numbers differ from fp32's).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests import golden
from tests.unit.test_golden_diverse import CASES, PAIRS, expected, search

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]


@pytest.fixture(scope="module")
def model_fp32(cache_dir):
    torch.backends.cuda.matmul.allow_tf32 = False
    return AutoModelForCausalLM.from_pretrained(golden.model_dir(cache_dir)).eval().to("cuda")


def test_every_beam_case_matches_on_the_gpu(model_fp32):
    wrong = [name for name, case in CASES.items() if search(model_fp32, [case])[0] != expected(case)]
    assert not wrong, f"{len(wrong)} of {len(CASES)} differ on the GPU: {wrong}"


def test_batched_on_the_gpu(model_fp32):
    wrong = [
        a for a, b in PAIRS if search(model_fp32, [CASES[a], CASES[b]]) != [expected(CASES[a]), expected(CASES[b])]
    ]
    assert not wrong, f"{len(wrong)} of {len(PAIRS)} pairs differ on the GPU: {wrong}"


def test_fp16_runs_batched(cache_dir):
    model = AutoModelForCausalLM.from_pretrained(golden.model_dir(cache_dir), dtype=torch.float16).eval().to("cuda")
    for a, b in PAIRS:
        answers = search(model, [CASES[a], CASES[b]])
        assert [len(x) for x in answers] == [len(expected(CASES[a])), len(expected(CASES[b]))]
