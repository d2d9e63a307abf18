"""CPU kernels (loading/kernels.py): the oneDNN-packed linears give the plain path's outputs."""

from __future__ import annotations

import logging

import pytest
import torch

from predictor.loading import kernels
from predictor.loading.loader import load
from predictor.settings import parse_settings


@pytest.fixture(scope="module")
def both(tiny_dir):
    plain = load(parse_settings(["--model", str(tiny_dir), "--cpu_kernels", "plain"], {}))
    packed = load(parse_settings(["--model", str(tiny_dir), "--cpu_kernels", "packed"], {}))  # every linear
    return plain, packed


def test_packed_packs_every_linear_and_plain_none(both):
    plain, packed = both
    assert [m for m in plain.model.modules() if type(m) is torch.nn.Linear]
    assert not [m for m in packed.model.modules() if type(m) is torch.nn.Linear]
    assert "oneDNN-packed" in repr(packed.model.lm_head)


def test_auto_packs_only_the_large_linears():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(1024, 1024))
    assert kernels.choose(model, "auto").startswith("oneDNN-packed (float32, 1 of 2 linears")
    assert type(model[0]) is torch.nn.Linear and type(model[1]) is not torch.nn.Linear


def test_packed_logits_equal_the_plain_ones_within_float_tolerance(both):
    plain, packed = both
    ids = torch.tensor([plain.tokenizer("If I was a billionaire, I would").input_ids] * 3)
    with torch.inference_mode():
        expected, got = plain.model(ids).logits, packed.model(ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_greedy_texts_are_the_plain_path_s(both):
    plain, packed = both
    for prompt in ("The weather", "Kubernetes runs containers on a cluster of machines and"):
        ids = torch.tensor([plain.tokenizer(prompt).input_ids])
        kwargs = {"max_new_tokens": 40, "do_sample": False, "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            assert packed.model.generate(ids, **kwargs).tolist() == plain.model.generate(ids, **kwargs).tolist()


def test_the_choice_is_logged(tiny_dir, caplog):
    with caplog.at_level(logging.INFO, logger="predictor"):
        load(parse_settings(["--model", str(tiny_dir), "--cpu_kernels", "plain"], {}))
    assert "CPU kernels: plain (float32, --cpu_kernels plain)" in caplog.text


def test_unsupported_dtypes_stay_plain():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4).half())
    assert kernels.choose(model, "auto").startswith("plain (float16")
    assert type(model[0]) is torch.nn.Linear
