"""On a CUDA machine: fp16 weights on the GPU through accelerate's device_map, and the contract holds."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]


def test_auto_dtype_is_fp16_on_the_gpu(tiny_dir):
    from predictor.loading import load
    from predictor.settings import parse_settings

    loaded = load(parse_settings(["--model", str(tiny_dir)], {}))
    assert loaded.model.dtype == torch.float16
    assert loaded.model.device.type == "cuda"
    assert set(map(str, loaded.model.hf_device_map.values())) <= {str(i) for i in range(torch.cuda.device_count())}


def test_generation_on_the_gpu_matches_the_contract(tiny_dir):
    from predictor.api import PromptRequest
    from predictor.loading import load
    from predictor.runner import Runner
    from predictor.sampling import GenerationRequest, plan
    from predictor.settings import Limits, parse_settings

    runner = Runner(load(parse_settings(["--model", str(tiny_dir)], {})))
    prompt = "If I was a billionaire, I would"
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, max_length=50, num_beams=2), len(ids), Limits())
    (result,) = runner.run_batch([GenerationRequest(prompt, ids, sampling)])
    (text,) = [c.text for c in result]
    assert text.startswith(prompt) and len(text) > len(prompt)
