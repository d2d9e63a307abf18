"""What the benchmark runs: a model of the chosen shape and prompts of an exact token length."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from predictor.loading import tiny

# The CPU shape, and GPT-J-6B's own (random fp16 weights run exactly as fast as the real ones).
SHAPES = {
    "small": tiny.TinySpec(n_layer=4, n_embd=256, n_head=8, rotary_dim=32, model_vocab_size=50400),
    "gptj-6b": tiny.TinySpec(
        n_layer=28, n_embd=4096, n_head=16, rotary_dim=64, model_vocab_size=50400, dtype="float16"
    ),
    "tiny": tiny.TinySpec(n_layer=1, n_embd=64, n_head=4, rotary_dim=16, model_vocab_size=50400),  # smoke
}


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: tuple[int, ...]


def model_dir(shape: str, cache: Path) -> Path:
    """The model of this shape, built once. Its EOS never wins, so every request makes all its tokens."""
    return tiny.ensure(cache, SHAPES[shape])


def prompts(path: Path, count: int, length: int, seed: int = 0) -> list[Prompt]:
    """``count`` different prompts that tokenize to exactly ``length`` tokens.

    Byte-level BPE can merge differently at token boundaries, so each candidate text is re-encoded
    and kept only if it comes back at the right length.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    words = [t for t in tokenizer.get_vocab() if t.startswith("\u0120") and t[1:].isalpha()]
    rng, found = random.Random(seed), []
    while len(found) < count:
        text = tokenizer.convert_tokens_to_string(rng.choices(words, k=length)).strip()
        ids = tuple(tokenizer(text).input_ids)
        if len(ids) == length and text not in {p.text for p in found}:
            found.append(Prompt(text, ids))
    return found
