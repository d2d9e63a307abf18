"""The embedded tiny GPT-J: random weights from a fixed seed and a byte-level BPE tokenizer trained
in-process on a few paragraphs, built once into a cache directory. No download, ever.

It is a real ``GPTJForCausalLM`` saved with ``save_pretrained``, so it goes through exactly the
loading path the 6B model takes. It keeps GPT-J's 2048-token context, so limits behave as in
production. Its text is word salad: the weights are random.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("predictor")

EOS = "<|endoftext|>"
FORMAT = 1  # bump when the build below changes, so old cache entries are not reused

# Our own sentences; only their statistics matter (they decide the BPE merges).
_CORPUS = """\
If I was a billionaire, I would buy a plane and fly around the world.
The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.
GPT-J is a language model with six billion parameters, trained on the Pile.
It reads a prompt and writes the next words, one token at a time, until it is told to stop.
Kubernetes runs containers on a cluster of machines; KServe turns a model into a service.
A model server loads its weights onto the GPU, answers requests over HTTP, and reports metrics.
When the queue is full the server says so, and the client tries again a little later.
The weather was cold and clear, and the river ran quickly under the old stone bridge.
She opened the book, read the first page twice, and smiled at the story about the sea.
Numbers such as 1, 2, 3, 10, 42, 100 and 2048 appear in code, in logs and in prose.
We measure throughput in tokens per second and latency in milliseconds, at every percentile.
Good software is small, tested, and honest about what it does not do yet.
"""


@dataclass(frozen=True)
class TinySpec:
    """The shape of a generated model; the defaults are the quick-start model."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    rotary_dim: int = 16
    n_positions: int = 2048  # GPT-J's context window
    vocab_size: int = 1024  # BPE target; the model's vocabulary is rounded up to a multiple of 64
    model_vocab_size: int | None = None  # pad the model's vocabulary to this (GPT-J: 50400)
    dtype: str = "float32"  # float16 weights are built on a GPU when one is present
    seed: int = 0
    # Random weights end on EOS whenever it happens to win; the quick-start model never emits EOS
    # or unprintable tokens, so every prompt gets a visible continuation. Tests that need EOS turn
    # this off (eos_bias > 0 makes EOS the most likely token at every step).
    printable_only: bool = True
    eos_bias: float = 0.0


def ensure(cache_dir: Path, spec: TinySpec = TinySpec()) -> Path:
    """Return the directory holding the model for ``spec``, building it on first use.

    Concurrent callers are safe: each builds into a private temporary directory and renames it
    into place; the loser of the race discards its copy.
    """
    key = hashlib.sha256(json.dumps([FORMAT, asdict(spec)], sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"tiny-gptj-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(scratch, spec)
        os.rename(scratch, target)
        log.info("built the tiny GPT-J into %s", target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def build(dest: Path, spec: TinySpec = TinySpec(), tokenizer=None) -> None:
    """Write a tokenizer and a random-weight GPTJForCausalLM for ``spec`` into ``dest``.

    ``tokenizer``: one to use instead of training the embedded one (the benchmark passes GPT-2's
    own BPE, GPT-J's real tokenizer, so it can compare servers on the real vocabulary); it must
    have ``<|endoftext|>``.
    """
    import torch
    from transformers import GPTJConfig, GPTJForCausalLM

    tokenizer = tokenizer or _tokenizer(spec.vocab_size)
    tokenizer.save_pretrained(dest)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = GPTJConfig(
        vocab_size=max(-(-len(tokenizer) // 64) * 64, spec.model_vocab_size or 0),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        rotary_dim=spec.rotary_dim,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
    )
    dtype = getattr(torch, spec.dtype)
    # GPT-J-6B's shape in float32 would need 24 GB of host memory: build half precision on the GPU.
    device = "cuda" if dtype != torch.float32 and torch.cuda.is_available() else "cpu"
    torch.manual_seed(spec.seed)
    with torch.device(device):
        model = GPTJForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        bias = model.lm_head.bias
        bias[len(tokenizer) :] = -1e4  # padding rows of the vocabulary, as in GPT-J's 50400
        if spec.printable_only:
            for token_id in range(len(tokenizer)):
                text = tokenizer.decode([token_id])
                if token_id == eos_id or not text.isprintable() or "\ufffd" in text:
                    bias[token_id] = -1e4
        bias[eos_id] += spec.eos_bias
    model.save_pretrained(dest)


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return GPT2TokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS)
