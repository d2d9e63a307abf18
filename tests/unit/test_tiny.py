"""The embedded tiny GPT-J: built once, offline, shaped like GPT-J."""

from __future__ import annotations

import threading

from transformers import AutoConfig, AutoTokenizer

from predictor.loading import tiny


def test_it_is_a_gptj_with_gptj_context(tiny_dir):
    config = AutoConfig.from_pretrained(tiny_dir)
    assert config.model_type == "gptj"
    assert config.n_positions == 2048
    assert config.vocab_size % 64 == 0


def test_tokenizer_is_byte_level_and_lossless(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    text = "If I was a billionaire, I would \u00e9t\u00e9 \U0001f642 \u4f60\u597d"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert tokenizer.eos_token == "<|endoftext|>"


def test_built_once_then_reused(cache_dir, tiny_dir):
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure(cache_dir) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before


def test_concurrent_builds_agree(tmp_path):
    spec = tiny.TinySpec(n_layer=1, seed=3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(tiny.ensure(tmp_path, spec))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and (results[0] / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # no leftovers


def test_same_spec_same_weights(tmp_path):
    a = tiny.ensure(tmp_path / "a", tiny.TinySpec(n_layer=1))
    b = tiny.ensure(tmp_path / "b", tiny.TinySpec(n_layer=1))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
