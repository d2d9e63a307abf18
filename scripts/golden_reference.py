"""The reference half of scripts/golden-fixtures.sh: runs under transformers 4.46.3, never in our venv.

Reads a job (a model directory and cases: prompt token ids and the request's generation parameters),
calls ``generate`` the way the original service did (the request's parameters passed straight through,
EOS as pad) on one prompt at a time, and writes each case's returned rows as new token ids, cut after
the first EOS (what follows is padding), with the text our contract returns: the prompt as sent, then
the new tokens decoded without special tokens.

Usage: python golden_reference.py JOB.json OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import transformers
from transformers import AutoTokenizer, GenerationConfig, GPTJForCausalLM


def _cut(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def main(job_path: str, out_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    torch.use_deterministic_algorithms(True)
    model = GPTJForCausalLM.from_pretrained(job["model_dir"], torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    eos = tokenizer.eos_token_id
    results = {}
    for case in job["cases"]:
        ids = torch.tensor([case["prompt_ids"]])
        config = GenerationConfig(pad_token_id=eos, eos_token_id=eos, bos_token_id=eos, **case["generate"])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        rows = [_cut(row[ids.shape[1] :].tolist(), eos) for row in out]
        results[case["name"]] = [
            {
                "tokens": row,
                "text": case["prompt"]
                + tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False),
            }
            for row in rows
        ]
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    with open(out_path, "w") as f:
        json.dump({"reference": meta, "results": results}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
