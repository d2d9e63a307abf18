"""Loading: dtype choice, special tokens, limits checked against the model."""

from __future__ import annotations

import pytest
import torch

from predictor.loading.loader import load, pick_dtype
from predictor.settings import parse_settings
from tests.texts import searched


@pytest.mark.parametrize(
    "name, cuda, dtype",
    [
        ("auto", True, torch.float16),
        ("auto", False, torch.float32),
        ("float16", False, torch.float16),
        ("bfloat16", True, torch.bfloat16),
        ("float32", True, torch.float32),
    ],
)
def test_pick_dtype(name, cuda, dtype):
    assert pick_dtype(name, cuda) is dtype


def test_load_sets_eos_as_left_pad_and_a_neutral_generation_config(tiny_dir):
    loaded = load(parse_settings(["--model", str(tiny_dir)], {}))
    tokenizer = loaded.tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == loaded.eos_token_id
    assert tokenizer.padding_side == "left"
    assert loaded.context_window == 2048
    assert loaded.model.dtype == torch.float32  # auto on CPU


def test_a_checkpoints_generation_config_does_not_change_requests(tiny_dir, tmp_path, reference):
    import json
    import shutil

    from predictor.core import GenerationRequest
    from predictor.generation.runner import Runner
    from predictor.protocols.plan import plan
    from predictor.protocols.seed import PromptRequest
    from predictor.settings import Limits

    opinionated = tmp_path / "model"
    shutil.copytree(tiny_dir, opinionated)
    (opinionated / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 5.0, "repetition_penalty": 10.0, "max_length": 5})
    )
    runner = Runner(load(parse_settings(["--model", str(opinionated)], {})))
    prompt = "If I was a billionaire, I would"
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, max_length=40), len(ids), Limits())
    (result,) = searched(runner, [GenerationRequest(prompt, ids, sampling)])
    assert [c.text for c in result] == reference.generate(prompt, max_length=40)


def test_dtype_flag_is_honoured(tiny_dir):
    loaded = load(parse_settings(["--model", str(tiny_dir), "--dtype", "bfloat16"], {}))
    assert loaded.model.dtype == torch.bfloat16
    ids = torch.tensor([[5, 6, 7]])
    out = loaded.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, pad_token_id=loaded.eos_token_id
    )
    assert out.shape == (1, 6)


def test_a_limit_beyond_the_context_window_is_refused(tmp_path):
    from predictor.loading import tiny

    small = tiny.ensure(tmp_path, tiny.TinySpec(n_layer=1, n_positions=256))
    with pytest.raises(ValueError, match="--max_length_limit 512 exceeds the model's context window of 256"):
        load(parse_settings(["--model", str(small)], {}))
