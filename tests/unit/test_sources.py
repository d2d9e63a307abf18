"""Model sources: the kind is decided first, and each bad source is one line naming it and the fix.

The cases an operator meets most are also run through the real process (tests/integration/test_startup.py);
these are the finer ones, in-process and without a model load.
"""

from __future__ import annotations

import json
import shutil

import pytest

from predictor.loading import sources
from predictor.loading.sources import BadSource


@pytest.fixture
def checkpoint(tiny_dir, tmp_path):
    """A copy of the tiny GPT-J checkpoint to break."""
    return shutil.copytree(tiny_dir, tmp_path / "ckpt")


def message(model) -> str:
    with pytest.raises(BadSource) as caught:
        sources.resolve(str(model))
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"--model {model}: ")
    return line


def test_a_complete_checkpoint_is_a_directory_source(checkpoint):
    assert sources.resolve(str(checkpoint)) == str(checkpoint)


def test_a_pytorch_bin_checkpoint_and_a_split_tokenizer_are_accepted(checkpoint):
    (checkpoint / "model.safetensors").rename(checkpoint / "pytorch_model.bin")
    (checkpoint / "tokenizer.json").rename(checkpoint / "vocab.json")
    (checkpoint / "merges.txt").write_text("#version: 0.2\n")
    assert sources.resolve(str(checkpoint)) == str(checkpoint)


def test_a_checkpoint_one_level_down_is_named(checkpoint, tmp_path):
    line = message(tmp_path)
    assert "no config.json" in line and f"Its subdirectory ckpt has one: --model {checkpoint}" in line


def test_an_empty_kserve_mount_points_at_the_storage_uri(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "KSERVE_MOUNT", tmp_path)
    line = message(tmp_path)
    assert "the directory is empty" in line and "storageUri must name the directory" in line


def test_hidden_files_are_listed_last(tmp_path):
    for name in (".cache", "b", "a"):
        (tmp_path / name).write_text("")
    assert "it holds a, b, .cache)" in message(tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "config.json is not valid JSON"),
        ('{"architectures": ["GPTJForCausalLM"]}', 'config.json has no model_type, not "gptj"'),
        ('{"model_type": "gpt2"}', 'config.json has model_type "gpt2", not "gptj"'),
    ],
)
def test_a_config_that_is_broken_or_not_gptj(checkpoint, text, expected):
    (checkpoint / "config.json").write_text(text)
    assert expected in message(checkpoint)


def test_no_tokenizer(checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    line = message(checkpoint)
    assert "no tokenizer (tokenizer.json, or vocab.json and merges.txt" in line and "EleutherAI/gpt-j-6b" in line


def test_a_shard_that_the_index_lists_is_missing(checkpoint):
    (checkpoint / "model.safetensors").rename(checkpoint / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    line = message(checkpoint)
    assert "model.safetensors.index.json lists model-00002-of-00002.safetensors, which is missing" in line


def test_a_file_and_a_broken_link_are_not_directories(checkpoint, tmp_path):
    assert "not a directory" in message(checkpoint / "config.json")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert "a broken symbolic link" in message(tmp_path / "link")


@pytest.mark.parametrize("model", ["/no/such/dir", "./relative", "~/nowhere", "a/b/c", "not a repo id"])
def test_what_is_neither_an_existing_path_nor_a_hub_id_does_not_exist(model):
    assert "no such directory" in message(model)


def test_one_line_is_for_the_sources_fault_only():
    assert sources.one_line("/x", BadSource("--model /x: no such directory")) == "--model /x: no such directory"
    assert sources.one_line("tiny", RuntimeError("a bug")) is None
    assert sources.one_line("EleutherAI/gpt-j-6b", ValueError("--max_length_limit too large")) is None
