"""Shared fixtures: tiny GPT-J models built in-process (no network, ever)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub; transformers must fail fast instead of trying.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gptj-cache")


@pytest.fixture(scope="session")
def tiny_dir(cache_dir) -> Path:
    """The quick-start model: random weights, never emits EOS or unprintable tokens."""
    from predictor.loading import tiny

    return tiny.ensure(cache_dir)


@pytest.fixture(scope="session")
def eos_dir(cache_dir) -> Path:
    """A tiny model for which EOS is the most likely token at every step."""
    from predictor.loading import tiny

    return tiny.ensure(cache_dir, tiny.TinySpec(printable_only=False, eos_bias=30.0))


@pytest.fixture(scope="session")
def reference(tiny_dir):
    """Plain transformers on the tiny model: what the server must reproduce."""
    return Reference(tiny_dir)


class Reference:
    """Generate with transformers directly (no predictor code), for exact comparisons."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.eos = self.tokenizer.eos_token_id

    def generate(self, prompt: str, **params) -> list[str]:
        import torch
        from transformers import GenerationConfig

        ids = torch.tensor([self.tokenizer(prompt).input_ids])
        config = GenerationConfig(pad_token_id=self.eos, eos_token_id=self.eos, **params)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return [prompt + self.tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)
