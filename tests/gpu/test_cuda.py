"""On a CUDA machine: fp16 weights on the GPU through accelerate's device_map, and the contract holds."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]


def test_auto_dtype_is_fp16_on_the_gpu(tiny_dir):
    from predictor.loading.loader import load
    from predictor.settings import parse_settings

    loaded = load(parse_settings(["--model", str(tiny_dir)], {}))
    assert loaded.model.dtype == torch.float16
    assert loaded.model.device.type == "cuda"
    assert set(map(str, loaded.model.hf_device_map.values())) <= {str(i) for i in range(torch.cuda.device_count())}


def test_generation_on_the_gpu_matches_the_contract(tiny_dir):
    from predictor.core import GenerationRequest
    from predictor.generation.runner import Runner
    from predictor.loading.loader import load
    from predictor.protocols.plan import plan
    from predictor.protocols.seed import PromptRequest
    from predictor.settings import Limits, parse_settings
    from tests.texts import searched

    runner = Runner(load(parse_settings(["--model", str(tiny_dir)], {})))
    prompt = "If I was a billionaire, I would"
    ids = tuple(runner.loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, max_length=50, num_beams=2), len(ids), Limits())
    (result,) = searched(runner, [GenerationRequest(prompt, ids, sampling)])
    (text,) = [c.text for c in result]
    assert text.startswith(prompt) and len(text) > len(prompt)


def _tokens(loaded, decoder, prompts, new_tokens=40) -> list[list[int]]:
    from predictor.core import GenerationRequest, Sampling
    from predictor.generation.continuous import ContinuousBatch

    batch, results = ContinuousBatch(loaded.model, loaded.eos_token_id, decoder=decoder), {}
    entries = []
    for i, prompt in enumerate(prompts):
        ids = tuple(loaded.tokenizer(prompt).input_ids)
        entries.append((i, GenerationRequest(prompt, ids, Sampling(max_length=len(ids) + new_tokens + 3 * i))))
    with torch.inference_mode():
        done = batch.join(entries[:2])
        steps = 0
        while batch.rows or steps < 5:
            if steps == 4:
                done += batch.join(entries[2:])  # joins mid-way, and rows leave at different steps
            done += batch.advance() if batch.rows else []
            steps += 1
    for row in done:
        results[row.owner] = row.tokens
    return [results[i] for i in range(len(prompts))]


PROMPTS = ["If I was a billionaire, I would", "The weather", "Kubernetes runs containers on", "A"]


def test_the_fast_path_is_the_default_and_replays_graphs(tiny_dir):
    from predictor.generation.paths import decoder_for
    from predictor.loading.loader import load
    from predictor.settings import parse_settings

    settings = parse_settings(["--model", str(tiny_dir), "--max_batch_size", "8"], {})
    loaded = load(settings)
    decoder, policy = decoder_for(loaded, settings)
    assert decoder is not None and decoder.graphs and decoder.attention.name == "varlen"
    assert len(decoder._captured) == 4  # rows 1, 2, 4, 8; varlen reads the lengths: no span buckets
    assert policy.max_batch_size == 8
    eager = decoder_for(
        loaded, parse_settings(["--model", str(tiny_dir), "--max_batch_size", "8", "--cuda_graphs", "false"], {})
    )[0]
    assert _tokens(loaded, decoder, PROMPTS) == _tokens(loaded, eager, PROMPTS)  # replaying changes nothing


def test_the_fast_path_matches_the_dynamic_path_in_float32(tiny_dir):
    from predictor.generation.paths import decoder_for
    from predictor.loading.loader import load
    from predictor.settings import parse_settings

    settings = parse_settings(["--model", str(tiny_dir), "--dtype", "float32", "--max_batch_size", "8"], {})
    loaded = load(settings)
    decoder, _ = decoder_for(loaded, settings)
    assert _tokens(loaded, decoder, PROMPTS) == _tokens(loaded, None, PROMPTS)
